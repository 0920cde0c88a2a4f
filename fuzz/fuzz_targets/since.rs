#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pubsocketd::fuzzing::since(data));
