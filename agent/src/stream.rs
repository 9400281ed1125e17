//! The encrypted stream: a save set's header and its AES-256-GCM segments in the STREAM construction. Bytes in, bytes out.
//!
//! No I/O, clock or randomness here: the data key and the salt are given.
//!
//! # Byte layout
//!
//! The first block of a save set's tape file is the header, in the clear
//! (integers big-endian):
//!
//! ```text
//! 0    8  magic "CINTASS1"
//! 8    2  format version (1)
//! 10   1  cipher (1 = AES-256-GCM)
//! 11   1  compression allowed (0 none, 1 zstd)
//! 12   4  segment payload size P (bytes of stream per segment)
//! 16  16  save set id
//! 32  32  salt (random per save set)
//! 64   2  key id length n (1-512)
//! 66   n  key id (UTF-8): tells a restore which key to ask for
//! 66+n 32 header tag: HMAC-SHA256(header key, bytes 0..66+n)
//! 98+n 32 header check: SHA-256(bytes 0..98+n), keyless (version 2)
//! ```
//!
//! The check is read first: a header that fails it is damaged, and one
//! that passes it but whose tag does not verify was opened with the wrong
//! key. Version 1 headers (no check) are still read.
//!
//! Keys, from the save set's data key K (32 bytes, fresh per save set):
//!
//! ```text
//! prk          = HKDF-Extract(salt, K)                     (SHA-256)
//! header key   = HKDF-Expand(prk, "cinta v1 header", 32)
//! part key (p) = HKDF-Expand(prk, "cinta v1 segment" | SHA-256(header bytes 0..66+n) | p as u32, 32)
//! ```
//!
//! Every following block is one sealed segment `i` (0, 1, ...):
//! `AES-256-GCM(part key (i / 65536), nonce, no AAD, plaintext)` as
//! ciphertext followed by the 16-byte tag, where
//! `nonce = 00 00 00 | i as u64 | last` and `last` is 1 on the final segment
//! only. The plaintext is one coding byte (0 raw, 1 zstd) and the coded
//! bytes of stream `[i*P, i*P + P)` (the last segment may be shorter).
//!
//! So: a changed header changes every part key (and fails its tag); a
//! segment moved, dropped or duplicated fails at its new position; a
//! truncated stream lacks a segment flagged last; a wrong key fails the
//! header tag. Each part key seals at most 65,536 segments (16 GiB at
//! 256 KiB), far inside AES-GCM's limits; a stream holds at most 2^40
//! segments and the sealer refuses more.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::{digest, hkdf, hmac};

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"CINTASS1";
pub const VERSION: u16 = 2;
/// Bytes of the keyless header check.
const CHECK_LEN: usize = 32;
pub const CIPHER_AES_256_GCM: u8 = 1;
/// Segments sealed under one part key.
pub const SEGMENTS_PER_PART: u64 = 1 << 16;
/// Segments in one stream at most.
pub const MAX_SEGMENTS: u64 = 1 << 40;
/// Authentication tag bytes per segment.
pub const TAG_LEN: usize = 16;
/// Bytes a segment adds to its payload: the coding byte and the tag.
pub const SEGMENT_OVERHEAD: usize = 1 + TAG_LEN;
/// Longest key id.
pub const MAX_KEY_ID: usize = 512;
/// Largest segment payload: a sealed segment must fit the largest tape block.
pub const MAX_PAYLOAD: u32 = (crate::tape::MAX_BLOCK - SEGMENT_OVERHEAD) as u32;

/// How a segment's payload is coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Raw = 0,
    Zstd = 1,
}

/// The clear header of a save set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub compression: bool,
    /// Stream bytes per segment.
    pub payload: u32,
    pub save_set_id: [u8; 16],
    pub salt: [u8; 32],
    pub key_id: String,
}

fn header_err(reason: impl Into<String>) -> Error {
    Error::StreamHeader {
        reason: reason.into(),
    }
}

impl Header {
    /// The header's bytes without its tag.
    fn body(&self) -> Result<Vec<u8>> {
        if self.key_id.is_empty() || self.key_id.len() > MAX_KEY_ID {
            return Err(header_err(format!("key id must be 1-{MAX_KEY_ID} bytes")));
        }
        if self.payload == 0 || self.payload > MAX_PAYLOAD {
            return Err(header_err(format!(
                "segment payload {} must be 1-{MAX_PAYLOAD} bytes",
                self.payload
            )));
        }
        let mut b = Vec::with_capacity(66 + self.key_id.len() + 32);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.push(CIPHER_AES_256_GCM);
        b.push(u8::from(self.compression));
        b.extend_from_slice(&self.payload.to_be_bytes());
        b.extend_from_slice(&self.save_set_id);
        b.extend_from_slice(&self.salt);
        b.extend_from_slice(&(self.key_id.len() as u16).to_be_bytes());
        b.extend_from_slice(self.key_id.as_bytes());
        Ok(b)
    }

    /// Reads a header block without checking its tag (that needs the key):
    /// enough to know which key to ask for. A damaged header is said to be.
    pub fn peek(block: &[u8]) -> Result<Header> {
        Ok(Self::parse(block)?.0)
    }

    /// The header and the length of its tagged bytes; the keyless check
    /// (version 2) is verified before any field is believed.
    fn parse(block: &[u8]) -> Result<(Header, usize)> {
        let checked = block.len() > CHECK_LEN && {
            let (bytes, check) = block.split_at(block.len() - CHECK_LEN);
            digest::digest(&digest::SHA256, bytes).as_ref() == check
        };
        if block.len() < 66 + 32 || &block[..8] != MAGIC {
            return Err(header_err(if checked {
                "not a cinta save set header (magic)"
            } else {
                "not a cinta save set header (magic), or its header block is damaged"
            }));
        }
        let version = u16::from_be_bytes([block[8], block[9]]);
        let block = match version {
            1 => block,
            VERSION if checked => &block[..block.len() - CHECK_LEN],
            _ if !checked && block.len() >= 66 + 32 + CHECK_LEN => {
                return Err(header_err(
                    "the header block is damaged: its check (SHA-256) does not match its bytes",
                ))
            }
            _ => {
                return Err(header_err(format!(
                    "format version {version} is not supported (this agent reads 1 and {VERSION})"
                )))
            }
        };
        if block[10] != CIPHER_AES_256_GCM {
            return Err(header_err(format!("cipher {} is not supported", block[10])));
        }
        if block[11] > 1 {
            return Err(header_err(format!(
                "compression {} is not supported",
                block[11]
            )));
        }
        let payload = u32::from_be_bytes(block[12..16].try_into().unwrap());
        let n = usize::from(u16::from_be_bytes([block[64], block[65]]));
        if n == 0 || n > MAX_KEY_ID || block.len() != 66 + n + 32 {
            return Err(header_err("bad key id length"));
        }
        let key_id = std::str::from_utf8(&block[66..66 + n])
            .map_err(|_| header_err("key id is not UTF-8"))?
            .to_string();
        let h = Header {
            compression: block[11] == 1,
            payload,
            save_set_id: block[16..32].try_into().unwrap(),
            salt: block[32..64].try_into().unwrap(),
            key_id,
        };
        if payload == 0 || payload > MAX_PAYLOAD {
            return Err(header_err(format!(
                "segment payload {payload} out of range"
            )));
        }
        Ok((h, 66 + n))
    }

    /// Save set id as hex.
    pub fn id_hex(&self) -> String {
        hex(&self.save_set_id)
    }
}

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Keys {
    prk: hkdf::Prk,
    header_hash: digest::Digest,
}

impl Keys {
    fn new(data_key: &[u8; 32], h: &Header, body: &[u8]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &h.salt).extract(data_key);
        Keys {
            prk,
            header_hash: digest::digest(&digest::SHA256, body),
        }
    }

    fn header_tag(&self, body: &[u8]) -> hmac::Tag {
        let key: hmac::Key = self
            .prk
            .expand(&[b"cinta v1 header"], hmac::HMAC_SHA256)
            .expect("32 bytes")
            .into();
        hmac::sign(&key, body)
    }

    fn verify_header(&self, body: &[u8], tag: &[u8]) -> bool {
        let key: hmac::Key = self
            .prk
            .expand(&[b"cinta v1 header"], hmac::HMAC_SHA256)
            .expect("32 bytes")
            .into();
        hmac::verify(&key, body, tag).is_ok()
    }

    fn part(&self, part: u64) -> LessSafeKey {
        let p = (part as u32).to_be_bytes();
        let info: [&[u8]; 3] = [b"cinta v1 segment", self.header_hash.as_ref(), &p];
        let okm = self
            .prk
            .expand(&info, &aead::AES_256_GCM)
            .expect("32 bytes");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

fn nonce(segment: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&segment.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Seals a stream's segments in order.
pub struct Sealer {
    keys: Keys,
    header: Header,
    key: LessSafeKey,
    next: u64,
    done: bool,
    zstd_level: i32,
    /// A copy of the payload, for [`Sealer::seal_in_place`] when compressing.
    scratch: Vec<u8>,
}

impl Sealer {
    /// Starts a stream; returns the sealer and the header block to write first.
    pub fn new(data_key: &[u8; 32], header: Header) -> Result<(Sealer, Vec<u8>)> {
        let mut block = header.body()?;
        let keys = Keys::new(data_key, &header, &block);
        block.extend_from_slice(keys.header_tag(&block).as_ref());
        let check = digest::digest(&digest::SHA256, &block);
        block.extend_from_slice(check.as_ref());
        let key = keys.part(0);
        Ok((
            Sealer {
                keys,
                header,
                key,
                next: 0,
                done: false,
                zstd_level: 1,
                scratch: Vec::new(),
            },
            block,
        ))
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Number of segments sealed so far.
    pub fn segments(&self) -> u64 {
        self.next
    }

    /// Seals the next segment's stream bytes (1 to P bytes; fewer only on the
    /// last) into `out` (cleared first).
    pub fn seal(&mut self, payload: &[u8], last: bool, out: &mut Vec<u8>) -> Result<()> {
        self.check(payload.len(), last)?;
        out.clear();
        out.reserve(payload.len() + SEGMENT_OVERHEAD);
        out.push(Coding::Raw as u8);
        let mut coded = false;
        if self.header.compression && !payload.is_empty() {
            out.resize(1 + payload.len(), 0);
            // Keep the compressed form only when it is smaller.
            if let Ok(n) = zstd::bulk::compress_to_buffer(payload, &mut out[1..], self.zstd_level) {
                if n < payload.len() {
                    out.truncate(1 + n);
                    out[0] = Coding::Zstd as u8;
                    coded = true;
                }
            }
            if !coded {
                out.truncate(1);
            }
        }
        if !coded {
            out.extend_from_slice(payload);
        }
        self.aead(last, out)
    }

    /// Seals the next segment where it lies: `block` holds one byte of room
    /// (for the coding byte), then the segment's stream bytes, and becomes
    /// the sealed block, the same bytes [`Sealer::seal`] gives, without
    /// copying the payload (unless it is to be compressed).
    pub fn seal_in_place(&mut self, block: &mut Vec<u8>, last: bool) -> Result<()> {
        let Some(len) = block.len().checked_sub(1) else {
            return Err(Error::Segment {
                segment: self.next,
                reason: "no room for the coding byte".into(),
            });
        };
        if self.header.compression {
            let mut plain = std::mem::take(&mut self.scratch);
            plain.clear();
            plain.extend_from_slice(&block[1..]);
            let r = self.seal(&plain, last, block);
            self.scratch = plain;
            return r;
        }
        self.check(len, last)?;
        block[0] = Coding::Raw as u8;
        self.aead(last, block)
    }

    /// Refuses a segment the stream cannot take; moves to the next part's
    /// key when the segment starts a part.
    fn check(&mut self, len: usize, last: bool) -> Result<()> {
        if self.done {
            return Err(Error::Segment {
                segment: self.next,
                reason: "the stream is already finished".into(),
            });
        }
        if self.next >= MAX_SEGMENTS {
            return Err(Error::Segment {
                segment: self.next,
                reason: format!("a stream holds at most {MAX_SEGMENTS} segments"),
            });
        }
        let p = self.header.payload as usize;
        if len > p || (len < p && !last) || (len == 0 && !last) {
            return Err(Error::Segment {
                segment: self.next,
                reason: format!("{len} bytes given; segments hold {p} (fewer only in the last)"),
            });
        }
        if self.next > 0 && self.next.is_multiple_of(SEGMENTS_PER_PART) {
            self.key = self.keys.part(self.next / SEGMENTS_PER_PART);
        }
        Ok(())
    }

    /// Encrypts `out` (coding byte and payload) in place and appends the tag.
    fn aead(&mut self, last: bool, out: &mut Vec<u8>) -> Result<()> {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.next, last), Aad::empty(), out)
            .map_err(|_| Error::Segment {
                segment: self.next,
                reason: "sealing failed".into(),
            })?;
        out.extend_from_slice(tag.as_ref());
        self.next += 1;
        self.done = last;
        Ok(())
    }
}

/// Opens a stream's segments, in any order.
pub struct Opener {
    keys: Keys,
    header: Header,
    part: std::cell::Cell<u64>,
    key: std::cell::RefCell<LessSafeKey>,
}

impl Opener {
    /// Checks the header block under `data_key`. A wrong key, or a header
    /// altered or taken from another save set, fails here.
    pub fn new(data_key: &[u8; 32], block: &[u8]) -> Result<Opener> {
        let (header, body_len) = Header::parse(block)?;
        let body = &block[..body_len];
        let keys = Keys::new(data_key, &header, body);
        if !keys.verify_header(body, &block[body_len..body_len + 32]) {
            return Err(Error::WrongKey {
                save_set: header.id_hex(),
                key_id: header.key_id.clone(),
                intact: block.len() == body_len + 32 + CHECK_LEN,
            });
        }
        let key = keys.part(0);
        Ok(Opener {
            keys,
            header,
            part: std::cell::Cell::new(0),
            key: std::cell::RefCell::new(key),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Authenticates and decodes segment `segment` from its tape block into
    /// `out` (the segment's stream bytes). `last` says whether this is the
    /// stream's final segment (known from the tape file's block count); a
    /// segment opened with the wrong `last` fails, which is how truncation
    /// and trailing junk are caught. `block` is overwritten.
    pub fn open(
        &self,
        segment: u64,
        last: bool,
        block: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let fail = |reason: &str| Error::Segment {
            segment,
            reason: reason.to_string(),
        };
        if block.len() < SEGMENT_OVERHEAD
            || block.len() > self.header.payload as usize + SEGMENT_OVERHEAD
        {
            return Err(fail("block size does not fit a segment of this save set"));
        }
        let part = segment / SEGMENTS_PER_PART;
        if part != self.part.get() {
            *self.key.borrow_mut() = self.keys.part(part);
            self.part.set(part);
        }
        let plain_len = match self.key.borrow().open_in_place(nonce(segment, last), Aad::empty(), block) {
            Ok(p) => p.len(),
            Err(_) if last => {
                return Err(fail(
                    "does not authenticate as the last segment: the save set is truncated or the block is damaged",
                ))
            }
            Err(_) => {
                return Err(fail(
                    "does not authenticate: the block is damaged, missing, duplicated or out of order, or sealed under another key",
                ))
            }
        };
        let plain = &block[..plain_len];
        out.clear();
        match plain.first() {
            Some(&0) => out.extend_from_slice(&plain[1..]),
            Some(&1) => {
                out.reserve(self.header.payload as usize);
                let n = zstd::bulk::decompress_to_buffer(&plain[1..], {
                    out.resize(self.header.payload as usize, 0);
                    &mut out[..]
                })
                .map_err(|e| fail(&format!("authenticated but does not decompress: {e}")))?;
                out.truncate(n);
            }
            _ => return Err(fail("authenticated but has an unknown coding")),
        }
        if out.len() > self.header.payload as usize
            || (!last && out.len() != self.header.payload as usize)
        {
            return Err(fail("authenticated but its length does not fit the stream"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(compression: bool, payload: u32) -> Header {
        Header {
            compression,
            payload,
            save_set_id: [7; 16],
            salt: [9; 32],
            key_id: "file:test".into(),
        }
    }

    fn seal_all(key: &[u8; 32], h: Header, data: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let p = h.payload as usize;
        let (mut s, hb) = Sealer::new(key, h).unwrap();
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(p).collect()
        };
        let n = chunks.len();
        let mut blocks = Vec::new();
        for (i, c) in chunks.into_iter().enumerate() {
            let mut out = Vec::new();
            s.seal(c, i + 1 == n, &mut out).unwrap();
            blocks.push(out);
        }
        (hb, blocks)
    }

    fn open_all(key: &[u8; 32], hb: &[u8], blocks: &[Vec<u8>]) -> Result<Vec<u8>> {
        let o = Opener::new(key, hb)?;
        if blocks.is_empty() {
            return Err(Error::Segment {
                segment: 0,
                reason: "no segments: the save set is truncated".into(),
            });
        }
        let mut data = Vec::new();
        let mut out = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            let mut b = b.clone();
            o.open(i as u64, i + 1 == blocks.len(), &mut b, &mut out)?;
            data.extend_from_slice(&out);
        }
        Ok(data)
    }

    proptest! {
        #[test]
        fn streams_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), payload in 1u32..700, compression in any::<bool>(), key in any::<[u8; 32]>()) {
            let (hb, blocks) = seal_all(&key, header(compression, payload), &data);
            prop_assert_eq!(Header::peek(&hb).unwrap(), header(compression, payload));
            prop_assert_eq!(open_all(&key, &hb, &blocks).unwrap(), data);
        }

        #[test]
        fn sealing_in_place_gives_the_same_blocks(data in proptest::collection::vec(any::<u8>(), 0..3000), payload in 1u32..700, compression in any::<bool>()) {
            let key = [9u8; 32];
            let (hb, blocks) = seal_all(&key, header(compression, payload), &data);
            let (mut s, hb2) = Sealer::new(&key, header(compression, payload)).unwrap();
            prop_assert_eq!(hb2, hb);
            let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(payload as usize).collect() };
            for (i, c) in chunks.iter().enumerate() {
                let mut block = vec![0xEE];
                block.extend_from_slice(c);
                s.seal_in_place(&mut block, i + 1 == chunks.len()).unwrap();
                prop_assert_eq!(&block, &blocks[i]);
            }
            // Nothing after the last, in place or not.
            prop_assert!(s.seal_in_place(&mut vec![0, 1], true).is_err());
            prop_assert!(s.seal_in_place(&mut Vec::new(), true).is_err());
        }

        #[test]
        fn any_tampering_is_detected(data in proptest::collection::vec(any::<u8>(), 1..3000), flip in any::<proptest::sample::Index>(), which in 0usize..5) {
            let key = [3u8; 32];
            let (mut hb, mut blocks) = seal_all(&key, header(false, 256), &data);
            let n = blocks.len();
            match which {
                0 => { let b = flip.index(blocks.len()); let i = flip.index(blocks[b].len()); blocks[b][i] ^= 0x20; }
                1 => { let i = flip.index(hb.len()); hb[i] ^= 0x01; }
                2 if n > 1 => { blocks.swap(0, n - 1); }
                3 if n > 1 => { blocks.remove(flip.index(n - 1)); }
                4 => { let d = blocks[flip.index(n)].clone(); blocks.insert(flip.index(n), d); }
                _ => { blocks.pop(); }
            }
            prop_assert!(open_all(&key, &hb, &blocks).is_err());
        }

        #[test]
        fn arbitrary_headers_and_blocks_never_panic(hb in proptest::collection::vec(any::<u8>(), 0..200), block in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Header::peek(&hb);
            if let Ok(o) = Opener::new(&[0; 32], &hb) {
                let _ = o.open(0, false, &mut block.clone(), &mut Vec::new());
                let _ = o.open(1, true, &mut block.clone(), &mut Vec::new());
            }
        }
    }

    #[test]
    fn a_damaged_header_is_told_from_a_wrong_key() {
        let data = vec![5u8; 1000];
        let (hb, _) = seal_all(&[1; 32], header(false, 300), &data);
        match Opener::new(&[2; 32], &hb) {
            Err(Error::WrongKey { intact: true, .. }) => {}
            other => panic!("{:?}", other.err()),
        }
        // Any bit flipped, the key right or wrong: damaged, never "wrong key".
        for i in [0, 9, 12, 20, 40, 64, 70, hb.len() - 40, hb.len() - 1] {
            for key in [[1u8; 32], [2; 32]] {
                let mut b = hb.clone();
                b[i] ^= 0x08;
                let e = Opener::new(&key, &b).err().unwrap().to_string();
                assert!(
                    e.contains("damaged") && !e.contains("not the key"),
                    "byte {i}: {e}"
                );
            }
        }
        // A format 1 header (no check) still opens under its key.
        let mut v1 = hb[..hb.len() - CHECK_LEN].to_vec();
        v1[8..10].copy_from_slice(&1u16.to_be_bytes());
        let (h, body_len) = Header::parse(&v1).unwrap();
        let tag = Keys::new(&[1; 32], &h, &v1[..body_len]).header_tag(&v1[..body_len]);
        v1[body_len..].copy_from_slice(tag.as_ref());
        Opener::new(&[1; 32], &v1).unwrap();
        match Opener::new(&[2; 32], &v1) {
            Err(Error::WrongKey { intact: false, .. }) => {}
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn wrong_key_and_foreign_header_are_named() {
        let data = vec![5u8; 1000];
        let (hb, blocks) = seal_all(&[1; 32], header(false, 300), &data);
        match Opener::new(&[2; 32], &hb) {
            Err(Error::WrongKey {
                save_set, key_id, ..
            }) => {
                assert_eq!((save_set.len(), key_id.as_str()), (32, "file:test"))
            }
            other => panic!("{:?}", other.err()),
        }
        // A header of another save set under the same key: its segments do not open.
        let mut other = header(false, 300);
        other.save_set_id = [8; 16];
        let (hb2, _) = seal_all(&[1; 32], other, &data);
        let e = open_all(&[1; 32], &hb2, &blocks).unwrap_err();
        assert!(
            e.to_string().contains("segment 0") && e.to_string().contains("does not authenticate"),
            "{e}"
        );
        assert_eq!(open_all(&[1; 32], &hb, &blocks).unwrap(), data);
    }

    #[test]
    fn part_keys_change_every_65536_segments() {
        let (mut s, hb) = Sealer::new(&[4; 32], header(false, 1)).unwrap();
        let o = Opener::new(&[4; 32], &hb).unwrap();
        let mut out = Vec::new();
        let mut plain = Vec::new();
        s.next = SEGMENTS_PER_PART - 1;
        for i in 0..3u64 {
            s.seal(&[i as u8], false, &mut out).unwrap();
            let mut b = out.clone();
            o.open(SEGMENTS_PER_PART - 1 + i, false, &mut b, &mut plain)
                .unwrap();
            assert_eq!(plain, [i as u8]);
        }
        // The same segment content and counter under part 0 vs part 1 differ.
        let k0 = s.keys.part(0);
        let k1 = s.keys.part(1);
        let mut a = vec![1u8, 2];
        let mut b = a.clone();
        k0.seal_in_place_append_tag(nonce(1, false), Aad::empty(), &mut a)
            .unwrap();
        k1.seal_in_place_append_tag(nonce(1, false), Aad::empty(), &mut b)
            .unwrap();
        assert_ne!(a, b);
        s.next = MAX_SEGMENTS;
        assert!(s
            .seal(&[1], false, &mut out)
            .unwrap_err()
            .to_string()
            .contains("at most"));
    }

    #[test]
    fn compression_keeps_the_smaller_form() {
        let zeros = vec![0u8; 4096];
        let (_, blocks) = seal_all(&[1; 32], header(true, 4096), &zeros);
        assert!(blocks[0].len() < 200, "zeros compress: {}", blocks[0].len());
        let noise = crate::tape::conformance::pattern(1, 4096);
        let (hb, blocks) = seal_all(&[1; 32], header(true, 4096), &noise);
        assert_eq!(blocks[0].len(), 4096 + SEGMENT_OVERHEAD);
        assert_eq!(open_all(&[1; 32], &hb, &blocks).unwrap(), noise);
    }
}
