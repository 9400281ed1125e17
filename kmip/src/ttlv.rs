//! TTLV items to and from bytes (KMIP 1.0-2.0 §9.1), with named limits. Bytes in, bytes out.
//!
//! An item is a 3-byte tag, a 1-byte type, a 4-byte big-endian length of
//! the value, and the value padded with zero bytes to a multiple of 8. A
//! structure's value is its items, one after another. Decoding is strict:
//! fixed-size types must have their exact length, padding must be zero,
//! booleans 0 or 1, text valid UTF-8, and a structure's items must fill it
//! exactly. So what decodes encodes back to the same bytes.

/// Largest message accepted, in bytes (16 MiB). The largest legitimate
/// messages are batches of up to 32 items carrying key material and up to a
/// few dozen attributes each: well under 1 MiB. The limit keeps a hostile
/// length word from making the server allocate gigabytes.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Deepest nesting of structures accepted. KMIP's deepest legitimate
/// nesting (message, batch item, payload, template/attribute, key block,
/// key value, key material) is under 10; 32 leaves room for vendor
/// extensions and stops a "depth bomb" from exhausting the stack.
pub const MAX_DEPTH: usize = 32;

/// Most items in one message. A batch of 32 items with 64 attributes of a
/// few fields each stays under 20,000; the limit bounds the memory of the
/// decoded tree to a small multiple of [`MAX_MESSAGE`].
pub const MAX_ITEMS: usize = 100_000;

/// Bytes of an item's tag, type and length.
pub const HEADER: usize = 8;

/// What can be wrong with TTLV bytes; each message says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not enough bytes for what the encoding announces (a stream reader
    /// should wait for more; a complete message is truncated).
    #[error("TTLV: {what} needs {need} bytes at offset {offset}, {have} remain")]
    Short {
        what: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    /// A length, type, padding or value that the encoding does not allow.
    #[error("TTLV: item {tag:#08x} at offset {offset}: {reason}")]
    Invalid {
        tag: u32,
        offset: usize,
        reason: String,
    },
    /// A limit was passed.
    #[error("TTLV: {what} exceeds the limit of {limit} (at offset {offset})")]
    Limit {
        what: &'static str,
        limit: usize,
        offset: usize,
    },
}

/// Item types (the TTLV type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Type {
    Structure = 0x01,
    Integer = 0x02,
    LongInteger = 0x03,
    BigInteger = 0x04,
    Enumeration = 0x05,
    Boolean = 0x06,
    TextString = 0x07,
    ByteString = 0x08,
    DateTime = 0x09,
    Interval = 0x0A,
    /// KMIP 2.0: date-time in microseconds.
    DateTimeExtended = 0x0B,
}

/// An item's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    /// Two's-complement big-endian, a multiple of 8 bytes.
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Vec<u8>),
    /// Seconds since 1970.
    DateTime(i64),
    Interval(u32),
    /// Microseconds since 1970 (KMIP 2.0).
    DateTimeExtended(i64),
}

impl Value {
    pub fn type_of(&self) -> Type {
        match self {
            Value::Structure(_) => Type::Structure,
            Value::Integer(_) => Type::Integer,
            Value::LongInteger(_) => Type::LongInteger,
            Value::BigInteger(_) => Type::BigInteger,
            Value::Enumeration(_) => Type::Enumeration,
            Value::Boolean(_) => Type::Boolean,
            Value::TextString(_) => Type::TextString,
            Value::ByteString(_) => Type::ByteString,
            Value::DateTime(_) => Type::DateTime,
            Value::Interval(_) => Type::Interval,
            Value::DateTimeExtended(_) => Type::DateTimeExtended,
        }
    }
}

/// A tagged item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// 24-bit tag (KMIP's are 0x42xxxx; 0x54xxxx are extensions).
    pub tag: u32,
    pub value: Value,
}

impl Item {
    pub fn new(tag: u32, value: Value) -> Self {
        Item { tag, value }
    }

    /// Children of a structure (empty for other types).
    pub fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(v) => v,
            _ => &[],
        }
    }

    /// The first child with this tag.
    pub fn child(&self, tag: u32) -> Option<&Item> {
        self.children().iter().find(|i| i.tag == tag)
    }

    /// Encodes the item (and its children) onto `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        out.push(self.value.type_of() as u8);
        out.extend_from_slice(&[0; 4]);
        let body = out.len();
        match &self.value {
            Value::Structure(items) => items.iter().for_each(|i| i.encode(out)),
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) | Value::DateTimeExtended(v) => {
                out.extend_from_slice(&v.to_be_bytes())
            }
            Value::Boolean(b) => out.extend_from_slice(&u64::from(*b).to_be_bytes()),
            Value::BigInteger(b) | Value::ByteString(b) => out.extend_from_slice(b),
            Value::TextString(s) => out.extend_from_slice(s.as_bytes()),
        }
        let len = out.len() - body;
        out[start + 4..start + 8].copy_from_slice(&(len as u32).to_be_bytes());
        out.resize(body + padded(len), 0);
    }

    /// The item as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one item that fills `bytes`, within the limits.
    pub fn decode(bytes: &[u8]) -> Result<Item, Error> {
        if bytes.len() > MAX_MESSAGE {
            return Err(Error::Limit {
                what: "message size",
                limit: MAX_MESSAGE,
                offset: 0,
            });
        }
        let mut d = Decoder { bytes, items: 0 };
        let (item, end) = d.item(0, 0)?;
        if end != bytes.len() {
            return Err(Error::Invalid {
                tag: item.tag,
                offset: end,
                reason: format!("{} bytes follow the message", bytes.len() - end),
            });
        }
        Ok(item)
    }
}

fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Length of the message whose first 8 bytes are `header`, header included:
/// how many bytes to read from a stream. A message must be a structure
/// within [`MAX_MESSAGE`]; anything else cannot be framed and the
/// connection should be closed.
pub fn frame_len(header: &[u8; HEADER]) -> Result<usize, Error> {
    let tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    if header[3] != Type::Structure as u8 {
        return Err(Error::Invalid {
            tag,
            offset: 0,
            reason: format!("a message must be a structure, not type {:#04x}", header[3]),
        });
    }
    let len = u32::from_be_bytes(header[4..8].try_into().unwrap()) as usize;
    if !len.is_multiple_of(8) {
        return Err(Error::Invalid {
            tag,
            offset: 0,
            reason: format!("structure length {len} is not a multiple of 8"),
        });
    }
    if len + HEADER > MAX_MESSAGE {
        return Err(Error::Limit {
            what: "message size",
            limit: MAX_MESSAGE,
            offset: 0,
        });
    }
    Ok(len + HEADER)
}

struct Decoder<'a> {
    bytes: &'a [u8],
    items: usize,
}

impl<'a> Decoder<'a> {
    fn take(&self, at: usize, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        let bytes: &'a [u8] = self.bytes;
        bytes.get(at..at.saturating_add(n)).ok_or(Error::Short {
            what,
            offset: at,
            need: n,
            have: self.bytes.len().saturating_sub(at),
        })
    }

    /// Decodes the item at `at`; returns it and the offset after it.
    fn item(&mut self, at: usize, depth: usize) -> Result<(Item, usize), Error> {
        if depth > MAX_DEPTH {
            return Err(Error::Limit {
                what: "structure depth",
                limit: MAX_DEPTH,
                offset: at,
            });
        }
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(Error::Limit {
                what: "item count",
                limit: MAX_ITEMS,
                offset: at,
            });
        }
        let h = self.take(at, HEADER, "an item header")?;
        let tag = u32::from_be_bytes([0, h[0], h[1], h[2]]);
        let ty = h[3];
        let len = u32::from_be_bytes(h[4..8].try_into().unwrap()) as usize;
        let bad = |reason: String| Error::Invalid {
            tag,
            offset: at,
            reason,
        };
        let body = at + HEADER;
        let full = padded(len);
        let raw = self.take(body, full, "an item value")?;
        let (value, pad_from) = match ty {
            0x01 => {
                if !len.is_multiple_of(8) {
                    return Err(bad(format!(
                        "structure length {len} is not a multiple of 8"
                    )));
                }
                let mut items = Vec::new();
                let mut p = body;
                while p < body + len {
                    let (child, next) = self.item(p, depth + 1)?;
                    if next > body + len {
                        return Err(bad("a child runs past the end of its structure".into()));
                    }
                    items.push(child);
                    p = next;
                }
                (Value::Structure(items), len)
            }
            0x02 | 0x05 | 0x0A => {
                if len != 4 {
                    return Err(bad(format!("a 4-byte type has length {len}")));
                }
                let v = u32::from_be_bytes(raw[..4].try_into().unwrap());
                (
                    match ty {
                        0x02 => Value::Integer(v as i32),
                        0x05 => Value::Enumeration(v),
                        _ => Value::Interval(v),
                    },
                    4,
                )
            }
            0x03 | 0x09 | 0x0B => {
                if len != 8 {
                    return Err(bad(format!("an 8-byte type has length {len}")));
                }
                let v = i64::from_be_bytes(raw[..8].try_into().unwrap());
                (
                    match ty {
                        0x03 => Value::LongInteger(v),
                        0x09 => Value::DateTime(v),
                        _ => Value::DateTimeExtended(v),
                    },
                    8,
                )
            }
            0x06 => {
                if len != 8 {
                    return Err(bad(format!("a boolean has length {len}")));
                }
                match u64::from_be_bytes(raw[..8].try_into().unwrap()) {
                    0 => (Value::Boolean(false), 8),
                    1 => (Value::Boolean(true), 8),
                    v => return Err(bad(format!("a boolean holds {v}"))),
                }
            }
            0x04 => {
                if !len.is_multiple_of(8) || len == 0 {
                    return Err(bad(format!(
                        "big integer length {len} is not a positive multiple of 8"
                    )));
                }
                (Value::BigInteger(raw[..len].to_vec()), len)
            }
            0x07 => (
                Value::TextString(
                    String::from_utf8(raw[..len].to_vec())
                        .map_err(|_| bad("text string is not UTF-8".into()))?,
                ),
                len,
            ),
            0x08 => (Value::ByteString(raw[..len].to_vec()), len),
            t => return Err(bad(format!("unknown item type {t:#04x}"))),
        };
        if raw[pad_from..].iter().any(|&b| b != 0) {
            return Err(bad("padding bytes are not zero".into()));
        }
        Ok((Item { tag, value }, body + full))
    }
}

/// The fuzz target's body: arbitrary bytes through framing and decoding.
/// Errors are fine; a panic, or an allocation beyond the input, is not.
pub fn fuzz_decode(bytes: &[u8]) {
    if let Some(h) = bytes.get(..HEADER) {
        let _ = frame_len(h.try_into().unwrap());
    }
    if let Ok(item) = Item::decode(bytes) {
        assert_eq!(item.to_bytes(), bytes, "what decodes encodes back the same");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(Value::Integer),
            any::<i64>().prop_map(Value::LongInteger),
            proptest::collection::vec(any::<u8>(), 1..4)
                .prop_map(|w| Value::BigInteger(w.iter().flat_map(|b| [*b; 8]).collect())),
            any::<u32>().prop_map(Value::Enumeration),
            any::<bool>().prop_map(Value::Boolean),
            ".{0,40}".prop_map(Value::TextString),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::ByteString),
            any::<i64>().prop_map(Value::DateTime),
            any::<u32>().prop_map(Value::Interval),
            any::<i64>().prop_map(Value::DateTimeExtended),
        ]
    }

    fn item() -> impl Strategy<Value = Item> {
        let leaf_item = (0u32..0x100_0000, leaf()).prop_map(|(tag, value)| Item { tag, value });
        leaf_item.prop_recursive(5, 64, 8, |inner| {
            (0u32..0x100_0000, proptest::collection::vec(inner, 0..8)).prop_map(|(tag, items)| {
                Item {
                    tag,
                    value: Value::Structure(items),
                }
            })
        })
    }

    proptest! {
        #[test]
        fn items_round_trip(i in item()) {
            let b = i.to_bytes();
            prop_assert_eq!(b.len() % 8, 0);
            prop_assert_eq!(Item::decode(&b).unwrap(), i.clone());
            if let Value::Structure(_) = i.value {
                prop_assert_eq!(frame_len(b[..8].try_into().unwrap()).unwrap(), b.len());
            }
        }

        #[test]
        fn cut_or_flipped_bytes_are_errors_not_panics(i in item(), cut in any::<proptest::sample::Index>(), flip in any::<proptest::sample::Index>(), bit in 0u8..8) {
            let b = i.to_bytes();
            fuzz_decode(&b[..cut.index(b.len())]);
            let mut f = b.clone();
            let at = flip.index(f.len());
            f[at] ^= 1 << bit;
            fuzz_decode(&f);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzz_decode(&b);
        }
    }

    #[test]
    fn the_kmip_spec_example_encodes_exactly() {
        // KMIP 1.x §9.1.2: an Integer 8 with tag 0x420020, and a Structure
        // holding an Enumeration 254 (tag 0x420004) and an Integer 255 (0x420005).
        let i = Item::new(0x420020, Value::Integer(8));
        assert_eq!(
            i.to_bytes(),
            [0x42, 0x00, 0x20, 0x02, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 0]
        );
        let s = Item::new(
            0x420020,
            Value::Structure(vec![
                Item::new(0x420004, Value::Enumeration(254)),
                Item::new(0x420005, Value::Integer(255)),
            ]),
        );
        assert_eq!(
            s.to_bytes(),
            [
                0x42, 0x00, 0x20, 0x01, 0, 0, 0, 0x20, 0x42, 0x00, 0x04, 0x05, 0, 0, 0, 4, 0, 0, 0,
                0xFE, 0, 0, 0, 0, 0x42, 0x00, 0x05, 0x02, 0, 0, 0, 4, 0, 0, 0, 0xFF, 0, 0, 0, 0
            ]
        );
        let t = Item::new(0x420020, Value::TextString("Hello World".into()));
        assert_eq!(t.to_bytes().len(), 8 + 16);
        assert_eq!(
            Item::new(0x420020, Value::Boolean(true)).to_bytes()[8..],
            [0, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn limits_and_bad_frames_are_named() {
        // A 2 GiB length is refused before anything is allocated.
        let e = frame_len(&[0x42, 0x00, 0x78, 0x01, 0x80, 0, 0, 0]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Limit {
                    what: "message size",
                    ..
                }
            ),
            "{e}"
        );
        assert!(frame_len(&[0x42, 0x00, 0x78, 0x02, 0, 0, 0, 8])
            .unwrap_err()
            .to_string()
            .contains("must be a structure"));
        // A depth bomb.
        let mut deep = Item::new(1, Value::Integer(0));
        for _ in 0..=MAX_DEPTH {
            deep = Item::new(1, Value::Structure(vec![deep]));
        }
        assert!(matches!(
            Item::decode(&deep.to_bytes()),
            Err(Error::Limit {
                what: "structure depth",
                ..
            })
        ));
        // Too many items.
        let many = Item::new(
            1,
            Value::Structure(vec![Item::new(2, Value::Boolean(false)); MAX_ITEMS]),
        );
        assert!(matches!(
            Item::decode(&many.to_bytes()),
            Err(Error::Limit {
                what: "item count",
                ..
            })
        ));
        // Wrong lengths, padding, booleans, text.
        let mut b = Item::new(0x420001, Value::Integer(1)).to_bytes();
        b[7] = 8;
        assert!(Item::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("length 8"));
        let mut b = Item::new(0x420001, Value::Integer(1)).to_bytes();
        b[15] = 1;
        assert!(Item::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("padding"));
        let mut b = Item::new(0x420001, Value::Boolean(true)).to_bytes();
        b[15] = 2;
        assert!(Item::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("boolean holds 2"));
        let mut b = Item::new(0x420001, Value::TextString("ab".into())).to_bytes();
        b[8] = 0xFF;
        assert!(Item::decode(&b).unwrap_err().to_string().contains("UTF-8"));
        let b = Item::new(0x420001, Value::TextString("abc".into())).to_bytes();
        assert!(matches!(Item::decode(&b[..12]), Err(Error::Short { .. })));
    }
}
