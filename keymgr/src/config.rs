//! The key manager's TOML configuration: where it listens, its certificates, keystore, master key and onboarding policy.
//!
//! Unknown fields are refused, and relative paths are taken from the
//! configuration file's directory, so a config can travel with its files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The default KMIP port (IANA, "kmip").
pub const DEFAULT_PORT: u16 = 5696;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on (default 0.0.0.0:5696).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The SQLite keystore file.
    pub keystore: PathBuf,
    /// Audit log, one JSON line per operation (default: beside the keystore).
    pub audit_log: Option<PathBuf>,
    /// Log every request and response as TTLV hex (for debugging a client).
    #[serde(default)]
    pub trace: bool,
    /// Serve no key material until the key has been in a keystore backup.
    #[serde(default)]
    pub require_backup: bool,
    /// Lease Time given to new objects, in seconds: a client uses an object
    /// no longer than this before it obtains a new lease (Obtain Lease, or
    /// Get), so a key revoked or destroyed here stops being used by then.
    /// 0: no leases.
    #[serde(default = "default_lease")]
    pub lease_time_secs: u32,
    /// The device group an unknown client certificate is put in (pending,
    /// unless that group accepts automatically).
    #[serde(default = "default_group")]
    pub default_group: String,
    /// Connections served at once; more wait in the listen queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections not (yet) of an accepted client (in their TLS handshake,
    /// or of a pending, rejected or unknown certificate), in all; when
    /// full, the oldest is closed for a newcomer.
    #[serde(default = "default_max_waiting")]
    pub max_waiting_connections: usize,
    /// Of those, from one source address.
    #[serde(default = "default_max_waiting_per_address")]
    pub max_waiting_per_address: usize,
    /// Seconds a TLS handshake may take.
    #[serde(default = "default_handshake")]
    pub handshake_timeout_secs: u64,
    /// Seconds a connection that is not an accepted client's may stay idle.
    #[serde(default = "default_waiting_idle")]
    pub waiting_idle_timeout_secs: u64,
    /// A connection idle this long is closed.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    pub tls: TlsConfig,
    pub master_key: MasterKeyConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca: PathBuf,
}

/// Where the master key comes from: exactly one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterKeyConfig {
    /// A file holding 32 random bytes as 64 hex digits.
    pub file: Option<PathBuf>,
    /// A file holding a passphrase (first line), stretched with Argon2id.
    pub passphrase_file: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}
fn default_lease() -> u32 {
    86_400
}

fn default_group() -> String {
    "default".into()
}
fn default_max_connections() -> usize {
    64
}
fn default_max_waiting() -> usize {
    64
}
fn default_max_waiting_per_address() -> usize {
    16
}
fn default_handshake() -> u64 {
    5
}
fn default_waiting_idle() -> u64 {
    10
}
fn default_idle() -> u64 {
    300
}

impl Config {
    /// The Lease Time objects get (`None`: no leases).
    pub fn lease_time(&self) -> Option<u32> {
        (self.lease_time_secs > 0).then_some(self.lease_time_secs)
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        Config::parse(&text, path)
    }

    /// Parses configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let bad = |message: String| Error::Config {
            path: path.to_owned(),
            message,
        };
        let mut c: Config = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut c.keystore);
        fix(&mut c.tls.cert);
        fix(&mut c.tls.key);
        fix(&mut c.tls.client_ca);
        if let Some(p) = c.audit_log.as_mut() {
            fix(p);
        }
        if let Some(p) = c.master_key.file.as_mut() {
            fix(p);
        }
        if let Some(p) = c.master_key.passphrase_file.as_mut() {
            fix(p);
        }
        match (&c.master_key.file, &c.master_key.passphrase_file) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "[master_key] has both file and passphrase_file; give one".into(),
                ))
            }
            (None, None) => {
                return Err(bad(
                    "[master_key] needs file (64 hex digits) or passphrase_file".into(),
                ))
            }
            _ => {}
        }
        if c.default_group.is_empty() {
            return Err(bad("default_group is empty".into()));
        }
        for (name, v) in [
            ("max_connections", c.max_connections as u64),
            ("max_waiting_connections", c.max_waiting_connections as u64),
            ("max_waiting_per_address", c.max_waiting_per_address as u64),
            ("handshake_timeout_secs", c.handshake_timeout_secs),
            ("waiting_idle_timeout_secs", c.waiting_idle_timeout_secs),
            ("idle_timeout_secs", c.idle_timeout_secs),
        ] {
            if v == 0 {
                return Err(bad(format!("{name} must be at least 1")));
            }
        }
        Ok(c)
    }

    /// Where audit records go.
    pub fn audit_path(&self) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| self.keystore.with_extension("audit.log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
keystore = "ks.db"
[tls]
cert = "s.pem"
key = "s.key"
client_ca = "/etc/ca.pem"
[master_key]
file = "mk"
"#;

    #[test]
    fn relative_paths_follow_the_file_and_defaults_apply() {
        let c = Config::parse(OK, Path::new("/etc/cinta/keymgr.toml")).unwrap();
        assert_eq!(c.keystore, Path::new("/etc/cinta/ks.db"));
        assert_eq!(c.tls.client_ca, Path::new("/etc/ca.pem"));
        assert_eq!(c.listen.port(), DEFAULT_PORT);
        assert_eq!(c.audit_path(), Path::new("/etc/cinta/ks.audit.log"));
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../deploy/keymgr.toml");
        let c = Config::parse(text, Path::new("/etc/cinta/keymgr.toml")).unwrap();
        assert_eq!(c.listen.port(), DEFAULT_PORT);
        assert!(c.master_key.file.is_some());
    }

    #[test]
    fn unknown_fields_and_two_master_keys_are_refused() {
        let e = Config::parse(&format!("colour = 1\n{OK}"), Path::new("k.toml")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let two = OK.replace("file = \"mk\"", "file = \"mk\"\npassphrase_file = \"p\"");
        let e = Config::parse(&two, Path::new("k.toml")).unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
    }
}
