//! Fuzzes connection string parsing: no panics, and what parses prints back to itself.
#![no_main]

use ferrohub_auth::ConnectionString;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cs) = text.parse::<ConnectionString>() else {
        return;
    };
    let printed = cs.to_string();
    assert_eq!(printed.parse::<ConnectionString>().as_ref(), Ok(&cs));
    let _ = cs.resource_uri();
    let _ = cs.sas_token(1_700_000_000);
});
