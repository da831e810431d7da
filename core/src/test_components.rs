//! Components that exist only in core's own tests, so that the loader and the topology can be
//! tested without the components crate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::time::Instant;

use crate::component::{
    Abort, BuildContext, ComponentError, Emitter, Exporter, Processor, Receiver, ReceiverContext,
    Tap,
};
use crate::config::{BuildError, field_names};
use crate::registry::{Build, ComponentFactory};
use crate::signal::{Decision, Signal, SignalKind};
use crate::topology::output::Output;

/// Outputs handed to `t_source` receivers at start, by their `key`.
pub(crate) fn outputs() -> &'static Mutex<HashMap<String, Output>> {
    static O: OnceLock<Mutex<HashMap<String, Output>>> = OnceLock::new();
    O.get_or_init(Default::default)
}

/// Abort handles handed to `t_source` receivers at start, by their `key`.
pub(crate) fn aborts() -> &'static Mutex<HashMap<String, Abort>> {
    static A: OnceLock<Mutex<HashMap<String, Abort>>> = OnceLock::new();
    A.get_or_init(Default::default)
}

/// What `t_sink` exporters received, by their `key`.
pub(crate) fn sinks() -> &'static Mutex<HashMap<String, Vec<Signal>>> {
    static S: OnceLock<Mutex<HashMap<String, Vec<Signal>>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceConfig {
    #[serde(default = "one")]
    rate: u32,
    #[serde(default)]
    label: String,
    #[serde(default)]
    key: String,
}

fn one() -> u32 {
    1
}

struct Source {
    key: String,
}

#[async_trait]
impl Receiver for Source {
    async fn start(&mut self, ctx: ReceiverContext) -> Result<(), ComponentError> {
        aborts().lock().unwrap().insert(self.key.clone(), ctx.abort);
        outputs()
            .lock()
            .unwrap()
            .insert(self.key.clone(), ctx.output);
        Ok(())
    }
    async fn shutdown(&mut self, _: Instant) -> Result<(), ComponentError> {
        outputs().lock().unwrap().remove(&self.key);
        Ok(())
    }
}

fn build_source(ctx: &BuildContext<'_>) -> Result<Box<dyn Receiver>, BuildError> {
    let c: SourceConfig = ctx.parse()?;
    if c.rate == 0 {
        return Err(ctx.invalid("rate", "must be at least 1"));
    }
    let _ = c.label;
    Ok(Box::new(Source { key: c.key }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RulesConfig {
    /// Emit one decision per this many spans seen; 0 never.
    #[serde(default)]
    decide_every: usize,
    /// Sleep this long per batch, to make a slow stage.
    #[serde(default)]
    delay_ms: u64,
    /// Emit a decision on every tick of this period.
    #[serde(default)]
    tick_ms: u64,
    /// Offer a tap that adds the spans of refused batches to `tapped()[tap]`.
    #[serde(default)]
    tap: Option<String>,
}

/// Spans the taps of `t_rules` processors saw, by their `tap` key.
pub(crate) fn tapped() -> &'static Mutex<HashMap<String, usize>> {
    static T: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

struct CountingTap(String);

impl Tap for CountingTap {
    fn refused(&self, signal: &Signal) {
        *tapped().lock().unwrap().entry(self.0.clone()).or_default() += signal.item_count();
    }
}

/// Passes traces on; optionally turns them into decisions and ticks.
struct Rules {
    config: RulesConfig,
    seen: usize,
    pub(crate) flushed: Arc<Mutex<u32>>,
}

fn decision(rule: &str) -> Decision {
    Decision {
        target: crate::signal::Target {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "checkout".into(),
            namespace: "shop".into(),
        },
        change: crate::signal::ScaleChange::Step(1),
        limits: Default::default(),
        rule: rule.into(),
        reason: "test".into(),
        evidence: Default::default(),
        resources: None,
        timestamp_unix_nano: 0,
    }
}

#[async_trait]
impl Processor for Rules {
    async fn process(&mut self, signal: Signal, out: &mut Emitter) -> Result<(), ComponentError> {
        if self.config.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.delay_ms)).await;
        }
        self.seen += signal.item_count();
        if self.config.decide_every > 0 {
            while self.seen >= self.config.decide_every {
                self.seen -= self.config.decide_every;
                out.emit(vec![decision("every")]);
            }
        }
        out.emit(signal);
        Ok(())
    }
    fn tap(&self) -> Option<Arc<dyn Tap>> {
        let key = self.config.tap.clone()?;
        Some(Arc::new(CountingTap(key)))
    }
    fn tick_interval(&self) -> Option<Duration> {
        (self.config.tick_ms > 0).then(|| Duration::from_millis(self.config.tick_ms))
    }
    async fn tick(&mut self, out: &mut Emitter) -> Result<(), ComponentError> {
        out.emit(vec![decision("tick")]);
        Ok(())
    }
    async fn shutdown(&mut self, out: &mut Emitter, _: Instant) -> Result<(), ComponentError> {
        *self.flushed.lock().unwrap() += 1;
        out.emit(vec![decision("flush")]);
        Ok(())
    }
}

fn build_rules(ctx: &BuildContext<'_>) -> Result<Box<dyn Processor>, BuildError> {
    Ok(Box::new(Rules {
        config: ctx.parse()?,
        seen: 0,
        flushed: Arc::default(),
    }))
}

struct Decide;

#[async_trait]
impl Processor for Decide {
    async fn process(&mut self, signal: Signal, out: &mut Emitter) -> Result<(), ComponentError> {
        out.emit(signal);
        Ok(())
    }
}

fn build_decide(_: &BuildContext<'_>) -> Result<Box<dyn Processor>, BuildError> {
    Ok(Box::new(Decide))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SinkConfig {
    #[serde(default)]
    key: String,
    #[serde(default)]
    delay_ms: u64,
    /// Fail the shutdown, as an exporter does that gave up on data it held.
    #[serde(default)]
    fail_shutdown: bool,
}

struct Sink {
    config: SinkConfig,
}

#[async_trait]
impl Exporter for Sink {
    async fn export(&mut self, signal: Signal) -> Result<(), ComponentError> {
        if self.config.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.delay_ms)).await;
        }
        sinks()
            .lock()
            .unwrap()
            .entry(self.config.key.clone())
            .or_default()
            .push(signal);
        Ok(())
    }

    async fn shutdown(&mut self, _: Instant) -> Result<(), ComponentError> {
        if self.config.fail_shutdown {
            return Err(ComponentError::other(std::io::Error::other(
                "gave up on what it held",
            )));
        }
        Ok(())
    }
}

fn build_sink(ctx: &BuildContext<'_>) -> Result<Box<dyn Exporter>, BuildError> {
    Ok(Box::new(Sink {
        config: ctx.parse()?,
    }))
}

inventory::submit! {
    ComponentFactory {
        type_name: "t_source",
        description: "test source",
        takes: &[],
        emits: &[SignalKind::Traces],
        config_keys: field_names::<SourceConfig>,
        build: Build::Receiver(build_source),
    }
}
inventory::submit! {
    ComponentFactory {
        type_name: "t_rules",
        description: "test rules",
        takes: &[SignalKind::Traces],
        emits: &[SignalKind::Traces, SignalKind::Decisions],
        config_keys: field_names::<RulesConfig>,
        build: Build::Processor(build_rules),
    }
}
inventory::submit! {
    ComponentFactory {
        type_name: "t_decide",
        description: "test decisions-only processor",
        takes: &[SignalKind::Decisions],
        emits: &[SignalKind::Decisions],
        config_keys: field_names::<RulesConfig>,
        build: Build::Processor(build_decide),
    }
}
inventory::submit! {
    ComponentFactory {
        type_name: "t_sink",
        description: "test sink",
        takes: &[SignalKind::Traces, SignalKind::Decisions],
        emits: &[],
        config_keys: field_names::<SinkConfig>,
        build: Build::Exporter(build_sink),
    }
}
inventory::submit! {
    ComponentFactory {
        type_name: "t_decisions",
        description: "test decisions sink",
        takes: &[SignalKind::Decisions],
        emits: &[],
        config_keys: field_names::<SinkConfig>,
        build: Build::Exporter(build_sink),
    }
}
