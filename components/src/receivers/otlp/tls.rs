//! TLS for the listeners: the PEM files read at start, a rustls config for each listener (they
//! differ only in ALPN), and a listener that completes handshakes off the accept loop, for
//! both: every failed or stalled handshake is counted, whichever protocol it was for.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
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

/// The bytes of the PEM files, to tell whether a reload has anything new.
#[derive(PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn read(config: &TlsConfig) -> Result<Self, String> {
        Ok(Self {
            cert: read("cert_file", &config.cert_file)?,
            key: read("key_file", &config.key_file)?,
            client_ca: config
                .client_ca_file
                .as_ref()
                .map(|p| read("client_ca_file", p))
                .transpose()?,
        })
    }
}

impl Loaded {
    /// Checks the files: a key that does not match, or a file with no PEM block, is an error
    /// naming the key.
    fn from_files(config: &TlsConfig, files: &Files) -> Result<Self, String> {
        let (cert_pem, key_pem, client_ca_pem) = (&files.cert, &files.key, &files.client_ca);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.cert_file: {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "tls.cert_file: no PEM certificate in {}",
                config.cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            format!(
                "tls.key_file: no PEM private key in {}: {e}",
                config.key_file.display()
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?;
        let builder = match client_ca_pem {
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

/// The server configs in use and the files they came from. A reload swaps both; connections
/// already open keep the config they were accepted with.
#[derive(Clone)]
pub(super) struct Current(Arc<RwLock<(Loaded, Files)>>);

impl Current {
    /// Reads and checks the files: a missing one is an error naming its key, as is anything
    /// [`Loaded::from_files`] refuses.
    pub(super) fn load(config: &TlsConfig) -> Result<Self, String> {
        let files = Files::read(config)?;
        let loaded = Loaded::from_files(config, &files)?;
        Ok(Self(Arc::new(RwLock::new((loaded, files)))))
    }

    fn get(&self, transport: Transport) -> Arc<rustls::ServerConfig> {
        let current = self.0.read().unwrap_or_else(PoisonError::into_inner);
        match transport {
            Transport::Grpc => current.0.grpc.clone(),
            Transport::Http => current.0.http.clone(),
        }
    }

    /// Reads the files again every `interval` until `stop`. A set that differs and loads
    /// replaces the current one; one that does not load is skipped with a warning (said once
    /// per distinct error) and the current one goes on serving.
    pub(super) fn spawn_reload(
        &self,
        config: TlsConfig,
        interval: Duration,
        component: String,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let current = self.clone();
        let outcome = |outcome: &'static str| {
            metrics::counter!(
                "tracescale_receiver_otlp_tls_reloads_total",
                "component" => component.clone(),
                "outcome" => outcome
            )
        };
        let (loaded, failed) = (outcome("loaded"), outcome("failed"));
        tokio::spawn(async move {
            let mut last_error = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let result = Files::read(&config).and_then(|files| {
                    let unchanged =
                        current.0.read().unwrap_or_else(PoisonError::into_inner).1 == files;
                    if unchanged {
                        return Ok(None);
                    }
                    Loaded::from_files(&config, &files).map(|l| Some((l, files)))
                });
                match result {
                    Ok(None) => {}
                    Ok(Some(new)) => {
                        *current.0.write().unwrap_or_else(PoisonError::into_inner) = new;
                        loaded.increment(1);
                        last_error = None;
                        tracing::info!(receiver = %component, "TLS certificate reloaded");
                    }
                    Err(err) => {
                        failed.increment(1);
                        if last_error.as_ref() != Some(&err) {
                            tracing::warn!(receiver = %component, error = %err,
                                "TLS files changed but do not load; serving the previous certificate");
                            last_error = Some(err);
                        }
                    }
                }
            }
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
        config: Current,
        transport: Transport,
        shared: Arc<Shared>,
        stop: CancellationToken,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
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
                // The config of the moment: a reload applies from the next connection on.
                let acceptor = TlsAcceptor::from(config.get(transport));
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
