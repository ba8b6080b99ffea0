//! Validation of listener certificates: the files are readable PEM, the
//! key matches the certificate, and the certificate is not expired (a
//! warning within 14 days of expiry). The names it is valid for are kept
//! for choosing it by SNI.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::Ctx;
use crate::model::{TlsCertificate, UpstreamProtocol, UpstreamTls};
use crate::raw::{RawTls, RawUpstream};

/// Certificates expiring sooner than this get a warning.
const EXPIRY_WARNING_DAYS: i64 = 14;

// === impl Ctx ===

impl Ctx<'_> {
    /// An upstream's protocol and TLS settings; the CA and client
    /// certificate files are read and checked now.
    pub(super) fn upstream_tls(
        &mut self,
        u: &RawUpstream,
        base: &Path,
    ) -> (UpstreamProtocol, Option<UpstreamTls>) {
        let protocol = match u.protocol.as_ref() {
            None => UpstreamProtocol::Http1,
            Some(p) => match p.get_ref().as_str() {
                "http1" => UpstreamProtocol::Http1,
                "h2" => UpstreamProtocol::H2,
                "h2c" => UpstreamProtocol::H2c,
                other => {
                    self.error(
                        p.span(),
                        format!("protocol `{other}` is not known"),
                        Some("expected \"http1\", \"h2\" (HTTP/2 over TLS) or \"h2c\" (HTTP/2 in clear text)".into()),
                    );
                    UpstreamProtocol::Http1
                }
            },
        };
        let tls = match (&u.tls, protocol) {
            (Some(t), UpstreamProtocol::H2) if !*t.get_ref() => {
                self.error(
                    t.span(),
                    "protocol \"h2\" is HTTP/2 over TLS and cannot have tls = false".into(),
                    Some("use protocol = \"h2c\" for HTTP/2 in clear text".into()),
                );
                false
            }
            (Some(t), UpstreamProtocol::H2c) if *t.get_ref() => {
                self.error(
                    t.span(),
                    "protocol \"h2c\" is HTTP/2 in clear text and cannot have tls = true".into(),
                    Some("use protocol = \"h2\" for HTTP/2 over TLS".into()),
                );
                false
            }
            (Some(t), _) => *t.get_ref(),
            (None, p) => p == UpstreamProtocol::H2,
        };
        let tls_keys = [
            ("tls_server_name", &u.tls_server_name),
            ("tls_ca", &u.tls_ca),
            ("tls_client_cert", &u.tls_client_cert),
            ("tls_client_key", &u.tls_client_key),
        ];
        if !tls {
            for (key, v) in tls_keys {
                if let Some(v) = v {
                    self.error(
                        v.span(),
                        format!("{key} is set but the upstream does not use TLS"),
                        Some("add tls = true (or protocol = \"h2\")".into()),
                    );
                }
            }
            return (protocol, None);
        }
        let server_name = u.tls_server_name.as_ref().and_then(|n| {
            match rustls_pki_types::ServerName::try_from(n.get_ref().as_str()) {
                Ok(_) => Some(n.get_ref().clone()),
                Err(_) => {
                    self.error(
                        n.span(),
                        format!(
                            "tls_server_name `{}` is not a DNS name or IP address",
                            n.get_ref()
                        ),
                        None,
                    );
                    None
                }
            }
        });
        let ca = u.tls_ca.as_ref().and_then(|p| self.ca(p, base));
        let ca_path = u.tls_ca.as_ref().map(|p| base.join(p.get_ref()));
        let client_cert = match (&u.tls_client_cert, &u.tls_client_key) {
            (Some(cert), Some(key)) => self.certificate(
                &RawTls {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                base,
            ),
            (Some(v), None) | (None, Some(v)) => {
                self.error(
                    v.span(),
                    "mutual TLS needs both tls_client_cert and tls_client_key".into(),
                    None,
                );
                None
            }
            (None, None) => None,
        };
        let tls = UpstreamTls {
            server_name,
            ca,
            ca_path,
            client_cert,
        };
        (protocol, Some(tls))
    }

    /// A file named by the config key `raw`; an error at that key if it
    /// cannot be read.
    fn read(&mut self, raw: &Spanned<String>, path: &Path, what: &str) -> Option<Vec<u8>> {
        match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) => {
                self.error(
                    raw.span(),
                    format!("cannot read {what} `{}`: {e}", path.display()),
                    Some("relative paths are taken from the config file's directory".into()),
                );
                None
            }
        }
    }

    /// The certificates of a CA file; each must parse as a trust anchor.
    fn ca(&mut self, raw: &Spanned<String>, base: &Path) -> Option<Vec<CertificateDer<'static>>> {
        let path = base.join(raw.get_ref());
        let pem = self.read(raw, &path, "CA file")?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .filter_map(Result::ok)
            .collect();
        let mut store = rustls::RootCertStore::empty();
        let (_, bad) = store.add_parsable_certificates(certs.iter().cloned());
        if certs.is_empty() || bad > 0 {
            self.error(
                raw.span(),
                format!(
                    "CA file `{}` holds {} usable certificate(s) and {bad} unusable",
                    path.display(),
                    certs.len() - bad
                ),
                Some("expected -----BEGIN CERTIFICATE----- blocks of CA certificates".into()),
            );
            return None;
        }
        Some(certs)
    }

    pub(super) fn tls(&mut self, raw: &[Spanned<RawTls>], base: &Path) -> Vec<TlsCertificate> {
        raw.iter()
            .filter_map(|t| self.certificate(t.get_ref(), base))
            .collect()
    }

    fn certificate(&mut self, t: &RawTls, base: &Path) -> Option<TlsCertificate> {
        let cert_path = base.join(t.cert.get_ref());
        let key_path = base.join(t.key.get_ref());
        let cert_pem = self.read(&t.cert, &cert_path, "certificate")?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            self.error(
                t.cert.span(),
                format!("`{}` holds no PEM certificate", cert_path.display()),
                Some("expected -----BEGIN CERTIFICATE----- blocks, the server's first".into()),
            );
            return None;
        }
        let key_pem = self.read(&t.key, &key_path, "private key")?;
        let Ok(key) = PrivateKeyDer::from_pem_slice(&key_pem) else {
            self.error(
                t.key.span(),
                format!("`{}` holds no PEM private key", key_path.display()),
                Some("expected a PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key".into()),
            );
            return None;
        };
        let provider = rustls::crypto::ring::default_provider();
        if let Err(e) = rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider) {
            self.error(
                t.key.span(),
                format!(
                    "private key `{}` does not go with certificate `{}`: {e}",
                    key_path.display(),
                    cert_path.display()
                ),
                Some("give the key the certificate was issued for".into()),
            );
            return None;
        }
        let (names, not_after) = match x509_parser::parse_x509_certificate(&chain[0]) {
            Ok((_, x509)) => {
                let mut names: Vec<String> = x509
                    .subject_alternative_name()
                    .ok()
                    .flatten()
                    .map(|san| {
                        san.value
                            .general_names
                            .iter()
                            .filter_map(|n| match n {
                                x509_parser::extensions::GeneralName::DNSName(d) => {
                                    Some(d.to_ascii_lowercase())
                                }
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if names.is_empty() {
                    names.extend(
                        x509.subject()
                            .iter_common_name()
                            .filter_map(|cn| cn.as_str().ok())
                            .map(str::to_ascii_lowercase),
                    );
                }
                (names, x509.validity().not_after.timestamp())
            }
            Err(e) => {
                self.error(
                    t.cert.span(),
                    format!("cannot parse certificate `{}`: {e}", cert_path.display()),
                    None,
                );
                return None;
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let days = (not_after - now).div_euclid(86_400);
        if not_after <= now {
            self.error(
                t.cert.span(),
                format!(
                    "certificate `{}` expired {} day(s) ago",
                    cert_path.display(),
                    -days
                ),
                Some("renew it: clients refuse an expired certificate".into()),
            );
        } else if days < EXPIRY_WARNING_DAYS {
            self.warn(
                t.cert.span(),
                format!(
                    "certificate `{}` expires in {days} day(s)",
                    cert_path.display()
                ),
                Some(
                    "renew it soon; after a renewal, `waygate reload` serves it to new connections"
                        .into(),
                ),
            );
        }
        Some(TlsCertificate {
            cert_path,
            key_path,
            chain,
            key_pem,
            names,
            not_after,
        })
    }
}
