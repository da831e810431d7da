#![doc = include_str!("../README.md")]

pub mod backoff;
pub mod eval;
pub mod exporters;
pub mod processors;
pub mod random;
pub mod receivers;
pub mod scaling;
pub mod simulation;
pub mod stats;
pub mod tracetree;

/// The components this crate registers, as `(kind, type)`; a test checks that each one is in the
/// registry, because a factory that is not linked vanishes without a sound.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("exporter", "debug"),
    ("exporter", "file"),
    ("exporter", "keda"),
    ("exporter", "kubernetes"),
    ("exporter", "null"),
    ("exporter", "otlp"),
    ("exporter", "simulated_cluster"),
    ("processor", "hstree"),
    ("processor", "latency_rules"),
    ("processor", "probabilistic_sampler"),
    ("processor", "slo_scaler"),
    ("receiver", "demo_traces"),
    ("receiver", "file"),
    ("receiver", "otlp"),
    ("receiver", "simulated_traces"),
];
