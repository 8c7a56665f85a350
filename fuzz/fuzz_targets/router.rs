#![no_main]

// The assertions are in `xalb::fuzzing::router`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| xalb::fuzzing::router(data));
