//! Where data keys come from: the key-source interface and the local key-file source.
//!
//! Every save set gets a fresh data key from a [`KeySource`], named after
//! the save set; its id goes into the save set's header, and a restore asks
//! the source for the key by that id. The KMIP source (the key manager)
//! implements the same interface, so the stream format does not change.
//!
//! The key-file source is for tests and single hosts: one 32-byte master
//! key in a file (mode 0600). A save set's key is derived from it and a
//! random nonce that the key id carries:
//! `key = HKDF-SHA256(salt = "cinta key file", ikm = master, info = key id)`,
//! with key id `file:<fingerprint>:<nonce>`. Destroying one key is not
//! possible with this source (crypto-shredding needs the key manager).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hkdf};

use crate::error::{Error, Result};
use crate::stream::hex;

/// A data key and its id. The key bytes are wiped when dropped.
pub struct DataKey {
    pub id: String,
    pub key: [u8; 32],
}

impl Drop for DataKey {
    fn drop(&mut self) {
        for b in self.key.iter_mut() {
            // SAFETY: a valid, aligned, exclusive reference to a byte.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id)
    }
}

/// Gives fresh keys for new save sets and the keys of existing ones.
pub trait KeySource: Send {
    /// A fresh key for the save set `save_set` (hex id).
    fn create(&mut self, save_set: &str) -> Result<DataKey>;
    /// The key a save set header names.
    fn get(&mut self, key_id: &str) -> Result<DataKey>;
}

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| Error::Key {
        key_id: String::new(),
        reason: "the system random generator failed".into(),
    })?;
    Ok(b)
}

/// Keys derived from a master key kept in a file.
pub struct FileKeySource {
    path: PathBuf,
    master: DataKey,
    fingerprint: String,
}

fn key_err(key_id: &str, reason: impl Into<String>) -> Error {
    Error::Key {
        key_id: key_id.to_string(),
        reason: reason.into(),
    }
}

impl FileKeySource {
    /// Creates a new master key file; refuses to replace an existing one.
    pub fn init(path: &Path) -> Result<Self> {
        let key = random::<32>()?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("key file {}", path.display()), e))?;
        f.write_all(format!("{}\n", hex(&key)).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(format!("key file {}", path.display()), e))?;
        Self::open(path)
    }

    /// Opens a master key file (64 hex digits).
    pub fn open(path: &Path) -> Result<Self> {
        let name = format!("key file {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(name.clone(), e))?;
        let t = text.trim();
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(key_err(
                "",
                format!("{name} does not hold a 32-byte key as 64 hex digits"),
            ));
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).expect("checked hex");
        }
        let fp = digest::digest(
            &digest::SHA256,
            &[b"cinta key file fingerprint".as_slice(), &key].concat(),
        );
        Ok(FileKeySource {
            path: path.to_path_buf(),
            fingerprint: hex(&fp.as_ref()[..8]),
            master: DataKey {
                id: String::new(),
                key,
            },
        })
    }

    /// Identifies the master key without revealing it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn derive(&self, key_id: &str) -> DataKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"cinta key file").extract(&self.master.key);
        let mut key = [0u8; 32];
        prk.expand(&[key_id.as_bytes()], hkdf::HKDF_SHA256)
            .expect("32 bytes")
            .fill(&mut key)
            .expect("32 bytes");
        DataKey {
            id: key_id.to_string(),
            key,
        }
    }
}

impl KeySource for FileKeySource {
    fn create(&mut self, _save_set: &str) -> Result<DataKey> {
        let nonce = random::<16>()?;
        Ok(self.derive(&format!("file:{}:{}", self.fingerprint, hex(&nonce))))
    }

    fn get(&mut self, key_id: &str) -> Result<DataKey> {
        let mut parts = key_id.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("file"), Some(fp), Some(nonce), None)
                if nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                if fp != self.fingerprint {
                    return Err(key_err(
                        key_id,
                        format!(
                            "made with key file {fp}, but {} is key file {}",
                            self.path.display(),
                            self.fingerprint
                        ),
                    ));
                }
                Ok(self.derive(key_id))
            }
            _ => Err(key_err(
                key_id,
                "not a key-file key id (file:<fingerprint>:<nonce>); another key source made it",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let mut s = FileKeySource::init(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let a = s.create("aa").unwrap();
        let b = s.create("bb").unwrap();
        assert_ne!(a.key, b.key);
        assert_ne!(a.id, b.id);
        let mut again = FileKeySource::open(&p).unwrap();
        assert_eq!(again.get(&a.id).unwrap().key, a.key);
        assert!(
            FileKeySource::init(&p).is_err(),
            "an existing key file is never replaced"
        );
        let other = dir.path().join("other.key");
        let mut o = FileKeySource::init(&other).unwrap();
        let e = o.get(&a.id).unwrap_err().to_string();
        assert!(
            e.contains(s.fingerprint()) && e.contains(o.fingerprint()),
            "{e}"
        );
        assert!(o
            .get("kmip:1234")
            .unwrap_err()
            .to_string()
            .contains("another key source"));
        std::fs::write(&other, "not a key").unwrap();
        assert!(FileKeySource::open(&other)
            .err()
            .unwrap()
            .to_string()
            .contains("64 hex digits"));
    }
}
