//! TLS termination with rustls: a listener's certificates, chosen by SNI
//! (exact name, then a `*.` wildcard one label deep, then the first
//! certificate as the default), TLS 1.2 and 1.3 with rustls' safe defaults
//! (no legacy ciphers or versions), ALPN `h2` (unless `http2 = false`) and
//! `http/1.1`.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use waygate_config::TlsCertificate;

#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        Some(
            parent
                .and_then(|p| self.wildcard.get(p))
                .unwrap_or(&self.default)
                .clone(),
        )
    }
}

/// A listener's TLS acceptor.
#[derive(Clone)]
pub(crate) struct Acceptor(pub(crate) TlsAcceptor);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

/// The acceptor for a listener's certificates (validated at load, so a
/// failure here is a bug or a file changed in between).
pub(crate) fn acceptor(certs: &[TlsCertificate], http2: bool) -> Result<Acceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for c in certs {
        let key = PrivateKeyDer::from_pem_slice(&c.key_pem)
            .map_err(|e| format!("{}: {e}", c.cert_path.display()))?;
        let ck = CertifiedKey::from_der(c.chain.clone(), key, &provider)
            .map_err(|e| format!("{}: {e}", c.cert_path.display()))?;
        let ck = Arc::new(ck);
        for name in &c.names {
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.entry(parent.to_owned()),
                None => exact.entry(name.clone()),
            }
            .or_insert_with(|| ck.clone());
        }
        default.get_or_insert(ck);
    }
    let default = default.ok_or("no certificate")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            exact,
            wildcard,
            default,
        }));
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Acceptor(TlsAcceptor::from(Arc::new(config))))
}
