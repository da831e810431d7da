//! A compressed body: the first byte picks gzip or zstd and protobuf or JSON, the rest is the
//! body. The decompressed-size limit must hold whatever the stream claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 0 { "gzip" } else { "zstd" };
    tracescale_components::receivers::otlp::body::check_body(
        Some(encoding),
        body,
        selector & 2 == 2,
    );
});
