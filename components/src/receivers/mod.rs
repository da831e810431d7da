//! Built-in receivers.

pub mod demo_traces;
pub mod otlp;
pub mod simulated_traces;
