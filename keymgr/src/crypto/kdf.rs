//! Key derivation for Derive Key: PBKDF2, HKDF (KMIP's HMAC method and 2.0's HKDF) and NIST SP 800-108 in counter mode over HMAC.

use std::num::NonZeroU32;

use cinta_kmip::spec::hashing_algorithm as hash;

use crate::fault::{Fault, Reason};

/// The most bytes one derivation may produce (a key or secret, not a stream).
pub const MAX_OUTPUT: usize = 1024;
/// The most PBKDF2 iterations a request may ask for: derivation runs on the
/// keystore thread, and a million SHA-256 iterations take about a third of
/// a second there (every other client waits that long).
pub const MAX_ITERATIONS: u32 = 1_000_000;

fn unsupported_hash(h: i32) -> Fault {
    Fault::new(
        Reason::FeatureNotSupported,
        format!("hashing algorithm {h:#x} (SHA-1, SHA-256, SHA-384 and SHA-512 are offered)"),
    )
}

fn check_len(n: usize) -> Result<(), Fault> {
    if n == 0 || n > MAX_OUTPUT {
        return Err(Fault::invalid(format!(
            "a derived length of {n} bytes (1 to {MAX_OUTPUT})"
        )));
    }
    Ok(())
}

/// The HMAC algorithm for a KMIP hashing algorithm.
pub fn hmac_alg(h: i32) -> Result<ring::hmac::Algorithm, Fault> {
    Ok(match h {
        hash::SHA_1 => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        hash::SHA_256 => ring::hmac::HMAC_SHA256,
        hash::SHA_384 => ring::hmac::HMAC_SHA384,
        hash::SHA_512 => ring::hmac::HMAC_SHA512,
        h => return Err(unsupported_hash(h)),
    })
}

/// PBKDF2 of `password` (RFC 8018).
pub fn pbkdf2(
    h: i32,
    password: &[u8],
    salt: &[u8],
    iterations: i64,
    len: usize,
) -> Result<Vec<u8>, Fault> {
    check_len(len)?;
    let a = match h {
        hash::SHA_1 => ring::pbkdf2::PBKDF2_HMAC_SHA1,
        hash::SHA_256 => ring::pbkdf2::PBKDF2_HMAC_SHA256,
        hash::SHA_384 => ring::pbkdf2::PBKDF2_HMAC_SHA384,
        hash::SHA_512 => ring::pbkdf2::PBKDF2_HMAC_SHA512,
        h => return Err(unsupported_hash(h)),
    };
    let n = u32::try_from(iterations)
        .ok()
        .filter(|n| *n <= MAX_ITERATIONS)
        .and_then(NonZeroU32::new)
        .ok_or_else(|| {
            Fault::invalid(format!(
                "an Iteration Count of {iterations} (1 to {MAX_ITERATIONS})"
            ))
        })?;
    let mut out = vec![0u8; len];
    ring::pbkdf2::derive(a, n, salt, password, &mut out);
    Ok(out)
}

struct Len(usize);
impl ring::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF (RFC 5869): extract with `salt`, expand with `info`.
pub fn hkdf(h: i32, ikm: &[u8], salt: &[u8], info: &[u8], len: usize) -> Result<Vec<u8>, Fault> {
    check_len(len)?;
    let a = match h {
        hash::SHA_1 => ring::hkdf::HKDF_SHA1_FOR_LEGACY_USE_ONLY,
        hash::SHA_256 => ring::hkdf::HKDF_SHA256,
        hash::SHA_384 => ring::hkdf::HKDF_SHA384,
        hash::SHA_512 => ring::hkdf::HKDF_SHA512,
        h => return Err(unsupported_hash(h)),
    };
    let prk = ring::hkdf::Salt::new(a, salt).extract(ikm);
    let info = [info];
    let okm = prk
        .expand(&info, Len(len))
        .map_err(|_| Fault::invalid(format!("HKDF cannot make {len} bytes with this hash")))?;
    let mut out = vec![0u8; len];
    okm.fill(&mut out)
        .map_err(|_| Fault::invalid(format!("HKDF cannot make {len} bytes with this hash")))?;
    Ok(out)
}

/// NIST SP 800-108 KDF in counter mode with HMAC: K(i) = HMAC(key, [i]32 || fixed input data).
pub fn sp800_108_counter(h: i32, key: &[u8], fixed: &[u8], len: usize) -> Result<Vec<u8>, Fault> {
    check_len(len)?;
    let k = ring::hmac::Key::new(hmac_alg(h)?, key);
    let mut out = Vec::with_capacity(len);
    let mut i: u32 = 1;
    while out.len() < len {
        let mut c = ring::hmac::Context::with_key(&k);
        c.update(&i.to_be_bytes());
        c.update(fixed);
        out.extend_from_slice(c.sign().as_ref());
        i += 1;
    }
    out.truncate(len);
    Ok(out)
}

/// HMAC of `data` under `key` (MAC, MAC Verify).
pub fn hmac(h: i32, key: &[u8], data: &[u8]) -> Result<Vec<u8>, Fault> {
    Ok(
        ring::hmac::sign(&ring::hmac::Key::new(hmac_alg(h)?, key), data)
            .as_ref()
            .to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hex;

    #[test]
    fn known_answers() {
        // RFC 6070, 4096 iterations.
        assert_eq!(
            pbkdf2(hash::SHA_1, b"password", b"salt", 4096, 20).unwrap(),
            hex("4b007901b765489abead49d926f721d065a429c1")
        );
        // RFC 5869 test case 7 (SHA-1, no salt, no info).
        assert_eq!(
            hkdf(hash::SHA_1, &[0x0c; 22], b"", b"", 42).unwrap(),
            hex("2c91117204d745f3500d636a62f64f0ab3bae548aa53d423b0d1f27ebba6f5e5673a081d70cce7acfc48")
        );
        // NIST CAVP KBKDF, counter mode before fixed data, HMAC-SHA512, r=32.
        let ki = hex("dd5dbd45593ee2ac139748e7645b450f223d2ff297b73fd71cbcebe71d41653c950b88500de5322d99ef18dfdd30428294c4b3094f4c954334e593bd982ec614");
        let fixed = hex("b50b0c963c6b3034b8cf19cd3f5c4ebe4f4985af0c03e575db62e6fdf1ecfe4f28b95d7ce16df85843246e1557ce95bb26cc9a21974bbd2eb69e8355");
        assert_eq!(
            sp800_108_counter(hash::SHA_512, &ki, &fixed, 16).unwrap(),
            hex("e5993bf9bd2aa1c45746042e12598155")
        );
        assert!(pbkdf2(hash::SHA_1, b"p", b"s", 0, 20).is_err());
        assert!(hkdf(hash::MD5, b"p", b"s", b"", 20).is_err());
    }
}
