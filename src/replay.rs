//! `tracescale replay`: a pipeline file run on a recording, on span time, with its decision
//! exporters replaced by a recorder, and the decisions it would have made printed as a
//! timeline.
//!
//! The file is rewritten, not patched at run time, so that what runs is an ordinary pipeline:
//! its receivers give way to one `file` receiver reading the recording; every processor that
//! has a `clock` runs on `"event"` time (decisions then depend on the spans alone, not on how
//! fast the machine replays them); nothing writes a `state_path`; in each pipeline a recorder
//! takes the decisions its processors make and `null` the traces its exporters took, so a
//! backtest never touches a cluster or a trace backend.

use std::collections::BTreeMap;
use std::path::Path;

use tracescale_core::component::ComponentKind;
use tracescale_core::registry;
use tracescale_core::signal::{Decision, SignalKind};

/// The id of the receiver that reads the recording.
const RECORDING: &str = "file/replay";
/// The id of the exporter that records the decisions.
const RECORDER: &str = "file/replay_decisions";
/// The id of the exporter that takes the traces in place of the file's trace exporters.
const DISCARD: &str = "null/replay_traces";

/// Why a pipeline file cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    /// The file is not a TOML table (it loaded, so this is not expected).
    #[error("cannot rewrite the pipeline file: {0}")]
    Toml(String),
    /// No pipeline of the file makes decisions.
    #[error("no processor of the pipeline file makes decisions: nothing to replay")]
    NoDecisions,
    /// A `--replicas` value is not `NAMESPACE/KIND/NAME=N`.
    #[error("--replicas {0}: expected NAMESPACE/KIND/NAME=N, such as shop/deployment/checkout=2")]
    Replicas(String),
}

/// The pipeline file's text rewritten to replay `input` and record decisions in `decisions`.
pub(crate) fn rewrite(text: &str, input: &Path, decisions: &Path) -> Result<String, ReplayError> {
    let mut root: toml::Table =
        toml::from_str(text).map_err(|e| ReplayError::Toml(e.to_string()))?;
    let format = if input.extension().is_some_and(|e| e == "pb" || e == "binpb") {
        "otlp_proto"
    } else {
        "otlp_json"
    };
    let mut receivers = toml::Table::new();
    let mut recording = toml::Table::new();
    recording.insert("path".into(), input.display().to_string().into());
    recording.insert("format".into(), format.into());
    receivers.insert(RECORDING.into(), recording.into());
    root.insert("receivers".into(), receivers.into());

    if let Some(toml::Value::Table(processors)) = root.get_mut("processors") {
        for (id, table) in processors.iter_mut() {
            let Some(table) = table.as_table_mut() else {
                continue;
            };
            let Some(factory) = factory(ComponentKind::Processor, id, table) else {
                continue;
            };
            let keys = (factory.config_keys)();
            if keys.contains(&"clock") {
                table.insert("clock".into(), "event".into());
            }
            table.remove("state_path");
        }
    }

    // In each pipeline, the recorder takes the decisions its processors make and the discard
    // takes the traces its exporters took.
    let exporter_takes_traces: BTreeMap<String, bool> = root
        .get("exporters")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
        .map(|(id, table)| {
            let takes = table.as_table().is_some_and(|t| {
                let narrowed = t.get("signals").and_then(toml::Value::as_array);
                let type_takes = factory(ComponentKind::Exporter, id, t)
                    .is_some_and(|f| f.takes.contains(&SignalKind::Traces));
                type_takes
                    && narrowed.is_none_or(|n| n.iter().any(|v| v.as_str() == Some("traces")))
            });
            (id.clone(), takes)
        })
        .collect();
    let decides: BTreeMap<String, bool> = root
        .get("processors")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
        .map(|(id, table)| {
            let emits = table.as_table().is_some_and(|t| {
                factory(ComponentKind::Processor, id, t)
                    .is_some_and(|f| f.emits.contains(&SignalKind::Decisions))
            });
            (id.clone(), emits)
        })
        .collect();
    let (mut recording_used, mut discard_used) = (false, false);
    if let Some(toml::Value::Table(pipelines)) = root.get_mut("pipelines") {
        for (_, pipeline) in pipelines.iter_mut() {
            let Some(pipeline) = pipeline.as_table_mut() else {
                continue;
            };
            pipeline.insert(
                "receivers".into(),
                toml::Value::Array(vec![RECORDING.into()]),
            );
            let ids = |key: &str| -> Vec<String> {
                pipeline
                    .get(key)
                    .and_then(toml::Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(toml::Value::as_str)
                    .map(str::to_string)
                    .collect()
            };
            let records = ids("processors")
                .iter()
                .any(|id| decides.get(id).copied().unwrap_or(false));
            let forwards = ids("exporters")
                .iter()
                .any(|id| exporter_takes_traces.get(id).copied().unwrap_or(false));
            let mut exporters = Vec::new();
            if records {
                exporters.push(RECORDER);
                recording_used = true;
            }
            if forwards || !records {
                exporters.push(DISCARD);
                discard_used = true;
            }
            pipeline.insert(
                "exporters".into(),
                toml::Value::Array(exporters.into_iter().map(Into::into).collect()),
            );
        }
    }
    if !recording_used {
        return Err(ReplayError::NoDecisions);
    }
    let mut exporters = toml::Table::new();
    let mut recorder = toml::Table::new();
    recorder.insert("path".into(), decisions.display().to_string().into());
    recorder.insert(
        "signals".into(),
        toml::Value::Array(vec!["decisions".into()]),
    );
    exporters.insert(RECORDER.into(), recorder.into());
    if discard_used {
        exporters.insert(DISCARD.into(), toml::Table::new().into());
    }
    root.insert("exporters".into(), exporters.into());

    let service = root
        .entry("service")
        .or_insert_with(|| toml::Table::new().into());
    if let Some(service) = service.as_table_mut() {
        service.insert("telemetry_address".into(), "off".into());
        service.entry("log_level").or_insert_with(|| "warn".into());
    }
    toml::to_string(&root).map_err(|e| ReplayError::Toml(e.to_string()))
}

/// The factory of component `id`: its `type` key, or the part of the id before `/`.
fn factory(
    kind: ComponentKind,
    id: &str,
    table: &toml::Table,
) -> Option<&'static registry::ComponentFactory> {
    let type_name = table
        .get("type")
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| id.split('/').next().unwrap_or(id));
    registry::lookup(kind, type_name)
}

/// The decisions a replay recorded, in the order they were made.
pub(crate) fn recorded(path: &Path) -> std::io::Result<Vec<Decision>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Decision>(line).ok())
        .collect())
}

/// Replica counts given with `--replicas`, by target (`namespace/kind/name`, lowercase kind).
pub(crate) fn parse_replicas(given: &[String]) -> Result<BTreeMap<String, u32>, ReplayError> {
    given
        .iter()
        .map(|g| {
            let (target, n) = g
                .split_once('=')
                .ok_or_else(|| ReplayError::Replicas(g.clone()))?;
            let n = n
                .trim()
                .parse::<u32>()
                .map_err(|_| ReplayError::Replicas(g.clone()))?;
            if target.split('/').count() != 3 {
                return Err(ReplayError::Replicas(g.clone()));
            }
            Ok((target.trim().to_ascii_lowercase(), n))
        })
        .collect()
}

/// One line of the timeline: when, what, from which count to which when it is known.
pub(crate) struct Step {
    pub(crate) decision: Decision,
    pub(crate) target: String,
    /// The count before and after, when the starting count was given or a decision set one.
    pub(crate) replicas: Option<(u32, u32)>,
}

/// Follows each target's replica count through the decisions, from `start` (a `To` decision
/// sets a count where none was given), within each decision's own limits.
pub(crate) fn timeline(decisions: Vec<Decision>, start: &BTreeMap<String, u32>) -> Vec<Step> {
    let mut counts = start.clone();
    decisions
        .into_iter()
        .map(|decision| {
            let t = &decision.target;
            let target = format!("{}/{}/{}", t.namespace, t.kind.to_ascii_lowercase(), t.name);
            let replicas = match (counts.get(&target).copied(), decision.change) {
                (Some(current), change) => Some((current, change.desired(current))),
                (None, tracescale_core::signal::ScaleChange::To(n)) => Some((n, n)),
                (None, _) => None,
            }
            .map(|(from, to)| {
                let limits = decision.limits;
                let to = to
                    .max(limits.min.unwrap_or(0))
                    .min(limits.max.unwrap_or(u32::MAX));
                (from, to)
            });
            if let Some((_, to)) = replicas {
                counts.insert(target.clone(), to);
            }
            Step {
                decision,
                target,
                replicas,
            }
        })
        .collect()
}

/// The timeline as people read it: one line per decision.
pub(crate) fn render_text(steps: &[Step]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for step in steps {
        let d = &step.decision;
        let when = time_of(d.timestamp_unix_nano);
        let change = match step.replicas {
            Some((from, to)) => format!("{from} → {to}"),
            None => d.change.to_string(),
        };
        let mut evidence = format!("p99 {} ms", d.evidence.p99.as_millis());
        if let Some(trace) = d.evidence.exemplars.first() {
            let _ = write!(evidence, ", exemplar trace {trace}");
        }
        let _ = writeln!(
            out,
            "{when} would scale {} {change} ({}: {}; {evidence})",
            step.target, d.rule, d.reason
        );
    }
    let _ = writeln!(
        out,
        "{}",
        tracescale_core::words::count(steps.len() as u64, "decision")
    );
    out
}

/// The timeline as one JSON object.
pub(crate) fn render_json(steps: &[Step]) -> String {
    let decisions: Vec<serde_json::Value> = steps
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(&s.decision).unwrap_or_default();
            if let Some(obj) = v.as_object_mut() {
                obj.insert(
                    "time".into(),
                    time_of(s.decision.timestamp_unix_nano).into(),
                );
                obj.insert("target_ref".into(), s.target.clone().into());
                if let Some((from, to)) = s.replicas {
                    obj.insert("replicas_from".into(), from.into());
                    obj.insert("replicas_to".into(), to.into());
                }
            }
            v
        })
        .collect();
    serde_json::json!({ "decisions": decisions }).to_string() + "\n"
}

/// A span-time instant as an RFC 3339 UTC time to the second.
fn time_of(unix_nano: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_nano);
    humantime::format_rfc3339_seconds(at).to_string()
}
