//! Deserialization that does not stop at the first mistake.
//!
//! serde gives up on a table at its first bad key, so a file with eight mistakes would take
//! several rounds of `validate` to see them all. Here each error is recorded and then repaired on
//! a copy of the document (an unknown key removed, a value of the wrong type replaced by a
//! placeholder of a type that fits, a missing key filled in), and deserialization runs again,
//! until it succeeds. The value it then yields is only good for finding the mistakes that remain
//! (the component's own checks); it is never run.

use std::borrow::Cow;
use std::ops::Range;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::DeValue;

use super::build::de_error;
use super::diagnostic::Diagnostic;

/// Most repairs in one table: each round fixes one mistake, so this is far more than any file
/// has, and it bounds the work a pathological one can cause.
const MAX_ROUNDS: usize = 200;

/// Which set of placeholders fills a repaired value. A component is checked once with each;
/// what its checks report under both does not depend on the placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Small values: `"1ms"`, `1`, `true`.
    Small,
    /// Other values: `"1h"`, `1000`, `false`.
    Large,
}

impl Fill {
    fn candidates(self) -> &'static [&'static str] {
        match self {
            Fill::Small => &[
                "\"1ms\"",
                "1",
                "1.5",
                "true",
                "\"127.0.0.1:1\"",
                "[]",
                "{}",
                "\"\"",
            ],
            Fill::Large => &[
                "\"1h\"",
                "1000",
                "3",
                "1000.5",
                "false",
                "\"127.0.0.2:2\"",
                "[]",
                "{}",
                "\"\"",
            ],
        }
    }
}

/// What [`deserialize_all`] found.
pub(crate) struct Recovered<T> {
    /// The value, once every mistake was repaired; `None` when one could not be.
    pub(crate) value: Option<T>,
    /// One diagnostic per mistake, in the order found.
    pub(crate) diagnostics: Vec<Diagnostic>,
    /// Key paths (`rules[0].above`, relative to the table) whose values were replaced or
    /// filled in: what the component's checks say about them is about a placeholder.
    pub(crate) patched: Vec<String>,
}

/// One step of a path inside a document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

fn render(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Deserializes `root` into `T`, recording every mistake and repairing it to find the next.
/// `prefix` starts the key paths of the diagnostics (`processors.hstree`).
pub(crate) fn deserialize_all<T: DeserializeOwned>(
    root: &Spanned<DeValue<'_>>,
    prefix: &str,
    fill: Fill,
) -> Recovered<T> {
    let mut doc = root.clone();
    let mut out = Recovered {
        value: None,
        diagnostics: Vec::new(),
        patched: Vec::new(),
    };
    // Keys this loop removed because they were wrong: when serde then misses them, the
    // mistake was already reported.
    let mut removed: Vec<Vec<Step>> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let err = match T::deserialize(doc.clone().into_deserializer()) {
            Ok(value) => {
                out.value = Some(value);
                return out;
            }
            Err(err) => err,
        };
        let message = err.message().trim().to_string();
        let span = err.span().unwrap_or_else(|| doc.span());
        if let Some(rest) = message.strip_prefix("missing field") {
            let key = rest.split('`').nth(1).unwrap_or_default().to_string();
            let Some(mut path) = locate(&doc, &span, Target::Table) else {
                out.diagnostics.push(de_error(&err, &doc, prefix));
                return out;
            };
            path.push(Step::Key(key));
            if !removed.contains(&path) {
                out.diagnostics.push(de_error(&err, &doc, prefix));
            }
            let at = end_of(&doc, &path[..path.len() - 1]).unwrap_or(span.end);
            if !fill_in(&mut doc, &path, at..at, fill, &[], probe::<T>) {
                return out;
            }
            out.patched.push(render(&path));
            continue;
        }
        out.diagnostics.push(de_error(&err, &doc, prefix));
        if message.starts_with("unknown field") {
            let Some(path) = locate(&doc, &span, Target::Key) else {
                return out;
            };
            remove(&mut doc, &path);
            continue;
        }
        // A value serde did not take: try placeholders of other types until one passes.
        let Some(path) = locate(&doc, &span, Target::Value) else {
            return out;
        };
        if out.patched.contains(&render(&path)) {
            // A placeholder of ours failed a later check: nothing more to learn here.
            return out;
        }
        let variants: Vec<String> = if message.starts_with("unknown variant") {
            message
                .split('`')
                .skip(1)
                .step_by(2)
                .skip(1)
                .map(str::to_string)
                .collect()
        } else {
            Vec::new()
        };
        if fill_in(&mut doc, &path, span.clone(), fill, &variants, probe::<T>) {
            out.patched.push(render(&path));
        } else if matches!(path.last(), Some(Step::Key(_))) {
            // No placeholder fits: leave the key out, and its default applies.
            remove(&mut doc, &path);
            removed.push(path);
        } else {
            return out;
        }
    }
    out
}

/// Sets the value at `path` to the first placeholder (the enum's own variants first) that
/// the type takes there; false when none does. A placeholder passes when deserializing again
/// (`probe`) fails at another place or not at all.
fn fill_in(
    doc: &mut Spanned<DeValue<'_>>,
    path: &[Step],
    span: Range<usize>,
    fill: Fill,
    variants: &[String],
    probe: Probe,
) -> bool {
    let values = variants
        .iter()
        .map(|v| Some(DeValue::String(Cow::Owned(v.clone()))))
        .chain(fill.candidates().iter().map(|text| placeholder(text)));
    for value in values {
        let Some(value) = value else {
            continue;
        };
        if !set(doc, path, Spanned::new(span.clone(), value)) {
            return false;
        }
        if probe(doc).is_none_or(|at| at != span) {
            return true;
        }
    }
    false
}

/// Deserializes a document into the type being recovered: where the next error is, if any.
type Probe = fn(&Spanned<DeValue<'_>>) -> Option<Range<usize>>;

fn probe<T: DeserializeOwned>(doc: &Spanned<DeValue<'_>>) -> Option<Range<usize>> {
    match T::deserialize(doc.clone().into_deserializer()) {
        Ok(_) => None,
        Err(err) => Some(err.span().unwrap_or_else(|| doc.span())),
    }
}

/// A placeholder value parsed from its TOML text.
fn placeholder<'a>(text: &'static str) -> Option<DeValue<'a>> {
    let mut value = DeValue::parse(text).ok()?.into_inner();
    value.make_owned();
    Some(value)
}

/// What an error's span points at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A key (serde's "unknown field").
    Key,
    /// A value.
    Value,
    /// A table (serde's "missing field" points at the table that lacks it).
    Table,
}

/// The path of the node an error's span points at; the deepest match wins.
fn locate(doc: &Spanned<DeValue<'_>>, span: &Range<usize>, target: Target) -> Option<Vec<Step>> {
    if target == Target::Table && doc.span() == *span {
        // The root itself, unless a nested table has the same span.
        let mut found = None;
        search(doc, span, target, &mut Vec::new(), &mut found);
        return Some(found.unwrap_or_default());
    }
    let mut found = None;
    search(doc, span, target, &mut Vec::new(), &mut found);
    found
}

fn search(
    node: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
    target: Target,
    path: &mut Vec<Step>,
    found: &mut Option<Vec<Step>>,
) {
    let mut visit = |step: Step, key_span: Option<Range<usize>>, child: &Spanned<DeValue<'_>>| {
        path.push(step);
        let hit = match target {
            Target::Key => key_span.as_ref() == Some(span),
            Target::Value => child.span() == *span,
            Target::Table => child.span() == *span && child.get_ref().is_table(),
        };
        if hit {
            *found = Some(path.clone());
        }
        search(child, span, target, path, found);
        path.pop();
    };
    match node.get_ref() {
        DeValue::Table(table) => {
            for (k, v) in table.iter() {
                visit(Step::Key(k.get_ref().to_string()), Some(k.span()), v);
            }
        }
        DeValue::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                visit(Step::Index(i), None, v);
            }
        }
        _ => {}
    }
}

fn node_mut<'v, 'a>(
    doc: &'v mut Spanned<DeValue<'a>>,
    path: &[Step],
) -> Option<&'v mut Spanned<DeValue<'a>>> {
    let mut node = doc;
    for step in path {
        node = match (node.get_mut(), step) {
            (DeValue::Table(t), Step::Key(k)) => t.get_mut(k.as_str())?,
            (DeValue::Array(a), Step::Index(i)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// The end of the node at `path`, where a filled-in key is placed.
fn end_of(doc: &Spanned<DeValue<'_>>, path: &[Step]) -> Option<usize> {
    let mut node = doc;
    for step in path {
        node = match (node.get_ref(), step) {
            (DeValue::Table(t), Step::Key(k)) => t.get(k.as_str())?,
            (DeValue::Array(a), Step::Index(i)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(node.span().end)
}

/// Sets (or inserts) the value at `path`; false when its parent is not there.
fn set<'a>(doc: &mut Spanned<DeValue<'a>>, path: &[Step], value: Spanned<DeValue<'a>>) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let Some(parent) = node_mut(doc, parent) else {
        return false;
    };
    match (parent.get_mut(), last) {
        (DeValue::Table(t), Step::Key(k)) => {
            let key_span = value.span();
            match t.get_mut(k.as_str()) {
                Some(slot) => *slot = value,
                None => {
                    t.insert(Spanned::new(key_span, Cow::Owned(k.clone())), value);
                }
            }
            true
        }
        (DeValue::Array(a), Step::Index(i)) => match a.get_mut(*i) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        },
        _ => false,
    }
}

fn remove(doc: &mut Spanned<DeValue<'_>>, path: &[Step]) {
    let Some((Step::Key(key), parent)) = path.split_last() else {
        return;
    };
    if let Some(DeValue::Table(t)) = node_mut(doc, parent).map(Spanned::get_mut) {
        t.remove(key.as_str());
    }
}

/// True when the diagnostic's key path is `patched`, or inside it.
pub(crate) fn is_about(message: &str, prefix: &str, patched: &str) -> bool {
    let full = format!("{prefix}.{patched}");
    let path = message.split_once(": ").map_or(message, |(p, _)| p);
    path == full
        || path
            .strip_prefix(full.as_str())
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}
