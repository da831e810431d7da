//! TLS for the listeners: the PEM files read at start, a rustls config for each listener (they
//! differ only in ALPN), and a listener that completes handshakes off the accept loop, for
//! both: every failed or stalled handshake is counted, whichever protocol it was for.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::config::TlsConfig;
use super::{Shared, Transport};

/// Handshakes that may be in progress at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server configs built from the PEM files, read once at start.
#[derive(Clone)]
pub(super) struct Loaded {
    /// For the HTTP listener: ALPN `http/1.1`.
    pub(super) http: Arc<rustls::ServerConfig>,
    /// For the gRPC listener: ALPN `h2`, which gRPC clients require.
    pub(super) grpc: Arc<rustls::ServerConfig>,
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("tls.{key}: cannot read {}: {e}", path.display()))
}

impl Loaded {
    /// Reads and checks the files: a missing file, a key that does not match, or a file with
    /// no PEM block is an error naming the key.
    pub(super) fn load(config: &TlsConfig) -> Result<Self, String> {
        let cert_pem = read("cert_file", &config.cert_file)?;
        let key_pem = read("key_file", &config.key_file)?;
        let client_ca_pem = config
            .client_ca_file
            .as_ref()
            .map(|p| read("client_ca_file", p))
            .transpose()?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.cert_file: {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "tls.cert_file: no PEM certificate in {}",
                config.cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!(
                "tls.key_file: no PEM private key in {}: {e}",
                config.key_file.display()
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?;
        let builder = match &client_ca_pem {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("tls.client_ca_file: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("tls.client_ca_file: {e}"))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("tls.client_ca_file: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let server = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("tls: the key does not fit the certificate: {e}"))?;
        let with_alpn = |protocol: &[u8]| {
            let mut config = server.clone();
            config.alpn_protocols = vec![protocol.to_vec()];
            Arc::new(config)
        };
        Ok(Self {
            http: with_alpn(b"http/1.1"),
            grpc: with_alpn(b"h2"),
        })
    }
}

/// A listener whose `accept` yields connections that completed their TLS handshake.
/// Handshakes run in their own tasks, bounded and timed out, so a slow or silent client cannot
/// hold up the others.
pub(super) struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Failed and timed-out handshakes are counted as refused requests (`tls_handshake`) of
    /// `transport`.
    pub(super) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        transport: Transport,
        shared: Arc<Shared>,
        stop: CancellationToken,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = TlsAcceptor::from(config);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(err) => {
                            tracing::debug!(error = %err, ?transport, "OTLP accept failed");
                            continue;
                        }
                    },
                };
                // See the plain listener: without it, each response waits on a delayed ACK.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => {
                            shared.refused(transport, "tls_handshake");
                            tracing::debug!(%peer, error = %err, ?transport, "TLS handshake failed");
                        }
                        Err(_) => {
                            shared.refused(transport, "tls_handshake");
                            tracing::debug!(%peer, ?transport, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(Self { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task ended (shutdown): wait for the server's own shutdown signal.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The gRPC server's view of a [`TlsListener`]: a stream of connections whose handshake is
/// done. It ends when the accept task does (shutdown).
impl tonic::codegen::tokio_stream::Stream for TlsListener {
    type Item = io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx
            .poll_recv(cx)
            .map(|connection| connection.map(|(tls, _)| Ok(tls)))
    }
}
