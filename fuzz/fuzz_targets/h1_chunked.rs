#![no_main]

// The assertions are in `xalb::fuzzing::h1_chunked`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| xalb::fuzzing::h1_chunked(data));
