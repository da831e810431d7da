//! Built-in exporters.

pub mod debug;
pub mod file;
pub mod null;
pub mod otlp;
