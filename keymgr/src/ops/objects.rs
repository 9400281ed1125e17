//! Managed objects as KMIP carries them: what Register receives (symmetric, public and private keys, certificates, secret data, opaque objects, split keys) and what Get sends back, in the key format the object was kept in or one it converts to.
//!
//! The material is kept as given (DER for asymmetric keys and
//! certificates) under the master key; what the object's structure says
//! besides its material (its key format, a split key's fields, an opaque
//! object's type, the Key Wrapping Data of a key registered wrapped) is
//! kept in hidden `y-cinta-` attributes that are never sent as attributes.

use cinta_kmip::spec::{
    certificate_type, cryptographic_algorithm as alg, cryptographic_usage_mask as usage,
    key_format_type as kft, object_type as ot, secret_data_type, split_key_method, tag,
};
use cinta_kmip::ttlv::{Item, Value};
use zeroize::Zeroizing;

use super::{child_int, en, int};
use crate::attrs::{self, Attr, Attrs};
use crate::crypto::asymmetric;
use crate::fault::{Fault, Reason};
use crate::store::Object;

/// The key format the material is kept in.
pub const FORMAT_ATTR: &str = "y-cinta-key-format";
/// A secret's Secret Data Type.
pub const SECRET_DATA_TYPE_ATTR: &str = "y-cinta-secret-data-type";
/// An opaque object's Opaque Data Type.
pub const OPAQUE_TYPE_ATTR: &str = "y-cinta-opaque-data-type";
/// A split key's fields (TTLV of a structure: parts, identifier, threshold, method, prime field size).
pub const SPLIT_ATTR: &str = "y-cinta-split-key";
/// A key registered already wrapped: its Key Wrapping Data (TTLV), sent back with it.
pub const WRAPPING_ATTR: &str = "y-cinta-key-wrapping-data";
/// A template's attributes (TTLV of the Template structure).
pub const TEMPLATE_ATTR: &str = "y-cinta-template";

/// The most key material one object may hold (a 4096-bit RSA key in PKCS#8 with room to spare, a certificate chain's leaf).
pub const MAX_MATERIAL: usize = 16 * 1024;

/// What a Register request's object says.
pub struct Incoming {
    pub material: Zeroizing<Vec<u8>>,
    /// Attributes the object's structure carries (algorithm, length, certificate type...).
    pub carried: Vec<Attr>,
    /// Hidden attributes to keep with it.
    pub hidden: Vec<Attr>,
    /// Registered wrapped: its material cannot be checked or used here.
    pub wrapped: bool,
}

fn hidden(name: &str, v: Value) -> Result<Attr, Fault> {
    attrs::make(name, Item::new(0, v))
}

/// A key block's parts.
struct Block {
    format: i32,
    material: Zeroizing<Vec<u8>>,
    algorithm: Option<i64>,
    length: Option<i64>,
    wrapping: Option<Item>,
}

fn block(obj: &Item) -> Result<Block, Fault> {
    let b = obj
        .child(tag::KEY_BLOCK)
        .ok_or_else(|| Fault::missing("no Key Block"))?;
    let format =
        b.child(tag::KEY_FORMAT_TYPE)
            .and_then(int)
            .ok_or_else(|| Fault::missing("the Key Block has no Key Format Type"))? as i32;
    if b.child(tag::KEY_COMPRESSION_TYPE).is_some() {
        return Err(Fault::new(
            Reason::KeyCompressionTypeNotSupported,
            "compressed key material is not accepted",
        ));
    }
    let kv = b
        .child(tag::KEY_VALUE)
        .ok_or_else(|| Fault::missing("the Key Block has no Key Value"))?;
    let material = match &kv.value {
        Value::ByteString(bytes) => bytes.clone(),
        Value::Structure(_) => match kv.child(tag::KEY_MATERIAL).map(|m| &m.value) {
            Some(Value::ByteString(bytes)) => bytes.clone(),
            Some(Value::Structure(s)) if format == kft::TRANSPARENT_SYMMETRIC_KEY => {
                match s.iter().find(|i| i.tag == tag::KEY).map(|i| &i.value) {
                    Some(Value::ByteString(bytes)) => bytes.clone(),
                    _ => return Err(Fault::missing("Transparent Symmetric Key has no Key")),
                }
            }
            Some(Value::Structure(_)) => {
                return Err(Fault::new(
                    Reason::KeyFormatTypeNotSupported,
                    format!("transparent key format {format:#x} is not accepted; register DER (PKCS#1, PKCS#8, X.509) or Raw"),
                ))
            }
            _ => return Err(Fault::missing("the Key Value has no Key Material")),
        },
        _ => return Err(Fault::invalid("Key Value must be a structure or a byte string")),
    };
    if material.is_empty() || material.len() > MAX_MATERIAL {
        return Err(Fault::invalid(format!(
            "key material must be 1 to {MAX_MATERIAL} bytes, not {}",
            material.len()
        )));
    }
    Ok(Block {
        format,
        material: Zeroizing::new(material),
        algorithm: b.child(tag::CRYPTOGRAPHIC_ALGORITHM).and_then(int),
        length: b.child(tag::CRYPTOGRAPHIC_LENGTH).and_then(int),
        wrapping: b.child(tag::KEY_WRAPPING_DATA).cloned(),
    })
}

fn object_of<'a>(k: &'a [Item], t: u32, what: &str) -> Result<&'a Item, Fault> {
    k.iter()
        .find(|i| i.tag == t)
        .ok_or_else(|| Fault::missing(format!("Register of {what} needs its object")))
}

/// Reads the object a Register request carries.
pub fn incoming(object_type: i32, k: &[Item]) -> Result<Incoming, Fault> {
    let mut carried = Vec::new();
    let mut keep = Vec::new();
    let key = |b: &Block, carried: &mut Vec<Attr>, keep: &mut Vec<Attr>| -> Result<(), Fault> {
        if let Some(a) = b.algorithm {
            carried.push(attrs::std("Cryptographic Algorithm", en(a as i32)));
        }
        if let Some(l) = b.length {
            carried.push(attrs::std("Cryptographic Length", Value::Integer(l as i32)));
        }
        keep.push(hidden(FORMAT_ATTR, Value::Enumeration(b.format as u32))?);
        if let Some(w) = &b.wrapping {
            keep.push(hidden(WRAPPING_ATTR, Value::ByteString(w.to_bytes()))?);
        }
        Ok(())
    };
    let done = |b: Block, carried, hidden| Incoming {
        wrapped: b.wrapping.is_some(),
        material: b.material,
        carried,
        hidden,
    };
    match object_type {
        ot::SYMMETRIC_KEY => {
            let b = block(object_of(k, tag::SYMMETRIC_KEY, "a symmetric key")?)?;
            if b.wrapping.is_none() && ![kft::RAW, kft::TRANSPARENT_SYMMETRIC_KEY].contains(&b.format) {
                return Err(Fault::new(
                    Reason::KeyFormatTypeNotSupported,
                    format!("symmetric keys are registered as Raw or Transparent Symmetric Key, not {:#x}", b.format),
                ));
            }
            key(&b, &mut carried, &mut keep)?;
            Ok(done(b, carried, keep))
        }
        ot::PRIVATE_KEY | ot::PUBLIC_KEY => {
            let private = object_type == ot::PRIVATE_KEY;
            let (t, what) = if private {
                (tag::PRIVATE_KEY, "a private key")
            } else {
                (tag::PUBLIC_KEY, "a public key")
            };
            let b = block(object_of(k, t, what)?)?;
            if b.wrapping.is_none() {
                let info = if private {
                    asymmetric::inspect_private(b.format, &b.material)?
                } else {
                    asymmetric::inspect_public(b.format, &b.material)?
                };
                check_declared(&b, info)?;
                if b.algorithm.is_none() {
                    carried.push(attrs::std("Cryptographic Algorithm", en(info.algorithm)));
                }
                if b.length.is_none() {
                    carried.push(attrs::std("Cryptographic Length", Value::Integer(info.bits as i32)));
                }
            }
            key(&b, &mut carried, &mut keep)?;
            Ok(done(b, carried, keep))
        }
        ot::SECRET_DATA => {
            let sd = object_of(k, tag::SECRET_DATA, "secret data")?;
            let sdt = sd
                .child(tag::SECRET_DATA_TYPE)
                .and_then(int)
                .ok_or_else(|| Fault::missing("Secret Data needs a Secret Data Type"))?;
            let b = block(sd)?;
            if b.wrapping.is_none() && ![kft::OPAQUE, kft::RAW].contains(&b.format) {
                return Err(Fault::new(
                    Reason::KeyFormatTypeNotSupported,
                    format!("secret data is registered as Opaque or Raw, not {:#x}", b.format),
                ));
            }
            keep.push(hidden(SECRET_DATA_TYPE_ATTR, Value::Enumeration(sdt as u32))?);
            key(&b, &mut carried, &mut keep)?;
            Ok(done(b, carried, keep))
        }
        ot::SPLIT_KEY => {
            let sk = object_of(k, tag::SPLIT_KEY, "a split key")?;
            let f = |t: u32, what: &str| {
                sk.child(t)
                    .and_then(int)
                    .ok_or_else(|| Fault::missing(format!("Split Key needs {what}")))
            };
            let parts = f(tag::SPLIT_KEY_PARTS, "Split Key Parts")?;
            let id = f(tag::KEY_PART_IDENTIFIER, "a Key Part Identifier")?;
            let threshold = f(tag::SPLIT_KEY_THRESHOLD, "a Split Key Threshold")?;
            let method = f(tag::SPLIT_KEY_METHOD, "a Split Key Method")? as i32;
            if !(2..=255).contains(&parts) || !(1..=parts).contains(&id) || !(1..=parts).contains(&threshold) {
                return Err(Fault::invalid(format!(
                    "a split key of {parts} parts (2 to 255), part {id} and threshold {threshold} (1 to the parts)"
                )));
            }
            let prime = sk.child(tag::PRIME_FIELD_SIZE);
            if method == split_key_method::POLYNOMIAL_SHARING_PRIME_FIELD && prime.is_none() {
                return Err(Fault::missing("polynomial sharing over a prime field needs a Prime Field Size"));
            }
            if !(split_key_method::XOR..=split_key_method::POLYNOMIAL_SHARING_GF_2_8).contains(&method) {
                return Err(Fault::invalid(format!("split key method {method:#x}")));
            }
            let mut fields = vec![
                Item::new(tag::SPLIT_KEY_PARTS, Value::Integer(parts as i32)),
                Item::new(tag::KEY_PART_IDENTIFIER, Value::Integer(id as i32)),
                Item::new(tag::SPLIT_KEY_THRESHOLD, Value::Integer(threshold as i32)),
                Item::new(tag::SPLIT_KEY_METHOD, en(method)),
            ];
            fields.extend(prime.cloned());
            keep.push(hidden(
                SPLIT_ATTR,
                Value::ByteString(Item::new(tag::SPLIT_KEY, Value::Structure(fields)).to_bytes()),
            )?);
            let b = block(sk)?;
            key(&b, &mut carried, &mut keep)?;
            Ok(done(b, carried, keep))
        }
        ot::CERTIFICATE => {
            let c = object_of(k, tag::CERTIFICATE, "a certificate")?;
            let ct = c
                .child(tag::CERTIFICATE_TYPE)
                .and_then(int)
                .ok_or_else(|| Fault::missing("Certificate needs a Certificate Type"))? as i32;
            let Some(Value::ByteString(der)) = c.child(tag::CERTIFICATE_VALUE).map(|v| &v.value) else {
                return Err(Fault::missing("Certificate needs a Certificate Value"));
            };
            if ct != certificate_type::X_509 {
                return Err(Fault::invalid(format!(
                    "certificate type {ct:#x}: X.509 certificates are kept"
                )));
            }
            if der.is_empty() || der.len() > MAX_MATERIAL {
                return Err(Fault::invalid(format!("a certificate of {} bytes", der.len())));
            }
            match x509_parser::parse_x509_certificate(der) {
                Ok((&[], _)) => {}
                _ => return Err(Fault::invalid("the Certificate Value is not one DER X.509 certificate")),
            }
            carried.push(attrs::std("Certificate Type", en(ct)));
            Ok(Incoming {
                material: Zeroizing::new(der.clone()),
                carried,
                hidden: keep,
                wrapped: false,
            })
        }
        ot::OPAQUE_DATA => {
            let o = object_of(k, tag::OPAQUE_OBJECT, "an opaque object")?;
            let t = o
                .child(tag::OPAQUE_DATA_TYPE)
                .and_then(int)
                .ok_or_else(|| Fault::missing("Opaque Object needs an Opaque Data Type"))?;
            let Some(Value::ByteString(v)) = o.child(tag::OPAQUE_DATA_VALUE).map(|v| &v.value) else {
                return Err(Fault::missing("Opaque Object needs an Opaque Data Value"));
            };
            if v.is_empty() || v.len() > MAX_MATERIAL {
                return Err(Fault::invalid(format!("opaque data of {} bytes (1 to {MAX_MATERIAL})", v.len())));
            }
            keep.push(hidden(OPAQUE_TYPE_ATTR, Value::Enumeration(t as u32))?);
            Ok(Incoming {
                material: Zeroizing::new(v.clone()),
                carried,
                hidden: keep,
                wrapped: false,
            })
        }
        ot::TEMPLATE => {
            let tp = object_of(k, tag::TEMPLATE, "a template")?;
            let mut kept = Vec::new();
            for a in tp.children() {
                if a.tag != tag::ATTRIBUTE {
                    return Err(Fault::invalid(format!(
                        "a Template holds Attributes, not tag {:#08x}",
                        a.tag
                    )));
                }
                kept.push(attrs::from_v1(a)?.0);
            }
            if kept.is_empty() {
                return Err(Fault::missing("a Template needs at least one Attribute"));
            }
            let item = Item::new(
                tag::TEMPLATE,
                Value::Structure(kept.iter().map(|a| attrs::to_v1(a, 0)).collect()),
            );
            keep.push(hidden(TEMPLATE_ATTR, Value::ByteString(item.to_bytes()))?);
            Ok(Incoming {
                material: Zeroizing::new(Vec::new()),
                carried,
                hidden: keep,
                wrapped: false,
            })
        }
        t => Err(Fault::new(
            Reason::InvalidField,
            format!("object type {t:#x} is not kept (keys, certificates, secret data, opaque objects, split keys and, before KMIP 2.0, templates are)"),
        )),
    }
}

/// The attributes a template holds.
pub fn template_attrs(a: &Attrs) -> Result<Vec<Attr>, Fault> {
    let t = decode(a, TEMPLATE_ATTR)
        .ok_or_else(|| Fault::internal("a template without its attributes"))?;
    t.children()
        .iter()
        .map(|i| attrs::from_v1(i).map(|x| x.0))
        .collect()
}

fn check_declared(b: &Block, info: asymmetric::KeyInfo) -> Result<(), Fault> {
    if let Some(a) = b.algorithm {
        let same =
            a as i32 == info.algorithm || (info.algorithm == alg::EC && a as i32 == alg::ECDSA);
        if !same {
            return Err(Fault::invalid(format!(
                "the Key Block says algorithm {a:#x} but the key is {:#x}",
                info.algorithm
            )));
        }
    }
    if let Some(l) = b.length {
        if l as usize != info.bits {
            return Err(Fault::invalid(format!(
                "the Key Block says {l} bits but the key has {}",
                info.bits
            )));
        }
    }
    Ok(())
}

/// The usage a new object of this type gets when the client names none.
pub fn default_usage(object_type: i32) -> Option<i32> {
    match object_type {
        ot::PRIVATE_KEY => Some(usage::SIGN | usage::DECRYPT | usage::UNWRAP_KEY),
        ot::PUBLIC_KEY => Some(usage::VERIFY | usage::ENCRYPT | usage::WRAP_KEY),
        ot::CERTIFICATE => Some(usage::VERIFY),
        ot::SECRET_DATA => Some(usage::VERIFY),
        _ => None,
    }
}

/// The key format an object's material is kept in.
pub fn kept_format(a: &Attrs) -> i32 {
    if let Some(f) = a.int(FORMAT_ATTR) {
        return f as i32;
    }
    match a.int("Object Type").map(|t| t as i32) {
        Some(ot::SECRET_DATA) => kft::OPAQUE,
        _ => kft::RAW,
    }
}

fn decode(a: &Attrs, name: &str) -> Option<Item> {
    match &a.get(name)?.value {
        Value::ByteString(b) => Item::decode(b).ok(),
        _ => None,
    }
}

/// The Key Wrapping Data of a key registered wrapped.
pub fn registered_wrapping(a: &Attrs) -> Option<Item> {
    decode(a, WRAPPING_ATTR)
}

/// Material (in `format`) and the Key Wrapping Data to send instead of the
/// clear material, when Get asked for it wrapped.
pub struct Wrapped {
    pub bytes: Vec<u8>,
    pub data: Item,
}

/// The key material in the format asked for (converting where that is lossless).
pub fn in_format(
    o: &Object,
    material: &[u8],
    wanted: Option<i32>,
) -> Result<(i32, Zeroizing<Vec<u8>>), Fault> {
    let kept = kept_format(&o.attrs);
    let t = o.object_type() as i32;
    let f = wanted.unwrap_or(kept);
    if f == kept {
        return Ok((kept, Zeroizing::new(material.to_vec())));
    }
    if registered_wrapping(&o.attrs).is_some() {
        return Err(Fault::new(
            Reason::KeyFormatTypeNotSupported,
            format!(
                "{} was registered wrapped; it is served as registered",
                o.uid
            ),
        ));
    }
    match t {
        ot::SYMMETRIC_KEY if [kft::RAW, kft::TRANSPARENT_SYMMETRIC_KEY].contains(&f) => {
            Ok((f, Zeroizing::new(material.to_vec())))
        }
        ot::SECRET_DATA if [kft::RAW, kft::OPAQUE].contains(&f) => {
            Ok((f, Zeroizing::new(material.to_vec())))
        }
        ot::PRIVATE_KEY | ot::PUBLIC_KEY => Ok((
            f,
            asymmetric::convert(t == ot::PRIVATE_KEY, kept, f, material)?,
        )),
        _ => Err(Fault::new(
            Reason::KeyFormatTypeNotSupported,
            format!("{} is served in key format {kept:#x}, not {f:#x}", o.uid),
        )),
    }
}

/// The object Get sends: its structure with the material (clear or wrapped).
pub fn outgoing(
    o: &Object,
    format: i32,
    material: &[u8],
    wrapped: Option<Wrapped>,
) -> Result<Item, Fault> {
    let t = o.object_type() as i32;
    let key_block = |extra_alg: bool| -> Item {
        let (bytes, wrapping) = match &wrapped {
            Some(w) => (w.bytes.clone(), Some(w.data.clone())),
            None => (material.to_vec(), registered_wrapping(&o.attrs)),
        };
        let km = if format == kft::TRANSPARENT_SYMMETRIC_KEY && wrapping.is_none() {
            Item::new(
                tag::KEY_MATERIAL,
                Value::Structure(vec![Item::new(tag::KEY, Value::ByteString(bytes))]),
            )
        } else {
            Item::new(tag::KEY_MATERIAL, Value::ByteString(bytes))
        };
        let mut b = vec![
            Item::new(tag::KEY_FORMAT_TYPE, en(format)),
            Item::new(tag::KEY_VALUE, Value::Structure(vec![km])),
        ];
        if extra_alg {
            if let Some(a) = o.attrs.int("Cryptographic Algorithm") {
                b.push(Item::new(tag::CRYPTOGRAPHIC_ALGORITHM, en(a as i32)));
            }
            if let Some(l) = o.attrs.int("Cryptographic Length") {
                b.push(Item::new(
                    tag::CRYPTOGRAPHIC_LENGTH,
                    Value::Integer(l as i32),
                ));
            }
        }
        if let Some(w) = wrapping {
            let mut w = w;
            w.tag = tag::KEY_WRAPPING_DATA;
            b.push(w);
        }
        Item::new(tag::KEY_BLOCK, Value::Structure(b))
    };
    Ok(match t {
        ot::SYMMETRIC_KEY => Item::new(tag::SYMMETRIC_KEY, Value::Structure(vec![key_block(true)])),
        ot::PRIVATE_KEY => Item::new(tag::PRIVATE_KEY, Value::Structure(vec![key_block(true)])),
        ot::PUBLIC_KEY => Item::new(tag::PUBLIC_KEY, Value::Structure(vec![key_block(true)])),
        ot::SECRET_DATA => {
            let sdt = o
                .attrs
                .int(SECRET_DATA_TYPE_ATTR)
                .unwrap_or(secret_data_type::PASSWORD as i64);
            Item::new(
                tag::SECRET_DATA,
                Value::Structure(vec![
                    Item::new(tag::SECRET_DATA_TYPE, en(sdt as i32)),
                    key_block(false),
                ]),
            )
        }
        ot::SPLIT_KEY => {
            let mut fields = decode(&o.attrs, SPLIT_ATTR)
                .map(|i| i.children().to_vec())
                .ok_or_else(|| Fault::internal(format!("{}: its split key fields are missing", o.uid)))?;
            fields.push(key_block(true));
            Item::new(tag::SPLIT_KEY, Value::Structure(fields))
        }
        ot::TEMPLATE if wrapped.is_none() => {
            let mut t = decode(&o.attrs, TEMPLATE_ATTR)
                .ok_or_else(|| Fault::internal(format!("{}: its template attributes are missing", o.uid)))?;
            t.tag = tag::TEMPLATE;
            t
        }
        ot::CERTIFICATE | ot::OPAQUE_DATA | ot::TEMPLATE if wrapped.is_some() => {
            return Err(Fault::invalid(format!(
                "{} has no key block to wrap (certificates and opaque objects are served as they are)",
                o.uid
            )))
        }
        ot::CERTIFICATE => Item::new(
            tag::CERTIFICATE,
            Value::Structure(vec![
                Item::new(
                    tag::CERTIFICATE_TYPE,
                    en(o.attrs.int("Certificate Type").unwrap_or(certificate_type::X_509 as i64) as i32),
                ),
                Item::new(tag::CERTIFICATE_VALUE, Value::ByteString(material.to_vec())),
            ]),
        ),
        ot::OPAQUE_DATA => Item::new(
            tag::OPAQUE_OBJECT,
            Value::Structure(vec![
                Item::new(
                    tag::OPAQUE_DATA_TYPE,
                    en(o.attrs.int(OPAQUE_TYPE_ATTR).unwrap_or(0) as i32),
                ),
                Item::new(tag::OPAQUE_DATA_VALUE, Value::ByteString(material.to_vec())),
            ]),
        ),
        t => return Err(Fault::internal(format!("{} has object type {t:#x}", o.uid))),
    })
}

/// The Key Format Type a Get asked for.
pub fn wanted_format(k: &[Item]) -> Option<i32> {
    child_int(k, tag::KEY_FORMAT_TYPE).map(|x| x as i32)
}
