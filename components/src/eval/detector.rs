//! The detector an evaluation replays through: an `hstree` processor's, read from a pipeline
//! file the way `tracescale run` reads it.

use std::path::Path;

use super::EvalError;
use crate::processors::hstree::{Detector, HsTreeConfig};

/// Builds the detector of processor `id` from a pipeline file, which must be of type `hstree`
/// (its `type` key, or the part of the id before `/`).
pub fn detector_from_file(path: &Path, id: &str) -> Result<Detector, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    detector_from_str(path, &text, id)
}

/// [`detector_from_file`] on the file's text.
pub fn detector_from_str(path: &Path, text: &str, id: &str) -> Result<Detector, EvalError> {
    let fail = |message: String| EvalError::Processor {
        path: path.to_path_buf(),
        message,
    };
    // The engine's own reading: `${env:…}` expands as it does for `tracescale run`.
    let expanded = tracescale_core::config::component_table(
        path,
        text,
        tracescale_core::component::ComponentKind::Processor,
        id,
    )
    .map_err(|e| fail(e.render(false)))?;
    let Some(table) = expanded else {
        let root = toml::from_str::<toml::Table>(text).map_err(|e| fail(e.to_string()))?;
        let processors = root.get("processors").and_then(toml::Value::as_table);
        let known: Vec<&str> = processors
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        return Err(fail(format!(
            "no processor `{id}`; the file has: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    let mut table = table;
    let type_name = match table.remove("type") {
        Some(toml::Value::String(t)) => t,
        Some(_) => return Err(fail(format!("processor `{id}`: `type` must be a string"))),
        None => id.split('/').next().unwrap_or(id).to_string(),
    };
    if type_name != "hstree" {
        return Err(fail(format!(
            "processor `{id}` is of type `{type_name}`; eval needs an `hstree` processor"
        )));
    }
    let config: HsTreeConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e| fail(format!("processor `{id}`: {e}")))?;
    let problems = config.problems();
    if !problems.is_empty() {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("`{}` {}", p.key, p.message))
            .collect();
        return Err(fail(format!("processor `{id}`: {}", list.join("; "))));
    }
    Detector::new(&config).map_err(|e| fail(format!("processor `{id}`: `{}` {}", e.key, e.message)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_processor_must_exist_and_be_an_hstree() {
        let path = Path::new("p.toml");
        let text = "[processors.latency_rules]\n[processors.\"hstree/a\"]\ntrain_size = 10\n\
                    [processors.b]\ntype = \"hstree\"\ntrees = 0\n";
        assert!(detector_from_str(path, text, "hstree/a").is_ok());
        let err = detector_from_str(path, text, "nope").unwrap_err();
        assert!(err.is_config());
        assert!(err.to_string().contains("no processor `nope`"), "{err}");
        let err = detector_from_str(path, text, "latency_rules").unwrap_err();
        assert!(err.to_string().contains("needs an `hstree`"), "{err}");
        let err = detector_from_str(path, text, "b").unwrap_err();
        assert!(err.to_string().contains("`trees`"), "{err}");
    }

    #[test]
    fn env_references_expand_as_for_a_run() {
        let path = Path::new("p.toml");
        // A default makes the test independent of the environment it runs in.
        let text = "[processors.hstree]
trees = \"${env:TRACESCALE_EVAL_TEST_UNSET_TREES:-0}\"\n";
        let err = detector_from_str(path, text, "hstree").unwrap_err();
        assert!(
            err.to_string().contains("`trees`"),
            "expanded to 0 and refused: {err}"
        );
        let text = "[processors.hstree]
trees = \"${env:TRACESCALE_EVAL_TEST_UNSET_TREES:-8}\"\n";
        assert!(detector_from_str(path, text, "hstree").is_ok());
        let text = "[processors.hstree]
trees = \"${env:TRACESCALE_EVAL_TEST_UNSET_TREES}\"\n";
        let err = detector_from_str(path, text, "hstree").unwrap_err();
        assert!(
            err.to_string().contains("TRACESCALE_EVAL_TEST_UNSET_TREES"),
            "{err}"
        );
    }
}
