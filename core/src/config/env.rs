//! `${env:NAME}` and `${env:NAME:-default}` in string values.
//!
//! Expansion runs on the parsed document, not on the raw text, so every span still points at the
//! file as written. A string that is exactly one reference takes the type of what it expands to
//! (`trees = "${env:TREES}"` with `TREES=25` is the integer 25), as the Collector does.

use std::borrow::Cow;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{Diagnostic, syntax_error};

/// Where expansion reads variables from; tests inject a map.
pub(crate) trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub(crate) struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Expands every string in `value`, collecting one diagnostic per bad reference.
pub(crate) fn expand(value: &mut Spanned<DeValue<'_>>, env: &dyn Env, out: &mut Vec<Diagnostic>) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) => {
            if !s.contains('$') {
                return;
            }
            match expand_str(s, env) {
                Ok(Expanded { text, whole }) => {
                    let typed = if whole { typed_scalar(&text) } else { None };
                    *value.get_mut() = typed.unwrap_or(DeValue::String(Cow::Owned(text)));
                }
                Err(message) => out.push(Diagnostic::error(message).at(span)),
            }
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                expand(item, env, out);
            }
        }
        DeValue::Table(table) => {
            for (_, item) in table.iter_mut() {
                expand(item, env, out);
            }
        }
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => {}
    }
}

struct Expanded {
    text: String,
    /// The string was exactly one reference.
    whole: bool,
}

fn expand_str(input: &str, env: &dyn Env) -> Result<Expanded, String> {
    let mut text = String::with_capacity(input.len());
    let mut rest = input;
    let mut references = 0;
    let mut literal = false;
    while let Some(pos) = rest.find('$') {
        text.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            text.push_str("${");
            literal = true;
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unterminated reference in {input:?}: missing `}}`"))?;
            text.push_str(&resolve(&tail[..end], env)?);
            references += 1;
            rest = &tail[end + 1..];
        } else {
            text.push('$');
            literal = true;
            rest = &after[1..];
        }
    }
    text.push_str(rest);
    let whole = references == 1 && !literal && input.starts_with("${") && input.ends_with('}');
    Ok(Expanded { text, whole })
}

fn resolve(reference: &str, env: &dyn Env) -> Result<String, String> {
    let Some(body) = reference.strip_prefix("env:") else {
        return Err(format!(
            "unsupported reference `${{{reference}}}`: write `${{env:NAME}}` or `${{env:NAME:-default}}`"
        ));
    };
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    let valid = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !valid {
        return Err(format!(
            "invalid environment variable name {name:?} in `${{{reference}}}`"
        ));
    }
    match (env.var(name), default) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (give a default with `${{env:{name}:-value}}`)"
        )),
    }
}

/// The integer, float or boolean that `text` spells, if it spells one.
///
/// toml's parsed values borrow their text and cannot be built from an owned string, so the few
/// bytes of such a value are leaked: a config is loaded once per process, and only whole-value
/// references to numbers and booleans take this path.
fn typed_scalar(text: &str) -> Option<DeValue<'static>> {
    if text.parse::<bool>().is_err() && text.parse::<f64>().is_err() && text.parse::<i64>().is_err()
    {
        return None;
    }
    let text: &'static str = Box::leak(text.to_owned().into_boxed_str());
    match DeValue::parse(text).ok()?.into_inner() {
        v @ (DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_)) => Some(v),
        _ => None,
    }
}

/// Parses a TOML document and expands its `${env:…}` references from the process environment:
/// the document, or the diagnostics of its syntax errors, else of its references.
pub(crate) fn parse_expanded(text: &str) -> Result<Spanned<DeValue<'_>>, Vec<Diagnostic>> {
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors.iter().map(syntax_error).collect());
    }
    let mut root = Spanned::new(root.span(), DeValue::Table(root.into_inner()));
    let mut diags = Vec::new();
    expand(&mut root, &ProcessEnv, &mut diags);
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    fn env() -> MapEnv {
        MapEnv(HashMap::from([
            ("HOST", "tempo"),
            ("TREES", "25"),
            ("EMPTY", ""),
        ]))
    }

    #[test]
    fn expands_inside_strings() {
        let e = expand_str("http://${env:HOST}:4317", &env()).unwrap();
        assert_eq!(e.text, "http://tempo:4317");
        assert!(!e.whole);
    }

    #[test]
    fn defaults_and_escapes() {
        assert_eq!(expand_str("${env:NOPE:-x}", &env()).unwrap().text, "x");
        assert_eq!(expand_str("${env:EMPTY:-x}", &env()).unwrap().text, "");
        assert_eq!(
            expand_str("$${env:HOST}", &env()).unwrap().text,
            "${env:HOST}"
        );
        assert_eq!(expand_str("cost $5", &env()).unwrap().text, "cost $5");
    }

    #[test]
    fn errors_name_the_variable() {
        let err = expand_str("${env:NOPE}", &env()).err().unwrap();
        assert!(err.contains("NOPE is not set"), "{err}");
        assert!(expand_str("${file:/x}", &env()).is_err());
        assert!(expand_str("${env:HOST", &env()).is_err());
        assert!(expand_str("${env:1X}", &env()).is_err());
    }

    #[test]
    fn whole_reference_takes_the_type_of_its_value() {
        let mut v = DeValue::parse("\"${env:TREES}\"").unwrap();
        let mut diags = Vec::new();
        expand(&mut v, &env(), &mut diags);
        assert!(diags.is_empty());
        assert!(v.get_ref().is_integer());
    }
}
