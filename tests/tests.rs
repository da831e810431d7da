//! End-to-end tests: the binary, its pipeline files, every registered component.
//!
//! One integration-test binary, so the crate graph is linked once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Link the built-in components into this test binary, as the tracescale binary does.
use tracescale_components as _;

mod attribute;
mod claims;
mod cli;
mod conformance;
mod diagnostics;
mod docs;
mod durability;
mod eval;
mod file;
mod fuzz_regressions;
mod interop;
mod keda;
mod kubernetes;
mod logs;
mod package;
mod reliability;
mod reload;
mod replay;
mod run;
mod sharded;
mod simulate;
mod telemetry;
mod util;
