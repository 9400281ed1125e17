//! TLS for KMIP: the server's rustls configuration (mutual TLS, ring only, TLS 1.2 and 1.3) and a client's identity from its certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::error::{Error, Result};

/// The one crypto provider of the process: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a private key (PKCS#8, SEC1 or PKCS#1 PEM).
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| Error::Tls(format!("{}: no usable private key ({e})", path.display())))
}

/// A root store of the CA certificates in `path`.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| {
            Error::Tls(format!(
                "{}: not a usable CA certificate ({e})",
                path.display()
            ))
        })?;
    }
    Ok(Arc::new(roots))
}

/// The server side: every client must present a certificate from `client_ca`.
pub fn server_config(cert: &Path, key_path: &Path, client_ca: &Path) -> Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider())
        .build()
        .map_err(|e| Error::Tls(format!("client CA {}: {e}", client_ca.display())))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key(key_path)?)
        .map_err(|e| {
            Error::Tls(format!(
                "server certificate {} and key {}: {e}",
                cert.display(),
                key_path.display()
            ))
        })?;
    Ok(Arc::new(cfg))
}

/// A client's identity: the SHA-256 of its certificate, and its subject for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub fingerprint: String,
    pub subject: String,
}

impl Identity {
    pub fn of(cert: &CertificateDer<'_>) -> Identity {
        let fp = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        let subject = x509_parser::parse_x509_certificate(cert.as_ref())
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_else(|_| "(unreadable subject)".into());
        Identity {
            fingerprint: crate::master::hex(fp.as_ref()),
            subject,
        }
    }
}
