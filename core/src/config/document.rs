//! A TOML file a component reads besides the pipeline file (a shop, a rule set): parsed with
//! positions, so that its problems are reported with the file, line, column and key path.

use std::ops::Range;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::build::{de_error, span_of};
use super::diagnostic::Diagnostic;

/// A parsed TOML document that keeps the position of every key and value.
pub struct Document<'a> {
    text: &'a str,
    root: Spanned<DeValue<'a>>,
}

impl<'a> Document<'a> {
    /// Parses `text`; syntax errors come back as diagnostics.
    pub fn parse(text: &'a str) -> Result<Self, Vec<Diagnostic>> {
        let (root, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            return Err(errors
                .iter()
                .map(|e| {
                    let d = Diagnostic::error(format!("invalid TOML: {}", e.message().trim()));
                    match e.span() {
                        Some(span) => d.at(span),
                        None => d,
                    }
                })
                .collect());
        }
        let root = Spanned::new(root.span(), DeValue::Table(root.into_inner()));
        Ok(Self { text, root })
    }

    /// Deserializes the whole document. Unknown keys, wrong types and bad values come back as a
    /// diagnostic naming the key path (`services[2].slots`), with a suggestion for misspelt keys.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        T::deserialize(self.root.clone().into_deserializer()).map_err(|err| {
            let mut d = de_error(&err, &self.root, "");
            if let Some(rest) = d.message.strip_prefix('.') {
                d.message = rest.to_string();
            }
            if let Some(rest) = d.message.strip_prefix(": ") {
                d.message = rest.to_string();
            }
            d
        })
    }

    /// An error about the value at `path` (`services[2].calls[0].service`), pointing at it, or at
    /// the whole document when it is absent.
    pub fn error(&self, path: &str, message: impl std::fmt::Display) -> Diagnostic {
        let span = self.span(path);
        let message = if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        Diagnostic::error(message).at(span)
    }

    /// The byte range of the value at `path`, or of the document.
    pub fn span(&self, path: &str) -> Range<usize> {
        span_of(&self.root, path).unwrap_or_else(|| self.root.span())
    }

    /// One-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// `FILE:LINE:COL: MESSAGE`, for reporting a problem of this document inside a diagnostic
    /// of another file.
    pub fn locate(&self, file: &str, d: &Diagnostic) -> String {
        let (line, col) = self.line_col(d.span.as_ref().map_or(0, |s| s.start));
        format!("{file}:{line}:{col}: {}", d.message)
    }
}
