//! Generates the KEDA external scaler protocol (proto/externalscaler.proto) with tonic, parsing
//! the file with protox so that no `protoc` binary is needed to build.

use std::error::Error;

const PROTO: &str = "proto/externalscaler.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Small per-call buffers: an idle stream keeps its buffer for as long as KEDA runs.
        .codec_path("crate::exporters::keda::codec::SmallCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
