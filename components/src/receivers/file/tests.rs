use std::io::Write;
use std::path::Path;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracescale_core::testing;

use super::read::{Line, Lines};
use super::*;
use crate::receivers::demo_traces::Generator;

/// `n` batches of three-span traces, each as the request the file exporter writes.
fn requests(n: usize) -> Vec<ExportTraceServiceRequest> {
    let mut generator = Generator::new(7, 0.0);
    (0..n)
        .map(|_| ExportTraceServiceRequest {
            resource_spans: generator.batch(2).resource_spans,
        })
        .collect()
}

fn json_lines(requests: &[ExportTraceServiceRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect()
}

fn span_ids(requests: &[ExportTraceServiceRequest]) -> Vec<Vec<u8>> {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.span_id.clone())
        .collect()
}

fn config(path: &Path, extra: &str) -> FileReceiverConfig {
    toml::from_str(&format!("path = {:?}\n{extra}", path.display().to_string())).unwrap()
}

/// Starts a receiver on `config` and collects every batch until it finishes; also what it
/// ended the run with, if anything.
async fn replay(config: FileReceiverConfig) -> (Vec<Vec<u8>>, Option<String>) {
    let (output, mut rx) = testing::output("file", 4);
    let (ctx, failed) = testing::receiver_context_watched("file", output);
    let mut receiver = FileReceiver::new(config);
    receiver.start(ctx).await.unwrap();
    let mut ids = Vec::new();
    while let Some(Signal::Traces(traces)) = rx.recv().await {
        ids.extend(span_ids(&[ExportTraceServiceRequest {
            resource_spans: traces.resource_spans,
        }]));
    }
    receiver.shutdown(Instant::now()).await.unwrap();
    let error = tokio::time::timeout(Duration::from_millis(1), failed.error())
        .await
        .ok();
    (ids, error)
}

#[tokio::test]
async fn every_span_of_a_plain_file_arrives_in_order_and_the_receiver_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let sent = requests(20);
    std::fs::write(&path, json_lines(&sent).join("\n") + "\n").unwrap();
    let (got, error) = replay(config(&path, "")).await;
    assert_eq!(got, span_ids(&sent));
    assert_eq!(got.len(), 20 * 2 * 3);
    assert_eq!(error, None);
}

#[tokio::test]
async fn gzip_and_zstd_files_are_read_by_their_extension_even_when_concatenated() {
    let dir = tempfile::tempdir().unwrap();
    let sent = requests(6);
    let lines = json_lines(&sent);
    let (first, second) = lines.split_at(3);
    let text = |part: &[String]| part.join("\n") + "\n";

    let gz = dir.path().join("spans.jsonl.gz");
    let mut bytes = Vec::new();
    for part in [first, second] {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text(part).as_bytes()).unwrap();
        bytes.extend(e.finish().unwrap());
    }
    std::fs::write(&gz, bytes).unwrap();
    assert_eq!(replay(config(&gz, "")).await, (span_ids(&sent), None));

    let zst = dir.path().join("spans.jsonl.zst");
    let mut bytes = zstd::encode_all(text(first).as_bytes(), 1).unwrap();
    bytes.extend(zstd::encode_all(text(second).as_bytes(), 1).unwrap());
    std::fs::write(&zst, bytes).unwrap();
    assert_eq!(replay(config(&zst, "")).await, (span_ids(&sent), None));
}

#[tokio::test]
async fn a_malformed_line_is_skipped_and_the_others_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let sent = requests(3);
    let mut lines = json_lines(&sent);
    lines.insert(1, r#"{"resourceSpans": [{"scopeSpans": 12}]}"#.into());
    lines.insert(3, String::new());
    lines.insert(3, r#"{"signal":"decision","rule":"r"}"#.into());
    std::fs::write(&path, lines.join("\n")).unwrap();
    let (got, error) = replay(config(&path, "")).await;
    assert_eq!(got, span_ids(&sent));
    assert_eq!(error, None);
}

#[tokio::test]
async fn on_error_stop_ends_the_run_naming_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let sent = requests(3);
    let mut lines = json_lines(&sent);
    lines.insert(1, "{not json".into());
    std::fs::write(&path, lines.join("\n")).unwrap();
    let (got, error) = replay(config(&path, r#"on_error = "stop""#)).await;
    assert_eq!(got, span_ids(&sent[..1]), "what came before is delivered");
    let error = error.expect("the run is ended");
    assert!(error.contains("line 2 of"), "{error}");
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("malformed OTLP/JSON"), "{error}");
}

#[tokio::test]
async fn a_truncated_gzip_file_gives_what_it_holds_then_reports_the_line_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl.gz");
    let sent = requests(4);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for line in json_lines(&sent[..3]) {
        e.write_all(line.as_bytes()).unwrap();
        e.write_all(b"\n").unwrap();
        // As the file exporter does after every batch: what is written can be read back.
        e.flush().unwrap();
    }
    let whole_lines = e.get_ref().len();
    e.write_all(json_lines(&sent[3..])[0].as_bytes()).unwrap();
    let mut bytes = e.finish().unwrap();
    bytes.truncate(whole_lines + 10);
    std::fs::write(&path, &bytes).unwrap();

    let (got, error) = replay(config(&path, "")).await;
    assert_eq!(got, span_ids(&sent[..3]));
    assert_eq!(error, None, "skipped by default");

    let (got, error) = replay(config(&path, r#"on_error = "stop""#)).await;
    assert_eq!(got, span_ids(&sent[..3]));
    let error = error.expect("the run is ended");
    assert!(error.contains("cannot read line 4 of"), "{error}");
}

#[tokio::test]
async fn length_delimited_protobuf_is_read_message_by_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.binpb");
    let sent = requests(5);
    let mut bytes = Vec::new();
    for (i, request) in sent.iter().enumerate() {
        if i == 2 {
            // A message that is not a request: its framing is intact, so only it is lost.
            [0xffu8; 3]
                .to_vec()
                .encode_length_delimited(&mut bytes)
                .unwrap();
        }
        request.encode_length_delimited(&mut bytes).unwrap();
    }
    std::fs::write(&path, &bytes).unwrap();
    let (got, error) = replay(config(&path, r#"format = "otlp_proto""#)).await;
    assert_eq!(got, span_ids(&sent));
    assert_eq!(error, None);

    let (_, error) = replay(config(
        &path,
        "format = \"otlp_proto\"\non_error = \"stop\"",
    ))
    .await;
    let error = error.unwrap();
    assert!(error.contains("message 3 of"), "{error}");

    bytes.truncate(bytes.len() - 5);
    std::fs::write(&path, &bytes).unwrap();
    let (got, _) = replay(config(&path, r#"format = "otlp_proto""#)).await;
    assert_eq!(got, span_ids(&sent[..4]));
}

#[test]
fn a_line_longer_than_the_limit_is_skipped_without_being_held() {
    let input = format!("{}\nshort\n{}\nlast", "x".repeat(100), "y".repeat(11));
    let mut reader = std::io::BufReader::with_capacity(4, input.as_bytes());
    let mut lines = Lines::new(10);
    assert_eq!(lines.next(&mut reader).unwrap(), Some(Line::TooLong));
    assert_eq!(lines.next(&mut reader).unwrap(), Some(Line::Text(b"short")));
    assert_eq!(lines.next(&mut reader).unwrap(), Some(Line::TooLong));
    // An unfinished last line waits: a followed file may still complete it.
    assert_eq!(lines.next(&mut reader).unwrap(), None);
    assert_eq!(lines.rest(), Some(Line::Text(b"last")));
    assert_eq!(lines.rest(), None);
}

async fn next(rx: &mut tracescale_core::topology::queue::QueueRx) -> usize {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .item_count()
}

#[tokio::test]
async fn follow_picks_up_lines_appended_later_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.jsonl");
    let sent = requests(4);
    let lines = json_lines(&sent);
    std::fs::write(&path, format!("{}\n", lines[0])).unwrap();
    let (output, mut rx) = testing::output("file", 4);
    let mut receiver = FileReceiver::new(config(&path, "follow = true\npoll_interval = \"10ms\""));
    receiver
        .start(testing::receiver_context("file", output))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, 6);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    // Half a line first: nothing is read until its newline arrives.
    let (head, tail) = lines[1].split_at(20);
    file.write_all(head.as_bytes()).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rx.try_recv().is_err());
    writeln!(file, "{tail}\n{}\n{}", lines[2], lines[3]).unwrap();
    for _ in 0..3 {
        assert_eq!(next(&mut rx).await, 6);
    }
    receiver
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        rx.recv().await.is_none(),
        "the output is dropped at shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn speed_paces_batches_on_span_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    // Three batches whose spans start 0 s, 10 s and 4 s after the first: the late one goes
    // out at once.
    let base = 1_700_000_000_000_000_000u64;
    let mut sent = requests(3);
    for (request, offset_s) in sent.iter_mut().zip([0u64, 10, 4]) {
        for span in request
            .resource_spans
            .iter_mut()
            .flat_map(|rs| &mut rs.scope_spans)
            .flat_map(|ss| &mut ss.spans)
        {
            span.start_time_unix_nano = base + offset_s * 1_000_000_000;
            span.end_time_unix_nano = span.start_time_unix_nano + 1_000;
        }
    }
    std::fs::write(&path, json_lines(&sent).join("\n")).unwrap();
    let (output, mut rx) = testing::output("file", 16);
    let mut receiver = FileReceiver::new(config(&path, "speed = 2.0"));
    receiver
        .start(testing::receiver_context("file", output))
        .await
        .unwrap();
    let mut arrivals = Vec::new();
    while rx.recv().await.is_some() {
        arrivals.push(Instant::now());
    }
    receiver.shutdown(Instant::now()).await.unwrap();
    let after = |i: usize| arrivals[i] - arrivals[0];
    assert_eq!(arrivals.len(), 3);
    // 10 s of span time at twice real time; the clock ticks in milliseconds.
    assert!(
        (Duration::from_secs(5)..Duration::from_millis(5_002)).contains(&after(1)),
        "{:?}",
        after(1)
    );
    assert_eq!(after(2), after(1), "a batch behind the pace is not held");
}

#[test]
fn a_compressed_or_protobuf_file_cannot_be_followed() {
    let factory = tracescale_core::registry::lookup(
        tracescale_core::component::ComponentKind::Receiver,
        "file",
    )
    .unwrap();
    for (table, key) in [
        ("path = \"a.jsonl.gz\"\nfollow = true", "follow"),
        (
            "path = \"a.bin\"\nfollow = true\nformat = \"otlp_proto\"",
            "follow",
        ),
        ("path = \"a.jsonl\"\nspeed = -1.0", "speed"),
        ("path = \"a.jsonl\"\nmax_line_bytes = 10", "max_line_bytes"),
    ] {
        let Err(err) = tracescale_core::config::build_from_toml(factory, "file", table) else {
            panic!("{table} builds");
        };
        let text = err.render(false);
        assert!(text.contains(key), "{text}");
    }
}

#[tokio::test]
async fn a_missing_file_fails_start_with_its_path() {
    let (output, _rx) = testing::output("file", 4);
    let mut receiver = FileReceiver::new(config(Path::new("/nonexistent/spans.jsonl"), ""));
    let err = receiver
        .start(testing::receiver_context("file", output))
        .await
        .err()
        .unwrap();
    assert!(
        tracescale_core::error::error_chain(&err).contains("/nonexistent/spans.jsonl"),
        "{err}"
    );
}
