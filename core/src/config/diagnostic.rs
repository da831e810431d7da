//! Config diagnostics: collected while loading, rendered with file:line:col, the source line and
//! a caret.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use codespan_reporting::diagnostic::{Diagnostic as Rendered, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing about a deliberate choice; not counted as a warning, not refused by
    /// `validate --strict`.
    Note,
    /// The file still loads.
    Warning,
    /// The file does not load.
    Error,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The message, starting with the key path: `receivers.otlp.grcp: unknown key`.
    pub message: String,
    /// Where in the file, as a byte range, when known.
    pub span: Option<Range<usize>>,
    /// A short text shown at the caret: `did you mean `grpc`?`.
    pub label: Option<String>,
    /// Extra lines: the valid choices, how to fix it.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// An error with a message and no position yet.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            message: message.into(),
            span: None,
            label: None,
            notes: Vec::new(),
        }
    }

    /// A warning with a message and no position yet.
    pub fn warning(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(message)
        }
    }

    /// A note with a message and no position yet.
    pub fn note(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Note,
            ..Self::error(message)
        }
    }

    /// Points the diagnostic at a byte range of the file.
    pub fn at(mut self, span: Range<usize>) -> Self {
        self.span = Some(span);
        self
    }

    /// Sets the text shown at the caret.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Adds a note line.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A config file that did not load, with every problem found in it.
#[derive(Debug, Clone)]
pub struct ConfigError {
    path: PathBuf,
    source: String,
    diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    pub(crate) fn new(path: &Path, source: String, diagnostics: Vec<Diagnostic>) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
            diagnostics,
        }
    }

    /// A file that could not be read.
    pub fn cannot_read(path: &Path, err: &std::io::Error) -> Self {
        Self::new(
            path,
            String::new(),
            vec![Diagnostic::error(format!(
                "cannot read {}: {err}",
                path.display()
            ))],
        )
    }

    /// The file that failed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every diagnostic, errors and warnings, in file order.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// How many of the diagnostics are errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// How many of the diagnostics are warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }

    /// Renders every diagnostic as a compiler would: file:line:col, the line, a caret.
    pub fn render(&self, color: bool) -> String {
        render(&self.path, &self.source, &self.diagnostics, color)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.error_count();
        write!(
            f,
            "{} has {errors} error{}",
            self.path.display(),
            if errors == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ConfigError {}

/// Renders diagnostics against the file they are about.
pub(crate) fn render(path: &Path, source: &str, diagnostics: &[Diagnostic], color: bool) -> String {
    let file = SimpleFile::new(path.display().to_string(), source);
    let config = term::Config::default();
    let mut buffer = if color {
        termcolor::Buffer::ansi()
    } else {
        termcolor::Buffer::no_color()
    };
    for d in diagnostics {
        let mut rendered = match d.severity {
            Severity::Error => Rendered::error(),
            Severity::Warning => Rendered::warning(),
            Severity::Note => Rendered::note(),
        }
        .with_message(&d.message)
        .with_notes(d.notes.clone());
        if let Some(span) = &d.span {
            let span = clamp(span.clone(), source.len());
            let label = Label::primary((), span);
            let label = match &d.label {
                Some(text) => label.with_message(text),
                None => label,
            };
            rendered = rendered.with_labels(vec![label]);
        } else if let Some(text) = &d.label {
            rendered = rendered.with_notes(vec![text.clone()]);
        }
        // Writing into an in-memory buffer only fails on a span outside the file, which `clamp`
        // rules out; fall back to the bare message rather than lose the diagnostic.
        if term::emit_to_write_style(&mut buffer, &config, &file, &rendered).is_err() {
            buffer_push(&mut buffer, &format!("error: {}\n", d.message));
        }
    }
    String::from_utf8_lossy(buffer.as_slice()).into_owned()
}

fn buffer_push(buffer: &mut termcolor::Buffer, text: &str) {
    use std::io::Write;
    let _ = buffer.write_all(text.as_bytes());
}

fn clamp(span: Range<usize>, len: usize) -> Range<usize> {
    let start = span.start.min(len);
    start..span.end.clamp(start, len)
}

/// The closest candidate to `input`, when one is close enough to be a likely typo.
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input_lower = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                c,
                strsim::jaro_winkler(&input_lower, &c.to_ascii_lowercase()),
            )
        })
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// A TOML syntax error, at its position.
pub(crate) fn syntax_error(err: &toml::de::Error) -> Diagnostic {
    let d = Diagnostic::error(format!("invalid TOML: {}", err.message().trim()));
    match err.span() {
        Some(span) => d.at(span),
        None => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["grpc", "http", "max_request_size"];
        assert_eq!(suggest("grcp", keys), Some("grpc"));
        assert_eq!(suggest("max_request_sz", keys), Some("max_request_size"));
        assert_eq!(suggest("zzz", keys), None);
    }
}
