//! What a factory is handed, and how its errors become positioned diagnostics.

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::DeValue;

use super::diagnostic::{Diagnostic, suggest};
use super::env;
use super::recover::{self, Fill};
use super::{ComponentId, ConfigError};
use crate::component::{ComponentKind, Exporter, Processor, Receiver};
use crate::registry::{Build, ComponentFactory};

/// A component's config could not be built; the diagnostics say where and why.
#[derive(Debug, Clone)]
pub struct BuildError {
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl BuildError {
    /// The diagnostics, with key paths and positions.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let messages: Vec<_> = self
            .diagnostics
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        f.write_str(&messages.join("; "))
    }
}

impl std::error::Error for BuildError {}

/// What a factory is handed: the component's id and its table, with positions.
///
/// Parse the table with [`BuildContext::parse`] into a `#[serde(deny_unknown_fields)]` struct;
/// report semantic problems with [`BuildContext::invalid`] so that they point at the key.
pub struct BuildContext<'a> {
    id: &'a ComponentId,
    kind: ComponentKind,
    table: &'a Spanned<DeValue<'a>>,
    dir: Option<&'a Path>,
    warnings: RefCell<Vec<Diagnostic>>,
    /// The placeholders [`BuildContext::parse`] repairs mistakes with.
    fill: Fill,
    /// Mistakes `parse` found and repaired, so that the component's own checks could run.
    recovered: RefCell<Vec<Diagnostic>>,
    /// Key paths whose values `parse` replaced with placeholders.
    patched: RefCell<Vec<String>>,
}

impl<'a> BuildContext<'a> {
    pub(crate) fn new(
        id: &'a ComponentId,
        kind: ComponentKind,
        table: &'a Spanned<DeValue<'a>>,
    ) -> Self {
        Self {
            id,
            kind,
            table,
            dir: None,
            warnings: RefCell::new(Vec::new()),
            fill: Fill::Small,
            recovered: RefCell::new(Vec::new()),
            patched: RefCell::new(Vec::new()),
        }
    }

    /// A fresh context for the same table, repairing with other placeholders.
    fn refilled(&self) -> Self {
        Self {
            dir: self.dir,
            fill: Fill::Large,
            ..Self::new(self.id, self.kind, self.table)
        }
    }

    /// The same context, for a component of the pipeline file at `file`.
    pub(crate) fn in_file(mut self, file: &'a Path) -> Self {
        self.dir = file.parent();
        self
    }

    /// The directory of the pipeline file the component is in, against which it resolves the
    /// relative paths its config names (`None` when it is built outside a file, and empty for a
    /// file named without a directory: the working directory).
    pub fn dir(&self) -> Option<&Path> {
        self.dir
    }

    /// The component's id.
    pub fn id(&self) -> &ComponentId {
        self.id
    }

    /// Receiver, processor or exporter.
    pub fn kind(&self) -> ComponentKind {
        self.kind
    }

    /// Deserializes the component's table. Unknown keys, wrong types and bad values come back as
    /// diagnostics naming the key path, with a suggestion for misspelt keys; all of them, not
    /// only the first.
    ///
    /// When the table has mistakes that could be repaired (an unknown key left out, a value of
    /// the wrong type replaced by a placeholder), this returns the repaired value so that the
    /// component's own checks can report what else is wrong; the build then fails with every
    /// diagnostic, and the component is never run.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, BuildError> {
        let recovered = recover::deserialize_all::<T>(self.table, &self.prefix(), self.fill);
        match recovered.value {
            Some(value) => {
                if !recovered.diagnostics.is_empty() {
                    self.recovered.borrow_mut().extend(recovered.diagnostics);
                    self.patched.borrow_mut().extend(recovered.patched);
                }
                Ok(value)
            }
            None if recovered.diagnostics.is_empty() => {
                // Only when the repairs ran out: report serde's own first error.
                let err = T::deserialize(self.table.clone().into_deserializer()).err();
                Err(BuildError {
                    diagnostics: err
                        .map(|e| de_error(&e, self.table, &self.prefix()))
                        .into_iter()
                        .collect(),
                })
            }
            None => Err(BuildError {
                diagnostics: recovered.diagnostics,
            }),
        }
    }

    /// An error about the value at `key` (a path inside the component's table, such as `max` or
    /// `rules[2].window`). It points at that key, or at the table when the key is absent.
    pub fn invalid(&self, key: &str, message: impl fmt::Display) -> BuildError {
        BuildError {
            diagnostics: vec![self.diagnostic_at(Diagnostic::error(String::new()), key, message)],
        }
    }

    /// A warning about the value at `key`; the file still loads.
    pub fn warn(&self, key: &str, message: impl fmt::Display) {
        let d = self.diagnostic_at(Diagnostic::warning(String::new()), key, message);
        self.warnings.borrow_mut().push(d);
    }

    /// Collects several errors into one.
    pub fn errors(errors: impl IntoIterator<Item = BuildError>) -> BuildError {
        BuildError {
            diagnostics: errors.into_iter().flat_map(|e| e.diagnostics).collect(),
        }
    }

    pub(crate) fn take_warnings(&self) -> Vec<Diagnostic> {
        self.warnings.take()
    }

    fn prefix(&self) -> String {
        format!("{}.{}", self.kind.section(), self.id)
    }

    fn diagnostic_at(
        &self,
        mut d: Diagnostic,
        key: &str,
        message: impl fmt::Display,
    ) -> Diagnostic {
        let path = if key.is_empty() {
            self.prefix()
        } else {
            format!("{}.{key}", self.prefix())
        };
        d.message = format!("{path}: {message}");
        d.span = Some(span_of(self.table, key).unwrap_or_else(|| self.table.span()));
        d
    }
}

/// Turns a toml/serde error into a diagnostic with a key path and, for unknown keys and values,
/// the closest valid one.
pub(crate) fn de_error(
    err: &toml::de::Error,
    root: &Spanned<DeValue<'_>>,
    prefix: &str,
) -> Diagnostic {
    let span = err.span().unwrap_or_else(|| root.span());
    let mut path = prefix.to_string();
    path_at(root, &span, &mut path);
    let message = err.message().trim();
    let ticks = backticked(message);
    let mut d = if let Some(rest) = message.strip_prefix("unknown field") {
        let _ = rest;
        let (unknown, valid) = ticks.split_first().map_or(("", &[][..]), |(u, v)| (*u, v));
        let path = path.strip_suffix(&format!(".{unknown}")).unwrap_or(&path);
        unknown_choice(
            format!("{path}: unknown key `{unknown}`"),
            unknown,
            valid,
            "valid keys",
        )
    } else if message.starts_with("unknown variant") {
        let (unknown, valid) = ticks.split_first().map_or(("", &[][..]), |(u, v)| (*u, v));
        unknown_choice(
            format!("{path}: unknown value `{unknown}`"),
            unknown,
            valid,
            "valid values",
        )
    } else if message.starts_with("missing field") {
        let key = ticks.first().copied().unwrap_or("?");
        Diagnostic::error(format!("{path}: missing required key `{key}`"))
            .with_label(format!("add `{key} = …` to this table"))
    } else {
        Diagnostic::error(format!("{path}: {}", plain_words(message)))
    };
    d.span = Some(span);
    d
}

/// serde's "invalid type: string \"ten\", expected usize" in the words of the file's reader:
/// "expected a whole number, found the string \"ten\"". Other messages pass unchanged.
pub(crate) fn plain_words(message: &str) -> String {
    let (rest, out_of_range) = match (
        message.strip_prefix("invalid type: "),
        message.strip_prefix("invalid value: "),
    ) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => return message.to_string(),
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let (expected, found) = (expected.trim(), found.trim());
    // A negative number where only 0 or more fits says so; a number too large names the bound.
    let negative = found.contains("`-");
    format!(
        "expected {}, found {}",
        expected_words(expected, out_of_range, negative),
        found_words(found)
    )
}

fn expected_words(expected: &str, out_of_range: bool, negative: bool) -> String {
    let unsigned = |max: &str| {
        if !out_of_range {
            "a whole number".to_string()
        } else if negative || max.is_empty() {
            "a whole number (0 or more)".to_string()
        } else {
            format!("a whole number from 0 to {max}")
        }
    };
    match expected {
        "u8" => unsigned("255"),
        "u16" => unsigned("65535"),
        "u32" => unsigned("4294967295"),
        "u64" | "u128" | "usize" => unsigned(""),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a boolean" => "true or false".to_string(),
        "a sequence" => "a list".to_string(),
        "a map" => "a table".to_string(),
        "socket address" => "an address such as \"127.0.0.1:4317\"".to_string(),
        "path string" => "a path".to_string(),
        "a character" | "char" => "a single character".to_string(),
        e if e.starts_with("struct ") => "a table".to_string(),
        e if e.starts_with("enum ") => "a string".to_string(),
        e => e.to_string(),
    }
}

fn found_words(found: &str) -> String {
    let ticked = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .map(|v| v.trim().trim_matches('`').to_string())
    };
    if let Some(s) = found.strip_prefix("string ") {
        return format!("the string {s}");
    }
    if let Some(v) = ticked("integer ")
        .or_else(|| ticked("floating point "))
        .or_else(|| ticked("boolean "))
    {
        return v;
    }
    match found {
        "sequence" => "a list".to_string(),
        "map" => "a table".to_string(),
        f => f.to_string(),
    }
}

fn unknown_choice(message: String, unknown: &str, valid: &[&str], what: &str) -> Diagnostic {
    let d = Diagnostic::error(message);
    let d = match suggest(unknown, valid.iter().copied()) {
        Some(s) => d.with_label(format!("did you mean `{s}`?")),
        None => d.with_label("not recognised"),
    };
    if valid.is_empty() {
        d
    } else {
        d.with_note(format!("{what}: {}", valid.join(", ")))
    }
}

/// The substrings between backticks: serde names fields and variants that way.
fn backticked(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// Appends to `path` the keys leading to the value (or key) at `span`.
///
/// The search visits every node rather than descending by container spans: toml gives a table
/// opened by a `[header]`, and an array of `[[tables]]`, spans that need not cover their
/// contents, while leaves and keys always have exact spans.
pub(crate) fn path_at(value: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &mut String) {
    let mut found = None;
    find(value, span.start, &mut String::new(), &mut found);
    if let Some(p) = found {
        path.push_str(&p);
    }
}

/// Depth-first: records the path of the deepest node whose own span, or whose key's span,
/// contains `pos`.
fn find(
    value: &Spanned<DeValue<'_>>,
    pos: usize,
    current: &mut String,
    found: &mut Option<String>,
) {
    let contains = |r: Range<usize>| r.start <= pos && pos < r.end.max(r.start + 1);
    let len = current.len();
    match value.get_ref() {
        DeValue::Table(table) => {
            for (key, child) in table.iter() {
                current.push('.');
                current.push_str(key.get_ref());
                if contains(key.span()) || contains(child.span()) {
                    *found = Some(current.clone());
                }
                find(child, pos, current, found);
                current.truncate(len);
            }
        }
        DeValue::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                current.push_str(&format!("[{i}]"));
                if contains(child.span()) {
                    *found = Some(current.clone());
                }
                find(child, pos, current, found);
                current.truncate(len);
            }
        }
        _ => {}
    }
}

/// The span of the value at `path` (`rules[2].window`), if it is present.
pub(crate) fn span_of(root: &Spanned<DeValue<'_>>, path: &str) -> Option<Range<usize>> {
    let mut current = root;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (key, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            current = current.get_ref().as_table()?.get(key)?;
        }
        for index in indexes
            .split(['[', ']'])
            .filter(|s| !s.is_empty())
            .map(str::parse::<usize>)
        {
            current = current.get_ref().as_array()?.get(index.ok()?)?;
        }
    }
    Some(current.span())
}

/// A component built outside a pipeline file.
pub enum Built {
    /// A receiver.
    Receiver(Box<dyn Receiver>),
    /// A processor.
    Processor(Box<dyn Processor>),
    /// An exporter.
    Exporter(Box<dyn Exporter>),
}

/// Builds one component from a TOML table, outside any pipeline file: for tests, benches and
/// tools that embed a component.
pub fn build_from_toml(
    factory: &'static ComponentFactory,
    id: &str,
    toml_text: &str,
) -> Result<Built, ConfigError> {
    let path = Path::new("<inline>");
    let fail = |diags| ConfigError::new(path, toml_text.to_string(), diags);
    let id = ComponentId::parse(id).map_err(|m| fail(vec![Diagnostic::error(m)]))?;
    let value = env::parse_expanded(toml_text).map_err(fail)?;
    let ctx = BuildContext::new(&id, factory.kind(), &value);
    build_component(factory, &ctx).map_err(|e| fail(e.diagnostics))
}

/// Builds a component of any kind through its factory.
///
/// When [`BuildContext::parse`] repaired mistakes, the component is built a second time with
/// other placeholders, and only what its own checks report both times, about keys that were
/// not repaired, is kept: a complaint caused by a placeholder would mislead.
pub(crate) fn build_component(
    factory: &ComponentFactory,
    ctx: &BuildContext<'_>,
) -> Result<Built, BuildError> {
    let first = build_once(factory, ctx);
    let structural = ctx.recovered.take();
    if structural.is_empty() {
        return first;
    }
    let patched = ctx.patched.take();
    let prefix = ctx.prefix();
    let again = ctx.refilled();
    let second = build_once(factory, &again);
    let keep = |d: &Diagnostic, other: &[Diagnostic]| {
        other.contains(d)
            && !patched
                .iter()
                .any(|p| recover::is_about(&d.message, &prefix, p))
    };
    let errors = |r: Result<Built, BuildError>| r.err().map(|e| e.diagnostics).unwrap_or_default();
    let (first, second) = (errors(first), errors(second));
    let (warnings, other_warnings) = (ctx.take_warnings(), again.take_warnings());
    ctx.warnings
        .borrow_mut()
        .extend(warnings.into_iter().filter(|w| keep(w, &other_warnings)));
    let mut diagnostics = structural;
    diagnostics.extend(first.into_iter().filter(|d| keep(d, &second)));
    Err(BuildError { diagnostics })
}

fn build_once(factory: &ComponentFactory, ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    Ok(match factory.build {
        Build::Receiver(f) => Built::Receiver(f(ctx)?),
        Build::Processor(f) => Built::Processor(f(ctx)?),
        Build::Exporter(f) => Built::Exporter(f(ctx)?),
    })
}
