//! Built-in processors.

pub mod hstree;
pub mod latency_rules;
pub mod slo_scaler;
