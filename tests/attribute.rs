//! `tracescale attribute`: the culprit ranking scored against injected faults, on a small
//! synthetic fixture (tests/fixtures/attribution: a frontend calling the cart once and the
//! catalogue twice per request, spans without kinds, the catalogue's replies delayed by 60 ms
//! from 90 s to 120 s).

use std::time::Duration;

use crate::util::{bin, run_to_end};

const LIMIT: Duration = Duration::from_secs(60);
const SPANS: &str = "tests/fixtures/attribution/spans.csv";
const FAULTS: &str = "tests/fixtures/attribution/faults.csv";

#[test]
fn attribute_names_the_callee_whose_network_is_delayed() {
    let out = run_to_end(
        bin().args(["attribute", "--input", SPANS, "--faults", FAULTS, "--json"]),
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["spans"], 840, "{report}");
    // The entry operation, and the operations the frontend calls.
    let mut objectives: Vec<String> = report["objectives"]
        .as_array()
        .expect("objectives")
        .iter()
        .map(|o| format!("{} {}", o["service"], o["operation"]).replace('"', ""))
        .collect();
    objectives.sort();
    assert_eq!(
        objectives,
        ["cart GetCart", "catalog GetProduct", "frontend GET /cart"],
        "{report}"
    );
    assert!(
        report["burning_outside_faults"].as_u64().is_some(),
        "{report}"
    );
    let delayed = &report["faults"][0];
    assert_eq!(delayed["id"], "f1");
    assert_eq!(delayed["named"][0], "catalog", "{delayed}");
    assert_eq!(delayed["top1"], true);
    assert!(delayed["delay_seconds"].as_f64().expect("a delay") < 15.0);
    let no_spans = &report["faults"][1];
    assert_eq!(no_spans["spans"], 0);
    assert_eq!(no_spans["top1"], false, "no spans: a miss");
    let latency = &report["latency_faults"];
    assert_eq!(latency["faults"], 2, "the exception is not a latency fault");
    assert_eq!(latency["with_spans"], 1);
    assert_eq!(latency["top1"], 1);
    assert_eq!(latency["top1_rate"], 0.5);
    assert_eq!(latency["top1_rate_with_spans"], 1.0);

    let out = run_to_end(
        bin().args(["attribute", "--input", SPANS, "--faults", FAULTS]),
        LIMIT,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("f1 ") && l.contains("catalog") && l.contains("yes")),
        "{text}"
    );

    // On the entry operation alone, as before the calls had objectives.
    let out = run_to_end(
        bin().args([
            "attribute",
            "--input",
            SPANS,
            "--faults",
            FAULTS,
            "--entry-only",
            "--json",
        ]),
        LIMIT,
    );
    assert!(out.status.success());
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON object");
    let objectives = report["objectives"].as_array().expect("objectives");
    assert_eq!(objectives.len(), 1, "{report}");
    assert_eq!(objectives[0]["operation"], "GET /cart");
    assert_eq!(report["faults"][0]["named"][0], "catalog", "{report}");
}

#[test]
fn a_bad_faults_csv_exits_2_and_names_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = dir.path().join("faults.csv");
    let cases = [
        (
            "fault_id,start_unix_nano,end_unix_nano,service\nf1,1,2,cart\n",
            "faults.csv:1: header lacks column(s): fault_type",
        ),
        (
            "fault_id,start_unix_nano,end_unix_nano,service,fault_type\n\
             f1,1,2,cart,cpu\nf2,soon,9,cart,cpu\n",
            "faults.csv:3: `start_unix_nano` must be a non-negative integer",
        ),
    ];
    let out = run_to_end(
        bin()
            .args(["attribute", "--input", SPANS, "--faults"])
            .arg(&faults),
        LIMIT,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a faults file that is not there"
    );
    for (text, message) in cases {
        std::fs::write(&faults, text).expect("write faults");
        let out = run_to_end(
            bin()
                .args(["attribute", "--input", SPANS, "--faults"])
                .arg(&faults),
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
}
