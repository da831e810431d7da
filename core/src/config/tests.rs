use std::path::Path;

use super::env::Env;
use super::load::load_with_env;
use super::*;

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "SINK_PATH" => Some("/tmp/out".into()),
            "RATE" => Some("25".into()),
            _ => None,
        }
    }
}

fn load(text: &str) -> Result<Config, ConfigError> {
    load_with_env(Path::new("pipeline.toml"), text, &NoEnv)
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e
            .diagnostics()
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.message.clone())
            .collect(),
    }
}

const VALID: &str = r#"
[receivers.t_source]
[processors.t_rules]
[exporters.t_sink]
[exporters.cluster]
type = "t_decisions"
queue_size = 8
when_full = "block"

[pipelines.scaling]
receivers = ["t_source"]
processors = ["t_rules"]
exporters = ["t_sink", "cluster"]
"#;

#[test]
fn loads_a_valid_file() {
    let config = load(VALID).unwrap();
    assert_eq!(config.pipelines.len(), 1);
    let p = &config.pipelines[0];
    assert_eq!(p.name, "scaling");
    assert_eq!(p.signals, vec![SignalKind::Traces, SignalKind::Decisions]);
    let cluster = config
        .exporters
        .iter()
        .find(|e| e.id.as_str() == "cluster")
        .unwrap();
    assert_eq!(cluster.factory.type_name, "t_decisions");
    assert_eq!(cluster.queue_size, 8);
    assert_eq!(cluster.when_full, WhenFull::Block);
    assert!(config.warnings.is_empty(), "{}", config.warnings);
    assert_eq!(
        config.service.shutdown_deadline,
        HumanDuration::from_secs(10)
    );
}

#[test]
fn expands_environment_references_with_types() {
    let text = r#"
[receivers.t_source]
rate = "${env:RATE}"
label = "at ${env:SINK_PATH} or ${env:MISSING:-default}"
[exporters.t_sink]
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#;
    load(text).unwrap();
    let errs = errors(&text.replace("${env:RATE}", "${env:NOT_SET}"));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("NOT_SET is not set"), "{errs:?}");
}

#[test]
fn unknown_keys_name_the_path_and_suggest() {
    let errs = errors(
        r#"
[receivers.t_source]
raet = 5
[exporters.t_sink]
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    );
    assert_eq!(errs, vec!["receivers.t_source: unknown key `raet`"]);
    let err = load(
        r#"
[receivers.t_source]
raet = 5
[exporters.t_sink]
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    )
    .err()
    .unwrap();
    let d = &err.diagnostics()[0];
    assert_eq!(d.label.as_deref(), Some("did you mean `rate`?"));
    let rendered = err.render(false);
    assert!(rendered.contains("pipeline.toml:3:1"), "{rendered}");
}

#[test]
fn every_error_is_collected() {
    let errs = errors(
        r#"
[recievers.x]
[receivers.t_source]
rate = "fast"
[receivers.t_nope]
[exporters.t_sink]
[service]
shutdown_deadline = "soon"
[pipelines.p]
receivers = ["t_source", "t_source"]
exporters = ["t_sink", "otlp/tempo"]
"#,
    );
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert!(errs[0].starts_with("unknown top-level key `recievers`"));
    assert!(errs.iter().any(
        |e| e == "receivers.t_source.rate: expected a whole number, found the string \"fast\""
    ));
    assert!(
        errs.iter()
            .any(|e| e.contains("unknown receiver type `t_nope`"))
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("service.shutdown_deadline: invalid duration"))
    );
    assert!(
        errs.iter()
            .any(|e| e == "pipelines.p: lists receiver \"t_source\" twice")
    );
    assert!(errs.iter().any(|e| e
        == "pipelines.p: references exporter \"otlp/tempo\", which is not configured (configured: t_sink)"));
}

#[test]
fn every_mistake_in_one_table_is_reported_with_the_components_own_checks() {
    // An unknown key, two values of the wrong type, and a value the component's own check
    // refuses (`rate = 0` is fine by type): all four in one pass.
    let errs = errors(
        r#"
[receivers.t_source]
raet = 5
label = 3
key = ["a"]
[receivers."t_source/zero"]
rate = 0
lable = "x"
[exporters.t_sink]
[service]
log_level = "loud"
shutdown_deadline = 10
[pipelines.p]
receivers = ["t_source", "t_source/zero"]
exporters = ["t_sink"]
queue_sise = 3
proccessors = []
"#,
    );
    assert_eq!(
        errs,
        [
            "receivers.t_source: unknown key `raet`",
            "receivers.t_source.label: expected a string, found 3",
            "receivers.t_source.key: expected a string, found a list",
            "receivers.t_source/zero.rate: must be at least 1",
            "receivers.t_source/zero: unknown key `lable`",
            "service.log_level: unknown value `loud`",
            "service.shutdown_deadline: expected a duration string such as \"300ms\", \"10s\" or \"2m\", found 10",
            "pipelines.p: unknown key `queue_sise`",
            "pipelines.p: unknown key `proccessors`",
        ]
    );
}

#[test]
fn a_check_that_only_a_placeholder_fails_is_not_reported() {
    // `rate` is of the wrong type; whatever stands in for it must not produce a complaint of
    // the component's own (here `rate` would be 0 or not), only the type error.
    let errs = errors(
        r#"
[receivers.t_source]
rate = "many"
[exporters.t_sink]
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    );
    assert_eq!(
        errs,
        ["receivers.t_source.rate: expected a whole number, found the string \"many\""]
    );
}

#[test]
fn an_exporter_that_never_gets_its_signal_is_refused_with_a_fix() {
    let err = load(
        r#"
[receivers.t_source]
[exporters.cluster]
type = "t_decisions"
[pipelines.traces]
receivers = ["t_source"]
exporters = ["cluster"]
"#,
    )
    .err()
    .unwrap();
    let d = &err.diagnostics()[0];
    assert_eq!(
        d.message,
        "pipelines.traces: exporter \"cluster\" takes decisions, but this pipeline never carries it (it carries: traces)"
    );
    assert!(
        d.notes[0].contains("add a processor that emits decisions (t_rules)"),
        "{:?}",
        d.notes
    );
}

#[test]
fn a_processor_needs_its_input_signal() {
    let errs = errors(
        r#"
[receivers.t_source]
[processors.t_rules]
[processors.t_decide]
[exporters.t_sink]
[pipelines.p]
receivers = ["t_source"]
processors = ["t_decide", "t_rules"]
exporters = ["t_sink"]
"#,
    );
    assert_eq!(
        errs,
        vec![
            "pipelines.p: processor \"t_decide\" takes decisions, but nothing before it in the pipeline emits it"
        ]
    );
}

#[test]
fn a_processor_in_two_pipelines_gets_two_instances() {
    let config = load(
        r#"
[receivers.t_source]
[processors.t_rules]
[exporters.t_sink]
[pipelines.a]
receivers = ["t_source"]
processors = ["t_rules"]
exporters = ["t_sink"]
[pipelines.b]
receivers = ["t_source"]
processors = ["t_rules"]
exporters = ["t_sink"]
"#,
    )
    .unwrap();
    assert_eq!(
        config
            .pipelines
            .iter()
            .map(|p| p.processors.len())
            .sum::<usize>(),
        2
    );
    assert_eq!(config.receivers.len(), 1);
}

#[test]
fn unused_components_warn_and_ids_are_checked() {
    let config = load(
        r#"
[receivers.t_source]
[receivers."t_source/spare"]
[exporters.t_sink]
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    )
    .unwrap();
    assert!(
        config
            .warnings
            .contains("receivers.t_source/spare: not used by any pipeline")
    );
    let errs = errors(
        r#"
[receivers."T_source"]
[exporters.t_sink]
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    );
    assert!(
        errs[0].contains("invalid component id \"T_source\""),
        "{errs:?}"
    );
}

#[test]
fn engine_keys_are_validated() {
    let errs = errors(
        r#"
[receivers.t_source]
[exporters.t_sink]
queue_size = 0
when_full = "wait"
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("exporters.t_sink.when_full: unknown value `wait`"),
        "{errs:?}"
    );
    let errs = errors(
        r#"
[receivers.t_source]
[exporters.t_sink]
queue_size = 0
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    );
    assert_eq!(
        errs,
        vec!["exporters.t_sink.queue_size: must be between 1 and 1048576 batches"]
    );
    let errs = errors(
        r#"
[receivers.t_source]
[exporters.t_sink]
queue_items = 0
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
queue_items = 0
"#,
    );
    assert_eq!(
        errs,
        vec![
            "exporters.t_sink.queue_items: must be between 1 and 268435456 items",
            "pipelines.p.queue_items: must be between 1 and 268435456 items"
        ]
    );
}

#[test]
fn syntax_errors_have_positions() {
    let err = load("[receivers.t_source\nrate = 1\n").err().unwrap();
    let d = &err.diagnostics()[0];
    assert!(d.message.starts_with("invalid TOML"), "{}", d.message);
    assert!(d.span.is_some());
}

#[test]
fn no_pipelines_is_an_error() {
    let errs = errors("[receivers.t_source]\n");
    assert!(
        errs.iter().any(|e| e.starts_with("no pipelines")),
        "{errs:?}"
    );
}

#[test]
fn semantic_errors_point_at_the_key() {
    let err = load(
        r#"
[receivers.t_source]
rate = 0
[exporters.t_sink]
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    )
    .err()
    .unwrap();
    let d = &err.diagnostics()[0];
    assert_eq!(d.message, "receivers.t_source.rate: must be at least 1");
    let rendered = err.render(false);
    assert!(rendered.contains("pipeline.toml:3:8"), "{rendered}");
}

#[test]
fn type_errors_speak_the_readers_words() {
    use super::build::plain_words;
    let cases = [
        (
            "invalid type: string \"ten\", expected usize",
            "expected a whole number, found the string \"ten\"",
        ),
        (
            "invalid value: integer `-1`, expected u64",
            "expected a whole number (0 or more), found -1",
        ),
        (
            "invalid value: integer `300`, expected u8",
            "expected a whole number from 0 to 255, found 300",
        ),
        (
            "invalid type: string \"yes\", expected a boolean",
            "expected true or false, found the string \"yes\"",
        ),
        (
            "invalid type: integer `3`, expected a sequence",
            "expected a list, found 3",
        ),
        (
            "invalid type: floating point `1.5`, expected u32",
            "expected a whole number, found 1.5",
        ),
        (
            "invalid type: string \"x\", expected f64",
            "expected a number, found the string \"x\"",
        ),
        ("unknown kind \"deploy\"", "unknown kind \"deploy\""),
    ];
    for (serde, plain) in cases {
        assert_eq!(plain_words(serde), plain);
    }
}

#[test]
fn signals_narrow_what_an_exporter_gets_and_are_checked() {
    let config = load(
        r#"
[receivers.t_source]
[processors.t_rules]
[exporters.t_sink]
signals = ["decisions"]
[pipelines.p]
receivers = ["t_source"]
processors = ["t_rules"]
exporters = ["t_sink"]
"#,
    )
    .unwrap();
    assert_eq!(config.exporters[0].signals, vec![SignalKind::Decisions]);

    let errs = errors(
        r#"
[receivers.t_source]
[exporters.t_sink]
signals = ["decisions"]
[exporters.t_decisions]
signals = ["traces"]
[exporters."t_sink/none"]
signals = []
[exporters."t_sink/metrics"]
signals = ["metrics"]
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink", "t_decisions", "t_sink/none", "t_sink/metrics"]
"#,
    );
    assert!(
        errs.contains(&"exporters.t_decisions.signals: a `t_decisions` exporter cannot take traces (it takes decisions)".to_string()),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("exporters.t_sink/none.signals: must name at least one signal")),
        "{errs:#?}"
    );
    assert!(
        errs.contains(&"exporters.t_sink/metrics.signals[0]: unknown value `metrics`".to_string()),
        "{errs:#?}"
    );
    // Limited to decisions, in a pipeline that carries only traces: it can never get anything.
    assert!(
        errs.iter().any(|e| e.starts_with(
            "pipelines.p: exporter \"t_sink\" takes decisions, but this pipeline never carries it"
        )),
        "{errs:#?}"
    );
}

#[test]
fn drop_newest_is_noted_not_warned_and_a_disk_buffer_loads() {
    let config = load(
        &VALID.replace("when_full = \"block\"", "when_full = \"drop_newest\"").replace(
            "[exporters.t_sink]",
            "[exporters.t_sink]\nbuffer = { type = \"disk\", path = \"/var/lib/tracescale/sink\" }",
        ),
    )
    .unwrap();
    assert_eq!(config.warning_count, 0, "{}", config.warnings);
    assert!(
        config.warnings.contains(
            "note: exporters.cluster.when_full: \"drop_newest\" drops spans already answered OK"
        ),
        "{}",
        config.warnings
    );
    let sink = config
        .exporters
        .iter()
        .find(|e| e.id.as_str() == "t_sink")
        .unwrap();
    assert_eq!(
        sink.buffer,
        crate::config::Buffer::Disk {
            path: "/var/lib/tracescale/sink".into(),
            max_size: crate::config::ByteSize::mib(1024),
        }
    );
    let errs = errors(&VALID.replace(
        "[exporters.t_sink]",
        "[exporters.t_sink]\nbuffer = { type = \"disk\", path = \"/x\", max = \"1GiB\" }",
    ));
    assert_eq!(errs, ["exporters.t_sink.buffer: unknown key `max`"]);
}
