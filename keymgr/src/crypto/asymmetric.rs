//! Key pairs for Create Key Pair (RSA 2048-4096, EC P-256 and P-384), and what clients do with them: Sign and Signature Verify (RSA PSS and PKCS#1 v1.5, ECDSA), RSA Encrypt and Decrypt (OAEP, PKCS#1 v1.5).
//!
//! Keys travel as DER: private keys PKCS#1 (RSA) or PKCS#8, public keys
//! PKCS#1 (RSA) or X.509 SubjectPublicKeyInfo. Registered keys are parsed
//! here so that a key whose bytes do not match its attributes is refused.

use cinta_kmip::spec::{
    cryptographic_algorithm as alg, hashing_algorithm as hash, key_format_type as kft,
    padding_method, recommended_curve as curve,
};
use ring::signature::{self, KeyPair};
use rsa::pkcs1::{
    DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey,
};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::fault::{Fault, Reason};

fn unsupported(what: impl Into<String>) -> Fault {
    Fault::new(Reason::FeatureNotSupported, what)
}

fn crypto(what: impl Into<String>) -> Fault {
    Fault::new(Reason::CryptographicFailure, what)
}

/// What a key's bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// RSA or EC.
    pub algorithm: i32,
    /// Modulus bits (RSA) or field bits (EC).
    pub bits: usize,
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// SubjectPublicKeyInfo prefixes for an uncompressed point on P-256 and P-384.
const SPKI_P256: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const SPKI_P384: &[u8] = &[
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

/// A private key, parsed.
enum Private {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ec(usize),
}

fn private(format: i32, der: &[u8]) -> Result<Private, Fault> {
    let bad = |what: &str| Fault::invalid(format!("the private key is not {what}"));
    let pkcs8 = |der: &[u8]| -> Result<Private, Fault> {
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
            return Ok(Private::Rsa(Box::new(k)));
        }
        let rng = ring::rand::SystemRandom::new();
        for (a, bits) in [
            (&signature::ECDSA_P256_SHA256_ASN1_SIGNING, 256),
            (&signature::ECDSA_P384_SHA384_ASN1_SIGNING, 384),
        ] {
            if signature::EcdsaKeyPair::from_pkcs8(a, der, &rng).is_ok() {
                return Ok(Private::Ec(bits));
            }
        }
        Err(bad("an RSA or EC (P-256, P-384) PKCS#8 key"))
    };
    match format {
        kft::PKCS_1 => rsa::RsaPrivateKey::from_pkcs1_der(der)
            .map(|k| Private::Rsa(Box::new(k)))
            .map_err(|_| bad("a PKCS#1 RSA private key")),
        kft::PKCS_8 => pkcs8(der),
        kft::RAW => rsa::RsaPrivateKey::from_pkcs1_der(der)
            .map(|k| Private::Rsa(Box::new(k)))
            .or_else(|_| pkcs8(der)),
        f => Err(Fault::new(
            Reason::KeyFormatTypeNotSupported,
            format!("private keys in key format {f:#x} (PKCS#1, PKCS#8 or Raw DER are kept)"),
        )),
    }
}

/// A public key, parsed: RSA, or an EC curve's bits and its point.
enum Public {
    Rsa(rsa::RsaPublicKey),
    Ec(usize, Vec<u8>),
}

fn public(format: i32, der: &[u8]) -> Result<Public, Fault> {
    let bad = |what: &str| Fault::invalid(format!("the public key is not {what}"));
    let spki = |der: &[u8]| -> Result<Public, Fault> {
        let (_, s) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|_| bad("an X.509 SubjectPublicKeyInfo"))?;
        match s.algorithm.algorithm.to_id_string().as_str() {
            OID_RSA => rsa::RsaPublicKey::from_public_key_der(der)
                .map(Public::Rsa)
                .map_err(|_| bad("a valid RSA SubjectPublicKeyInfo")),
            OID_EC => {
                let c = s
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                let bits = match c.as_str() {
                    OID_P256 => 256,
                    OID_P384 => 384,
                    _ => return Err(bad("on P-256 or P-384")),
                };
                Ok(Public::Ec(bits, s.subject_public_key.data.to_vec()))
            }
            o => Err(bad(&format!("RSA or EC (its algorithm is {o})"))),
        }
    };
    match format {
        kft::PKCS_1 => rsa::RsaPublicKey::from_pkcs1_der(der)
            .map(Public::Rsa)
            .map_err(|_| bad("a PKCS#1 RSA public key")),
        kft::X_509 => spki(der),
        kft::RAW => rsa::RsaPublicKey::from_pkcs1_der(der)
            .map(Public::Rsa)
            .or_else(|_| spki(der)),
        f => Err(Fault::new(
            Reason::KeyFormatTypeNotSupported,
            format!("public keys in key format {f:#x} (PKCS#1, X.509 or Raw DER are kept)"),
        )),
    }
}

/// What a private key's bytes are.
pub fn inspect_private(format: i32, der: &[u8]) -> Result<KeyInfo, Fault> {
    Ok(match private(format, der)? {
        Private::Rsa(k) => KeyInfo {
            algorithm: alg::RSA,
            bits: k.n().bits(),
        },
        Private::Ec(bits) => KeyInfo {
            algorithm: alg::EC,
            bits,
        },
    })
}

/// What a public key's bytes are.
pub fn inspect_public(format: i32, der: &[u8]) -> Result<KeyInfo, Fault> {
    Ok(match public(format, der)? {
        Public::Rsa(k) => KeyInfo {
            algorithm: alg::RSA,
            bits: k.n().bits(),
        },
        Public::Ec(bits, _) => KeyInfo {
            algorithm: alg::EC,
            bits,
        },
    })
}

/// A new key pair: (private DER, its format, public DER, its format).
pub struct NewPair {
    pub private: Zeroizing<Vec<u8>>,
    pub private_format: i32,
    pub public: Vec<u8>,
    pub public_format: i32,
    pub info: KeyInfo,
}

/// Makes an RSA key of `bits` (2048 to 4096) or an EC key on P-256 or P-384
/// (`ec_curve` a Recommended Curve, or None to take it from `bits`).
pub fn generate(
    algorithm: i32,
    bits: Option<i64>,
    ec_curve: Option<i64>,
) -> Result<NewPair, Fault> {
    match algorithm {
        alg::RSA => {
            let bits =
                bits.ok_or_else(|| Fault::missing("an RSA key pair needs a Cryptographic Length"))?;
            if !(2048..=4096).contains(&bits) || bits % 8 != 0 {
                return Err(Fault::invalid(format!(
                    "RSA keys of 2048 to 4096 bits (a multiple of 8) are made, not {bits}"
                )));
            }
            let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits as usize)
                .map_err(|e| crypto(format!("RSA key generation: {e}")))?;
            let private = Zeroizing::new(
                k.to_pkcs1_der()
                    .map_err(|e| crypto(format!("RSA key encoding: {e}")))?
                    .as_bytes()
                    .to_vec(),
            );
            let public = k
                .to_public_key()
                .to_pkcs1_der()
                .map_err(|e| crypto(format!("RSA key encoding: {e}")))?
                .into_vec();
            Ok(NewPair {
                private,
                private_format: kft::PKCS_1,
                public,
                public_format: kft::PKCS_1,
                info: KeyInfo {
                    algorithm: alg::RSA,
                    bits: bits as usize,
                },
            })
        }
        alg::EC | alg::ECDSA => {
            let c = match (ec_curve, bits) {
                (Some(c), _) => c as i32,
                (None, Some(256)) => curve::P_256,
                (None, Some(384)) => curve::P_384,
                (None, b) => {
                    return Err(Fault::missing(format!(
                        "an EC key pair needs a Recommended Curve (P-256 or P-384) or a Cryptographic Length of 256 or 384 (got {b:?})"
                    )))
                }
            };
            let (a, prefix, bits) = match c {
                curve::P_256 => (&signature::ECDSA_P256_SHA256_ASN1_SIGNING, SPKI_P256, 256),
                curve::P_384 => (&signature::ECDSA_P384_SHA384_ASN1_SIGNING, SPKI_P384, 384),
                c => {
                    return Err(Fault::invalid(format!(
                        "EC keys are made on P-256 and P-384, not curve {c:#x}"
                    )))
                }
            };
            let rng = ring::rand::SystemRandom::new();
            let doc = signature::EcdsaKeyPair::generate_pkcs8(a, &rng)
                .map_err(|_| crypto("EC key generation failed"))?;
            let kp = signature::EcdsaKeyPair::from_pkcs8(a, doc.as_ref(), &rng)
                .map_err(|_| crypto("EC key generation failed"))?;
            let mut public = prefix.to_vec();
            public.extend_from_slice(kp.public_key().as_ref());
            Ok(NewPair {
                private: Zeroizing::new(doc.as_ref().to_vec()),
                private_format: kft::PKCS_8,
                public,
                public_format: kft::X_509,
                info: KeyInfo {
                    algorithm: alg::EC,
                    bits,
                },
            })
        }
        a => Err(unsupported(format!(
            "key pairs of cryptographic algorithm {a:#x} (RSA and EC are made)"
        ))),
    }
}

/// How a signature is made: padding (RSA) and hash.
#[derive(Debug, Clone, Copy)]
pub struct SigParams {
    pub padding: Option<i32>,
    pub hash: Option<i32>,
}

fn rsa_signing(p: &SigParams) -> Result<&'static dyn signature::RsaEncoding, Fault> {
    Ok(match (p.padding.unwrap_or(padding_method::PSS), p.hash.unwrap_or(hash::SHA_256)) {
        (padding_method::PSS, hash::SHA_256) => &signature::RSA_PSS_SHA256,
        (padding_method::PSS, hash::SHA_384) => &signature::RSA_PSS_SHA384,
        (padding_method::PSS, hash::SHA_512) => &signature::RSA_PSS_SHA512,
        (padding_method::PKCS1_V1_5, hash::SHA_256) => &signature::RSA_PKCS1_SHA256,
        (padding_method::PKCS1_V1_5, hash::SHA_384) => &signature::RSA_PKCS1_SHA384,
        (padding_method::PKCS1_V1_5, hash::SHA_512) => &signature::RSA_PKCS1_SHA512,
        (pad, h) => {
            return Err(unsupported(format!(
                "RSA signatures with padding {pad:#x} and hash {h:#x} (PSS or PKCS#1 v1.5 with SHA-256, SHA-384 or SHA-512 are made)"
            )))
        }
    })
}

fn rsa_verifying(p: &SigParams) -> Result<&'static signature::RsaParameters, Fault> {
    Ok(
        match (
            p.padding.unwrap_or(padding_method::PSS),
            p.hash.unwrap_or(hash::SHA_256),
        ) {
            (padding_method::PSS, hash::SHA_256) => &signature::RSA_PSS_2048_8192_SHA256,
            (padding_method::PSS, hash::SHA_384) => &signature::RSA_PSS_2048_8192_SHA384,
            (padding_method::PSS, hash::SHA_512) => &signature::RSA_PSS_2048_8192_SHA512,
            (padding_method::PKCS1_V1_5, hash::SHA_1) => {
                &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
            }
            (padding_method::PKCS1_V1_5, hash::SHA_256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (padding_method::PKCS1_V1_5, hash::SHA_384) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (padding_method::PKCS1_V1_5, hash::SHA_512) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (pad, h) => {
                return Err(unsupported(format!(
                    "RSA signatures with padding {pad:#x} and hash {h:#x}"
                )))
            }
        },
    )
}

fn ec_alg(bits: usize, h: Option<i32>) -> Result<&'static signature::EcdsaSigningAlgorithm, Fault> {
    match (bits, h) {
        (256, None | Some(hash::SHA_256)) => Ok(&signature::ECDSA_P256_SHA256_ASN1_SIGNING),
        (384, None | Some(hash::SHA_384)) => Ok(&signature::ECDSA_P384_SHA384_ASN1_SIGNING),
        (b, h) => Err(unsupported(format!(
            "ECDSA on a {b}-bit curve with hash {h:?} (P-256 with SHA-256, P-384 with SHA-384)"
        ))),
    }
}

/// Signs `data` with a private key.
pub fn sign(format: i32, der: &[u8], p: &SigParams, data: &[u8]) -> Result<Vec<u8>, Fault> {
    let rng = ring::rand::SystemRandom::new();
    match private(format, der)? {
        Private::Rsa(k) => {
            let pkcs1 = k
                .to_pkcs1_der()
                .map_err(|e| crypto(format!("RSA key: {e}")))?;
            let kp = signature::RsaKeyPair::from_der(pkcs1.as_bytes())
                .map_err(|e| crypto(format!("the RSA key cannot sign: {e}")))?;
            let mut sig = vec![0u8; kp.public().modulus_len()];
            kp.sign(rsa_signing(p)?, &rng, data, &mut sig)
                .map_err(|_| crypto("RSA signing failed"))?;
            Ok(sig)
        }
        Private::Ec(bits) => {
            let a = ec_alg(bits, p.hash)?;
            let kp = signature::EcdsaKeyPair::from_pkcs8(a, der, &rng)
                .map_err(|_| crypto("the EC key cannot sign"))?;
            Ok(kp
                .sign(&rng, data)
                .map_err(|_| crypto("ECDSA signing failed"))?
                .as_ref()
                .to_vec())
        }
    }
}

/// Checks a signature on `data` with a public key.
pub fn verify(
    format: i32,
    der: &[u8],
    p: &SigParams,
    data: &[u8],
    sig: &[u8],
) -> Result<bool, Fault> {
    match public(format, der)? {
        Public::Rsa(k) => {
            let pkcs1 = k
                .to_pkcs1_der()
                .map_err(|e| crypto(format!("RSA key: {e}")))?;
            let key = signature::UnparsedPublicKey::new(rsa_verifying(p)?, pkcs1.as_bytes());
            Ok(key.verify(data, sig).is_ok())
        }
        Public::Ec(bits, point) => {
            let a: &'static dyn signature::VerificationAlgorithm = match (bits, p.hash) {
                (256, None | Some(hash::SHA_256)) => &signature::ECDSA_P256_SHA256_ASN1,
                (256, Some(hash::SHA_384)) => &signature::ECDSA_P256_SHA384_ASN1,
                (384, None | Some(hash::SHA_384)) => &signature::ECDSA_P384_SHA384_ASN1,
                (384, Some(hash::SHA_256)) => &signature::ECDSA_P384_SHA256_ASN1,
                (b, h) => {
                    return Err(unsupported(format!(
                        "ECDSA on a {b}-bit curve with hash {h:?}"
                    )))
                }
            };
            Ok(signature::UnparsedPublicKey::new(a, &point)
                .verify(data, sig)
                .is_ok())
        }
    }
}

/// RSA encryption with a public key (OAEP with SHA-1 or SHA-256, or PKCS#1 v1.5).
pub fn rsa_encrypt(format: i32, der: &[u8], p: &SigParams, data: &[u8]) -> Result<Vec<u8>, Fault> {
    let Public::Rsa(k) = public(format, der)? else {
        return Err(unsupported("encryption with an EC key"));
    };
    let mut rng = rand_core::OsRng;
    let r = match (p.padding.unwrap_or(padding_method::OAEP), p.hash.unwrap_or(hash::SHA_1)) {
        (padding_method::OAEP, hash::SHA_1) => k.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), data),
        (padding_method::OAEP, hash::SHA_256) => k.encrypt(&mut rng, rsa::Oaep::new::<rsa::sha2::Sha256>(), data),
        (padding_method::PKCS1_V1_5, _) => k.encrypt(&mut rng, rsa::Pkcs1v15Encrypt, data),
        (pad, h) => return Err(unsupported(format!("RSA encryption with padding {pad:#x} and hash {h:#x} (OAEP with SHA-1 or SHA-256, or PKCS#1 v1.5)"))),
    };
    r.map_err(|e| Fault::invalid(format!("RSA encryption: {e}")))
}

/// RSA decryption with a private key.
pub fn rsa_decrypt(format: i32, der: &[u8], p: &SigParams, data: &[u8]) -> Result<Vec<u8>, Fault> {
    let Private::Rsa(k) = private(format, der)? else {
        return Err(unsupported("decryption with an EC key"));
    };
    let r = match (
        p.padding.unwrap_or(padding_method::OAEP),
        p.hash.unwrap_or(hash::SHA_1),
    ) {
        (padding_method::OAEP, hash::SHA_1) => k.decrypt(rsa::Oaep::new::<sha1::Sha1>(), data),
        (padding_method::OAEP, hash::SHA_256) => {
            k.decrypt(rsa::Oaep::new::<rsa::sha2::Sha256>(), data)
        }
        (padding_method::PKCS1_V1_5, _) => k.decrypt(rsa::Pkcs1v15Encrypt, data),
        (pad, h) => {
            return Err(unsupported(format!(
                "RSA decryption with padding {pad:#x} and hash {h:#x}"
            )))
        }
    };
    r.map_err(|_| crypto("RSA decryption failed (wrong key or altered data)"))
}

/// The same key in another key format: RSA private keys between PKCS#1
/// and PKCS#8, RSA public keys between PKCS#1 and X.509; Raw is the DER kept.
pub fn convert(
    is_private: bool,
    from: i32,
    to: i32,
    der: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Fault> {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let no = || {
        Fault::new(
            Reason::KeyFormatTypeNotSupported,
            format!("this key is served in key format {from:#x}, not {to:#x}"),
        )
    };
    if from == to || to == kft::RAW {
        return Ok(Zeroizing::new(der.to_vec()));
    }
    let enc = |e: rsa::pkcs8::Error| crypto(format!("key encoding: {e}"));
    if is_private {
        let Private::Rsa(k) = private(from, der)? else {
            return Err(no());
        };
        match to {
            kft::PKCS_1 => Ok(Zeroizing::new(
                k.to_pkcs1_der()
                    .map_err(|e| crypto(format!("key encoding: {e}")))?
                    .as_bytes()
                    .to_vec(),
            )),
            kft::PKCS_8 => Ok(Zeroizing::new(
                k.to_pkcs8_der().map_err(enc)?.as_bytes().to_vec(),
            )),
            _ => Err(no()),
        }
    } else {
        let Public::Rsa(k) = public(from, der)? else {
            return Err(no());
        };
        match to {
            kft::PKCS_1 => Ok(Zeroizing::new(
                k.to_pkcs1_der()
                    .map_err(|e| crypto(format!("key encoding: {e}")))?
                    .into_vec(),
            )),
            kft::X_509 => Ok(Zeroizing::new(
                k.to_public_key_der()
                    .map_err(|e| crypto(format!("key encoding: {e}")))?
                    .into_vec(),
            )),
            _ => Err(no()),
        }
    }
}

/// Does a public key belong with a private key? (Both parsed from DER.)
pub fn pair_matches(
    private_format: i32,
    private_der: &[u8],
    public_format: i32,
    public_der: &[u8],
) -> bool {
    match (
        private(private_format, private_der),
        public(public_format, public_der),
    ) {
        (Ok(Private::Rsa(a)), Ok(Public::Rsa(b))) => a.to_public_key() == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_sign_verify_and_encrypt() {
        for (a, bits, c) in [
            (alg::EC, None, Some(curve::P_256 as i64)),
            (alg::EC, Some(384), None),
            (alg::RSA, Some(2048), None),
        ] {
            let p = generate(a, bits, c).unwrap();
            let i = inspect_private(p.private_format, &p.private).unwrap();
            assert_eq!(i, inspect_public(p.public_format, &p.public).unwrap());
            assert_eq!(i, p.info);
            let sp = SigParams {
                padding: None,
                hash: None,
            };
            let sig = sign(p.private_format, &p.private, &sp, b"msg").unwrap();
            assert!(verify(p.public_format, &p.public, &sp, b"msg", &sig).unwrap());
            assert!(!verify(p.public_format, &p.public, &sp, b"msX", &sig).unwrap());
            if a == alg::RSA {
                let pk = SigParams {
                    padding: Some(padding_method::PKCS1_V1_5),
                    hash: Some(hash::SHA_512),
                };
                let sig = sign(p.private_format, &p.private, &pk, b"msg").unwrap();
                assert!(verify(p.public_format, &p.public, &pk, b"msg", &sig).unwrap());
                let ct = rsa_encrypt(p.public_format, &p.public, &sp, b"secret").unwrap();
                assert_eq!(
                    rsa_decrypt(p.private_format, &p.private, &sp, &ct).unwrap(),
                    b"secret"
                );
                assert!(pair_matches(
                    p.private_format,
                    &p.private,
                    p.public_format,
                    &p.public
                ));
            }
        }
        assert!(generate(alg::RSA, Some(1024), None).is_err());
        assert!(inspect_public(kft::PKCS_1, b"not a key").is_err());
    }
}
