//! TLS: the exporter into a tracescale receiver that serves TLS.

use super::*;

fn tls_fixture(name: &str) -> String {
    format!(
        "{}/../tests/fixtures/tls/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn tls_receiver(
    mutual: bool,
) -> (
    crate::receivers::otlp::OtlpReceiver,
    tracescale_core::topology::queue::QueueRx,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let mut text = format!(
        "grpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        tls_fixture("server.pem"),
        tls_fixture("server.key")
    );
    if mutual {
        text.push_str(&format!("client_ca_file = {:?}\n", tls_fixture("ca.pem")));
    }
    let config: crate::receivers::otlp::OtlpReceiverConfig = toml::from_str(&text).unwrap();
    let mut receiver = crate::receivers::otlp::OtlpReceiver::new(config);
    let (output, rx) = tracescale_core::testing::output("otlp", 16);
    receiver
        .start(tracescale_core::testing::receiver_context("otlp", output))
        .await
        .unwrap();
    let addr = |name| {
        receiver
            .local_addresses()
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    };
    let (grpc, http) = (addr("grpc"), addr("http"));
    (receiver, rx, grpc, http)
}

#[tokio::test]
async fn exports_over_tls_with_a_ca_file_and_a_client_certificate() {
    let (mut receiver, mut rx, grpc, http) = tls_receiver(true).await;
    for (protocol, port) in [("grpc", grpc.port()), ("http/protobuf", http.port())] {
        let table = format!(
            "endpoint = \"https://localhost:{port}\"\nprotocol = \"{protocol}\"\ntimeout = \"10ms\"\n[tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            tls_fixture("ca.pem"),
            tls_fixture("client.pem"),
            tls_fixture("client.key")
        );
        let Ok(Built::Exporter(mut exporter)) = build_from_toml(factory(), "otlp", &table) else {
            panic!("{table} did not build");
        };
        exporter
            .start(&tracescale_core::testing::exporter_context("otlp"))
            .await
            .unwrap();
        exporter
            .export(Signal::Traces(Traces::new(vec![resource("checkout", 3)])))
            .await
            .unwrap();
        exporter.shutdown(in_secs(10)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing arrived over {protocol}"))
            .unwrap();
        assert_eq!(got.item_count(), 3, "{protocol}");
    }
    receiver.shutdown(in_secs(5)).await.unwrap();
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_refused() {
    let (mut receiver, mut rx, grpc, _) = tls_receiver(false).await;
    // No `ca_file`: the system's roots, which do not include the test CA.
    let table = format!(
        "endpoint = \"https://localhost:{}\"\ntimeout = \"10ms\"\nretry_on_failure = {{ enabled = false }}\n",
        grpc.port()
    );
    let Ok(Built::Exporter(mut exporter)) = build_from_toml(factory(), "otlp", &table) else {
        panic!("did not build");
    };
    exporter
        .start(&tracescale_core::testing::exporter_context("otlp"))
        .await
        .unwrap();
    exporter
        .export(Signal::Traces(Traces::new(vec![resource("checkout", 3)])))
        .await
        .unwrap();
    exporter.shutdown(in_secs(10)).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "spans crossed an unverified connection"
    );
    receiver.shutdown(in_secs(5)).await.unwrap();
}
