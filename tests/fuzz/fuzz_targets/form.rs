#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| callgate::fuzzing::form(data));
