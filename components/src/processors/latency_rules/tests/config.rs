//! The config diagnostics: every mistake named at its key path, every README example built.

use super::*;

const FULL: &str = r#"
interval = "1s"
allowed_lateness = "5s"
stale_after = "1m"
passthrough = true
max_operations = 1000
max_window_samples = 10000

[[rules]]
name = "payments-db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "300ms"
count = 20
window = "10s"
scale = { target = "statefulset/payments-db", namespace = "shop", step = 1, max = 5 }

[[rules]]
name = "checkout-p99"
service = "checkout"
operation = "POST *"
attributes = { "http.route" = "/cart" }
span_kind = "server"
percentile = 99
above = "800ms"
min_samples = 50
window = "30s"
scale = { api_version = "argoproj.io/v1alpha1", kind = "Rollout", name = "checkout", namespace = "shop", to = 6, min = 2, max = 10 }
scale_down = { below = "200ms", for = "5m", step = 1 }
"#;

#[test]
fn the_full_example_builds() {
    let p = build(FULL).unwrap();
    assert_eq!(p.tick_interval(), Some(Duration::from_secs(1)));
    build("").unwrap();
}

const GOOD_RULE: &str = r#"
[[rules]]
name = "a"
service = "svc"
operation = "op"
above = "300ms"
count = 5
window = "10s"
scale = { target = "deployment/svc", namespace = "shop" }
"#;

#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    let e = build_error(&GOOD_RULE.replace("window =", "windw ="));
    // The caret points at the key: line 8, column 1 of the table.
    assert!(e.contains("<inline>:8:1"), "{e}");
    assert!(e.contains("unknown key `windw`"), "{e}");
    assert!(e.contains("did you mean `window`"), "{e}");
    let e =
        build_error(&GOOD_RULE.replace("namespace = \"shop\"", "namespace = \"shop\", stpe = 1"));
    assert!(e.contains("unknown key `stpe`"), "{e}");
    let e = build_error(&format!("intervl = \"1s\"\n{GOOD_RULE}"));
    assert!(e.contains("unknown key `intervl`"), "{e}");
}

#[test]
fn semantic_errors_name_their_key_path_and_are_all_reported() {
    let text = format!(
        "interval = \"2s\"\n{GOOD_RULE}{}{}{}",
        // rules[1]: empty matchers, window shorter than interval, min > max.
        GOOD_RULE
            .replace("name = \"a\"", "name = \"b\"")
            .replace("service = \"svc\"", "service = \"\"")
            .replace("operation = \"op\"", "operation = \"\"")
            .replace("window = \"10s\"", "window = \"1s\"")
            .replace(
                "namespace = \"shop\"",
                "namespace = \"shop\", min = 5, max = 3"
            ),
        // rules[2]: duplicate name, unknown short kind.
        GOOD_RULE.replace("deployment/svc", "daemonset/svc"),
        // rules[3]: both conditions; scale-down above the threshold.
        GOOD_RULE.replace("name = \"a\"", "name = \"d\"").replace(
            "count = 5",
            "count = 5\npercentile = 99\nscale_down = { below = \"1s\", for = \"1m\" }"
        ),
    );
    let e = build_error(&text);
    for expected in [
        "rules[1].service: must name a service",
        "rules[1].operation: must name an operation",
        "rules[1].window: must be at least `interval` (2s)",
        "rules[1].scale.min: min (5) is greater than max (3)",
        "rules[2].name: duplicate rule name \"a\": rules[0] has it already",
        "rules[2].scale.target: unknown kind \"daemonset\"",
        "rules[3].percentile: set either `count` or `percentile`, not both",
        "rules[3].scale_down.below: must not exceed `above` (300ms)",
    ] {
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
    // Positions: the rendered diagnostic points into the file.
    assert!(e.contains("<inline>:"), "{e}");
}

#[test]
fn more_semantic_errors() {
    for (from, to, expected) in [
        ("count = 5", "", "rules[0]: needs a condition"),
        (
            "count = 5",
            "count = 0",
            "rules[0].count: must be at least 1",
        ),
        (
            "count = 5",
            "count = 20000",
            "rules[0].count: cannot exceed `max_window_samples`",
        ),
        (
            "count = 5",
            "percentile = 0",
            "rules[0].percentile: must be greater than 0",
        ),
        (
            "count = 5",
            "count = 5\nmin_samples = 3",
            "rules[0].min_samples: only applies",
        ),
        (
            "above = \"300ms\"",
            "above = \"0s\"",
            "rules[0].above: must be greater than 0",
        ),
        (
            "target = \"deployment/svc\", ",
            "",
            "rules[0].scale: needs a target",
        ),
        (
            "deployment/svc",
            "deployment",
            "rules[0].scale.target: write it as \"kind/name\"",
        ),
        (
            "target = \"deployment/svc\"",
            "target = \"deployment/svc\", kind = \"Rollout\"",
            "set either `target",
        ),
        (
            "target = \"deployment/svc\"",
            "api_version = \"apps/v1\", kind = \"Deployment\"",
            "the full form needs",
        ),
        (
            "namespace = \"shop\"",
            "namespace = \"\"",
            "rules[0].scale.namespace: must not be empty",
        ),
        (
            "namespace = \"shop\"",
            "namespace = \"shop\", step = 0",
            "rules[0].scale.step: must be at least 1",
        ),
        (
            "namespace = \"shop\"",
            "namespace = \"shop\", step = 1, to = 3",
            "rules[0].scale.to: set either",
        ),
        (
            "namespace = \"shop\"",
            "namespace = \"shop\", to = 30, max = 10",
            "rules[0].scale.to: must lie between",
        ),
        (
            "operation = \"op\"",
            "operation = \"op\"\nattributes = { \"\" = \"x\" }",
            "attribute names must not be empty",
        ),
        (
            "operation = \"op\"",
            "operation = \"op\"\nspan_kind = \"sever\"",
            "did you mean `server`",
        ),
        (
            "window = \"10s\"",
            "window = \"10s\"\nscale_down = { below = \"100ms\", for = \"10ms\" }",
            "rules[0].scale_down.for: must be at least `interval`",
        ),
        (
            "window = \"10s\"",
            "window = \"10 parsecs\"",
            "<inline>:8:10",
        ),
    ] {
        let text = GOOD_RULE.replace(from, to);
        let e = build_error(&text);
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
    for (top, expected) in [
        ("interval = \"1ms\"", "interval: must be at least 10ms"),
        (
            "stale_after = \"100ms\"",
            "stale_after: must be at least `interval`",
        ),
        (
            "max_window_samples = 0",
            "max_window_samples: must be between 1",
        ),
        (
            "max_operations = 1000000",
            "max_operations: must be at most",
        ),
    ] {
        let e = build_error(&format!("{top}\n{GOOD_RULE}"));
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
}

#[test]
fn every_toml_block_of_the_readme_builds() {
    let readme = include_str!("../README.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert_eq!(blocks.len(), 2, "a minimal and a full example");
    for block in blocks {
        let doc: toml::Table = toml::from_str(&block).unwrap();
        let processors = doc["processors"].as_table().unwrap();
        assert_eq!(processors.len(), 1);
        let id = processors.keys().next().unwrap();
        assert!(id.starts_with("latency_rules"));
        // The component's own table: drop its header, and root its rules.
        let quoted = if id.contains('/') {
            format!("\"{id}\"")
        } else {
            id.clone()
        };
        let text = block
            .replace(&format!("[processors.{quoted}]\n"), "")
            .replace(&format!("[[processors.{quoted}.rules]]"), "[[rules]]");
        assert!(!text.contains("[processors"), "{text}");
        if let Err(e) = build_from_toml(factory(), id, &text) {
            panic!("[processors.{id}] does not build:\n{}", e.render(false));
        }
    }
    // Every key of the config tables is documented.
    for key in tracescale_core::config::field_names::<super::super::LatencyRulesConfig>() {
        assert!(
            readme.contains(&format!("| `{key}` |")),
            "{key} is not documented"
        );
    }
}

#[test]
fn short_targets_map_to_their_api_kinds() {
    for short in ["deployment/x", "statefulset/x", "ReplicaSet/x"] {
        build(&GOOD_RULE.replace("deployment/svc", short)).unwrap();
    }
}
