//! Validation of listener certificates: the files are readable PEM, the
//! key matches the certificate, and the certificate is not expired (a
//! warning within 14 days of expiry). The names it is valid for are kept
//! for choosing it by SNI.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::Ctx;
use crate::model::TlsCertificate;
use crate::raw::RawTls;

/// Certificates expiring sooner than this get a warning.
const EXPIRY_WARNING_DAYS: i64 = 14;

// === impl Ctx ===

impl Ctx<'_> {
    pub(super) fn tls(&mut self, raw: &[Spanned<RawTls>], base: &Path) -> Vec<TlsCertificate> {
        raw.iter()
            .filter_map(|t| self.certificate(t.get_ref(), base))
            .collect()
    }

    fn certificate(&mut self, t: &RawTls, base: &Path) -> Option<TlsCertificate> {
        let cert_path = base.join(t.cert.get_ref());
        let key_path = base.join(t.key.get_ref());
        let hint = Some("relative paths are taken from the config file's directory".to_owned());
        let cert_pem = match std::fs::read(&cert_path) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("cannot read certificate `{}`: {e}", cert_path.display());
                self.error(t.cert.span(), msg, hint);
                return None;
            }
        };
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
        let key_pem = match std::fs::read(&key_path) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("cannot read private key `{}`: {e}", key_path.display());
                self.error(t.key.span(), msg, hint);
                return None;
            }
        };
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
            chain,
            key_pem,
            names,
            not_after,
        })
    }
}
