//! Runs `POST /devices` bodies through the bulk parser: every record is either readable or a
//! per-record error, and only an oversized request fails as a whole.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferrohub_server::fuzzing::bulk_body(data);
});
