//! The KMIP key source: a fresh AES-256 key per save set, created and activated on the key manager, fetched again by its identifier for restores, destroyed to crypto-shred.
//!
//! Key ids in save-set headers are `kmip:<unique identifier>`. The key is
//! named `cinta-saveset-<save set id>` and carries the custom attributes
//! `x-cinta-save-set` and `x-cinta-host`, so an administrator can tell from
//! the key manager which save set a key protects. The connection is kept
//! for the whole job; while the key manager is briefly away, requests are
//! retried with backoff (`retry_secs`), and a save that cannot get a key
//! fails before writing anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cinta_kmip::message::Version;
use cinta_kmip_client::{Client, Config};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::keys::{DataKey, KeySource};

/// Prefix of key ids this source makes.
pub const PREFIX: &str = "kmip:";

/// `--kmip FILE`: where the key manager is and who we are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmipConfig {
    /// host:port of cinta-keymgr (or any KMIP server).
    pub server: String,
    /// This agent's certificate and key (PEM), and the CA that signed the server's.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Name to check the server's certificate against (default: the host of `server`).
    pub server_name: Option<String>,
    /// KMIP version to speak, "1.0" to "2.0" (default 1.4).
    #[serde(default = "default_version")]
    pub version: String,
    /// How long to keep retrying while the server is unreachable.
    #[serde(default = "default_retry")]
    pub retry_secs: u64,
}

fn default_version() -> String {
    "1.4".into()
}
fn default_retry() -> u64 {
    30
}

fn err(key_id: &str, reason: impl std::fmt::Display) -> Error {
    Error::Key {
        key_id: key_id.to_string(),
        reason: reason.to_string(),
    }
}

pub struct KmipKeySource {
    client: Client,
    host: String,
    /// The key this source made last: reading back the save set it made
    /// (its index, after the save) needs no second round trip.
    made: Option<DataKey>,
}

fn copy(k: &DataKey) -> DataKey {
    DataKey {
        id: k.id.clone(),
        key: k.key,
    }
}

impl KmipKeySource {
    /// Reads `--kmip FILE` (relative paths from its directory) and prepares the client.
    pub fn open(path: &Path) -> Result<KmipKeySource> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let mut c: KmipConfig =
            toml::from_str(&text).map_err(|e| err("", format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.cert, &mut c.key, &mut c.ca] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        let version = match c
            .version
            .split_once('.')
            .map(|(a, b)| (a.parse(), b.parse()))
        {
            Some((Ok(major), Ok(minor)))
                if cinta_kmip::message::SUPPORTED.contains(&Version::new(major, minor)) =>
            {
                Version::new(major, minor)
            }
            _ => {
                return Err(err(
                    "",
                    format!(
                        "{}: version {:?} is not one of 1.0-1.4, 2.0",
                        path.display(),
                        c.version
                    ),
                ))
            }
        };
        let mut cfg = Config::new(c.server.clone(), &c.cert, &c.key, &c.ca);
        cfg.server_name = c.server_name;
        cfg.version = version;
        cfg.retry_for = Duration::from_secs(c.retry_secs);
        let client = Client::new(cfg).map_err(|e| err("", e))?;
        Ok(KmipKeySource {
            client,
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            made: None,
        })
    }

    /// Destroys the key behind `key_id` (revoking it first if active).
    pub fn shred(&mut self, key_id: &str) -> Result<()> {
        if self.made.as_ref().is_some_and(|k| k.id == key_id) {
            self.made = None;
        }
        let uid = uid(key_id)?;
        self.client.shred(uid).map_err(|e| err(key_id, e))
    }
}

fn uid(key_id: &str) -> Result<&str> {
    key_id
        .strip_prefix(PREFIX)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            err(
                key_id,
                "not a KMIP key id (kmip:<unique identifier>); it was made by another key source",
            )
        })
}

impl KeySource for KmipKeySource {
    fn create(&mut self, save_set: &str) -> Result<DataKey> {
        let name = format!("cinta-saveset-{save_set}");
        // Create, Activate and Get in one round trip.
        let (uid, bytes) = self
            .client
            .create_active_key(
                &name,
                &[("x-cinta-save-set", save_set), ("x-cinta-host", &self.host)],
            )
            .map_err(|e| err(&name, e))?;
        let key_id = format!("{PREFIX}{uid}");
        let mut key = DataKey {
            id: key_id.clone(),
            key: [0u8; 32],
        };
        if bytes.len() != 32 {
            return Err(err(
                &key_id,
                format!("the key manager gave {} bytes, not 32", bytes.len()),
            ));
        }
        key.key.copy_from_slice(&bytes);
        self.made = Some(copy(&key));
        Ok(key)
    }

    fn get(&mut self, key_id: &str) -> Result<DataKey> {
        if let Some(k) = self.made.as_ref().filter(|k| k.id == key_id) {
            return Ok(copy(k));
        }
        let bytes = self
            .client
            .get_key(uid(key_id)?)
            .map_err(|e| err(key_id, e))?;
        if bytes.len() != 32 {
            return Err(err(
                key_id,
                format!("the key manager gave {} bytes, not 32", bytes.len()),
            ));
        }
        let mut key = DataKey {
            id: key_id.to_string(),
            key: [0u8; 32],
        };
        key.key.copy_from_slice(&bytes);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_key_ids_are_checked() {
        let c: KmipConfig = toml::from_str(include_str!("../../deploy/agent-kmip.toml")).unwrap();
        assert_eq!(c.version, "1.4");
        assert_eq!(c.retry_secs, 30);
        assert!(toml::from_str::<KmipConfig>(
            "server = \"a:1\"\ncert = \"c\"\nkey = \"k\"\nca = \"ca\"\ncolour = 1"
        )
        .is_err());
        assert_eq!(uid("kmip:abc").unwrap(), "abc");
        assert!(uid("file:00:11")
            .unwrap_err()
            .to_string()
            .contains("another key source"));
        assert!(uid("kmip:").is_err());
    }
}
