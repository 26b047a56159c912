#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| transact_fuzz::import_csv(data));
