#![doc = include_str!("../README.md")]

pub mod attributes;
pub mod component;
pub mod config;
pub mod error;
pub mod health;
pub mod memory;
pub mod registry;
pub mod service;
pub mod signal;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod test_components;
pub mod topology;
pub mod words;

/// Re-exported so that components and custom distributions register with the same version.
pub use inventory;
