//! The loader: spanned TOML in, a validated [`Config`] with built components out.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::build::{BuildContext, Built, build_component, de_error};
use super::diagnostic::{ConfigError, Diagnostic, suggest, syntax_error};
use super::env::{self, Env, ProcessEnv};
use super::recover::{Fill, deserialize_all};
use super::{Buffer, ComponentId, Config, ExporterSpec, ReceiverSpec, ServiceConfig, WhenFull};
use crate::component::ComponentKind;
use crate::registry::{self, ComponentFactory};
use crate::signal::SignalKind;

mod pipeline;

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
        Err(err) => Err(ConfigError::cannot_read(path, &err)),
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
            config.source = text.to_string();
            if !diags.is_empty() {
                config.warnings = super::diagnostic::render(path, text, &diags, false);
                config.warning_count = diags
                    .iter()
                    .filter(|d| d.severity == super::diagnostic::Severity::Warning)
                    .count();
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
    let root = env::parse_expanded(text).map_err(fail)?;
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
    buffer: Buffer,
    /// An exporter's `signals`: the signals it gets, out of those its type takes.
    signals: Option<Vec<SignalKind>>,
    built: Option<Built>,
    /// Building it failed; its diagnostics are already reported.
    failed: bool,
    used: bool,
}

impl Entry<'_> {
    /// The signals the component takes: its type's, narrowed by an exporter's `signals`.
    fn takes(&self) -> Vec<SignalKind> {
        match &self.signals {
            Some(signals) => self
                .factory
                .takes
                .iter()
                .copied()
                .filter(|s| signals.contains(s))
                .collect(),
            None => self.factory.takes.to_vec(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineExporterKeys {
    queue_size: Option<usize>,
    queue_items: Option<usize>,
    when_full: Option<WhenFull>,
    signals: Option<Vec<SignalKind>>,
    buffer: Option<Buffer>,
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
            Some(value) => {
                let recovered = deserialize_all::<ServiceConfig>(value, "service", Fill::Small);
                let clean = recovered.diagnostics.is_empty();
                self.diags.extend(recovered.diagnostics);
                match recovered.value {
                    Some(s) if clean => {
                        self.check_memory_limits(&s, value);
                        s
                    }
                    _ => ServiceConfig::default(),
                }
            }
            None => ServiceConfig::default(),
        };

        // Build every configured component, used or not, so that the whole file is validated.
        for entry in &mut entries {
            let ctx = BuildContext::new(&entry.id, entry.kind, &entry.table).in_file(path);
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
            let signals = entry.takes();
            match entry.built {
                Some(Built::Receiver(instance)) => receivers.push(ReceiverSpec {
                    id: entry.id,
                    factory: entry.factory,
                    instance,
                }),
                Some(Built::Exporter(instance)) => exporters.push(ExporterSpec {
                    signals,
                    id: entry.id,
                    factory: entry.factory,
                    instance,
                    queue_size: entry.queue_size,
                    queue_items: entry.queue_items,
                    when_full: entry.when_full,
                    buffer: entry.buffer,
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
            warning_count: 0,
            source: String::new(),
        })
    }

    /// An exporter's `signals`, checked against what its type takes: not empty, and none it
    /// cannot take.
    fn exporter_signals(
        &mut self,
        prefix: &str,
        factory: &ComponentFactory,
        signals: Option<Vec<SignalKind>>,
        engine: &Spanned<DeValue<'_>>,
    ) -> Option<Vec<SignalKind>> {
        let signals = signals?;
        let span = super::build::span_of(engine, "signals").unwrap_or_else(|| engine.span());
        let takes: Vec<&str> = factory.takes.iter().map(|s| s.as_str()).collect();
        if signals.is_empty() {
            self.error(
                span,
                format!(
                    "{prefix}.signals: must name at least one signal ({}); leave the exporter out of the pipeline instead",
                    takes.join(", ")
                ),
            );
            return None;
        }
        for s in &signals {
            if !factory.takes.contains(s) {
                self.error(
                    span.clone(),
                    format!(
                        "{prefix}.signals: a `{}` exporter cannot take {s} (it takes {})",
                        factory.type_name,
                        takes.join(", ")
                    ),
                );
                return None;
            }
        }
        Some(signals)
    }

    /// The memory limits of `[service]`, which only make sense together.
    fn check_memory_limits(&mut self, s: &ServiceConfig, value: &Spanned<DeValue<'_>>) {
        if let (Some(limit), Some(spike)) = (s.memory_limit, s.memory_spike_limit)
            && spike.bytes() >= limit.bytes()
        {
            let span =
                super::build::span_of(value, "memory_spike_limit").unwrap_or_else(|| value.span());
            self.error(
                span,
                "service.memory_spike_limit: must be less than `memory_limit`: the soft limit is their difference",
            );
        }
        if s.memory_limit.is_some_and(|l| l.bytes() < 16 * 1024 * 1024) {
            let span = super::build::span_of(value, "memory_limit").unwrap_or_else(|| value.span());
            self.error(span, "service.memory_limit: must be at least 16MiB");
        }
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
            let mut signals = None;
            let mut buffer = Buffer::Memory;
            if kind == ComponentKind::Exporter {
                let mut engine = DeTable::new();
                for k in [
                    "queue_size",
                    "queue_items",
                    "when_full",
                    "signals",
                    "buffer",
                ] {
                    if let Some((k, v)) = component.remove_entry(k) {
                        engine.insert(k, v);
                    }
                }
                let engine = Spanned::new(value.span(), DeValue::Table(engine));
                let recovered = deserialize_all::<EngineExporterKeys>(
                    &engine,
                    &format!("{name}.{id}"),
                    Fill::Small,
                );
                let clean = recovered.diagnostics.is_empty();
                self.diags.extend(recovered.diagnostics);
                match recovered.value {
                    Some(keys) if clean => {
                        when_full = keys.when_full.unwrap_or_default();
                        if when_full == WhenFull::DropNewest {
                            let span =
                                super::build::span_of(&engine, "when_full").unwrap_or(value.span());
                            self.diags.push(
                                Diagnostic::note(format!(
                                    "{name}.{id}.when_full: \"drop_newest\" drops spans already answered OK to their clients whenever this exporter's queue is full (counted as dropped, reason queue_full)"
                                ))
                                .at(span)
                                .with_note("the default, \"block\", makes the pipeline wait and the receivers answer with back-off instead (docs/adr/0007-acknowledged-means-delivered.md)"),
                            );
                        }
                        buffer = keys.buffer.unwrap_or_default();
                        signals = self.exporter_signals(
                            &format!("{name}.{id}"),
                            factory,
                            keys.signals,
                            &engine,
                        );
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
                    _ => {}
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
                buffer,
                signals,
                built: None,
                failed: false,
                used: false,
            });
        }
    }
}

impl Diagnostic {
    fn with_label_mut(&mut self, label: impl Into<String>) -> &mut Self {
        self.label = Some(label.into());
        self
    }
}
