//! The master key that wraps every key in the keystore: read from a file or stretched from a passphrase, and the wrapping itself.
//!
//! Wrapping is AES-256-GCM (ring) with a random 96-bit nonce and the object's
//! unique identifier as associated data, so a wrapped key moved to another
//! row does not unwrap. Layout: nonce (12) || ciphertext || tag (16).

use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Argon2id cost for passphrases: 64 MiB, 3 passes, 1 lane (RFC 9106's
/// second recommended option), about 0.2 s here; stored beside the salt so
/// it can be raised later without breaking old keystores.
pub const ARGON2_M_KIB: u32 = 64 * 1024;
pub const ARGON2_T: u32 = 3;
pub const ARGON2_P: u32 = 1;

/// How a passphrase becomes a key: stored in the keystore (not secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdfParams {
    pub salt: Vec<u8>,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl KdfParams {
    /// Fresh parameters with a random salt.
    pub fn fresh(rng: &dyn SecureRandom) -> Result<KdfParams> {
        let mut salt = vec![0u8; 16];
        rng.fill(&mut salt)
            .map_err(|_| Error::MasterKey("no randomness".into()))?;
        Ok(KdfParams {
            salt,
            m_kib: ARGON2_M_KIB,
            t: ARGON2_T,
            p: ARGON2_P,
        })
    }

    /// "argon2id:m=65536,t=3,p=1:SALTHEX", as stored.
    pub fn encode(&self) -> String {
        format!(
            "argon2id:m={},t={},p={}:{}",
            self.m_kib,
            self.t,
            self.p,
            hex(&self.salt)
        )
    }

    pub fn decode(s: &str) -> Option<KdfParams> {
        let mut parts = s.split(':');
        if parts.next()? != "argon2id" {
            return None;
        }
        let mut m = None;
        let mut t = None;
        let mut p = None;
        for kv in parts.next()?.split(',') {
            let (k, v) = kv.split_once('=')?;
            let v: u32 = v.parse().ok()?;
            match k {
                "m" => m = Some(v),
                "t" => t = Some(v),
                "p" => p = Some(v),
                _ => return None,
            }
        }
        let salt = unhex(parts.next()?)?;
        Some(KdfParams {
            salt,
            m_kib: m?,
            t: t?,
            p: p?,
        })
    }
}

/// Where a master key comes from.
#[derive(Clone)]
pub enum Source {
    /// 32 bytes as 64 hex digits.
    Key(Zeroizing<[u8; 32]>),
    /// A passphrase to stretch with the keystore's stored parameters.
    Passphrase(Zeroizing<String>),
}

impl Source {
    /// Reads a key file (64 hex digits, surrounding whitespace ignored).
    pub fn key_file(path: &Path) -> Result<Source> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("master key file {}", path.display()), e))?,
        );
        let bytes = unhex(text.trim()).filter(|b| b.len() == 32).ok_or_else(|| {
            Error::MasterKey(format!(
                "{} must hold 64 hex digits (32 bytes); make one with `cinta-keymgr master-key new`",
                path.display()
            ))
        })?;
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&bytes);
        Ok(Source::Key(k))
    }

    /// Reads a passphrase file (its first line).
    pub fn passphrase_file(path: &Path) -> Result<Source> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("passphrase file {}", path.display()), e))?,
        );
        let line = text.lines().next().unwrap_or("").to_string();
        if line.chars().count() < 12 {
            return Err(Error::MasterKey(format!(
                "the passphrase in {} is shorter than 12 characters",
                path.display()
            )));
        }
        Ok(Source::Passphrase(Zeroizing::new(line)))
    }

    pub fn needs_kdf(&self) -> bool {
        matches!(self, Source::Passphrase(_))
    }

    /// The key itself; a passphrase needs the keystore's KDF parameters.
    pub fn derive(&self, kdf: Option<&KdfParams>) -> Result<MasterKey> {
        match self {
            Source::Key(k) => Ok(MasterKey::new(**k)),
            Source::Passphrase(p) => {
                let kdf = kdf.ok_or_else(|| {
                    Error::MasterKey(
                        "this keystore's master key is a key file, not a passphrase".into(),
                    )
                })?;
                stretch(p.as_bytes(), kdf).map(MasterKey::new)
            }
        }
    }
}

/// Argon2id of `secret` with `kdf`.
pub fn stretch(secret: &[u8], kdf: &KdfParams) -> Result<[u8; 32]> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|e| Error::MasterKey(format!("Argon2id parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(secret, &kdf.salt, &mut out)
        .map_err(|e| Error::MasterKey(format!("Argon2id: {e}")))?;
    Ok(out)
}

/// A 256-bit key that wraps other keys and authenticates keystore rows.
pub struct MasterKey {
    key: LessSafeKey,
    /// HMAC-SHA256 key derived from the master key, for row integrity.
    mac: ring::hmac::Key,
    id: String,
}

const ID_CONTEXT: &[u8] = b"cinta-keymgr master key id v1";
const MAC_CONTEXT: &[u8] = b"cinta-keymgr row mac key v1";

impl MasterKey {
    pub fn new(bytes: [u8; 32]) -> MasterKey {
        let bytes = Zeroizing::new(bytes);
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(ID_CONTEXT);
        ctx.update(&*bytes);
        let id = hex(&ctx.finish().as_ref()[..8]);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &*bytes).expect("32-byte key"));
        let mut m = ring::digest::Context::new(&ring::digest::SHA256);
        m.update(MAC_CONTEXT);
        m.update(&*bytes);
        let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, m.finish().as_ref());
        MasterKey { key, mac, id }
    }

    /// The MAC of a keystore row: `table` and each field, length-prefixed.
    pub fn row_mac(&self, table: &str, fields: &[&[u8]]) -> Vec<u8> {
        let mut ctx = ring::hmac::Context::with_key(&self.mac);
        for f in std::iter::once(table.as_bytes()).chain(fields.iter().copied()) {
            ctx.update(&(f.len() as u64).to_be_bytes());
            ctx.update(f);
        }
        ctx.sign().as_ref().to_vec()
    }

    /// Whether `mac` is the row's MAC (constant time).
    pub fn row_ok(&self, table: &str, fields: &[&[u8]], mac: &[u8]) -> bool {
        let mut ctx = Vec::new();
        for f in std::iter::once(table.as_bytes()).chain(fields.iter().copied()) {
            ctx.extend_from_slice(&(f.len() as u64).to_be_bytes());
            ctx.extend_from_slice(f);
        }
        ring::hmac::verify(&self.mac, &ctx, mac).is_ok()
    }

    /// A short public fingerprint naming this key (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain` bound to `aad`.
    pub fn wrap(&self, aad: &[u8], plain: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)
            .map_err(|_| Error::MasterKey("no randomness".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| Error::MasterKey("seal failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens what `wrap` sealed with the same `aad`; `None` if it does not authenticate.
    pub fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if wrapped.len() < NONCE_LEN + 16 {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&wrapped[..NONCE_LEN]).ok()?;
        let mut buf = Zeroizing::new(wrapped[NONCE_LEN..].to_vec());
        let n = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .ok()?
            .len();
        buf.truncate(n);
        Some(buf)
    }
}

/// 32 fresh random bytes as a key file's text.
pub fn new_key_text() -> Result<Zeroizing<String>> {
    let mut k = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(&mut *k)
        .map_err(|_| Error::MasterKey("no randomness".into()))?;
    Ok(Zeroizing::new(format!("{}\n", hex(&*k))))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_binds_key_and_aad() {
        let rng = SystemRandom::new();
        let a = MasterKey::new([1; 32]);
        let b = MasterKey::new([2; 32]);
        let w = a.wrap(b"uid-1", b"secret key bytes", &rng).unwrap();
        assert_eq!(&a.unwrap(b"uid-1", &w).unwrap()[..], b"secret key bytes");
        assert!(a.unwrap(b"uid-2", &w).is_none());
        assert!(b.unwrap(b"uid-1", &w).is_none());
        assert!(a.unwrap(b"uid-1", &w[..10]).is_none());
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn kdf_params_round_trip_and_stretch_is_deterministic() {
        let k = KdfParams {
            salt: vec![7; 16],
            m_kib: 64,
            t: 1,
            p: 1,
        };
        assert_eq!(KdfParams::decode(&k.encode()), Some(k.clone()));
        assert_eq!(stretch(b"pass", &k).unwrap(), stretch(b"pass", &k).unwrap());
        assert_ne!(stretch(b"pass", &k).unwrap(), stretch(b"Pass", &k).unwrap());
        assert!(KdfParams::decode("scrypt:m=1:00").is_none());
    }
}
