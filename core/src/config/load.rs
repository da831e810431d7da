//! The loader: spanned TOML in, a validated [`Config`] with built components out.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::build::{BuildContext, Built, build_component, de_error};
use super::diagnostic::{ConfigError, Diagnostic, suggest, syntax_error};
use super::env::{self, Env, ProcessEnv};
use super::{
    ComponentId, Config, ExporterSpec, PipelineSpec, ProcessorSpec, ReceiverSpec, ServiceConfig,
    WhenFull,
};
use crate::component::ComponentKind;
use crate::registry::{self, ComponentFactory};
use crate::signal::SignalKind;

const TOP_LEVEL: [&str; 5] = [
    "receivers",
    "processors",
    "exporters",
    "pipelines",
    "service",
];
const DEFAULT_QUEUE_SIZE: usize = 64;
const MAX_QUEUE_SIZE: usize = 1 << 20;
/// Items (spans or decisions) a queue holds by default: 16 batches of a thousand spans, a few
/// megabytes, which keeps a pipeline's memory about its configuration rather than its clients'
/// batch sizes, and costs no throughput in the overload soak.
const DEFAULT_QUEUE_ITEMS: usize = 16_384;
const MAX_QUEUE_ITEMS: usize = 1 << 28;

/// Reads and loads a pipeline file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(path, &text),
        Err(err) => Err(ConfigError::new(
            path,
            String::new(),
            vec![Diagnostic::error(format!(
                "cannot read {}: {err}",
                path.display()
            ))],
        )),
    }
}

/// Loads a pipeline file from its text; `path` names it in diagnostics.
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigError> {
    load_with_env(path, text, &ProcessEnv)
}

pub(crate) fn load_with_env(path: &Path, text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    let mut loader = Loader {
        diags: Vec::new(),
        broken: Vec::new(),
    };
    let outcome = loader.load(path, text, env);
    let mut diags = loader.diags;
    diags.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
    match outcome {
        Some(mut config) if !diags.iter().any(Diagnostic::is_error) => {
            if !diags.is_empty() {
                config.warnings = super::diagnostic::render(path, text, &diags, false);
            }
            Ok(config)
        }
        _ => Err(ConfigError::new(path, text.to_string(), diags)),
    }
}

/// The table of one component of a pipeline file, `${env:…}` expanded, without building
/// anything: for tools that run one component outside a pipeline (`tracescale eval`). `None`
/// when the file has no such component.
pub fn component_table(
    path: &Path,
    text: &str,
    kind: ComponentKind,
    id: &str,
) -> Result<Option<toml::Table>, ConfigError> {
    let fail = |diags| ConfigError::new(path, text.to_string(), diags);
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(fail(errors.iter().map(syntax_error).collect()));
    }
    let mut root = Spanned::new(root.span(), DeValue::Table(root.into_inner()));
    let mut diags = Vec::new();
    env::expand(&mut root, &ProcessEnv, &mut diags);
    if !diags.is_empty() {
        return Err(fail(diags));
    }
    let Some(value) = root
        .get_ref()
        .as_table()
        .and_then(|t| t.get(kind.section()))
        .and_then(|s| s.get_ref().as_table())
        .and_then(|s| s.get(id))
    else {
        return Ok(None);
    };
    toml::Table::deserialize(value.clone().into_deserializer())
        .map(Some)
        .map_err(|e| {
            fail(vec![de_error(
                &e,
                value,
                &format!("{}.{id}", kind.section()),
            )])
        })
}

/// One `[receivers.ID]`-style table, checked and ready to build.
struct Entry<'a> {
    kind: ComponentKind,
    id: ComponentId,
    id_span: Range<usize>,
    factory: &'static ComponentFactory,
    table: Spanned<DeValue<'a>>,
    queue_size: usize,
    queue_items: usize,
    when_full: WhenFull,
    built: Option<Built>,
    /// Building it failed; its diagnostics are already reported.
    failed: bool,
    used: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineExporterKeys {
    queue_size: Option<usize>,
    queue_items: Option<usize>,
    when_full: Option<WhenFull>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    receivers: Vec<Spanned<String>>,
    #[serde(default)]
    processors: Vec<Spanned<String>>,
    exporters: Vec<Spanned<String>>,
    queue_size: Option<Spanned<usize>>,
    queue_items: Option<Spanned<usize>>,
}

struct Loader {
    diags: Vec<Diagnostic>,
    /// Components already reported as unbuildable (unknown type, bad id): pipelines that
    /// reference them are not reported again.
    broken: Vec<(ComponentKind, String)>,
}

impl Loader {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(message).at(span));
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }

    fn load(&mut self, path: &Path, text: &str, env: &dyn Env) -> Option<Config> {
        let (root, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            self.diags.extend(errors.iter().map(syntax_error));
            return None;
        }
        for (kind, ty) in registry::duplicates() {
            // Two linked crates claim one name: which one a file gets would be an accident.
            self.diags.push(Diagnostic::error(format!(
                "{kind} type `{ty}` is registered by more than one linked crate; rename one"
            )));
        }
        let mut root = Spanned::new(root.span(), DeValue::Table(root.into_inner()));
        env::expand(&mut root, env, &mut self.diags);
        if !self.diags.is_empty() {
            // A value that failed to expand would only cascade into type errors.
            return None;
        }
        let DeValue::Table(top) = root.get_ref() else {
            return None;
        };

        for (key, _) in top.iter() {
            let key_str: &str = key.get_ref();
            if !TOP_LEVEL.contains(&key_str) {
                let label = match suggest(key_str, TOP_LEVEL) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "not recognised".to_string(),
                };
                self.error(key.span(), format!("unknown top-level key `{key_str}`"))
                    .with_label_mut(label)
                    .notes
                    .push(format!("valid keys: {}", TOP_LEVEL.join(", ")));
            }
        }

        let mut entries: Vec<Entry<'_>> = Vec::new();
        for kind in ComponentKind::ALL {
            if let Some((key, section)) = top.get_key_value(kind.section()) {
                self.section(kind, key, section, &mut entries);
            }
        }

        let service = match top.get("service") {
            Some(value) => match ServiceConfig::deserialize(value.clone().into_deserializer()) {
                Ok(s) => {
                    if let (Some(limit), Some(spike)) = (s.memory_limit, s.memory_spike_limit)
                        && spike.bytes() >= limit.bytes()
                    {
                        let span = super::build::span_of(value, "memory_spike_limit")
                            .unwrap_or_else(|| value.span());
                        self.error(
                            span,
                            "service.memory_spike_limit: must be less than `memory_limit`: the soft limit is their difference",
                        );
                    }
                    if s.memory_limit.is_some_and(|l| l.bytes() < 16 * 1024 * 1024) {
                        let span = super::build::span_of(value, "memory_limit")
                            .unwrap_or_else(|| value.span());
                        self.error(span, "service.memory_limit: must be at least 16MiB");
                    }
                    s
                }
                Err(err) => {
                    self.diags.push(de_error(&err, value, "service"));
                    ServiceConfig::default()
                }
            },
            None => ServiceConfig::default(),
        };

        // Build every configured component, used or not, so that the whole file is validated.
        for entry in &mut entries {
            let ctx = BuildContext::new(&entry.id, entry.kind, &entry.table);
            match build_component(entry.factory, &ctx) {
                Ok(built) => entry.built = Some(built),
                Err(e) => {
                    entry.failed = true;
                    self.diags.extend(e.diagnostics);
                }
            }
            self.diags.extend(ctx.take_warnings());
        }

        let pipelines = match top.get_key_value("pipelines") {
            Some((_, value)) => self.pipelines(value, &mut entries),
            None => {
                self.diags.push(Diagnostic::error(
                    "no pipelines: add a [pipelines.NAME] table with `receivers` and `exporters` lists",
                ));
                Vec::new()
            }
        };

        // With no valid pipeline, every component would be "unused": say nothing of them.
        let any_pipeline = !pipelines.is_empty();
        for entry in entries.iter().filter(|e| !e.used && any_pipeline) {
            self.diags.push(
                Diagnostic::warning(format!(
                    "{}.{}: not used by any pipeline",
                    entry.kind.section(),
                    entry.id
                ))
                .at(entry.id_span.clone())
                .with_label("configured here"),
            );
        }

        if self.diags.iter().any(Diagnostic::is_error) {
            return None;
        }

        let mut receivers = Vec::new();
        let mut exporters = Vec::new();
        for entry in entries.into_iter().filter(|e| e.used) {
            match entry.built {
                Some(Built::Receiver(instance)) => receivers.push(ReceiverSpec {
                    id: entry.id,
                    factory: entry.factory,
                    instance,
                }),
                Some(Built::Exporter(instance)) => exporters.push(ExporterSpec {
                    id: entry.id,
                    factory: entry.factory,
                    instance,
                    queue_size: entry.queue_size,
                    queue_items: entry.queue_items,
                    when_full: entry.when_full,
                }),
                Some(Built::Processor(_)) | None => {}
            }
        }
        Some(Config {
            path: path.to_path_buf(),
            service,
            receivers,
            exporters,
            pipelines,
            warnings: String::new(),
        })
    }

    fn section<'a>(
        &mut self,
        kind: ComponentKind,
        key: &Spanned<DeString<'a>>,
        section: &Spanned<DeValue<'a>>,
        entries: &mut Vec<Entry<'a>>,
    ) {
        let name = kind.section();
        let Some(table) = section.get_ref().as_table() else {
            self.error(
                key.span(),
                format!("`{name}` must be a table of components"),
            );
            return;
        };
        for (id_key, value) in table.iter() {
            let id = match ComponentId::parse(id_key.get_ref()) {
                Ok(id) => id,
                Err(message) => {
                    self.error(id_key.span(), format!("{name}: {message}"));
                    self.broken.push((kind, id_key.get_ref().to_string()));
                    continue;
                }
            };
            let Some(component) = value.get_ref().as_table() else {
                self.error(
                    value.span(),
                    format!(
                        "{name}.{id}: expected a table, found {}",
                        value.get_ref().type_str()
                    ),
                );
                continue;
            };
            let mut component = component.clone();

            let type_name = match component.remove("type") {
                Some(t) => match t.get_ref().as_str() {
                    Some(s) => (s.to_string(), t.span()),
                    None => {
                        self.error(t.span(), format!("{name}.{id}.type: expected a string"));
                        continue;
                    }
                },
                None => (id.type_part().to_string(), id_key.span()),
            };
            let Some(factory) = registry::lookup(kind, &type_name.0) else {
                self.broken.push((kind, id.to_string()));
                let registered = registry::types(kind);
                let registered_list = if registered.is_empty() {
                    "none".to_string()
                } else {
                    registered.join(", ")
                };
                let label = match suggest(&type_name.0, registered.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "not registered".to_string(),
                };
                self.error(
                    type_name.1,
                    format!("{name}.{id}: unknown {kind} type `{}`", type_name.0),
                )
                .with_label_mut(label)
                .notes
                .push(format!("registered {name}: {registered_list}"));
                continue;
            };

            let (mut queue_size, mut queue_items, mut when_full) =
                (DEFAULT_QUEUE_SIZE, DEFAULT_QUEUE_ITEMS, WhenFull::default());
            if kind == ComponentKind::Exporter {
                let mut engine = DeTable::new();
                for k in ["queue_size", "queue_items", "when_full"] {
                    if let Some((k, v)) = component.remove_entry(k) {
                        engine.insert(k, v);
                    }
                }
                let engine = Spanned::new(value.span(), DeValue::Table(engine));
                match EngineExporterKeys::deserialize(engine.clone().into_deserializer()) {
                    Ok(keys) => {
                        when_full = keys.when_full.unwrap_or_default();
                        let limits = [
                            (
                                "queue_size",
                                keys.queue_size,
                                MAX_QUEUE_SIZE,
                                "batches",
                                &mut queue_size,
                            ),
                            (
                                "queue_items",
                                keys.queue_items,
                                MAX_QUEUE_ITEMS,
                                "items",
                                &mut queue_items,
                            ),
                        ];
                        for (key, given, max, unit, slot) in limits {
                            let Some(given) = given else { continue };
                            if (1..=max).contains(&given) {
                                *slot = given;
                            } else {
                                let span =
                                    super::build::span_of(&engine, key).unwrap_or(value.span());
                                self.error(
                                    span,
                                    format!(
                                        "{name}.{id}.{key}: must be between 1 and {max} {unit}"
                                    ),
                                );
                            }
                        }
                    }
                    Err(err) => self
                        .diags
                        .push(de_error(&err, &engine, &format!("{name}.{id}"))),
                }
            }

            entries.push(Entry {
                kind,
                id,
                id_span: id_key.span(),
                factory,
                table: Spanned::new(value.span(), DeValue::Table(component)),
                queue_size,
                queue_items,
                when_full,
                built: None,
                failed: false,
                used: false,
            });
        }
    }

    fn pipelines(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        entries: &mut [Entry<'_>],
    ) -> Vec<PipelineSpec> {
        let Some(table) = value.get_ref().as_table() else {
            self.error(value.span(), "`pipelines` must be a table of pipelines");
            return Vec::new();
        };
        if table.is_empty() {
            self.error(
                value.span(),
                "no pipelines: add a [pipelines.NAME] table with `receivers` and `exporters` lists",
            );
        }
        let mut specs = Vec::new();
        for (name_key, raw) in table.iter() {
            let name = name_key.get_ref().to_string();
            let prefix = format!("pipelines.{name}");
            let pipeline = match RawPipeline::deserialize(raw.clone().into_deserializer()) {
                Ok(p) => p,
                Err(err) => {
                    self.diags.push(de_error(&err, raw, &prefix));
                    continue;
                }
            };
            if let Some(spec) = self.pipeline(&prefix, name, raw.span(), pipeline, entries) {
                specs.push(spec);
            }
        }
        specs
    }

    fn pipeline(
        &mut self,
        prefix: &str,
        name: String,
        span: Range<usize>,
        raw: RawPipeline,
        entries: &mut [Entry<'_>],
    ) -> Option<PipelineSpec> {
        let errors_before = self.diags.iter().filter(|d| d.is_error()).count();
        let mut bounded =
            |key: &str, given: Option<Spanned<usize>>, default, max, unit: &str| match given {
                Some(q) if !(1..=max).contains(q.get_ref()) => {
                    self.error(
                        q.span(),
                        format!("{prefix}.{key}: must be between 1 and {max} {unit}"),
                    );
                    default
                }
                Some(q) => q.into_inner(),
                None => default,
            };
        let queue_size = bounded(
            "queue_size",
            raw.queue_size,
            DEFAULT_QUEUE_SIZE,
            MAX_QUEUE_SIZE,
            "batches",
        );
        let queue_items = bounded(
            "queue_items",
            raw.queue_items,
            DEFAULT_QUEUE_ITEMS,
            MAX_QUEUE_ITEMS,
            "items",
        );
        for (list, kind) in [
            (&raw.receivers, ComponentKind::Receiver),
            (&raw.exporters, ComponentKind::Exporter),
        ] {
            if list.is_empty() {
                self.error(
                    span.clone(),
                    format!(
                        "{prefix}: needs at least one {kind} in `{}`",
                        kind.section()
                    ),
                );
            }
        }

        let mut resolved: Vec<Vec<usize>> = Vec::new();
        let mut broken_reference = false;
        for (list, kind) in [
            (&raw.receivers, ComponentKind::Receiver),
            (&raw.processors, ComponentKind::Processor),
            (&raw.exporters, ComponentKind::Exporter),
        ] {
            let mut seen = BTreeSet::new();
            let mut indexes = Vec::new();
            for reference in list {
                let id: &str = reference.get_ref();
                if !seen.insert(id) {
                    self.error(
                        reference.span(),
                        format!("{prefix}: lists {kind} \"{id}\" twice"),
                    );
                    continue;
                }
                match entries
                    .iter()
                    .position(|e| e.kind == kind && e.id.as_str() == id)
                {
                    Some(i) => indexes.push(i),
                    // Already reported where it is configured; do not repeat it here.
                    None if self.broken.iter().any(|(k, b)| *k == kind && b == id) => {
                        broken_reference = true;
                    }
                    None => {
                        let configured: Vec<&str> = entries
                            .iter()
                            .filter(|e| e.kind == kind)
                            .map(|e| e.id.as_str())
                            .collect();
                        let list = if configured.is_empty() {
                            "none".to_string()
                        } else {
                            configured.join(", ")
                        };
                        let label = match suggest(id, configured.iter().copied()) {
                            Some(s) => format!("did you mean \"{s}\"?"),
                            None => format!("add a [{}.\"{id}\"] table", kind.section()),
                        };
                        self.error(
                            reference.span(),
                            format!(
                                "{prefix}: references {kind} \"{id}\", which is not configured (configured: {list})"
                            ),
                        )
                        .with_label_mut(label);
                    }
                }
            }
            resolved.push(indexes);
        }
        let [receivers, processors, exporters] = <[Vec<usize>; 3]>::try_from(resolved).ok()?;
        for &i in receivers.iter().chain(&processors).chain(&exporters) {
            entries[i].used = true;
        }
        if broken_reference {
            return None;
        }

        // Signal flow: what the receivers emit, transformed by each processor in turn.
        let mut flowing: BTreeSet<SignalKind> = receivers
            .iter()
            .flat_map(|&i| entries[i].factory.emits.iter().copied())
            .collect();
        for (&i, reference) in processors.iter().zip(&raw.processors) {
            let f = entries[i].factory;
            if !f.takes.iter().any(|s| flowing.contains(s)) {
                self.error(
                    reference.span(),
                    format!(
                        "{prefix}: processor \"{}\" takes {}, but nothing before it in the pipeline emits {}",
                        entries[i].id,
                        join(f.takes),
                        if f.takes.len() == 1 { "it" } else { "any of them" }
                    ),
                )
                .with_label_mut(format!("this pipeline carries {} here", join_set(&flowing)));
                continue;
            }
            for s in f.takes {
                flowing.remove(s);
            }
            flowing.extend(f.emits.iter().copied());
        }
        for (&i, reference) in exporters.iter().zip(&raw.exporters) {
            let f = entries[i].factory;
            if f.takes.iter().any(|s| flowing.contains(s)) {
                continue;
            }
            let missing = f.takes.first().copied().unwrap_or(SignalKind::Traces);
            let makers: Vec<&str> = registry::all()
                .into_iter()
                .filter(|m| {
                    m.kind() == ComponentKind::Processor
                        && m.emits(missing)
                        && m.takes.iter().any(|s| flowing.contains(s))
                })
                .map(|m| m.type_name)
                .collect();
            let fix = if makers.is_empty() {
                format!(
                    "move \"{}\" to a pipeline that carries {missing}",
                    entries[i].id
                )
            } else {
                format!(
                    "add a processor that emits {missing} ({}) to this pipeline, or move \"{}\" to a pipeline that carries {missing}",
                    makers.join(", "),
                    entries[i].id
                )
            };
            self.error(
                reference.span(),
                format!(
                    "{prefix}: exporter \"{}\" takes {}, but this pipeline never carries {} (it carries: {})",
                    entries[i].id,
                    join(f.takes),
                    if f.takes.len() == 1 { "it" } else { "any of them" },
                    join_set(&flowing)
                ),
            )
            .with_label_mut("never receives anything here")
            .notes
            .push(fix);
        }

        if self.diags.iter().filter(|d| d.is_error()).count() > errors_before
            || processors.iter().any(|&i| entries[i].failed)
        {
            return None;
        }

        self.warn_unscalable_targets(prefix, &processors, &exporters, entries);

        let mut processor_specs = Vec::new();
        for &i in &processors {
            let entry = &mut entries[i];
            // The instance built while validating serves the first pipeline; later pipelines get
            // their own, so no two pipelines share processor state.
            let instance = match entry.built.take() {
                Some(Built::Processor(p)) => p,
                _ => {
                    let ctx = BuildContext::new(&entry.id, entry.kind, &entry.table);
                    match build_component(entry.factory, &ctx) {
                        Ok(Built::Processor(p)) => p,
                        Ok(_) => return None,
                        Err(e) => {
                            self.diags.extend(e.diagnostics);
                            return None;
                        }
                    }
                }
            };
            processor_specs.push(ProcessorSpec {
                id: entry.id.clone(),
                factory: entry.factory,
                instance,
            });
        }
        Some(PipelineSpec {
            name,
            receivers: receivers.iter().map(|&i| entries[i].id.clone()).collect(),
            processors: processor_specs,
            exporters: exporters.iter().map(|&i| entries[i].id.clone()).collect(),
            queue_size,
            queue_items,
            signals: flowing.into_iter().collect(),
        })
    }
}

impl Loader {
    /// Warns about each target a processor may scale that no decision exporter of the pipeline
    /// accepts: its decisions would all be refused at run time.
    fn warn_unscalable_targets(
        &mut self,
        prefix: &str,
        processors: &[usize],
        exporters: &[usize],
        entries: &[Entry<'_>],
    ) {
        let gates: Vec<(&ComponentId, &dyn crate::component::Exporter)> = exporters
            .iter()
            .filter_map(|&i| match &entries[i].built {
                Some(Built::Exporter(e))
                    if entries[i].factory.takes.contains(&SignalKind::Decisions) =>
                {
                    Some((&entries[i].id, e.as_ref()))
                }
                _ => None,
            })
            .collect();
        for &i in processors {
            let Some(Built::Processor(p)) = &entries[i].built else {
                continue;
            };
            for (key, target) in p.scale_targets() {
                let answers: Vec<(&ComponentId, bool)> = gates
                    .iter()
                    .filter_map(|(id, e)| e.accepts_target(&target).map(|ok| (*id, ok)))
                    .collect();
                if answers.is_empty() || answers.iter().any(|(_, ok)| *ok) {
                    continue;
                }
                let names: Vec<String> =
                    answers.iter().map(|(id, _)| format!("\"{id}\"")).collect();
                let mut d = Diagnostic::warning(format!(
                    "processors.{}.{key}: target {target} is in no exporter's allow-list ({prefix} exports decisions to {}); its decisions will be refused",
                    entries[i].id,
                    names.join(", ")
                ));
                if let Some(span) = super::build::span_of(&entries[i].table, &key) {
                    d = d.at(span).with_label("not allowed by any exporter");
                }
                d.notes.push(format!(
                    "add \"{target}\" (or a pattern with `*` segments) to the exporter's `allow` list"
                ));
                self.diags.push(d);
            }
        }
    }
}

fn join(signals: &[SignalKind]) -> String {
    let names: Vec<_> = signals.iter().map(|s| s.as_str()).collect();
    names.join(" or ")
}

fn join_set(signals: &BTreeSet<SignalKind>) -> String {
    if signals.is_empty() {
        return "nothing".to_string();
    }
    let names: Vec<_> = signals.iter().map(|s| s.as_str()).collect();
    names.join(" and ")
}

impl Diagnostic {
    fn with_label_mut(&mut self, label: impl Into<String>) -> &mut Self {
        self.label = Some(label.into());
        self
    }
}
