//! One bad pipeline file per kind of error, its rendered diagnostics snapshotted.

use std::path::Path;

#[test]
fn bad_files_render_precise_diagnostics() {
    let dir = Path::new("tests/fixtures/config");
    let mut files: Vec<_> = std::fs::read_dir(crate::util::repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    for name in files {
        // A relative path keeps the snapshots free of this machine's directories.
        let path = dir.join(&name);
        let full = crate::util::repo().join(&path);
        let text = std::fs::read_to_string(&full).unwrap();
        let err = match tracescale_core::config::load_str(&path, &text) {
            Ok(_) => panic!("{} loaded, but it is a bad file", path.display()),
            Err(err) => err,
        };
        let stem = Path::new(&name)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        insta::assert_snapshot!(stem, err.render(false));
    }
}

#[test]
fn warnings_point_at_the_key_that_causes_them() {
    let dir = Path::new("tests/fixtures/warnings");
    let mut files: Vec<_> = std::fs::read_dir(crate::util::repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for name in files {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(crate::util::repo().join(&path)).unwrap();
        let config = match tracescale_core::config::load_str(&path, &text) {
            Ok(config) => config,
            Err(err) => panic!("{} does not load:\n{}", path.display(), err.render(false)),
        };
        assert!(
            !config.warnings.is_empty(),
            "{} loads without a warning",
            path.display()
        );
        let stem = Path::new(&name)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        insta::assert_snapshot!(format!("warning_{stem}"), config.warnings);
    }
}

/// A first pipeline with eight mistakes of four kinds (unknown keys, values of the wrong type,
/// a target of an unknown kind, an `inhibited_by` naming no rule): one `validate` shows them all,
/// where it used to take five rounds of fixing and running again.
#[test]
fn eight_mistakes_are_all_reported_in_one_run() {
    let path = Path::new("tests/fixtures/rounds/eight_mistakes.toml");
    let text = std::fs::read_to_string(crate::util::repo().join(path)).unwrap();
    let err = match tracescale_core::config::load_str(path, &text) {
        Ok(_) => panic!("{} loaded, but it has eight mistakes", path.display()),
        Err(err) => err,
    };
    let messages: Vec<&str> = err
        .diagnostics()
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.as_str())
        .collect();
    let expected = [
        "receivers.otlp: unknown key `grcp`",
        "processors.hstree: unknown key `window`",
        "processors.hstree.trees: expected a whole number, found the string \"ten\"",
        "processors.latency_rules.rules[0]: unknown key `threshold`",
        "processors.latency_rules.rules[0].above: invalid duration \"300\"",
        "processors.latency_rules.rules[0].inhibited_by[0]: no rule is named \"payments-db-slw\"",
        "processors.latency_rules.rules[0].scale.target: unknown kind \"deploy\"",
        "processors.latency_rules.rules[1].count: expected a whole number, found the string \"twenty\"",
    ];
    assert_eq!(messages.len(), expected.len(), "{messages:#?}");
    for (message, expected) in messages.iter().zip(expected) {
        assert!(
            message.starts_with(expected),
            "{message}\ndoes not start with\n{expected}"
        );
    }
    insta::assert_snapshot!("eight_mistakes", err.render(false));

    // The command says so once, naming the file once.
    let out = crate::util::run_to_end(
        crate::util::bin().args(["validate", "tests/fixtures/rounds/eight_mistakes.toml"]),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tests/fixtures/rounds/eight_mistakes.toml: invalid: 8 errors\n"
    );
}

#[test]
fn strict_validation_fails_on_warnings() {
    let file = "tests/fixtures/warnings/trace_exporter_after_consumed_traces.toml";
    let limit = std::time::Duration::from_secs(30);
    let out = crate::util::run_to_end(crate::util::bin().args(["validate", file]), limit);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{file}: valid, 1 warning\n")
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exporter \"otlp/tempo\" takes traces, but processor \"latency_rules\" is configured not to pass traces on"),
        "{stderr}"
    );
    let out = crate::util::run_to_end(
        crate::util::bin().args(["validate", "--strict", file]),
        limit,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{file}: invalid under --strict: 1 warning\n")
    );
}
