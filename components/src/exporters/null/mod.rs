//! The `null` exporter: counts and drops. For benchmarks and for pipelines whose only purpose
//! is a processor's side effect.

use async_trait::async_trait;
use serde::Deserialize;
use tracescale_core::component::{BuildContext, ComponentError, Exporter};
use tracescale_core::config::{BuildError, field_names};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind};

/// The `null` exporter takes no keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullConfig {}

/// Drops everything it is given; the engine's counters still count it as sent.
#[derive(Debug, Default)]
pub struct NullExporter;

#[async_trait]
impl Exporter for NullExporter {
    async fn export(&mut self, _signal: Signal) -> Result<(), ComponentError> {
        Ok(())
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Exporter>, BuildError> {
    let NullConfig {} = ctx.parse()?;
    Ok(Box::new(NullExporter))
}

inventory::submit! {
    ComponentFactory {
        type_name: "null",
        description: "counts and drops everything; for benchmarks",
        takes: &[SignalKind::Traces, SignalKind::Decisions],
        emits: &[],
        config_keys: field_names::<NullConfig>,
        build: Build::Exporter(build),
    }
}
