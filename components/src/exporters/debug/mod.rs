//! The `debug` exporter: human-readable lines on stdout or stderr, as the Collector's debug
//! exporter writes them.

use std::fmt::Write as _;
use std::io::Write as _;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde::Deserialize;
use tracescale_core::attributes::service_name;
use tracescale_core::component::{BuildContext, ComponentError, Exporter};
use tracescale_core::config::{BuildError, field_names};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind};
use tracescale_core::words::count;

/// How much the `debug` exporter prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch: counts.
    #[default]
    Basic,
    /// One line per span: service, name, duration, trace id.
    Normal,
    /// One line per span with its attributes.
    Detailed,
}

/// Where the lines go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error, away from logs piped from stdout.
    #[default]
    Stderr,
}

/// Config of the `debug` exporter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// `basic`, `normal` or `detailed`.
    pub verbosity: Verbosity,
    /// `stdout` or `stderr`.
    pub stream: Stream,
}

/// Prints what it is given. Decisions always get one line each, with their reason.
pub struct DebugExporter {
    config: DebugConfig,
    text: String,
}

impl DebugExporter {
    /// An exporter for `config`.
    pub fn new(config: DebugConfig) -> Self {
        Self {
            config,
            text: String::new(),
        }
    }

    /// Formats one batch into `self.text`.
    fn format(&mut self, signal: &Signal) {
        self.text.clear();
        let out = &mut self.text;
        match signal {
            Signal::Traces(traces) => {
                let _ = writeln!(
                    out,
                    "traces: {}, {}",
                    count(traces.resource_spans.len() as u64, "resource span"),
                    count(traces.span_count() as u64, "span")
                );
                if self.config.verbosity == Verbosity::Basic {
                    return;
                }
                for rs in &traces.resource_spans {
                    let service = service_name(rs.resource.as_ref());
                    for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                        let ms = span
                            .end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano)
                            as f64
                            / 1e6;
                        let _ = write!(
                            out,
                            "  {service} {:?} {ms:.3}ms trace={} span={}",
                            span.name,
                            const_hex::encode(&span.trace_id),
                            const_hex::encode(&span.span_id)
                        );
                        if self.config.verbosity == Verbosity::Detailed {
                            for kv in &span.attributes {
                                let _ = write!(
                                    out,
                                    " {}={}",
                                    kv.key,
                                    value(kv.value.as_ref().and_then(|v| v.value.as_ref()))
                                );
                            }
                        }
                        out.push('\n');
                    }
                }
            }
            Signal::Decisions(decisions) => {
                for d in decisions {
                    let _ = writeln!(
                        out,
                        "decision: {} {} rule={} — {}",
                        d.target, d.change, d.rule, d.reason
                    );
                }
            }
        }
    }
}

fn value(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => const_hex::encode(b),
        Some(Value::ArrayValue(_)) => "[…]".to_string(),
        Some(Value::KvlistValue(_)) => "{…}".to_string(),
        Some(Value::StringValueStrindex(i)) => format!("strindex:{i}"),
        None => "null".to_string(),
    }
}

#[async_trait]
impl Exporter for DebugExporter {
    async fn export(&mut self, signal: Signal) -> Result<(), ComponentError> {
        self.format(&signal);
        // A terminal write of a few lines; a broken pipe is reported, not retried.
        let result = match self.config.stream {
            Stream::Stdout => std::io::stdout().lock().write_all(self.text.as_bytes()),
            Stream::Stderr => std::io::stderr().lock().write_all(self.text.as_bytes()),
        };
        result.map_err(|e| ComponentError::io("write debug output", e))
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Exporter>, BuildError> {
    Ok(Box::new(DebugExporter::new(ctx.parse()?)))
}

inventory::submit! {
    ComponentFactory {
        type_name: "debug",
        description: "prints traces and decisions as human-readable lines",
        takes: &[SignalKind::Traces, SignalKind::Decisions],
        emits: &[],
        config_keys: field_names::<DebugConfig>,
        build: Build::Exporter(build),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use tracescale_core::signal::{Decision, ReplicaLimits, ScaleChange, Target, Traces};

    use super::*;

    fn printed(signal: &Signal) -> String {
        let mut e = DebugExporter::new(DebugConfig::default());
        e.format(signal);
        e.text.clone()
    }

    #[test]
    fn counts_and_changes_read_as_people_write_them() {
        let one = Signal::Traces(Traces::new(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default()],
                ..Default::default()
            }],
            ..Default::default()
        }]));
        assert_eq!(printed(&one), "traces: 1 resource span, 1 span\n");
        let decision = |change| Decision {
            target: Target {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "checkout".into(),
                namespace: "shop".into(),
            },
            change,
            limits: ReplicaLimits::default(),
            rule: "checkout-slow".into(),
            reason: "slow".into(),
            evidence: Default::default(),
            resources: None,
            timestamp_unix_nano: 1,
        };
        let decisions = Signal::Decisions(vec![
            decision(ScaleChange::Step(1)),
            decision(ScaleChange::Step(-2)),
            decision(ScaleChange::To(8)),
        ]);
        assert_eq!(
            printed(&decisions),
            "decision: shop/deployment/checkout +1 rule=checkout-slow — slow\n\
             decision: shop/deployment/checkout -2 rule=checkout-slow — slow\n\
             decision: shop/deployment/checkout to 8 rule=checkout-slow — slow\n"
        );
    }
}
