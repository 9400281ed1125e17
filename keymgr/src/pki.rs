//! A throwaway PKI for tests, trials and the quickstart: a CA and the server and client certificates it signs (ECDSA P-256, or a given key such as RSA).
//!
//! Production sites bring their own CA; nothing here is needed to run the
//! server with real certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::error::{Error, Result};

fn pki(e: impl std::fmt::Display) -> Error {
    Error::Pki(e.to_string())
}

fn write(path: &Path, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn validity(p: &mut CertificateParams) {
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2099, 12, 31);
}

/// Makes `dir/ca.pem` and `dir/ca.key` unless they exist; returns the CA certificate's path.
pub fn init(dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert.exists() && key.exists() {
        return Ok(cert);
    }
    let kp = KeyPair::generate().map_err(pki)?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name
        .push(DnType::OrganizationName, "cinta throwaway PKI");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p);
    let c = p.self_signed(&kp).map_err(pki)?;
    write(&key, &kp.serialize_pem(), true)?;
    write(&cert, &c.pem(), false)?;
    Ok(cert)
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// Issues `dir/NAME.pem` and `dir/NAME.key` signed by the CA in `dir`.
///
/// `hosts` become subject alternative names (IP addresses or DNS names);
/// `key` uses an existing private key (PEM, e.g. RSA from openssl) instead of
/// a fresh ECDSA P-256 one.
pub fn issue(
    dir: &Path,
    name: &str,
    role: Role,
    hosts: &[String],
    key: Option<&Path>,
) -> Result<(PathBuf, PathBuf)> {
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).map_err(|e| {
        Error::io(
            format!(
                "read {} (run `pki init` first)",
                dir.join("ca.pem").display()
            ),
            e,
        )
    })?;
    let ca_key_pem = std::fs::read_to_string(dir.join("ca.key"))
        .map_err(|e| Error::io(format!("read {}", dir.join("ca.key").display()), e))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(pki)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(pki)?;
    let kp = match key {
        Some(k) => {
            let pem = std::fs::read_to_string(k)
                .map_err(|e| Error::io(format!("read {}", k.display()), e))?;
            KeyPair::from_pem(&pem).map_err(|e| Error::Pki(format!("{}: {e}", k.display())))?
        }
        None => KeyPair::generate().map_err(pki)?,
    };
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name
        .push(DnType::OrganizationName, "cinta throwaway PKI");
    for h in hosts {
        p.subject_alt_names
            .push(match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.clone().try_into().map_err(pki)?),
            });
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![match role {
        Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    validity(&mut p);
    let c = p.signed_by(&kp, &issuer).map_err(pki)?;
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    write(&key_path, &kp.serialize_pem(), true)?;
    write(&cert_path, &c.pem(), false)?;
    Ok((cert_path, key_path))
}
