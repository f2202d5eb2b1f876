//! Runs `PUT /devices/{id}` and `PUT /devices/{id}/modules/{mid}` bodies through the REST
//! layer's parsing and conversion to registry specifications.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferrohub_server::fuzzing::identity_body(data);
});
