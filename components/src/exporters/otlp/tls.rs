//! The TLS client settings of both transports, from the same `tls` table, and the HTTP(S)
//! client built on them, which other components that call HTTP servers share.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::ExporterTlsConfig;

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("tls.{key}: cannot read {}: {e}", path.display()))
}

/// For gRPC: tonic's config; the system's roots unless `ca_file` is set.
pub(crate) fn tonic(t: &ExporterTlsConfig) -> Result<tonic::transport::ClientTlsConfig, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut config = ClientTlsConfig::new();
    config = match &t.ca_file {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read("ca_file", ca)?)),
        None => config.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
        config = config.identity(Identity::from_pem(
            read("cert_file", cert)?,
            read("key_file", key)?,
        ));
    }
    if let Some(name) = &t.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

/// For HTTP: a rustls config; the system's roots unless `ca_file` is set. Without `tls`
/// (an http:// endpoint) the config is never used for a handshake.
pub(crate) fn rustls(t: Option<&ExporterTlsConfig>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match t.and_then(|t| t.ca_file.as_ref()) {
        Some(ca) => {
            for cert in CertificateDer::pem_slice_iter(&read("ca_file", ca)?) {
                let cert = cert.map_err(|e| format!("tls.ca_file: {e}"))?;
                roots.add(cert).map_err(|e| format!("tls.ca_file: {e}"))?;
            }
        }
        None if t.is_some() => {
            // Certificates the system store cannot parse are skipped, as browsers do.
            let native = rustls_native_certs_load();
            roots.add_parsable_certificates(native);
        }
        None => {}
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("tls: {e}"))?
    .with_root_certificates(roots);
    let client_cert = t.and_then(|t| t.cert_file.as_ref().zip(t.key_file.as_ref()));
    let config = match client_cert {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(&read("cert_file", cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.cert_file: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&read("key_file", key)?)
                .map_err(|e| format!("tls.key_file: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("tls: the key does not fit the certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    // hyper-rustls sets ALPN itself (`enable_http1`).
    Ok(config)
}

fn rustls_native_certs_load() -> Vec<CertificateDer<'static>> {
    let loaded = rustls_native_certs::load_native_certs();
    for err in &loaded.errors {
        tracing::debug!(error = %err, "skipped part of the system's certificate store");
    }
    loaded.certs
}

/// An HTTP/1.1 client for `http://` and `https://` URLs: TLS from `tls` (the system's roots when
/// it is `None`), `server_name` honoured, connecting bounded by `connect_timeout`. Nothing
/// connects until the first request. Must run inside the tokio runtime.
pub(crate) fn https_client(
    tls: Option<&ExporterTlsConfig>,
    connect_timeout: Duration,
) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, String> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    // hyper's connector refuses https:// URIs unless told otherwise.
    connector.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls(tls)?)
        .https_or_http();
    let builder = match tls.and_then(|t| t.server_name.clone()) {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name)
                .map_err(|e| format!("tls.server_name: {e}"))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let connector = builder.enable_http1().wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}
