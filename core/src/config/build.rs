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
    /// diagnostics naming the key path, with a suggestion for misspelt keys.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, BuildError> {
        T::deserialize(self.table.clone().into_deserializer()).map_err(|err| BuildError {
            diagnostics: vec![de_error(&err, self.table, &self.prefix())],
        })
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
        Diagnostic::error(format!("{path}: {message}"))
    };
    d.span = Some(span);
    d
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
pub(crate) fn build_component(
    factory: &ComponentFactory,
    ctx: &BuildContext<'_>,
) -> Result<Built, BuildError> {
    Ok(match factory.build {
        Build::Receiver(f) => Built::Receiver(f(ctx)?),
        Build::Processor(f) => Built::Processor(f(ctx)?),
        Build::Exporter(f) => Built::Exporter(f(ctx)?),
    })
}
