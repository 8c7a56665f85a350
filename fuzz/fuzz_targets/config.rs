#![no_main]

// The assertions are in `xalb::fuzzing::config`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| xalb::fuzzing::config(data));
