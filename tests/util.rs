//! Helpers: paths, child processes, a minimal HTTP GET.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tracescale binary under test.
pub(crate) fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracescale"));
    cmd.current_dir(repo())
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// An example binary, built by `cargo test` next to the tracescale binary.
pub(crate) fn example(name: &str) -> Command {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tracescale"));
    let dir = bin.parent().expect("the binary has a directory");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test`, which builds examples",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.current_dir(repo());
    cmd
}

/// Runs a command to completion with a time limit; panics if it hangs.
pub(crate) fn run_to_end(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_with_limit(child, limit)
}

/// Waits for a child, killing it and failing the test past `limit`. Its output is read while
/// it runs, so a child that prints more than a pipe holds does not block.
pub(crate) fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "process did not exit within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// `GET path` over HTTP/1.0; returns the status code and the body.
pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Polls `check` every 50 ms until it returns Some, or panics after `limit`.
pub(crate) fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM and waits up to `limit` for a clean exit (status 0), showing stderr if not.
pub(crate) fn stop_cleanly(child: Child, limit: Duration) -> Output {
    signal(&child, "TERM");
    let out = wait_with_limit(child, limit);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts `tracescale run -c CONFIG` and waits until `/readyz` on `telemetry` says ready: every
/// component started, listeners bound.
pub(crate) fn run_ready(config: &Path, telemetry: u16) -> Child {
    let child = spawn_run(config);
    eventually(Duration::from_secs(20), "the service to be ready", || {
        http_get(telemetry, "/readyz").filter(|(s, _)| *s == 200)
    });
    child
}

/// Waits until something listens on 127.0.0.1:`port` (a receiver has bound its listener).
pub(crate) fn wait_listening(port: u16) {
    eventually(Duration::from_secs(20), "the listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// Polls `/metrics` on `telemetry` until `check` accepts the text, which it returns.
pub(crate) fn metrics_until(
    telemetry: u16,
    what: &str,
    mut check: impl FnMut(&str) -> bool,
) -> String {
    eventually(Duration::from_secs(20), what, || {
        http_get(telemetry, "/metrics")
            .map(|(_, b)| b)
            .filter(|b| check(b))
    })
}

/// The value of the sample `series` (name and labels exactly as exposed), 0 when absent.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// One OTLP/JSON request of one `INSERT payments` client span of `service` that lasted `ms`
/// and ended now, in a trace numbered `n`. `resource` and `span` are extra attributes, as the
/// JSON objects of a key-value list, comma-separated (may be empty).
pub(crate) fn slow_span_request(
    service: &str,
    n: u32,
    ms: u64,
    resource: &str,
    span: &str,
) -> String {
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let start = end - u128::from(ms) * 1_000_000;
    let sep = if resource.is_empty() { "" } else { "," };
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{service}"}}}}{sep}{resource}]}},"scopeSpans":[{{"spans":[{{"traceId":"{n:08x}05060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"INSERT payments","kind":3,"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}","attributes":[{span}]}}]}}]}}]}}"#
    )
}

/// Sends a signal to a child by name (`TERM`, `INT`).
pub(crate) fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// The spans in a file written by the `file` exporter: (trace lines, total spans).
pub(crate) fn count_spans(path: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = 0;
    let mut spans = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("every line is whole JSON");
        if v.get("resourceSpans").is_some() {
            lines += 1;
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    spans += ss["spans"].as_array().map_or(0, Vec::len);
                }
            }
        }
    }
    (lines, spans)
}

/// Starts `tracescale run -c CONFIG` with stdout discarded and stderr captured.
pub(crate) fn spawn_run(config: &Path) -> Child {
    bin()
        .arg("run")
        .arg("-c")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// One raw HTTP/1.1 `POST /v1/traces` on 127.0.0.1:`port`; `headers` are whole lines without
/// the final CRLF (may be empty). Returns the whole response.
pub(crate) fn post_traces(port: u16, headers: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let headers = if headers.is_empty() {
        String::new()
    } else {
        format!("{headers}\r\n")
    };
    // A server may close before the body is all written (a TLS listener given plain text, a
    // refusal): the write then fails with a broken pipe, and the answer, if any, says why.
    let sent = write!(
        stream,
        "POST /v1/traces HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .and_then(|()| stream.write_all(body));
    if let Err(err) = sent
        && err.kind() != std::io::ErrorKind::BrokenPipe
        && err.kind() != std::io::ErrorKind::ConnectionReset
    {
        panic!("cannot send to 127.0.0.1:{port}: {err}");
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}
