//! SIMH `.tap` framing as bytes: length words, tape marks, end-of-medium. No I/O here.
//!
//! A SIMH cartridge is a sequence of:
//! - a data record: a 32-bit little-endian length word `n`, `n` data bytes,
//!   one zero pad byte when `n` is odd, and the same length word again (so a
//!   reader can move backwards);
//! - a tape mark: the single word `0x00000000`;
//! - end of medium: the word `0xFFFFFFFF`; cinta writes it once, after the
//!   last record, when a cartridge is closed cleanly.
//!
//! The top four bits of a length word are its class: 0 is a good record,
//! 8 a record the writer flagged as bad, 0xE private markers, 0xF reserved
//! markers (end of medium, erase gaps). cinta reads and writes class 0 only.

/// The tape-mark word.
pub const TAPE_MARK: u32 = 0;
/// The end-of-medium word.
pub const END_OF_MEDIUM: u32 = 0xFFFF_FFFF;
/// Size of a length word.
pub const WORD: u64 = 4;
/// Largest record cinta writes or accepts: 8 MiB. Larger length words are
/// treated as damage, so a bad word never causes a huge allocation.
pub const MAX_RECORD: u32 = 8 << 20;

/// What a 32-bit word at a record boundary means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    /// A tape mark (filemark).
    TapeMark,
    /// End of medium.
    EndOfMedium,
    /// A good data record of this many bytes (1..=MAX_RECORD).
    Record(u32),
    /// Anything else: flagged-bad records, erase gaps, private markers, or a
    /// length beyond [`MAX_RECORD`]. The string says which.
    Invalid(&'static str),
}

/// Classifies a length word.
pub fn classify(word: u32) -> Word {
    match word {
        TAPE_MARK => Word::TapeMark,
        END_OF_MEDIUM => Word::EndOfMedium,
        0xFFFF_FFFE | 0xFFFE_FFFF => Word::Invalid("erase gap (not supported)"),
        w if w >> 28 == 0x8 => Word::Invalid("record flagged bad by its writer"),
        w if w >> 28 == 0xE => Word::Invalid("private marker (not supported)"),
        w if w >> 28 == 0xF => Word::Invalid("reserved marker"),
        w if w >> 28 != 0 => Word::Invalid("unknown record class"),
        w if w > MAX_RECORD => Word::Invalid("record length beyond the 8 MiB limit"),
        w => Word::Record(w),
    }
}

/// Decodes a little-endian word.
pub fn word(bytes: [u8; 4]) -> u32 {
    u32::from_le_bytes(bytes)
}

/// Number of bytes `len` data bytes take on the cartridge between the two length words.
pub fn padded(len: u32) -> u64 {
    u64::from(len) + u64::from(len & 1)
}

/// Total bytes a record of `len` data bytes takes: both length words, data and pad.
pub fn record_span(len: u32) -> u64 {
    2 * WORD + padded(len)
}

/// The bytes that go before and after `len` data bytes: the leading length
/// word, and the pad byte (if any) followed by the trailing length word.
pub fn frame(len: u32) -> ([u8; 4], Trailer) {
    let w = len.to_le_bytes();
    (w, Trailer::new(len))
}

/// Pad byte and trailing length word of one record.
#[derive(Debug, Clone, Copy)]
pub struct Trailer {
    bytes: [u8; 5],
    pad: bool,
}

impl Trailer {
    fn new(len: u32) -> Self {
        let w = len.to_le_bytes();
        let pad = len & 1 == 1;
        let mut bytes = [0u8; 5];
        if pad {
            bytes[1..].copy_from_slice(&w);
        } else {
            bytes[..4].copy_from_slice(&w);
        }
        Trailer { bytes, pad }
    }

    /// The bytes to write after the data.
    pub fn as_bytes(&self) -> &[u8] {
        if self.pad {
            &self.bytes
        } else {
            &self.bytes[..4]
        }
    }
}

/// Encodes one whole record (for tests and small writes).
pub fn encode_record(data: &[u8]) -> Vec<u8> {
    let len = u32::try_from(data.len()).expect("record length fits u32");
    let (head, tail) = frame(len);
    let mut out = Vec::with_capacity(data.len() + 9);
    out.extend_from_slice(&head);
    out.extend_from_slice(data);
    out.extend_from_slice(tail.as_bytes());
    out
}

/// One item parsed from a byte slice holding a whole cartridge image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    Record(&'a [u8]),
    TapeMark,
}

/// Why [`parse_image`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageEnd {
    /// An end-of-medium word at this offset (a clean end).
    EndOfMedium(u64),
    /// The bytes ran out exactly at a record boundary (no end-of-medium word).
    Unterminated(u64),
    /// The bytes ran out inside a record starting at this offset (a torn write).
    Torn(u64),
    /// Damage at this offset.
    Damaged(u64, &'static str),
}

/// Parses a whole in-memory cartridge image: the reference decoder the
/// property tests compare the file-backed cartridge against.
pub fn parse_image(bytes: &[u8]) -> (Vec<Item<'_>>, ImageEnd) {
    let mut items = Vec::new();
    let mut off = 0usize;
    loop {
        if off == bytes.len() {
            return (items, ImageEnd::Unterminated(off as u64));
        }
        if bytes.len() - off < 4 {
            return (items, ImageEnd::Torn(off as u64));
        }
        let w = word(bytes[off..off + 4].try_into().unwrap());
        match classify(w) {
            Word::TapeMark => {
                items.push(Item::TapeMark);
                off += 4;
            }
            Word::EndOfMedium => return (items, ImageEnd::EndOfMedium(off as u64)),
            Word::Invalid(why) => return (items, ImageEnd::Damaged(off as u64, why)),
            Word::Record(len) => {
                let span = record_span(len) as usize;
                if bytes.len() - off < span {
                    return (items, ImageEnd::Torn(off as u64));
                }
                let tail = off + span - 4;
                if word(bytes[tail..tail + 4].try_into().unwrap()) != w {
                    return (
                        items,
                        ImageEnd::Damaged(off as u64, "trailing length word differs"),
                    );
                }
                items.push(Item::Record(&bytes[off + 4..off + 4 + len as usize]));
                off += span;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn odd_records_are_padded_as_simh_writes_them() {
        assert_eq!(encode_record(b"abc"), b"\x03\0\0\0abc\0\x03\0\0\0".to_vec());
        assert_eq!(encode_record(b"ab"), b"\x02\0\0\0ab\x02\0\0\0".to_vec());
        assert_eq!(record_span(3), 12);
    }

    #[test]
    fn words_are_classified() {
        assert_eq!(classify(0), Word::TapeMark);
        assert_eq!(classify(u32::MAX), Word::EndOfMedium);
        assert_eq!(classify(MAX_RECORD), Word::Record(MAX_RECORD));
        assert!(matches!(classify(MAX_RECORD + 1), Word::Invalid(_)));
        assert!(matches!(classify(0x8000_0010), Word::Invalid(_)));
        assert!(matches!(classify(0xFFFF_FFFE), Word::Invalid(_)));
    }

    fn item() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            1 => Just(None),
            4 => proptest::collection::vec(any::<u8>(), 1..300).prop_map(Some),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(items in proptest::collection::vec(item(), 0..40), eom in any::<bool>()) {
            let mut image = Vec::new();
            for it in &items {
                match it {
                    None => image.extend_from_slice(&TAPE_MARK.to_le_bytes()),
                    Some(d) => image.extend_from_slice(&encode_record(d)),
                }
            }
            let end = image.len() as u64;
            if eom { image.extend_from_slice(&END_OF_MEDIUM.to_le_bytes()); }
            let (parsed, how) = parse_image(&image);
            prop_assert_eq!(parsed.len(), items.len());
            for (p, it) in parsed.iter().zip(&items) {
                match (p, it) {
                    (Item::TapeMark, None) => {}
                    (Item::Record(a), Some(b)) => prop_assert_eq!(*a, &b[..]),
                    _ => prop_assert!(false, "item kind differs"),
                }
            }
            prop_assert_eq!(how, if eom { ImageEnd::EndOfMedium(end) } else { ImageEnd::Unterminated(end) });
        }

        #[test]
        fn a_cut_image_is_torn_never_a_short_record(items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 1..10), cut in 1usize..50) {
            let mut image = Vec::new();
            for d in &items { image.extend_from_slice(&encode_record(d)); }
            // Cut strictly inside the last record.
            let last = record_span(items.last().unwrap().len() as u32) as usize;
            let cut = 1 + cut % (last - 1);
            let short = &image[..image.len() - cut];
            let (parsed, how) = parse_image(short);
            prop_assert_eq!(parsed.len(), items.len() - 1);
            prop_assert!(matches!(how, ImageEnd::Torn(_)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = parse_image(&bytes);
        }
    }
}
