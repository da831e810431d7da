//! The pipelines of a pipeline file, step by step: queue bounds, both ends present, references
//! resolved, signals that flow from the receivers through the processors to every exporter, and
//! the processor instances.

use std::collections::BTreeSet;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use super::{
    DEFAULT_QUEUE_ITEMS, DEFAULT_QUEUE_SIZE, Entry, Loader, MAX_QUEUE_ITEMS, MAX_QUEUE_SIZE,
};
use crate::component::ComponentKind;
use crate::config::build::{BuildContext, Built, build_component};
use crate::config::diagnostic::{Diagnostic, suggest};
use crate::config::recover::{Fill, deserialize_all};
use crate::config::{ComponentId, PipelineSpec, ProcessorSpec};
use crate::registry;
use crate::signal::SignalKind;

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

/// The entries a pipeline references, as indexes into the loader's entries.
struct Resolved {
    receivers: Vec<usize>,
    processors: Vec<usize>,
    exporters: Vec<usize>,
}

impl Loader {
    pub(super) fn pipelines(
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
            // Every mistake in the table is reported; a pipeline with any is not checked further,
            // since its lists may be placeholders.
            let recovered = deserialize_all::<RawPipeline>(raw, &prefix, Fill::Small);
            let clean = recovered.diagnostics.is_empty();
            self.diags.extend(recovered.diagnostics);
            let pipeline = match recovered.value {
                Some(p) if clean => p,
                _ => continue,
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
        let (queue_size, queue_items) = self.queue_bounds(prefix, &raw);
        self.require_both_ends(prefix, span, &raw);
        let Resolved {
            receivers,
            processors,
            exporters,
        } = self.resolve(prefix, &raw, entries)?;
        let flowing = self.flow_through_processors(prefix, &raw, &receivers, &processors, entries);
        self.check_exporters_receive(prefix, &raw, &exporters, &flowing, entries);

        if self.diags.iter().filter(|d| d.is_error()).count() > errors_before
            || processors.iter().any(|&i| entries[i].failed)
        {
            return None;
        }

        self.warn_unscalable_targets(prefix, &processors, &exporters, entries);
        self.warn_starved_exporters(prefix, &raw, &receivers, &processors, &exporters, entries);

        let processor_specs = self.processor_instances(&processors, entries)?;
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

    /// `queue_size` and `queue_items` of the pipeline, checked against their bounds (an error
    /// and the default when out of them).
    fn queue_bounds(&mut self, prefix: &str, raw: &RawPipeline) -> (usize, usize) {
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
            raw.queue_size.clone(),
            DEFAULT_QUEUE_SIZE,
            MAX_QUEUE_SIZE,
            "batches",
        );
        let queue_items = bounded(
            "queue_items",
            raw.queue_items.clone(),
            DEFAULT_QUEUE_ITEMS,
            MAX_QUEUE_ITEMS,
            "items",
        );
        (queue_size, queue_items)
    }

    /// A pipeline needs at least one receiver and one exporter.
    fn require_both_ends(&mut self, prefix: &str, span: Range<usize>, raw: &RawPipeline) {
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
    }

    /// Resolves the pipeline's references to configured components and marks them used. None
    /// when one names a component already reported as broken.
    fn resolve(
        &mut self,
        prefix: &str,
        raw: &RawPipeline,
        entries: &mut [Entry<'_>],
    ) -> Option<Resolved> {
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
        Some(Resolved {
            receivers,
            processors,
            exporters,
        })
    }

    /// The signals the receivers emit, transformed by each processor in turn; an error for each
    /// processor that nothing before it feeds.
    fn flow_through_processors(
        &mut self,
        prefix: &str,
        raw: &RawPipeline,
        receivers: &[usize],
        processors: &[usize],
        entries: &[Entry<'_>],
    ) -> BTreeSet<SignalKind> {
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
        flowing
    }

    /// An error for each exporter that takes none of the signals the pipeline carries at its end.
    fn check_exporters_receive(
        &mut self,
        prefix: &str,
        raw: &RawPipeline,
        exporters: &[usize],
        flowing: &BTreeSet<SignalKind>,
        entries: &[Entry<'_>],
    ) {
        for (&i, reference) in exporters.iter().zip(&raw.exporters) {
            let takes = entries[i].takes();
            if takes.iter().any(|s| flowing.contains(s)) {
                continue;
            }
            let missing = takes.first().copied().unwrap_or(SignalKind::Traces);
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
                    join(&takes),
                    if takes.len() == 1 { "it" } else { "any of them" },
                    join_set(flowing)
                ),
            )
            .with_label_mut("never receives anything here")
            .notes
            .push(fix);
        }
    }

    /// The processor instances of the pipeline. The instance built while validating serves the
    /// first pipeline that lists a processor; later pipelines get their own.
    fn processor_instances(
        &mut self,
        processors: &[usize],
        entries: &mut [Entry<'_>],
    ) -> Option<Vec<ProcessorSpec>> {
        let mut processor_specs = Vec::new();
        for &i in processors {
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
        Some(processor_specs)
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
                Some(Built::Exporter(e)) if entries[i].takes().contains(&SignalKind::Decisions) => {
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
                if let Some(span) = crate::config::build::span_of(&entries[i].table, &key) {
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

impl Loader {
    /// Warns about each exporter that, with the processors as configured (not only as their
    /// types declare), receives nothing: a `latency_rules` with `passthrough = false` in front
    /// of a trace exporter validates by type, and then exports no span.
    fn warn_starved_exporters(
        &mut self,
        prefix: &str,
        raw: &RawPipeline,
        receivers: &[usize],
        processors: &[usize],
        exporters: &[usize],
        entries: &[Entry<'_>],
    ) {
        let mut flowing: BTreeSet<SignalKind> = receivers
            .iter()
            .flat_map(|&i| entries[i].factory.emits.iter().copied())
            .collect();
        // Which processor last stopped a signal, to name it.
        let mut stopped_by: Vec<(SignalKind, usize)> = Vec::new();
        for &i in processors {
            let f = entries[i].factory;
            let emits = match &entries[i].built {
                Some(Built::Processor(p)) => p.emits().unwrap_or_else(|| f.emits.to_vec()),
                _ => f.emits.to_vec(),
            };
            for s in f.takes {
                if flowing.remove(s) && !emits.contains(s) {
                    stopped_by.retain(|(k, _)| k != s);
                    stopped_by.push((*s, i));
                }
            }
            flowing.extend(emits);
        }
        for (&i, reference) in exporters.iter().zip(&raw.exporters) {
            let takes = entries[i].takes();
            if takes.iter().any(|s| flowing.contains(s)) {
                continue;
            }
            let Some(&(signal, by)) = stopped_by.iter().find(|(s, _)| takes.contains(s)) else {
                continue;
            };
            self.diags.push(
                Diagnostic::warning(format!(
                    "{prefix}: exporter \"{}\" takes {}, but processor \"{}\" is configured not to pass {signal} on: it will receive nothing",
                    entries[i].id,
                    join(&takes),
                    entries[by].id,
                ))
                .at(reference.span())
                .with_label("receives nothing here")
                .with_note(format!(
                    "let \"{}\" pass {signal} on, or export them from a pipeline of their own fed by the same receivers",
                    entries[by].id
                )),
            );
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
