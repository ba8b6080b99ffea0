//! TLS to upstream servers: the client configuration built from an
//! upstream's settings (trusted roots, client certificate, ALPN), and the
//! handshake with its failures told apart: a certificate the gateway does
//! not trust is not the same failure as a server that does not speak TLS.

use std::sync::Arc;

use rustls::pki_types::{pem::PemObject, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use waygate_config::{UpstreamProtocol, UpstreamTls};

/// How an upstream connects over TLS; shared by its connections and its
/// health checks.
#[derive(Clone)]
pub struct TlsConnect {
    connector: TlsConnector,
    /// The configured `tls_server_name`; otherwise each server's host.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A failed TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    /// The server's certificate was refused (or it refused ours).
    pub certificate: bool,
    pub detail: String,
}

impl TlsConnect {
    /// Builds the client configuration: the configured CAs, or the system's
    /// roots; the client certificate for mutual TLS; ALPN `h2` for HTTP/2,
    /// `http/1.1` otherwise.
    pub fn new(tls: &UpstreamTls, protocol: UpstreamProtocol) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        match &tls.ca {
            Some(ca) => {
                roots.add_parsable_certificates(ca.iter().cloned());
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(
                        "no system root certificates found (install ca-certificates, or set tls_ca)"
                            .into(),
                    );
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match &tls.client_cert {
            Some(c) => {
                let key = PrivateKeyDer::from_pem_slice(&c.key_pem).map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(c.chain.clone(), key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = match protocol {
            UpstreamProtocol::H2 => vec![b"h2".to_vec()],
            _ => vec![b"http/1.1".to_vec()],
        };
        let server_name = tls
            .server_name
            .as_deref()
            .map(|n| ServerName::try_from(n.to_owned()))
            .transpose()
            .map_err(|e| format!("tls_server_name: {e}"))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The TLS handshake over `stream` with a server whose host is `host`.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        host: &str,
    ) -> Result<TlsStream<TcpStream>, TlsFailure> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_owned()).map_err(|e| TlsFailure {
                certificate: false,
                detail: format!("`{host}` cannot be used as a TLS server name: {e}"),
            })?,
        };
        self.connector
            .connect(name, stream)
            .await
            .map_err(|e| classify(&e))
    }
}

/// The TLS failure behind an I/O error, if rustls reported one (for
/// errors seen after the handshake, such as a server that refuses the
/// client certificate under TLS 1.3).
pub fn tls_failure(e: &std::io::Error) -> Option<TlsFailure> {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .map(|_| classify(e))
}

/// Tells a certificate problem from any other handshake failure.
fn classify(e: &std::io::Error) -> TlsFailure {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => TlsFailure {
            certificate: true,
            detail: format!("the server's certificate was refused: {c:?}"),
        },
        Some(rustls::Error::AlertReceived(a))
            if matches!(
                a,
                rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::UnknownCA
                    | rustls::AlertDescription::CertificateRequired
                    | rustls::AlertDescription::CertificateUnknown
                    | rustls::AlertDescription::CertificateExpired
                    | rustls::AlertDescription::CertificateRevoked
                    | rustls::AlertDescription::UnsupportedCertificate
            ) =>
        {
            TlsFailure {
                certificate: true,
                detail: format!("the server refused the gateway's client certificate ({a:?})"),
            }
        }
        Some(other) => TlsFailure {
            certificate: false,
            detail: format!("TLS handshake failed: {other}"),
        },
        None => TlsFailure {
            certificate: false,
            detail: format!("TLS handshake failed: {e}"),
        },
    }
}
