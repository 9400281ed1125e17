//! Block ciphers for clients' data and keys: AES, 3DES and Blowfish in ECB and CBC (PKCS#5 or no padding), AES-GCM, and AES key wrap (RFC 3394, and RFC 5649 with padding).
//!
//! Bytes in, bytes out: keys, IVs and data are given; nothing here draws
//! random numbers, and every error names what is wrong with the input.

use cinta_kmip::spec::{block_cipher_mode as mode, cryptographic_algorithm as alg, padding_method};
use cipher::generic_array::GenericArray;
use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

use crate::fault::{Fault, Reason};

fn unsupported(what: String) -> Fault {
    Fault::new(Reason::FeatureNotSupported, what)
}

fn crypto(what: impl Into<String>) -> Fault {
    Fault::new(Reason::CryptographicFailure, what)
}

/// What a client asked of a block cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub algorithm: i32,
    pub block_mode: i32,
    pub padding: i32,
}

/// The IV length `m` needs (0: none), so a caller can make one.
pub fn iv_len(m: &Mode) -> Result<usize, Fault> {
    Ok(match m.block_mode {
        mode::ECB => 0,
        mode::CBC => block_len(m.algorithm)?,
        mode::GCM => 12,
        x => {
            return Err(unsupported(format!(
                "block cipher mode {x:#x} (this server does ECB, CBC and GCM)"
            )))
        }
    })
}

fn block_len(algorithm: i32) -> Result<usize, Fault> {
    match algorithm {
        alg::AES => Ok(16),
        alg::TRIPLE_DES | alg::BLOWFISH => Ok(8),
        a => Err(unsupported(format!(
            "cryptographic algorithm {a:#x} for encryption (AES, 3DES and Blowfish are offered)"
        ))),
    }
}

/// Encrypts `data` (GCM: returns ciphertext and the 16-byte tag separately).
pub fn encrypt(
    m: &Mode,
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    data: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), Fault> {
    if m.block_mode == mode::GCM {
        return gcm(key, iv, aad, data, None).map(|mut v| {
            let tag = v.split_off(v.len() - 16);
            (v, tag)
        });
    }
    Ok((blocks(m, key, iv, data, true)?, Vec::new()))
}

/// Decrypts `data` (GCM: checks `tag`).
pub fn decrypt(
    m: &Mode,
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    tag: &[u8],
    data: &[u8],
) -> Result<Vec<u8>, Fault> {
    if m.block_mode == mode::GCM {
        return gcm(key, iv, aad, data, Some(tag));
    }
    blocks(m, key, iv, data, false)
}

fn gcm(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    data: &[u8],
    tag: Option<&[u8]>,
) -> Result<Vec<u8>, Fault> {
    use ring::aead;
    let a = match key.len() {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        n => {
            return Err(unsupported(format!(
                "AES-GCM with a {}-bit key (128 and 256 are offered)",
                n * 8
            )))
        }
    };
    let nonce = aead::Nonce::try_assume_unique_for_key(iv).map_err(|_| {
        Fault::invalid(format!(
            "AES-GCM needs a 12-byte IV, not {} bytes",
            iv.len()
        ))
    })?;
    let k =
        aead::LessSafeKey::new(aead::UnboundKey::new(a, key).map_err(|_| crypto("bad AES key"))?);
    match tag {
        None => {
            let mut buf = data.to_vec();
            k.seal_in_place_append_tag(nonce, aead::Aad::from(aad), &mut buf)
                .map_err(|_| crypto("AES-GCM sealing failed"))?;
            Ok(buf)
        }
        Some(t) => {
            if t.len() != 16 {
                return Err(unsupported(format!(
                    "an AES-GCM tag of {} bytes (16 are offered)",
                    t.len()
                )));
            }
            let mut buf = data.to_vec();
            buf.extend_from_slice(t);
            let n = k
                .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
                .map_err(|_| crypto("AES-GCM: the tag does not match the data (wrong key, IV, AAD or altered data)"))?
                .len();
            buf.truncate(n);
            Ok(buf)
        }
    }
}

fn blocks(m: &Mode, key: &[u8], iv: &[u8], data: &[u8], enc: bool) -> Result<Vec<u8>, Fault> {
    match (m.algorithm, key.len()) {
        (alg::AES, 16) => run::<aes::Aes128>(m, key, iv, data, enc),
        (alg::AES, 24) => run::<aes::Aes192>(m, key, iv, data, enc),
        (alg::AES, 32) => run::<aes::Aes256>(m, key, iv, data, enc),
        (alg::AES, n) => Err(Fault::invalid(format!("an AES key of {} bits", n * 8))),
        (alg::TRIPLE_DES, 16) => run::<des::TdesEde2>(m, key, iv, data, enc),
        (alg::TRIPLE_DES, 24) => run::<des::TdesEde3>(m, key, iv, data, enc),
        (alg::TRIPLE_DES, n) => Err(Fault::invalid(format!(
            "a 3DES key of {} bytes (16 or 24)",
            n
        ))),
        (alg::BLOWFISH, _) => run::<blowfish::Blowfish>(m, key, iv, data, enc),
        (a, _) => block_len(a).map(|_| Vec::new()),
    }
}

fn run<C: BlockEncrypt + BlockDecrypt + KeyInit>(
    m: &Mode,
    key: &[u8],
    iv: &[u8],
    data: &[u8],
    enc: bool,
) -> Result<Vec<u8>, Fault> {
    let c = C::new_from_slice(key)
        .map_err(|_| Fault::invalid(format!("a key of {} bytes for this cipher", key.len())))?;
    let bs = C::block_size();
    let cbc = match m.block_mode {
        mode::CBC => true,
        mode::ECB => false,
        x => {
            return Err(unsupported(format!(
                "block cipher mode {x:#x} with this algorithm (ECB and CBC are offered)"
            )))
        }
    };
    if cbc && iv.len() != bs {
        return Err(Fault::invalid(format!(
            "CBC needs an IV of {bs} bytes, not {}",
            iv.len()
        )));
    }
    let pkcs5 = match m.padding {
        padding_method::PKCS5 => true,
        padding_method::NONE => false,
        p => {
            return Err(unsupported(format!(
                "padding method {p:#x} (PKCS5 and None are offered)"
            )))
        }
    };
    let mut buf = data.to_vec();
    if enc && pkcs5 {
        let n = bs - buf.len() % bs;
        buf.extend(std::iter::repeat_n(n as u8, n));
    }
    if !buf.len().is_multiple_of(bs) {
        return Err(Fault::invalid(format!(
            "{} bytes are not a whole number of {bs}-byte blocks (no padding was asked)",
            buf.len()
        )));
    }
    let mut prev = iv.to_vec();
    for chunk in buf.chunks_mut(bs) {
        if enc {
            if cbc {
                chunk.iter_mut().zip(&prev).for_each(|(b, p)| *b ^= p);
            }
            c.encrypt_block(GenericArray::from_mut_slice(chunk));
            if cbc {
                prev.copy_from_slice(chunk);
            }
        } else {
            let this = chunk.to_vec();
            c.decrypt_block(GenericArray::from_mut_slice(chunk));
            if cbc {
                chunk.iter_mut().zip(&prev).for_each(|(b, p)| *b ^= p);
                prev = this;
            }
        }
    }
    if !enc && pkcs5 {
        let n = *buf.last().ok_or_else(|| crypto("no data to unpad"))? as usize;
        let ok = (1..=bs).contains(&n) && buf[buf.len() - n..].iter().all(|&b| b as usize == n);
        if !ok {
            return Err(crypto(
                "bad PKCS#5 padding after decryption (wrong key or IV, or altered data)",
            ));
        }
        buf.truncate(buf.len() - n);
    }
    Ok(buf)
}

const KW_IV: [u8; 8] = [0xA6; 8];

/// One AES block operation: encrypt (true) or decrypt in place.
type AesBlock = Box<dyn Fn(&mut [u8], bool)>;

fn aes_block(key: &[u8]) -> Result<AesBlock, Fault> {
    fn mk<C: BlockEncrypt + BlockDecrypt + KeyInit + 'static>(key: &[u8]) -> AesBlock {
        let c = C::new_from_slice(key).expect("length checked");
        Box::new(move |b: &mut [u8], enc: bool| {
            let g = GenericArray::from_mut_slice(b);
            if enc {
                c.encrypt_block(g)
            } else {
                c.decrypt_block(g)
            }
        })
    }
    Ok(match key.len() {
        16 => mk::<aes::Aes128>(key),
        24 => mk::<aes::Aes192>(key),
        32 => mk::<aes::Aes256>(key),
        n => {
            return Err(Fault::invalid(format!(
                "an AES wrapping key of {} bits",
                n * 8
            )))
        }
    })
}

/// RFC 3394's W: 64-bit semiblocks `r` under initial value `a`.
fn kw_w(aes: &dyn Fn(&mut [u8], bool), a: [u8; 8], r: &[u8]) -> Vec<u8> {
    let n = r.len() / 8;
    let mut a = a;
    let mut r = r.to_vec();
    let mut b = [0u8; 16];
    for j in 0..6u64 {
        for i in 0..n {
            b[..8].copy_from_slice(&a);
            b[8..].copy_from_slice(&r[i * 8..i * 8 + 8]);
            aes(&mut b, true);
            let t = (n as u64) * j + i as u64 + 1;
            a.copy_from_slice(&b[..8]);
            a.iter_mut().zip(t.to_be_bytes()).for_each(|(x, y)| *x ^= y);
            r[i * 8..i * 8 + 8].copy_from_slice(&b[8..]);
        }
    }
    let mut out = a.to_vec();
    out.extend(r);
    out
}

fn kw_w_inv(aes: &dyn Fn(&mut [u8], bool), c: &[u8]) -> ([u8; 8], Vec<u8>) {
    let n = c.len() / 8 - 1;
    let mut a = [0u8; 8];
    a.copy_from_slice(&c[..8]);
    let mut r = c[8..].to_vec();
    let mut b = [0u8; 16];
    for j in (0..6u64).rev() {
        for i in (0..n).rev() {
            let t = (n as u64) * j + i as u64 + 1;
            a.iter_mut().zip(t.to_be_bytes()).for_each(|(x, y)| *x ^= y);
            b[..8].copy_from_slice(&a);
            b[8..].copy_from_slice(&r[i * 8..i * 8 + 8]);
            aes(&mut b, false);
            a.copy_from_slice(&b[..8]);
            r[i * 8..i * 8 + 8].copy_from_slice(&b[8..]);
        }
    }
    (a, r)
}

/// Wraps key material under an AES key: RFC 3394 (NIST Key Wrap; whole
/// 8-byte semiblocks, at least two) or RFC 5649 (AES Key Wrap Padding; any length).
pub fn wrap(block_mode: i32, kek: &[u8], key: &[u8]) -> Result<Vec<u8>, Fault> {
    let aes = aes_block(kek)?;
    match block_mode {
        mode::NIST_KEY_WRAP => {
            if key.len() < 16 || !key.len().is_multiple_of(8) {
                return Err(Fault::invalid(format!(
                    "NIST Key Wrap takes whole 8-byte semiblocks (at least 16 bytes), not {} bytes; use AES Key Wrap Padding",
                    key.len()
                )));
            }
            Ok(kw_w(&*aes, KW_IV, key))
        }
        mode::AES_KEY_WRAP_PADDING => {
            if key.is_empty() || key.len() > u32::MAX as usize {
                return Err(Fault::invalid("AES Key Wrap Padding takes 1 byte to 4 GiB"));
            }
            let mut aiv = [0xA6, 0x59, 0x59, 0xA6, 0, 0, 0, 0];
            aiv[4..].copy_from_slice(&(key.len() as u32).to_be_bytes());
            let mut p = key.to_vec();
            p.resize(key.len().div_ceil(8) * 8, 0);
            if p.len() == 8 {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&aiv);
                b[8..].copy_from_slice(&p);
                aes(&mut b, true);
                return Ok(b.to_vec());
            }
            Ok(kw_w(&*aes, aiv, &p))
        }
        m => Err(unsupported(format!(
            "wrapping with block cipher mode {m:#x} (NIST Key Wrap and AES Key Wrap Padding are offered)"
        ))),
    }
}

/// Unwraps what [`wrap`] made; a wrong key or altered bytes fail the integrity check.
pub fn unwrap(block_mode: i32, kek: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, Fault> {
    let aes = aes_block(kek)?;
    let bad = || {
        crypto("the wrapped key fails its integrity check (wrong wrapping key or altered bytes)")
    };
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(Fault::invalid(format!(
            "a wrapped key of {} bytes",
            wrapped.len()
        )));
    }
    match block_mode {
        mode::NIST_KEY_WRAP => {
            let (a, r) = kw_w_inv(&*aes, wrapped);
            if a != KW_IV {
                return Err(bad());
            }
            Ok(r)
        }
        mode::AES_KEY_WRAP_PADDING => {
            let (a, r) = if wrapped.len() == 16 {
                let mut b = [0u8; 16];
                b.copy_from_slice(wrapped);
                aes(&mut b, false);
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[..8]);
                (a, b[8..].to_vec())
            } else {
                kw_w_inv(&*aes, wrapped)
            };
            if a[..4] != [0xA6, 0x59, 0x59, 0xA6] {
                return Err(bad());
            }
            let n = u32::from_be_bytes([a[4], a[5], a[6], a[7]]) as usize;
            if n == 0 || n > r.len() || r.len() - n >= 8 || r[n..].iter().any(|&b| b != 0) {
                return Err(bad());
            }
            Ok(r[..n].to_vec())
        }
        m => Err(unsupported(format!(
            "unwrapping with block cipher mode {m:#x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hex;

    #[test]
    fn rfc3394_and_rfc5649_vectors() {
        // RFC 3394 4.1: 128 bits of key data under a 128-bit KEK.
        let kek = hex("000102030405060708090A0B0C0D0E0F");
        let key = hex("00112233445566778899AABBCCDDEEFF");
        let w = wrap(mode::NIST_KEY_WRAP, &kek, &key).unwrap();
        assert_eq!(w, hex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"));
        assert_eq!(unwrap(mode::NIST_KEY_WRAP, &kek, &w).unwrap(), key);
        // RFC 3394 4.6: 256 bits under 256.
        let kek = hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        let key = hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        let w = wrap(mode::NIST_KEY_WRAP, &kek, &key).unwrap();
        assert_eq!(
            w,
            hex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
        );
        // RFC 5649 6: 20 bytes and 7 bytes under a 192-bit KEK.
        let kek = hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
        let key = hex("c37b7e6492584340bed12207808941155068f738");
        let w = wrap(mode::AES_KEY_WRAP_PADDING, &kek, &key).unwrap();
        assert_eq!(
            w,
            hex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a")
        );
        assert_eq!(unwrap(mode::AES_KEY_WRAP_PADDING, &kek, &w).unwrap(), key);
        let key = hex("466f7250617369");
        let w = wrap(mode::AES_KEY_WRAP_PADDING, &kek, &key).unwrap();
        assert_eq!(w, hex("afbeb0f07dfbf5419200f2ccb50bb24f"));
        assert_eq!(unwrap(mode::AES_KEY_WRAP_PADDING, &kek, &w).unwrap(), key);
        // A flipped bit fails the check.
        let mut bad = w.clone();
        bad[3] ^= 1;
        assert!(unwrap(mode::AES_KEY_WRAP_PADDING, &kek, &bad).is_err());
    }

    #[test]
    fn cbc_round_trips_and_matches_sp800_38a() {
        // SP 800-38A F.2.1, CBC-AES128, first block.
        let m = Mode {
            algorithm: alg::AES,
            block_mode: mode::CBC,
            padding: padding_method::NONE,
        };
        let key = hex("2b7e151628aed2a6abf7158809cf4f3c");
        let iv = hex("000102030405060708090a0b0c0d0e0f");
        let pt = hex("6bc1bee22e409f96e93d7e117393172a");
        let (ct, _) = encrypt(&m, &key, &iv, &[], &pt).unwrap();
        assert_eq!(ct, hex("7649abac8119b246cee98e9b12e9197d"));
        assert_eq!(decrypt(&m, &key, &iv, &[], &[], &ct).unwrap(), pt);
        let m = Mode {
            padding: padding_method::PKCS5,
            ..m
        };
        for n in 0..40 {
            let data = vec![7u8; n];
            let (ct, _) = encrypt(&m, &key, &iv, &[], &data).unwrap();
            assert_eq!(ct.len(), (n / 16 + 1) * 16);
            assert_eq!(decrypt(&m, &key, &iv, &[], &[], &ct).unwrap(), data);
        }
        let g = Mode {
            algorithm: alg::AES,
            block_mode: mode::GCM,
            padding: padding_method::NONE,
        };
        let (ct, tag) = encrypt(&g, &key, &[1; 12], b"aad", b"data").unwrap();
        assert_eq!(
            decrypt(&g, &key, &[1; 12], b"aad", &tag, &ct).unwrap(),
            b"data"
        );
        assert!(decrypt(&g, &key, &[1; 12], b"aaX", &tag, &ct).is_err());
    }
}
