//! Runs one line of an import job's input blob (JSON Lines of ExportImportDevice) through the
//! import parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferrohub_server::fuzzing::import_line(data);
});
