//! Built-in receivers.

pub mod demo_traces;
pub mod file;
pub mod otlp;
pub mod simulated_traces;
