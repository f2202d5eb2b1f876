//! Runs job container URIs and blob names through the container parser and the file root's
//! check: an accepted `file://` container lies below the root, with plain segments only. The
//! input is the URI, a NUL byte, then the blob name.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (uri, name) = text.split_once('\0').unwrap_or((text, "devices.txt"));
    let _ = ferrohub_server::fuzzing::container_uri(uri, name);
});
