#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| transact_fuzz::seq_log_record(data));
