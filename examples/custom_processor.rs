//! A component written outside tracescale's crates, and a binary that runs it.
//!
//! `drop_operations` drops spans whose name is on a list (health checks, readiness probes) before
//! they reach the anomaly filter or the rules. It is registered exactly as the built-in
//! components are: a trait impl and one `inventory::submit!`. The binary links the built-in
//! components too, so its pipeline files can use both.
//!
//! ```text
//! cargo run --example custom_processor -- examples/custom_processor.toml
//! ```

use std::collections::HashSet;
use std::process::ExitCode;

use async_trait::async_trait;
use serde::Deserialize;
use tracescale_core::component::{BuildContext, ComponentError, Emitter, Processor};
use tracescale_core::config::{BuildError, field_names, load_file};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind};

// Link the built-in components, or their registrations vanish.
use tracescale_components as _;

/// Config of `drop_operations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DropOperationsConfig {
    /// Span names to drop.
    operations: Vec<String>,
}

/// Drops spans by name, keeping resources and scopes that still hold spans.
struct DropOperations {
    operations: HashSet<String>,
}

#[async_trait]
impl Processor for DropOperations {
    async fn process(&mut self, signal: Signal, out: &mut Emitter) -> Result<(), ComponentError> {
        let Signal::Traces(mut traces) = signal else {
            out.emit(signal);
            return Ok(());
        };
        for rs in &mut traces.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans
                    .retain(|span| !self.operations.contains(&span.name));
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        traces
            .resource_spans
            .retain(|rs| !rs.scope_spans.is_empty());
        out.emit(traces);
        Ok(())
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Processor>, BuildError> {
    let config: DropOperationsConfig = ctx.parse()?;
    if config.operations.is_empty() {
        return Err(ctx.invalid("operations", "list at least one span name"));
    }
    Ok(Box::new(DropOperations {
        operations: config.operations.into_iter().collect(),
    }))
}

inventory::submit! {
    ComponentFactory {
        type_name: "drop_operations",
        description: "drops spans whose name is listed (example of a custom component)",
        takes: &[SignalKind::Traces],
        emits: &[SignalKind::Traces],
        config_keys: field_names::<DropOperationsConfig>,
        build: Build::Processor(build),
    }
}

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: custom_processor PIPELINE.toml");
        return ExitCode::from(2);
    };
    let config = match load_file(path.as_ref()) {
        Ok(config) => config,
        Err(err) => {
            eprint!("{}", err.render(false));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(tracescale_core::service::run(
        config,
        tracescale_core::service::os_signal(),
    )) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(1)
        }
    }
}
