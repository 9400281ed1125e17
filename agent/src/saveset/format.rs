//! Save set records inside the decrypted stream: objects, their data and holes, the index and the trailer. Bytes in, bytes out.
//!
//! The stream (before segmenting and sealing) is a sequence of records, each
//! a tag byte and a body (integers big-endian):
//!
//! ```text
//! 'S' u32 n, JSON (n bytes)          save set information (source, level,
//!                                    start time, host): the first record
//! 'O' u32 n, meta (n bytes)          an object starts (see Meta)
//! 'D' u32 n, n bytes                 file or stream content (1 B - 1 MiB)
//! 'H' u64 n                          a hole of n bytes (sparse file)
//! 'E' 32-byte BLAKE3 digest, u8 flags  the object ends; digest of its whole
//!                                    content, holes read as zeros
//! 'N' u32 n, index entry (n bytes)   one index entry (after all objects)
//! 'T' u64 index offset, u64 entries, 32-byte BLAKE3 of the index records
//!                                    the trailer: always the last 49 bytes
//! ```
//!
//! kinds: 1 directory, 2 file, 3 symlink, 4 hard link, 5 stream, 6 fifo,
//! 7 character device, 8 block device (as tar: metadata only; a device's
//! number is its target, 8 bytes).
//!
//! meta: `u8 kind, u32 mode, u32 uid, u32 gid, i64 mtime s, u32 mtime ns,
//! i64 atime s, u32 atime ns, u64 size, u8 sparse, u32 path len, path,
//! u32 target len, target, u32 xattr count, (u16 name len, name, u32 value
//! len, value)*`. Paths are raw bytes (any file name), relative, `/`
//! separated, with no empty, `.` or `..` component.
//!
//! index entry: `u64 start, u64 end` (stream offsets of the object's 'O'
//! record and just past its 'E'), 32-byte digest, u8 flags, meta.

use crate::error::{Error, Result};

/// Largest metadata or index-entry record.
pub const MAX_META: usize = 1 << 20;
/// Largest data record.
pub const MAX_DATA: usize = 1 << 20;
/// Longest path: deep trees exceed PATH_MAX (4096) when saved relative.
pub const MAX_PATH: usize = 64 << 10;
/// Most extended attributes on one object.
pub const MAX_XATTRS: usize = 4096;
/// Bytes of the trailer record.
pub const TRAILER_LEN: usize = 49;

/// Flag: the object changed while it was read (kept with a warning).
pub const FLAG_CHANGED: u8 = 1;

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dir = 1,
    File = 2,
    Symlink = 3,
    /// Another name of a file saved earlier in the same save set (`target`).
    HardLink = 4,
    /// A byte stream: standard input, an IBM i save file.
    Stream = 5,
    /// A named pipe (metadata only).
    Fifo = 6,
    /// A character device node; `target` holds its device number (u64).
    #[serde(rename = "char-device")]
    CharDevice = 7,
    /// A block device node; `target` holds its device number (u64).
    #[serde(rename = "block-device")]
    BlockDevice = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Dir,
            2 => Kind::File,
            3 => Kind::Symlink,
            4 => Kind::HardLink,
            5 => Kind::Stream,
            6 => Kind::Fifo,
            7 => Kind::CharDevice,
            8 => Kind::BlockDevice,
            _ => return None,
        })
    }

    /// Whether data records follow the object record.
    pub fn has_content(self) -> bool {
        matches!(self, Kind::File | Kind::Stream)
    }

    /// Whether this is a device node (its number in `target`).
    pub fn is_device(self) -> bool {
        matches!(self, Kind::CharDevice | Kind::BlockDevice)
    }
}

/// An object's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    pub atime: (i64, u32),
    pub size: u64,
    pub sparse: bool,
    pub path: Vec<u8>,
    /// Symlink target, or the path of the file a hard link names.
    pub target: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An index entry: where an object is in the stream, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub start: u64,
    pub end: u64,
    pub digest: [u8; 32],
    pub flags: u8,
    pub meta: Meta,
}

/// The trailer: where the index starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub index_offset: u64,
    pub entries: u64,
    pub index_digest: [u8; 32],
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Format {
        reason: reason.into(),
    }
}

/// Checks a stored path: relative, no empty, `.` or `..` component, no NUL.
pub fn check_path(p: &[u8]) -> Result<()> {
    let shown = || super::names::escape(p);
    if p.is_empty() || p.len() > MAX_PATH {
        return Err(bad(format!(
            "path {:?} is empty or longer than {MAX_PATH} bytes",
            shown()
        )));
    }
    if p[0] == b'/' {
        return Err(bad(format!("path {:?} is absolute", shown())));
    }
    if p.contains(&0) {
        return Err(bad(format!("path {:?} holds a NUL byte", shown())));
    }
    for c in p.split(|&b| b == b'/') {
        if c.is_empty() || c == b"." || c == b".." {
            return Err(bad(format!(
                "path {:?} has an empty, '.' or '..' component",
                shown()
            )));
        }
    }
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn encode_meta(m: &Meta, out: &mut Vec<u8>) -> Result<()> {
    check_path(&m.path)?;
    if m.xattrs.len() > MAX_XATTRS {
        return Err(bad(format!(
            "{} extended attributes, more than {MAX_XATTRS}",
            m.xattrs.len()
        )));
    }
    out.push(m.kind as u8);
    for v in [m.mode, m.uid, m.gid] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for (s, ns) in [m.mtime, m.atime] {
        out.extend_from_slice(&s.to_be_bytes());
        out.extend_from_slice(&ns.to_be_bytes());
    }
    out.extend_from_slice(&m.size.to_be_bytes());
    out.push(u8::from(m.sparse));
    put_bytes(out, &m.path);
    put_bytes(out, &m.target);
    out.extend_from_slice(&(m.xattrs.len() as u32).to_be_bytes());
    for (k, v) in &m.xattrs {
        if k.is_empty() || k.len() > 255 {
            return Err(bad(
                "an extended attribute name is empty or longer than 255 bytes",
            ));
        }
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(k);
        put_bytes(out, v);
    }
    Ok(())
}

/// Feeds `n` zero bytes to a digest: holes count as zeros in an object's digest.
pub fn hash_zeros(hasher: &mut blake3::Hasher, n: u64) {
    static ZEROS: [u8; 65536] = [0; 65536];
    let mut left = n;
    while left > 0 {
        let k = left.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        left -= k as u64;
    }
}

/// Appends an object record.
pub fn put_object(m: &Meta, out: &mut Vec<u8>) -> Result<()> {
    let mut body = Vec::with_capacity(64 + m.path.len());
    encode_meta(m, &mut body)?;
    if body.len() > MAX_META {
        return Err(bad(format!(
            "metadata of {:?} is over {MAX_META} bytes",
            super::names::escape(&m.path)
        )));
    }
    out.push(b'O');
    put_bytes(out, &body);
    Ok(())
}

/// Appends the save set information record (JSON).
pub fn put_info(json: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if json.is_empty() || json.len() > MAX_META {
        return Err(bad("save set information must be 1 B to 1 MiB"));
    }
    out.push(b'S');
    put_bytes(out, json);
    Ok(())
}

/// Appends a data record's header; the caller appends `len` bytes after it.
pub fn put_data_header(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&data_header(len));
}

/// Bytes of a data record's header.
pub const DATA_HEADER: usize = 5;

/// The header of a data record of `len` bytes (the data follows it).
pub fn data_header(len: usize) -> [u8; DATA_HEADER] {
    assert!(
        (1..=MAX_DATA).contains(&len),
        "data records are 1 B to 1 MiB"
    );
    let l = (len as u32).to_be_bytes();
    [b'D', l[0], l[1], l[2], l[3]]
}

/// Appends a hole record.
pub fn put_hole(len: u64, out: &mut Vec<u8>) {
    out.push(b'H');
    out.extend_from_slice(&len.to_be_bytes());
}

/// Bytes of an end record, and where its digest starts.
pub const END_LEN: usize = 34;
pub const END_DIGEST_AT: usize = 1;

/// Appends an end-of-object record.
pub fn put_end(digest: &[u8; 32], flags: u8, out: &mut Vec<u8>) {
    out.push(b'E');
    out.extend_from_slice(digest);
    out.push(flags);
}

/// Where an index entry's digest starts in its record (after the tag, the
/// length, the start and the end).
pub const ENTRY_DIGEST_AT: usize = 21;

/// Appends an index entry record.
pub fn put_entry(e: &Entry, out: &mut Vec<u8>) -> Result<()> {
    let mut body = Vec::with_capacity(96 + e.meta.path.len());
    body.extend_from_slice(&e.start.to_be_bytes());
    body.extend_from_slice(&e.end.to_be_bytes());
    body.extend_from_slice(&e.digest);
    body.push(e.flags);
    encode_meta(&e.meta, &mut body)?;
    if body.len() > MAX_META {
        return Err(bad("an index entry is over 1 MiB"));
    }
    out.push(b'N');
    put_bytes(out, &body);
    Ok(())
}

/// Appends the trailer.
pub fn put_trailer(t: &Trailer, out: &mut Vec<u8>) {
    out.push(b'T');
    out.extend_from_slice(&t.index_offset.to_be_bytes());
    out.extend_from_slice(&t.entries.to_be_bytes());
    out.extend_from_slice(&t.index_digest);
}

/// Reads the trailer from the stream's last 49 bytes.
pub fn read_trailer(b: &[u8]) -> Result<Trailer> {
    if b.len() != TRAILER_LEN || b[0] != b'T' {
        return Err(bad("the stream does not end with a trailer record"));
    }
    Ok(Trailer {
        index_offset: u64::from_be_bytes(b[1..9].try_into().unwrap()),
        entries: u64::from_be_bytes(b[9..17].try_into().unwrap()),
        index_digest: b[17..49].try_into().unwrap(),
    })
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("a record ends early"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

fn decode_meta(c: &mut Cursor<'_>) -> Result<Meta> {
    let k = c.u8()?;
    let kind = Kind::from_u8(k).ok_or_else(|| bad(format!("unknown object kind {k}")))?;
    let (mode, uid, gid) = (c.u32()?, c.u32()?, c.u32()?);
    let mtime = (c.u64()? as i64, c.u32()?);
    let atime = (c.u64()? as i64, c.u32()?);
    let size = c.u64()?;
    let sparse = c.u8()? != 0;
    let path = c.bytes()?;
    check_path(&path)?;
    let target = c.bytes()?;
    let n = c.u32()? as usize;
    if n > MAX_XATTRS {
        return Err(bad(format!(
            "{n} extended attributes, more than {MAX_XATTRS}"
        )));
    }
    let mut xattrs = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let kl = usize::from(c.u16()?);
        if kl == 0 || kl > 255 {
            return Err(bad(format!(
                "an extended attribute name of {kl} bytes (1-255)"
            )));
        }
        let k = c.take(kl)?.to_vec();
        xattrs.push((k, c.bytes()?));
    }
    if !c.0.is_empty() {
        return Err(bad("trailing bytes after an object's metadata"));
    }
    Ok(Meta {
        kind,
        mode,
        uid,
        gid,
        mtime,
        atime,
        size,
        sparse,
        path,
        target,
        xattrs,
    })
}

/// Decodes an index entry record's body (the fuzzed index decoder).
pub fn decode_entry(body: &[u8]) -> Result<Entry> {
    let mut c = Cursor(body);
    let start = c.u64()?;
    let end = c.u64()?;
    let digest: [u8; 32] = c.take(32)?.try_into().unwrap();
    let flags = c.u8()?;
    let meta = decode_meta(&mut c)?;
    if end < start {
        return Err(bad("an index entry ends before it starts"));
    }
    Ok(Entry {
        start,
        end,
        digest,
        flags,
        meta,
    })
}

/// One thing read from the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Info(Vec<u8>),
    Object(Meta),
    /// Content bytes (a data record may arrive in several pieces).
    Data(&'a [u8]),
    Hole(u64),
    End {
        digest: [u8; 32],
        flags: u8,
    },
    Entry(Entry),
    Trailer(Trailer),
}

enum State {
    Tag,
    Len { tag: u8, have: usize, buf: [u8; 4] },
    Body { tag: u8, need: usize, buf: Vec<u8> },
    Data { left: usize },
}

/// A push parser of the record stream: feed it bytes as segments open,
/// take events out. It holds at most one metadata record (1 MiB).
pub struct Parser {
    state: State,
    offset: u64,
    record_start: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Self::at(0)
    }
}

impl Parser {
    /// A parser positioned at a record boundary at stream offset `offset`.
    pub fn at(offset: u64) -> Self {
        Parser {
            state: State::Tag,
            offset,
            record_start: offset,
        }
    }

    /// Stream offset of the next byte the parser expects.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Stream offset where the record being read started.
    pub fn record_start(&self) -> u64 {
        self.record_start
    }

    /// Whether the parser stands between records.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Tag)
    }

    fn consume<'a>(&mut self, input: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (a, b) = input.split_at(n);
        *input = b;
        self.offset += n as u64;
        a
    }

    /// The next event from `input` (which is advanced), or `None` when it
    /// needs more bytes.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Event<'a>>> {
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            match &mut self.state {
                State::Tag => {
                    self.record_start = self.offset;
                    let tag = self.consume(input, 1)[0];
                    self.state = match tag {
                        b'S' | b'O' | b'N' | b'D' => State::Len {
                            tag,
                            have: 0,
                            buf: [0; 4],
                        },
                        b'H' => State::Body {
                            tag,
                            need: 8,
                            buf: Vec::with_capacity(8),
                        },
                        b'E' => State::Body {
                            tag,
                            need: 33,
                            buf: Vec::with_capacity(33),
                        },
                        b'T' => State::Body {
                            tag,
                            need: TRAILER_LEN - 1,
                            buf: Vec::with_capacity(48),
                        },
                        t => {
                            return Err(bad(format!(
                                "unknown record tag {t:#04x} at stream offset {}",
                                self.record_start
                            )))
                        }
                    };
                }
                State::Len { tag, have, buf } => {
                    let n = (4 - *have).min(input.len());
                    let (tag, mut h, mut b) = (*tag, *have, *buf);
                    b[h..h + n].copy_from_slice(self.consume(input, n));
                    h += n;
                    if h < 4 {
                        self.state = State::Len {
                            tag,
                            have: h,
                            buf: b,
                        };
                        continue;
                    }
                    let len = u32::from_be_bytes(b) as usize;
                    let (max, what) = if tag == b'D' {
                        (MAX_DATA, "data")
                    } else {
                        (MAX_META, "metadata")
                    };
                    if len == 0 || len > max {
                        return Err(bad(format!(
                            "{what} record of {len} bytes at stream offset {}",
                            self.record_start
                        )));
                    }
                    self.state = if tag == b'D' {
                        State::Data { left: len }
                    } else {
                        State::Body {
                            tag,
                            need: len,
                            buf: Vec::with_capacity(len),
                        }
                    };
                }
                State::Data { left } => {
                    let n = (*left).min(input.len());
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Tag;
                    }
                    return Ok(Some(Event::Data(self.consume(input, n))));
                }
                State::Body { need, buf, .. } => {
                    let n = (*need - buf.len()).min(input.len());
                    let piece = {
                        let (a, b) = input.split_at(n);
                        *input = b;
                        a
                    };
                    self.offset += n as u64;
                    let State::Body { tag, need, buf } = &mut self.state else {
                        unreachable!()
                    };
                    buf.extend_from_slice(piece);
                    if buf.len() < *need {
                        continue;
                    }
                    let (tag, body) = (*tag, std::mem::take(buf));
                    self.state = State::Tag;
                    let at = self.record_start;
                    let ctx = |e: Error| bad(format!("record at stream offset {at}: {e}"));
                    return Ok(Some(match tag {
                        b'O' => {
                            let mut c = Cursor(&body);
                            Event::Object(decode_meta(&mut c).map_err(ctx)?)
                        }
                        b'N' => Event::Entry(decode_entry(&body).map_err(ctx)?),
                        b'S' => Event::Info(body),
                        b'H' => Event::Hole(u64::from_be_bytes(body[..8].try_into().unwrap())),
                        b'E' => Event::End {
                            digest: body[..32].try_into().unwrap(),
                            flags: body[32],
                        },
                        _ => {
                            let mut t = vec![b'T'];
                            t.extend_from_slice(&body);
                            Event::Trailer(read_trailer(&t)?)
                        }
                    }));
                }
            }
        }
    }
}

/// Where in `b` the first whole object record lies whose metadata decodes:
/// a record boundary to go on from when the bytes before `b` are lost (a
/// damaged segment and no index). Found by structure only: a file whose
/// content imitates an object record could be taken for one.
pub fn find_object_record(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(k) = b[i..].iter().position(|&x| x == b'O') {
        let at = i + k;
        if let Some(len) = b.get(at + 1..at + 5) {
            let n = u32::from_be_bytes(len.try_into().unwrap()) as usize;
            if (1..=MAX_META).contains(&n) {
                if let Some(body) = b.get(at + 5..at + 5 + n) {
                    if decode_meta(&mut Cursor(body)).is_ok() {
                        return Some(at);
                    }
                }
            }
        }
        i = at + 1;
    }
    None
}

/// The fuzz target for the stream decoder: arbitrary bytes, fed in pieces.
pub fn fuzz_parse(bytes: &[u8]) {
    let mut p = Parser::default();
    for piece in bytes.chunks(7) {
        let mut input = piece;
        loop {
            match p.next(&mut input) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::collection::vec(
                any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
                1..12,
            )
            .prop_filter("not . or ..", |c| c != b"." && c != b".."),
            1..6,
        )
        .prop_map(|cs| cs.join(&b'/'))
    }

    pub(crate) fn meta() -> impl Strategy<Value = Meta> {
        (
            prop_oneof![
                Just(Kind::Dir),
                Just(Kind::File),
                Just(Kind::Symlink),
                Just(Kind::HardLink),
                Just(Kind::Stream),
                Just(Kind::Fifo),
                Just(Kind::CharDevice),
                Just(Kind::BlockDevice)
            ],
            any::<(u32, u32, u32, i64, u32, i64, u32, u64, bool)>(),
            path(),
            proptest::collection::vec(any::<u8>(), 0..20),
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 1..20),
                    proptest::collection::vec(any::<u8>(), 0..30),
                ),
                0..3,
            ),
        )
            .prop_map(
                |(
                    kind,
                    (mode, uid, gid, ms, mns, as_, ans, size, sparse),
                    path,
                    target,
                    xattrs,
                )| Meta {
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime: (ms, mns),
                    atime: (as_, ans),
                    size,
                    sparse,
                    path,
                    target,
                    xattrs,
                },
            )
    }

    #[derive(Debug, Clone)]
    enum Rec {
        Info(Vec<u8>),
        Object(Meta),
        Data(Vec<u8>),
        Hole(u64),
        End([u8; 32], u8),
        Entry(Entry),
        Trailer(Trailer),
    }

    fn rec() -> impl Strategy<Value = Rec> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..50).prop_map(Rec::Info),
            meta().prop_map(Rec::Object),
            proptest::collection::vec(any::<u8>(), 1..400).prop_map(Rec::Data),
            any::<u64>().prop_map(Rec::Hole),
            any::<([u8; 32], u8)>().prop_map(|(d, f)| Rec::End(d, f)),
            (
                any::<u64>(),
                any::<u32>(),
                any::<[u8; 32]>(),
                any::<u8>(),
                meta()
            )
                .prop_map(|(start, len, digest, flags, meta)| Rec::Entry(Entry {
                    start,
                    end: start.saturating_add(len.into()),
                    digest,
                    flags,
                    meta
                })),
            any::<(u64, u64, [u8; 32])>().prop_map(|(a, b, d)| Rec::Trailer(Trailer {
                index_offset: a,
                entries: b,
                index_digest: d
            })),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip_in_any_pieces(recs in proptest::collection::vec(rec(), 0..20), piece in 1usize..64) {
            let mut stream = Vec::new();
            for r in &recs {
                match r {
                    Rec::Info(j) => put_info(j, &mut stream).unwrap(),
                    Rec::Object(m) => put_object(m, &mut stream).unwrap(),
                    Rec::Data(d) => { put_data_header(d.len(), &mut stream); stream.extend_from_slice(d); }
                    Rec::Hole(n) => put_hole(*n, &mut stream),
                    Rec::End(d, f) => put_end(d, *f, &mut stream),
                    Rec::Entry(e) => put_entry(e, &mut stream).unwrap(),
                    Rec::Trailer(t) => put_trailer(t, &mut stream),
                }
            }
            let mut p = Parser::default();
            let mut got: Vec<Rec> = Vec::new();
            for chunk in stream.chunks(piece) {
                let mut input = chunk;
                while let Some(ev) = p.next(&mut input).unwrap() {
                    match ev {
                        Event::Data(d) => match got.last_mut() {
                            Some(Rec::Data(v)) if !p.at_boundary() || v.len() < 400 => v.extend_from_slice(d),
                            _ => got.push(Rec::Data(d.to_vec())),
                        },
                        Event::Info(j) => got.push(Rec::Info(j)),
                        Event::Object(m) => got.push(Rec::Object(m)),
                        Event::Hole(n) => got.push(Rec::Hole(n)),
                        Event::End { digest, flags } => got.push(Rec::End(digest, flags)),
                        Event::Entry(e) => got.push(Rec::Entry(e)),
                        Event::Trailer(t) => got.push(Rec::Trailer(t)),
                    }
                }
            }
            prop_assert!(p.at_boundary());
            prop_assert_eq!(p.offset(), stream.len() as u64);
            // Adjacent data records merge in this comparison; compare the flattened forms.
            let flat = |v: &[Rec]| -> Vec<String> {
                let mut out: Vec<String> = Vec::new();
                for r in v {
                    let s = match r { Rec::Data(d) => format!("D{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>()), other => format!("{other:?}") };
                    match (out.last_mut(), s.strip_prefix('D')) {
                        (Some(last), Some(hex)) if last.starts_with('D') => last.push_str(hex),
                        _ => out.push(s),
                    }
                }
                out
            };
            prop_assert_eq!(flat(&got), flat(&recs));
        }

        /// The digest offsets a save's sealing thread writes at (see `deferred`).
        #[test]
        fn digests_sit_where_the_constants_say(digest in any::<[u8; 32]>(), flags in any::<u8>(), meta in meta()) {
            let mut end = vec![7u8; 3];
            put_end(&digest, flags, &mut end);
            prop_assert_eq!(end.len(), 3 + END_LEN);
            prop_assert_eq!(&end[3 + END_DIGEST_AT..3 + END_DIGEST_AT + 32], &digest);
            let mut entry = vec![7u8; 5];
            put_entry(&Entry { start: 1, end: 2, digest, flags, meta }, &mut entry).unwrap();
            prop_assert_eq!(&entry[5 + ENTRY_DIGEST_AT..5 + ENTRY_DIGEST_AT + 32], &digest);
        }

        #[test]
        fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            fuzz_parse(&bytes);
            let _ = decode_entry(&bytes);
            if let Some(i) = find_object_record(&bytes) {
                prop_assert_eq!(bytes[i], b'O');
            }
        }

        /// After bytes that hold no object record, the first object record
        /// is found where it starts, and parsing from there reads it.
        #[test]
        fn the_first_object_record_is_found_after_lost_bytes(
            junk in proptest::collection::vec(any::<u8>().prop_filter("no O", |b| *b != b'O'), 0..300),
            m in meta(),
        ) {
            let mut b = junk.clone();
            put_object(&m, &mut b).unwrap();
            put_end(&[1; 32], 0, &mut b);
            prop_assert_eq!(find_object_record(&b), Some(junk.len()));
            let mut p = Parser::at(junk.len() as u64);
            let mut input = &b[junk.len()..];
            prop_assert_eq!(p.next(&mut input).unwrap(), Some(Event::Object(m)));
        }
    }

    #[test]
    fn what_decodes_encodes_again() {
        // Found by the index_decoder fuzz target: an empty attribute name decoded.
        let m = Meta {
            kind: Kind::File,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
            atime: (0, 0),
            size: 0,
            sparse: false,
            path: b"a".to_vec(),
            target: vec![],
            xattrs: vec![(b"n".to_vec(), vec![])],
        };
        let e = Entry {
            start: 0,
            end: 1,
            digest: [0; 32],
            flags: 0,
            meta: m,
        };
        let mut rec = Vec::new();
        put_entry(&e, &mut rec).unwrap();
        let body = &mut rec[5..];
        let at = body.len() - 4 - 1 - 2; // name length field of the one attribute
        body[at..at + 2].copy_from_slice(&0u16.to_be_bytes());
        body.copy_within(at + 3.., at + 2);
        let n = body.len();
        assert!(decode_entry(&body[..n - 1])
            .unwrap_err()
            .to_string()
            .contains("extended attribute name"));
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in [
            &b"/etc/passwd"[..],
            b"a/../b",
            b"..",
            b"a//b",
            b"./a",
            b"a/\0",
        ] {
            assert!(check_path(p).is_err(), "{:?}", String::from_utf8_lossy(p));
        }
        check_path(b"a/b c/\xff\xfe").unwrap();
        let mut out = Vec::new();
        put_data_header(3, &mut out);
        out[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut input = &out[..];
        let e = Parser::default().next(&mut input).unwrap_err();
        assert!(
            e.to_string().contains("data record of 4294967295 bytes"),
            "{e}"
        );
    }
}
