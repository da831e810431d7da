//! Built-in exporters.

pub mod debug;
pub mod file;
pub mod keda;
pub mod kubernetes;
pub mod null;
pub mod otlp;
pub mod simulated_cluster;
