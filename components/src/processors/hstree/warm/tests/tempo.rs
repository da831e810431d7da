//! Warm start from an in-process Tempo: a raw HTTP/1.1 server, so that a test can answer
//! slowly, cut a body short or never answer at all.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// How the fake Tempo answers one request.
#[derive(Clone)]
enum Reply {
    /// A complete answer.
    Full {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// Headers, then the body one byte every 200 ms.
    Slow(Vec<u8>),
    /// Announces `body.len() + 100` bytes, sends `body`, closes.
    Cut(Vec<u8>),
    /// Reads the request and never answers.
    Hang,
}

fn json(body: String) -> Reply {
    Reply::Full {
        status: 200,
        content_type: "application/json",
        body: body.into_bytes(),
    }
}

fn protobuf(body: Vec<u8>) -> Reply {
    Reply::Full {
        status: 200,
        content_type: "application/protobuf",
        body,
    }
}

/// A request as the server saw it: its target and its head, lowercased.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    head: String,
}

/// Serves `answer(target)` to every connection, recording what it was asked.
async fn serve(
    answer: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                log.lock().unwrap().push(Seen {
                    target: target.clone(),
                    head: head.to_lowercase(),
                });
                let reply = answer(&target);
                let start = |status: u16, content_type: &str, len: usize| {
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n\
                         content-length: {len}\r\nconnection: close\r\n\r\n"
                    )
                };
                match reply {
                    Reply::Full {
                        status,
                        content_type,
                        body,
                    } => {
                        let _ = socket
                            .write_all(start(status, content_type, body.len()).as_bytes())
                            .await;
                        let _ = socket.write_all(&body).await;
                    }
                    Reply::Slow(body) => {
                        let _ = socket
                            .write_all(start(200, "application/protobuf", body.len()).as_bytes())
                            .await;
                        for b in body {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if socket.write_all(&[b]).await.is_err() {
                                return;
                            }
                        }
                    }
                    Reply::Cut(body) => {
                        let _ = socket
                            .write_all(
                                start(200, "application/protobuf", body.len() + 100).as_bytes(),
                            )
                            .await;
                        let _ = socket.write_all(&body).await;
                    }
                    Reply::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// The search answer for `ids`, as Tempo writes it.
fn search_answer(ids: &[String]) -> String {
    let traces: Vec<String> = ids
        .iter()
        .map(|id| format!(r#"{{"traceID":"{id}","rootServiceName":"checkout"}}"#))
        .collect();
    format!(r#"{{"traces":[{}],"metrics":{{}}}}"#, traces.join(","))
}

/// `n` traces of 100 healthy spans, by hex id, and their protobuf as Tempo serves it.
fn traces(n: usize) -> Vec<(String, Vec<u8>)> {
    healthy(n, 100, 5)
        .into_iter()
        .enumerate()
        .map(|(i, rs)| {
            let id = format!("{:x}", 0xabc0 + i);
            (
                id,
                TracesData {
                    resource_spans: vec![rs],
                }
                .encode_to_vec(),
            )
        })
        .collect()
}

/// A fake Tempo serving `traces(n)`, with `trace` deciding each trace's reply.
async fn tempo(
    n: usize,
    trace: impl Fn(&str, Vec<u8>) -> Reply + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let all = traces(n);
    let ids: Vec<String> = all.iter().map(|(id, _)| id.clone()).collect();
    let (addr, seen) = serve(move |target| {
        if target.starts_with("/api/search?") {
            return json(search_answer(&ids));
        }
        match all
            .iter()
            .find(|(id, _)| target == format!("/api/traces/{id}"))
        {
            Some((id, body)) => trace(id, body.clone()),
            None => Reply::Full {
                status: 404,
                content_type: "text/plain",
                body: b"trace not found".to_vec(),
            },
        }
    })
    .await;
    (format!("http://{addr}"), seen)
}

fn warm_tempo(url: &str, extra: &str) -> String {
    format!("warm_start = {{ tempo = {url:?} {extra} }}")
}

#[tokio::test]
async fn traces_found_by_a_search_are_learned_with_the_tenant_and_auth_headers() {
    let (url, seen) = tempo(15, |_, body| protobuf(body)).await;
    let mut p = processor(&warm_tempo(
        &url,
        ", query = '{ resource.service.name = \"checkout\" }', limit = 15, org_id = \"team-a\", \
         headers = { Authorization = \"Bearer s3cret\" }",
    ));
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    assert_eq!(p.detector().seen(), 1500);
    assert!(judges_at_once(&mut p).await);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 16, "one search, then each trace");
    let search = &seen[0].target;
    assert!(
        search.starts_with(
            "/api/search?q=%7B%20resource.service.name%20%3D%20%22checkout%22%20%7D&start="
        ) && search.ends_with("&limit=15"),
        "{search}"
    );
    for request in &seen {
        assert!(
            request.head.contains("x-scope-orgid: team-a"),
            "{request:?}"
        );
        assert!(
            request.head.contains("authorization: bearer s3cret"),
            "{request:?}"
        );
    }
    assert!(seen[1].head.contains("accept: application/protobuf"));
}

/// Starts a processor warm-started from `url`, required, and returns its start error.
async fn start_error(url: &str, extra: &str) -> String {
    let mut p = processor(&warm_tempo(url, &format!(", required = true {extra}")));
    let err = p
        .start(&testing::processor_context("hstree"))
        .await
        .unwrap_err();
    assert_eq!(p.detector().seen(), 0, "nothing half-learned");
    error_chain(&err)
}

#[tokio::test]
async fn an_error_status_names_the_url_and_its_message() {
    let (addr, _) = serve(|_| Reply::Full {
        status: 503,
        content_type: "text/plain",
        body: b"ingester not ready".to_vec(),
    })
    .await;
    let url = format!("http://{addr}");
    let message = start_error(&url, "").await;
    assert!(
        message.contains(&format!("GET {url}/api/search?q=%7B%7D"))
            && message.contains("HTTP 503: ingester not ready"),
        "{message}"
    );

    let (url, _) = tempo(3, |id, body| {
        if id.ends_with('1') {
            Reply::Full {
                status: 404,
                content_type: "text/plain",
                body: b"trace not found".to_vec(),
            }
        } else {
            protobuf(body)
        }
    })
    .await;
    let message = start_error(&url, "").await;
    assert!(
        message.contains(&format!(
            "GET {url}/api/traces/abc1: HTTP 404: trace not found"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_or_answers_too_slowly_times_out() {
    let (addr, _) = serve(|_| Reply::Hang).await;
    let url = format!("http://{addr}");
    let message = start_error(&url, ", timeout = \"300ms\"").await;
    assert!(
        message.contains(&format!("GET {url}/api/search"))
            && message.contains("no complete answer within 300ms"),
        "{message}"
    );

    // Headers at once, then a body far slower than the timeout: the whole body is bounded.
    let (url, _) = tempo(1, |_, body| Reply::Slow(body)).await;
    let message = start_error(&url, ", timeout = \"300ms\"").await;
    assert!(
        message.contains(&format!("GET {url}/api/traces/abc0"))
            && message.contains("no complete answer within 300ms"),
        "{message}"
    );
}

#[tokio::test]
async fn truncated_oversized_or_foreign_bodies_are_refused_naming_the_url() {
    let (url, _) = tempo(1, |_, body| Reply::Cut(body)).await;
    let message = start_error(&url, "").await;
    assert!(
        message.contains(&format!("GET {url}/api/traces/abc0: the answer broke off")),
        "{message}"
    );

    // A complete answer holding a cut message: the protobuf does not decode.
    let (url, _) = tempo(1, |_, body| protobuf(body[..body.len() - 7].to_vec())).await;
    let message = start_error(&url, "").await;
    assert!(
        message.contains(&format!(
            "GET {url}/api/traces/abc0: not a Tempo trace (protobuf)"
        )),
        "{message}"
    );

    let (url, _) = tempo(1, |_, body| protobuf(body)).await;
    let message = start_error(&url, ", max_message_bytes = \"1KiB\"").await;
    assert!(
        message.contains("/api/traces/abc0: the answer is longer than max_message_bytes (1024"),
        "{message}"
    );

    let (addr, _) = serve(|_| json("<html>a proxy login page</html>".to_string())).await;
    let message = start_error(&format!("http://{addr}"), "").await;
    assert!(message.contains("not a Tempo search answer"), "{message}");
}

#[tokio::test]
async fn a_failed_tempo_warm_start_starts_cold_with_a_warning_unless_required() {
    let (addr, _) = serve(|_| Reply::Full {
        status: 500,
        content_type: "text/plain",
        body: Vec::new(),
    })
    .await;
    let (warnings, _guard) = count_warnings();
    let mut p = processor(&warm_tempo(&format!("http://{addr}"), ""));
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    assert_eq!(warnings.load(Ordering::SeqCst), 1);
    assert!(!judges_at_once(&mut p).await, "cold: training");

    // A search that finds nothing leaves the model cold too.
    let (addr, _) = serve(|_| json(r#"{"traces":[]}"#.to_string())).await;
    let message = start_error(&format!("http://{addr}"), "").await;
    assert!(message.contains("no valid span to learn"), "{message}");
}

#[tokio::test]
async fn nothing_listening_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}");
    let message = start_error(&url, "").await;
    assert!(
        message.contains(&format!("GET {url}/api/search")) && message.contains("cannot reach"),
        "{message}"
    );
}
