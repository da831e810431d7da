//! TLS on both listeners: certificates, rotation, mutual TLS and refusals.

use super::*;

fn fixture(name: &str) -> String {
    format!(
        "{}/../tests/fixtures/tls/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn tls_keys(mutual: bool) -> String {
    let mut s = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        fixture("server.pem"),
        fixture("server.key")
    );
    if mutual {
        s.push_str(&format!("client_ca_file = {:?}\n", fixture("ca.pem")));
    }
    s
}

async fn tls_client(
    addr: SocketAddr,
    identity: bool,
) -> Result<TraceServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    tls_client_trusting(addr, identity, "ca.pem").await
}

/// A gRPC client that trusts the CA of the fixture `ca`.
async fn tls_client_trusting(
    addr: SocketAddr,
    identity: bool,
    ca: &str,
) -> Result<TraceServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let ca = std::fs::read(fixture(ca)).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(fixture("client.pem")).unwrap(),
            std::fs::read(fixture("client.key")).unwrap(),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(TraceServiceClient::new(channel))
}

/// One HTTPS POST of a protobuf body; returns the status code.
async fn https_post(addr: SocketAddr, body: Vec<u8>, identity: bool) -> std::io::Result<u16> {
    https_post_trusting(addr, body, identity, "ca.pem").await
}

/// [`https_post`] from a client that trusts the CA of the fixture `ca`.
async fn https_post_trusting(
    addr: SocketAddr,
    body: Vec<u8>,
    identity: bool,
    ca: &str,
) -> std::io::Result<u16> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(fixture(ca)).unwrap();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if identity {
        let certs = CertificateDer::pem_slice_iter(&std::fs::read(fixture("client.pem")).unwrap())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            PrivateKeyDer::from_pem_slice(&std::fs::read(fixture("client.key")).unwrap()).unwrap();
        builder.with_client_auth_cert(certs, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(&body).await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))
}

#[tokio::test]
async fn tls_serves_grpc_and_http_and_refuses_plain_text() {
    let mut r = start(&tls_keys(false), 16).await;
    let mut client = tls_client(r.grpc, false).await.unwrap();
    client.export(request(vec![span(1, 1)])).await.unwrap();
    assert_eq!(spans_of(r.rx.recv().await.unwrap()).len(), 1);

    let status = https_post(r.http, request(vec![span(2, 2)]).encode_to_vec(), false)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(spans_of(r.rx.recv().await.unwrap()).len(), 1);

    // A plain-text client gets nowhere, and the listener keeps serving.
    let mut plain = client_unchecked(r.grpc).await;
    assert!(plain.export(request(vec![span(3, 3)])).await.is_err());
    let http = r.http;
    let plain_http = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        buf
    })
    .await
    .unwrap();
    assert!(!String::from_utf8_lossy(&plain_http).starts_with("HTTP/1.1 200"));
    client.export(request(vec![span(4, 4)])).await.unwrap();
    assert_eq!(spans_of(r.rx.recv().await.unwrap()).len(), 1);
    r.receiver
        .shutdown(tokio::time::Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotated_certificate_is_served_once_it_loads_and_a_torn_one_never_is() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(fixture("server.pem"), &cert).unwrap();
    std::fs::copy(fixture("server.key"), &key).unwrap();
    let mut r = start(
        &format!("[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nreload_interval = \"1s\"\n"),
        64,
    )
    .await;
    let body = || request(vec![span(1, 1)]).encode_to_vec();
    // Whether each listener completes a request for a client that trusts `ca`.
    let serves = |ca: &'static str| {
        let (grpc, http) = (r.grpc, r.http);
        async move {
            let grpc_ok = match tls_client_trusting(grpc, false, ca).await {
                Ok(mut c) => c.export(request(vec![span(1, 1)])).await.is_ok(),
                Err(_) => false,
            };
            let http_ok = https_post_trusting(http, body(), false, ca)
                .await
                .is_ok_and(|status| status == 200);
            (grpc_ok, http_ok)
        }
    };
    assert_eq!(serves("ca.pem").await, (true, true));
    assert_eq!(serves("rotated-ca.pem").await, (false, false));

    // A rotation caught half-way: the new certificate with the old key. It does not load, and
    // the old certificate goes on serving.
    std::fs::copy(fixture("rotated-server.pem"), &cert).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(serves("ca.pem").await, (true, true));

    // The key follows: the new certificate serves new connections, on both listeners.
    std::fs::copy(fixture("rotated-server.key"), &key).unwrap();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while serves("rotated-ca.pem").await != (true, true) {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(serves("ca.pem").await, (false, false));
    while r.rx.try_recv().is_ok() {}
    r.receiver
        .shutdown(tokio::time::Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
}

#[test]
fn a_reload_interval_below_a_second_is_refused() {
    let text = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\nreload_interval = \"10ms\"\n",
        fixture("server.pem"),
        fixture("server.key")
    );
    let factory = tracescale_core::registry::lookup(
        tracescale_core::component::ComponentKind::Receiver,
        "otlp",
    )
    .unwrap();
    let Err(e) = tracescale_core::config::build_from_toml(factory, "otlp", &text) else {
        panic!("built")
    };
    assert!(
        e.render(false).contains("tls.reload_interval"),
        "{}",
        e.render(false)
    );
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let mut r = start(&tls_keys(true), 16).await;
    // Without a client certificate: the handshake or the first call fails.
    let refused = match tls_client(r.grpc, false).await {
        Err(_) => true,
        Ok(mut c) => c.export(request(vec![span(1, 1)])).await.is_err(),
    };
    assert!(refused);
    assert!(
        https_post(r.http, request(vec![span(1, 1)]).encode_to_vec(), false)
            .await
            .is_err()
    );
    // With one, both listeners serve.
    let mut client = tls_client(r.grpc, true).await.unwrap();
    client.export(request(vec![span(2, 2)])).await.unwrap();
    assert_eq!(spans_of(r.rx.recv().await.unwrap()).len(), 1);
    let status = https_post(r.http, request(vec![span(3, 3)]).encode_to_vec(), true)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(spans_of(r.rx.recv().await.unwrap()).len(), 1);
    r.receiver
        .shutdown(tokio::time::Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn unreadable_or_mismatched_tls_files_fail_the_start_clearly() {
    for (extra, needle) in [
        (
            "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n"
                .to_string(),
            "tls.cert_file: cannot read /nonexistent/cert.pem",
        ),
        (
            format!(
                "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
                fixture("server.pem"),
                fixture("client.key")
            ),
            "the key does not fit the certificate",
        ),
    ] {
        let text = format!("grpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n{extra}");
        let config: OtlpReceiverConfig = toml::from_str(&text).unwrap();
        let mut receiver = OtlpReceiver::new(config);
        let (output, _rx) = testing::output("otlp", 4);
        let err = receiver
            .start(testing::receiver_context("otlp", output))
            .await
            .err()
            .unwrap_or_else(|| panic!("{extra} started"));
        assert!(err.to_string().contains(needle), "{err}");
    }
}

/// A plain-text gRPC client that connects lazily (the TLS listener refuses on first use).
async fn client_unchecked(addr: SocketAddr) -> TraceServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    TraceServiceClient::new(channel)
}
