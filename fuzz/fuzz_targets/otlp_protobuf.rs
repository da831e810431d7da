//! An OTLP/HTTP protobuf body, as the receiver decodes and validates it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracescale_components::receivers::otlp::body::check_body(None, data, false);
});
