//! What clients do with keys on the server: Encrypt, Decrypt, Sign, Signature Verify, MAC, MAC Verify, Derive Key, and wrapping a key for Get.
//!
//! Each use checks the key's Cryptographic Usage Mask and its state: a
//! protect use (encrypt, sign, MAC, wrap, derive) only while the key is
//! Active and before its Protect Stop Date; a process use (decrypt, verify)
//! also once it is Deactivated or Compromised, never while Pre-Active or
//! after it was destroyed.

use cinta_kmip::spec::{
    block_cipher_mode, cryptographic_algorithm as alg, cryptographic_usage_mask as usage,
    derivation_method as dm, encoding_option, hashing_algorithm, key_format_type as kft, link_type,
    object_type as ot, padding_method, secret_data_type, state, tag, validity_indicator,
    wrapping_method,
};
use cinta_kmip::ttlv::{Item, Value};
use zeroize::Zeroizing;

use super::objects::{self, Wrapped, FORMAT_ATTR, SECRET_DATA_TYPE_ATTR};
use super::{child_int, en, int, link, material_attrs, state_name, uid_item, Cx, Done};
use crate::attrs;
use crate::crypto::{asymmetric, kdf, symmetric};
use crate::fault::{Fault, Reason};
use crate::store::Object;

/// The most data one Encrypt, Decrypt, Sign or MAC call takes.
pub const MAX_DATA: usize = 1024 * 1024;

fn bytes(k: &[Item], t: u32) -> Option<&[u8]> {
    match &k.iter().find(|i| i.tag == t)?.value {
        Value::ByteString(b) => Some(b),
        _ => None,
    }
}

fn data<'a>(k: &'a [Item], what: &str) -> Result<&'a [u8], Fault> {
    let d = bytes(k, tag::DATA).ok_or_else(|| Fault::missing(format!("{what} needs Data")))?;
    if d.len() > MAX_DATA {
        return Err(Fault::invalid(format!(
            "{} bytes of Data (at most {MAX_DATA} per call)",
            d.len()
        )));
    }
    Ok(d)
}

/// Cryptographic Parameters: the request's, else the key's attribute.
#[derive(Debug, Default, Clone, Copy)]
struct Params {
    mode: Option<i32>,
    padding: Option<i32>,
    hash: Option<i32>,
    algorithm: Option<i32>,
    random_iv: bool,
}

impl Params {
    /// What RSA and ECDSA take of them: padding and hash.
    fn asymmetric(&self) -> asymmetric::SigParams {
        asymmetric::SigParams {
            padding: self.padding,
            hash: self.hash,
        }
    }
}

fn params_of(item: Option<&Item>) -> Params {
    let Some(p) = item else {
        return Params::default();
    };
    let g = |t| p.child(t).and_then(int).map(|x| x as i32);
    Params {
        mode: g(tag::BLOCK_CIPHER_MODE),
        padding: g(tag::PADDING_METHOD),
        hash: g(tag::HASHING_ALGORITHM),
        algorithm: g(tag::CRYPTOGRAPHIC_ALGORITHM),
        random_iv: matches!(
            p.child(tag::RANDOM_IV).map(|v| &v.value),
            Some(Value::Boolean(true))
        ),
    }
}

fn params(k: &[Item], o: &Object) -> Params {
    let given = k.iter().find(|i| i.tag == tag::CRYPTOGRAPHIC_PARAMETERS);
    let kept = o.attrs.get("Cryptographic Parameters");
    let (g, d) = (params_of(given), params_of(kept));
    Params {
        mode: g.mode.or(d.mode),
        padding: g.padding.or(d.padding),
        hash: g.hash.or(d.hash),
        algorithm: g.algorithm.or(d.algorithm),
        random_iv: g.random_iv || (given.is_none() && d.random_iv),
    }
}

/// A protect use (new ciphertext, signature, MAC, wrapped or derived key) or a process use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Protect,
    Process,
}

impl Cx<'_, '_> {
    /// Loads a key for a use: its usage mask must allow `bit`, its state the use.
    fn key_for(
        &self,
        uid: &str,
        bit: i32,
        what: &str,
        u: Use,
    ) -> Result<(Object, Zeroizing<Vec<u8>>), Fault> {
        let o = self.load_live(uid)?;
        let s = o.state();
        let mask = o.attrs.int("Cryptographic Usage Mask").unwrap_or(0) as i32;
        if mask & bit == 0 {
            return Err(Fault::new(
                Reason::IllegalOperation,
                format!(
                    "{uid}'s Cryptographic Usage Mask ({mask:#x}) does not allow {what} ({bit:#x})"
                ),
            ));
        }
        let ok = match u {
            Use::Protect => s == state::ACTIVE,
            Use::Process => [state::ACTIVE, state::DEACTIVATED, state::COMPROMISED].contains(&s),
        };
        if !ok {
            return Err(Fault::state(format!(
                "{uid} is {}; it may not be used to {what}{}",
                state_name(s),
                if s == state::PRE_ACTIVE {
                    " until it is activated"
                } else {
                    ""
                }
            )));
        }
        if u == Use::Protect
            && o.attrs
                .int("Protect Stop Date")
                .is_some_and(|d| d <= self.now)
        {
            return Err(Fault::state(format!("{uid} is past its Protect Stop Date")));
        }
        if objects::registered_wrapping(&o.attrs).is_some() {
            return Err(Fault::invalid(format!(
                "{uid} was registered wrapped; the server cannot use its material"
            )));
        }
        let m = self
            .tx
            .material(&o)
            .map_err(super::store_err)?
            .ok_or_else(|| {
                Fault::new(
                    Reason::KeyValueNotPresent,
                    format!("{uid} has no key material"),
                )
            })?;
        Ok((o, m))
    }

    fn symmetric_mode(&self, p: &Params, o: &Object) -> symmetric::Mode {
        let a = p
            .algorithm
            .or(o.attrs.int("Cryptographic Algorithm").map(|x| x as i32))
            .unwrap_or(alg::AES);
        let block_mode = p.mode.unwrap_or(block_cipher_mode::CBC);
        let padding = p
            .padding
            .unwrap_or(if block_mode == block_cipher_mode::GCM {
                padding_method::NONE
            } else {
                padding_method::PKCS5
            });
        symmetric::Mode {
            algorithm: a,
            block_mode,
            padding,
        }
    }

    pub(super) fn encrypt(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let (o, key) = self.key_for(&uid, usage::ENCRYPT, "encrypt", Use::Protect)?;
        let d = data(k, "Encrypt")?;
        let p = params(k, &o);
        let mut out = vec![uid_item(&uid)];
        match o.object_type() as i32 {
            ot::SYMMETRIC_KEY => {
                let m = self.symmetric_mode(&p, &o);
                let given = bytes(k, tag::IV_COUNTER_NONCE);
                let made;
                let iv = match given {
                    Some(iv) => iv,
                    None => {
                        made = self
                            .tx
                            .random(symmetric::iv_len(&m)?)
                            .map_err(super::store_err)?;
                        &made[..]
                    }
                };
                let aad = bytes(k, tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA).unwrap_or(&[]);
                let (ct, t) = symmetric::encrypt(&m, &key, iv, aad, d)?;
                out.push(Item::new(tag::DATA, Value::ByteString(ct)));
                if given.is_none() && !iv.is_empty() {
                    out.push(Item::new(
                        tag::IV_COUNTER_NONCE,
                        Value::ByteString(iv.to_vec()),
                    ));
                }
                if !t.is_empty() {
                    out.push(Item::new(
                        tag::AUTHENTICATED_ENCRYPTION_TAG,
                        Value::ByteString(t),
                    ));
                }
            }
            ot::PUBLIC_KEY => {
                let ct = asymmetric::rsa_encrypt(
                    objects::kept_format(&o.attrs),
                    &key,
                    &p.asymmetric(),
                    d,
                )?;
                out.push(Item::new(tag::DATA, Value::ByteString(ct)));
            }
            t => {
                return Err(Fault::invalid(format!(
                    "{uid} (object type {t:#x}) does not encrypt"
                )))
            }
        }
        Ok(Done {
            uid: Some(uid),
            payload: out,
        })
    }

    pub(super) fn decrypt(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let (o, key) = self.key_for(&uid, usage::DECRYPT, "decrypt", Use::Process)?;
        let d = data(k, "Decrypt")?;
        let p = params(k, &o);
        let pt = match o.object_type() as i32 {
            ot::SYMMETRIC_KEY => {
                let m = self.symmetric_mode(&p, &o);
                let iv = bytes(k, tag::IV_COUNTER_NONCE).unwrap_or(&[]);
                if iv.len() != symmetric::iv_len(&m)? {
                    return Err(Fault::missing(format!(
                        "Decrypt in this mode needs the {}-byte IV/Counter/Nonce it was encrypted with",
                        symmetric::iv_len(&m)?
                    )));
                }
                let aad = bytes(k, tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA).unwrap_or(&[]);
                let t = bytes(k, tag::AUTHENTICATED_ENCRYPTION_TAG).unwrap_or(&[]);
                symmetric::decrypt(&m, &key, iv, aad, t, d)?
            }
            ot::PRIVATE_KEY => {
                asymmetric::rsa_decrypt(objects::kept_format(&o.attrs), &key, &p.asymmetric(), d)?
            }
            t => {
                return Err(Fault::invalid(format!(
                    "{uid} (object type {t:#x}) does not decrypt"
                )))
            }
        };
        Ok(answer(uid, tag::DATA, pt))
    }

    pub(super) fn sign(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let (o, key) = self.key_for(&uid, usage::SIGN, "sign", Use::Protect)?;
        if o.object_type() as i32 != ot::PRIVATE_KEY {
            return Err(Fault::invalid(format!(
                "{uid} is not a private key; only private keys sign"
            )));
        }
        let d = data(k, "Sign")?;
        let p = params(k, &o);
        let sig = asymmetric::sign(objects::kept_format(&o.attrs), &key, &p.asymmetric(), d)?;
        Ok(answer(uid, tag::SIGNATURE_DATA, sig))
    }

    pub(super) fn signature_verify(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let (o, key) = self.key_for(&uid, usage::VERIFY, "verify signatures", Use::Process)?;
        if o.object_type() as i32 != ot::PUBLIC_KEY {
            return Err(Fault::invalid(format!(
                "{uid} is not a public key; signatures are verified with public keys"
            )));
        }
        let d = data(k, "Signature Verify")?;
        let sig = bytes(k, tag::SIGNATURE_DATA)
            .ok_or_else(|| Fault::missing("Signature Verify needs Signature Data"))?;
        let p = params(k, &o);
        let ok = asymmetric::verify(
            objects::kept_format(&o.attrs),
            &key,
            &p.asymmetric(),
            d,
            sig,
        )?;
        Ok(validity(uid, ok))
    }

    fn mac_of(&self, k: &[Item], bit: i32, what: &str, u: Use) -> Result<(String, Vec<u8>), Fault> {
        let uid = self.uid(k)?;
        let (o, key) = self.key_for(&uid, bit, what, u)?;
        if o.object_type() as i32 != ot::SYMMETRIC_KEY {
            return Err(Fault::invalid(format!("{uid} is not a symmetric key")));
        }
        let p = params(k, &o);
        // The hash of the HMAC algorithm named (or the key's), else the one given.
        let h = p
            .algorithm
            .or(o.attrs.int("Cryptographic Algorithm").map(|a| a as i32))
            .and_then(hmac_hash)
            .or(p.hash)
            .ok_or_else(|| {
                Fault::missing(
                    "MAC needs an HMAC key or a Hashing Algorithm in Cryptographic Parameters",
                )
            })?;
        let d = data(k, what)?;
        Ok((uid, kdf::hmac(h, &key, d)?))
    }

    pub(super) fn mac(&self, k: &[Item]) -> Result<Done, Fault> {
        let (uid, m) = self.mac_of(k, usage::MAC_GENERATE, "MAC", Use::Protect)?;
        Ok(answer(uid, tag::MAC_DATA, m))
    }

    pub(super) fn mac_verify(&self, k: &[Item]) -> Result<Done, Fault> {
        let given = bytes(k, tag::MAC_DATA)
            .ok_or_else(|| Fault::missing("MAC Verify needs MAC Data"))?
            .to_vec();
        let (uid, m) = self.mac_of(k, usage::MAC_VERIFY, "MAC Verify", Use::Process)?;
        // Compared in constant time: how much of a MAC matched says nothing.
        let ok =
            m.len() == given.len() && m.iter().zip(&given).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
        Ok(validity(uid, ok))
    }

    /// Wraps a key for Get (Key Wrapping Specification, Wrapping Method Encrypt).
    pub(super) fn wrap_for_get(&self, spec: &Item, material: &[u8]) -> Result<Wrapped, Fault> {
        let method = spec
            .child(tag::WRAPPING_METHOD)
            .and_then(int)
            .ok_or_else(|| Fault::missing("Key Wrapping Specification needs a Wrapping Method"))?
            as i32;
        if method != wrapping_method::ENCRYPT {
            return Err(Fault::new(
                Reason::FeatureNotSupported,
                format!("wrapping method {method:#x} (Encrypt is offered)"),
            ));
        }
        if spec.child(tag::MAC_SIGNATURE_KEY_INFORMATION).is_some() {
            return Err(Fault::new(
                Reason::FeatureNotSupported,
                "MAC/signature key information in wrapping",
            ));
        }
        let eki = spec.child(tag::ENCRYPTION_KEY_INFORMATION).ok_or_else(|| {
            Fault::missing("wrapping by encryption needs Encryption Key Information")
        })?;
        let wuid = eki
            .child(tag::UNIQUE_IDENTIFIER)
            .and_then(super::text)
            .ok_or_else(|| {
                Fault::missing("Encryption Key Information needs a Unique Identifier")
            })?;
        let encoding = spec
            .child(tag::ENCODING_OPTION)
            .and_then(int)
            .unwrap_or(encoding_option::NO_ENCODING as i64) as i32;
        if encoding != encoding_option::NO_ENCODING {
            return Err(Fault::new(
                Reason::FeatureNotSupported,
                "TTLV encoding of wrapped keys (No Encoding is offered)",
            ));
        }
        if spec.child(tag::ATTRIBUTE_NAME).is_some() {
            return Err(Fault::new(
                Reason::FeatureNotSupported,
                "attributes inside a wrapped key",
            ));
        }
        let (wk, kek) = self.key_for(wuid, usage::WRAP_KEY, "wrap keys", Use::Protect)?;
        if wk.object_type() as i32 != ot::SYMMETRIC_KEY
            || wk.attrs.int("Cryptographic Algorithm") != Some(alg::AES as i64)
        {
            return Err(Fault::new(
                Reason::FeatureNotSupported,
                format!("{wuid} is not an AES key; keys are wrapped with AES keys"),
            ));
        }
        let p = params_of(eki.child(tag::CRYPTOGRAPHIC_PARAMETERS));
        let mode = p.mode.unwrap_or(block_cipher_mode::NIST_KEY_WRAP);
        let bytes = symmetric::wrap(mode, &kek, material)?;
        let data = Item::new(
            tag::KEY_WRAPPING_DATA,
            Value::Structure(vec![
                Item::new(tag::WRAPPING_METHOD, en(method)),
                Item::new(
                    tag::ENCRYPTION_KEY_INFORMATION,
                    Value::Structure(vec![
                        Item::new(tag::UNIQUE_IDENTIFIER, Value::TextString(wuid.to_string())),
                        Item::new(
                            tag::CRYPTOGRAPHIC_PARAMETERS,
                            Value::Structure(vec![Item::new(tag::BLOCK_CIPHER_MODE, en(mode))]),
                        ),
                    ]),
                ),
                Item::new(tag::ENCODING_OPTION, en(encoding)),
            ]),
        );
        Ok(Wrapped { bytes, data })
    }

    pub(super) fn derive_key(&self, k: &[Item]) -> Result<Done, Fault> {
        let t = child_int(k, tag::OBJECT_TYPE)
            .ok_or_else(|| Fault::missing("Derive Key needs an Object Type"))?
            as i32;
        if t != ot::SYMMETRIC_KEY && t != ot::SECRET_DATA {
            return Err(Fault::invalid(format!(
                "Derive Key makes symmetric keys and secret data, not object type {t:#x}"
            )));
        }
        let bases: Vec<&str> = k
            .iter()
            .filter(|i| i.tag == tag::UNIQUE_IDENTIFIER)
            .filter_map(super::text)
            .collect();
        let base_uid = match bases.as_slice() {
            [one] => one.to_string(),
            [] => self.uid(k)?,
            _ => {
                return Err(Fault::new(
                    Reason::FeatureNotSupported,
                    "derivation from several objects (one base object is offered)",
                ))
            }
        };
        let method = child_int(k, tag::DERIVATION_METHOD)
            .ok_or_else(|| Fault::missing("Derive Key needs a Derivation Method"))?
            as i32;
        let dp = k
            .iter()
            .find(|i| i.tag == tag::DERIVATION_PARAMETERS)
            .ok_or_else(|| Fault::missing("Derive Key needs Derivation Parameters"))?;
        let dk = dp.children();
        let p = params_of(dp.child(tag::CRYPTOGRAPHIC_PARAMETERS));
        let given = self.request_attrs(k)?;
        let mut o = self.new_object(t, given)?;
        let bits = o.attrs.int("Cryptographic Length").ok_or_else(|| {
            Fault::missing("Derive Key needs a Cryptographic Length for the new object")
        })?;
        if bits <= 0 || bits % 8 != 0 {
            return Err(Fault::invalid(format!(
                "a derived length of {bits} bits (a positive multiple of 8)"
            )));
        }
        let len = bits as usize / 8;
        let (base, key) =
            self.key_for(&base_uid, usage::DERIVE_KEY, "derive keys", Use::Protect)?;
        let bt = base.object_type() as i32;
        if bt != ot::SYMMETRIC_KEY && bt != ot::SECRET_DATA {
            return Err(Fault::invalid(format!(
                "{base_uid} is not a symmetric key or secret data"
            )));
        }
        let ddata = bytes(dk, tag::DERIVATION_DATA).unwrap_or(&[]);
        let salt = bytes(dk, tag::SALT).unwrap_or(&[]);
        let h = p.hash.unwrap_or(hashing_algorithm::SHA_256);
        let out = match method {
            dm::PBKDF2 => {
                let n = child_int(dk, tag::ITERATION_COUNT)
                    .ok_or_else(|| Fault::missing("PBKDF2 needs an Iteration Count"))?;
                kdf::pbkdf2(h, &key, salt, n, len)?
            }
            dm::HMAC | dm::HKDF => kdf::hkdf(h, &key, salt, ddata, len)?,
            dm::NIST800_108_C => kdf::sp800_108_counter(h, &key, ddata, len)?,
            dm::ENCRYPT => {
                if bt != ot::SYMMETRIC_KEY {
                    return Err(Fault::invalid(format!("{base_uid} is not a key; derivation by encryption needs one")));
                }
                let m = self.symmetric_mode(&p, &base);
                let iv = bytes(dk, tag::INITIALIZATION_VECTOR).unwrap_or(&[]);
                let (mut ct, _) = symmetric::encrypt(&m, &key, iv, &[], ddata)?;
                if ct.len() < len {
                    return Err(Fault::invalid(format!(
                        "the encrypted Derivation Data has {} bytes, fewer than the {len} asked",
                        ct.len()
                    )));
                }
                ct.truncate(len);
                ct
            }
            m => {
                return Err(Fault::new(
                    Reason::FeatureNotSupported,
                    format!("derivation method {m:#x} (PBKDF2, HMAC, HKDF, Encrypt and NIST 800-108 counter mode are offered)"),
                ))
            }
        };
        if t == ot::SYMMETRIC_KEY {
            super::check_symmetric(&mut o.attrs, Some(out.len()))?;
        } else {
            o.attrs.add(attrs::make(
                SECRET_DATA_TYPE_ATTR,
                Item::new(0, Value::Enumeration(secret_data_type::SEED as u32)),
            )?)?;
            o.attrs
                .add(attrs::make(FORMAT_ATTR, Item::new(0, en(kft::OPAQUE)))?)?;
            if o.attrs.get("Cryptographic Usage Mask").is_none() {
                o.attrs.set(
                    "Cryptographic Usage Mask",
                    Value::Integer(usage::DERIVE_KEY),
                );
            }
        }
        let f = if t == ot::SYMMETRIC_KEY {
            kft::RAW
        } else {
            kft::OPAQUE
        };
        material_attrs(&mut o.attrs, &out, f, true);
        o.attrs.add(attrs::std(
            "Link",
            link(link_type::DERIVATION_BASE_OBJECT_LINK, &base_uid),
        ))?;
        self.tx.insert(&mut o, &out).map_err(super::store_err)?;
        let mut base = base;
        base.attrs.add(attrs::std(
            "Link",
            link(link_type::DERIVED_KEY_LINK, &o.uid),
        ))?;
        self.save(&mut base)?;
        Ok(Done {
            uid: Some(o.uid.clone()),
            payload: vec![uid_item(&o.uid)],
        })
    }
}

/// The hash of an HMAC key's algorithm.
fn hmac_hash(a: i32) -> Option<i32> {
    Some(match a {
        alg::HMAC_SHA1 => hashing_algorithm::SHA_1,
        alg::HMAC_SHA256 => hashing_algorithm::SHA_256,
        alg::HMAC_SHA384 => hashing_algorithm::SHA_384,
        alg::HMAC_SHA512 => hashing_algorithm::SHA_512,
        _ => return None,
    })
}

/// An answer naming the key used and carrying one byte string.
fn answer(uid: String, t: u32, bytes: Vec<u8>) -> Done {
    Done {
        payload: vec![uid_item(&uid), Item::new(t, Value::ByteString(bytes))],
        uid: Some(uid),
    }
}

fn validity(uid: String, ok: bool) -> Done {
    let v = if ok {
        validity_indicator::VALID
    } else {
        validity_indicator::INVALID
    };
    Done {
        uid: Some(uid.clone()),
        payload: vec![uid_item(&uid), Item::new(tag::VALIDITY_INDICATOR, en(v))],
    }
}
