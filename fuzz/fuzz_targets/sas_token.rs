//! Fuzzes SAS token parsing, scope interpretation and signature checks on arbitrary text.
#![no_main]

use ferrohub_auth::{SasToken, SymmetricKey};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = SasToken::parse(text) else {
        return;
    };
    let key = SymmetricKey::from_bytes(*b"ferrohub-fuzz-fixed-key-32-bytes");
    let _ = token.signed_by(&key);
    let _ = token.signed_by_any(&[&key, &key]);
    let _ = token.is_expired(u64::MAX);
    let _ = token.resource();
    for hosts in [
        &["localhost"][..],
        &["myhub.azure-devices.net", "[::1]:8443"][..],
        &[][..],
    ] {
        if let Ok(scope) = token.scope(hosts) {
            let _ = scope.covers("/devices/d1/messages/events");
            let _ = scope.covers(text);
            assert!(scope.covers(&scope.path()));
        }
    }
});
