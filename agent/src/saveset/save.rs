//! Saving: a source read, encoded as records, sealed into segments and written as one tape file; the index goes last.
//!
//! Three threads: the walker lists the tree ahead ([`walk::walk_ahead`]),
//! the reader reads, hashes and encodes into segments; the caller's thread
//! seals segments and writes them to tape, and hashes the files the reader
//! leaves it when it has time to spare ([`super::deferred`]). Bounded
//! channels join them, so memory is a few segments whatever the data size;
//! index entries wait in an unnamed temporary file, not in memory.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use serde::Serialize;

use super::deferred::{Deferred, Op};
use super::format::{self, Entry, Kind, Meta, Trailer, FLAG_CHANGED, MAX_DATA};
use super::walk::{self, Filter};
use crate::error::{Error, Result};
use crate::keys::{random, KeySource};
use crate::stream::{self, Header, Sealer};
use crate::tape::label::LabelDate;
use crate::tape::volume::{Changer, FileSpec, FileSummary, FileWriter, Target};

/// What to save.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory tree (or a single file) with include/exclude patterns.
    Tree { root: PathBuf, filter: Filter },
    /// Standard input as one stream object with this name (e.g. a *SAVF).
    Stdin { name: String },
}

impl Source {
    /// How the source is named in the catalog (for incremental references).
    pub fn describe(&self) -> String {
        match self {
            Source::Tree { root, .. } => root.display().to_string(),
            Source::Stdin { name } => format!("stdin:{name}"),
        }
    }
}

/// BRMS save levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Full,
    /// Changed since the last save of any level (*INCR).
    Incremental,
    /// Changed since the last full save (*CUML).
    Cumulative,
}

/// What to do with an object that changes while it is read (save-while-active).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Read it again, up to this many times, then keep it with a warning.
    Retry(u32),
    /// Keep it, flagged, with a warning.
    Warn,
    /// Fail the save.
    Fail,
}

/// How to save.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    pub source: Source,
    pub level: Level,
    /// For incremental and cumulative saves: objects changed after this
    /// moment (seconds since 1970) are saved.
    pub since: Option<i64>,
    pub compression: bool,
    pub on_change: OnChange,
    /// Stream bytes per segment (one tape block each).
    pub payload: u32,
    /// Label date of the tape file.
    pub date: LabelDate,
    /// When the save started (seconds since 1970): the next incremental's reference.
    pub started: i64,
}

/// The save set information record: what was saved, how, when, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Info {
    pub source: String,
    pub level: Level,
    pub since: Option<i64>,
    pub started: i64,
    pub host: String,
}

/// Counters a progress display reads while a save runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub objects: AtomicU64,
    /// Bytes expected in all, when known (0: not known yet).
    pub total: AtomicU64,
}

/// Sums the bytes a tree source will read (metadata only), for an ETA.
pub fn estimate(source: &Source, since: Option<i64>) -> u64 {
    let Source::Tree { root, filter } = source else {
        return 0;
    };
    let mut total = 0u64;
    let _ = walk::walk(root, filter, &mut |_, _, md| {
        if md.is_file() && walk::changed_since(md, since) {
            total += md.blocks().saturating_mul(512).min(md.len());
        }
        Ok(())
    });
    total
}

/// What a save did.
#[derive(Debug, Clone, Serialize)]
pub struct SaveReport {
    pub save_set: String,
    /// What was saved, how, when, where (as recorded on tape).
    pub info: Info,
    pub key_id: String,
    pub file: FileSummary,
    pub objects: u64,
    /// Logical size of the objects (sparse files at their full size).
    pub bytes: u64,
    /// Content bytes actually read (holes excluded).
    pub read_bytes: u64,
    pub stream_bytes: u64,
    pub segments: u64,
    /// Objects that changed while read (kept, flagged).
    pub changed: Vec<String>,
    pub warnings: Vec<String>,
}

/// Tape file identifier of a save set: "SS-" and 14 hex digits of its id.
pub fn file_id(save_set: &str) -> String {
    format!("SS-{}", save_set[..14].to_ascii_uppercase())
}

/// Runs a save onto `target` through `changer`, with a fresh key from `keys`.
/// No data is written unless the key was had.
pub fn save<C: Changer + ?Sized>(
    changer: &mut C,
    target: Target,
    keys: &mut dyn KeySource,
    opts: &SaveOptions,
    progress: &Progress,
) -> Result<SaveReport> {
    if opts.payload == 0 || opts.payload > stream::MAX_PAYLOAD {
        return Err(Error::StreamHeader {
            reason: format!("segment payload {} out of range", opts.payload),
        });
    }
    let info = Info {
        source: opts.source.describe(),
        level: opts.level,
        since: opts.since,
        started: opts.started,
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let id = random::<16>()?;
    let id_hex = stream::hex(&id);
    let key = keys.create(&id_hex)?;
    let header = Header {
        compression: opts.compression,
        payload: opts.payload,
        save_set_id: id,
        salt: random::<32>()?,
        key_id: key.id.clone(),
    };
    let (sealer, header_block) = Sealer::new(&key.key, header)?;
    drop(key);
    let spec = FileSpec {
        file_id: file_id(&id_hex),
        created: Some(opts.date),
        expires: None,
        max_block: opts.payload + stream::SEGMENT_OVERHEAD as u32,
        copy: 0,
    };
    let mut w = FileWriter::begin(changer, target, spec)?;
    w.write_block(&header_block)?;
    // The reader thread reads, hashes and encodes; this thread seals and
    // writes, and hashes what the reader leaves it.
    let (tx, rx) = sync_channel::<ToSeal>(8);
    let (pool_tx, pool_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut sealer = sealer;
    let payload = sealer.header().payload;
    let info_ref = &info;
    let spill = tempfile::tempfile().map_err(spill_error)?;
    let mut deferred = Deferred::new(spill.try_clone().map_err(spill_error)?);
    let sealed = AtomicU64::new(0);
    let sealed_ref = &sealed;
    let leave = leave_hashing_forced();
    let produced = std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let to_sealer = ToSealer {
                tx,
                sealed: sealed_ref,
                leave,
            };
            Saver::new(payload, to_sealer, pool_rx, spill, opts, info_ref, progress).run()
        });
        let written = (|| -> Result<()> {
            for msg in rx.iter() {
                match msg {
                    ToSeal::Segment {
                        mut block,
                        last,
                        ops,
                    } => {
                        deferred
                            .apply(ops, &mut block[1..], true)
                            .map_err(spill_error)?;
                        if last && !deferred.done() {
                            return Err(unfinished_digest());
                        }
                        sealer.seal_in_place(&mut block, last)?;
                        w.write_block(&block)?;
                        sealed.fetch_add(1, Ordering::Relaxed);
                        let _ = pool_tx.send(block);
                    }
                    ToSeal::Digests {
                        mut block,
                        ops,
                        back,
                    } => {
                        deferred
                            .apply(ops, &mut block[1..], false)
                            .map_err(spill_error)?;
                        if !deferred.done() {
                            return Err(unfinished_digest());
                        }
                        let _ = back.send(block);
                    }
                }
            }
            Ok(())
        })();
        drop(rx);
        let produced = producer.join().map_err(|_| Error::Format {
            reason: "the save's reader thread panicked".into(),
        })?;
        // A tape error is the cause when both fail (the reader then only saw the channel close).
        written.and(produced)
    })?;
    if sealer.segments() != produced.segments {
        return Err(Error::Format {
            reason: "the save stopped before its last segment".into(),
        });
    }
    let file = w.finish()?;
    let mut warnings = file.warnings.clone();
    warnings.extend(produced.warnings);
    Ok(SaveReport {
        save_set: id_hex,
        info,
        key_id: sealer.header().key_id.clone(),
        file,
        objects: produced.objects,
        bytes: produced.logical,
        read_bytes: produced.bytes,
        stream_bytes: produced.stream_bytes,
        segments: produced.segments,
        changed: produced.changed,
        warnings,
    })
}

fn spill_error(e: std::io::Error) -> Error {
    Error::io("index spill file", e)
}

fn unfinished_digest() -> Error {
    Error::Format {
        reason: "a content digest left to the sealing thread was not finished".into(),
    }
}

/// What the reading thread hands the sealing thread.
enum ToSeal {
    /// A segment to seal and write (`last`: the stream's last), with the
    /// hashing left for it.
    Segment {
        block: Vec<u8>,
        last: bool,
        ops: Vec<Op>,
    },
    /// The segment still being filled, to have its digests written before
    /// the index is, and sent `back`.
    Digests {
        block: Vec<u8>,
        ops: Vec<Op>,
        back: SyncSender<Vec<u8>>,
    },
}

/// The reading thread's way to the sealing thread.
struct ToSealer<'a> {
    tx: SyncSender<ToSeal>,
    /// Segments the sealing thread has sealed.
    sealed: &'a AtomicU64,
    /// In tests: always (or never) leave hashing to the sealing thread.
    leave: Option<bool>,
}

#[cfg(test)]
thread_local! {
    /// Tests set this to take both ways of hashing.
    pub(crate) static LEAVE_HASHING: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

fn leave_hashing_forced() -> Option<bool> {
    #[cfg(test)]
    return LEAVE_HASHING.with(|c| c.get());
    #[cfg(not(test))]
    None
}

/// Index entries waiting in an unnamed temporary file for the save's end,
/// written at known offsets so the sealing thread can write the digests it
/// computes into entries already there.
struct Spill {
    file: File,
    buf: Vec<u8>,
    flushed: u64,
}

impl Spill {
    /// Appends an entry; returns where its digest lies in the file.
    fn put(&mut self, e: &Entry) -> Result<u64> {
        let at = self.flushed + self.buf.len() as u64;
        format::put_entry(e, &mut self.buf)?;
        if self.buf.len() >= 1 << 16 {
            self.flush()?;
        }
        Ok(at + format::ENTRY_DIGEST_AT as u64)
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.flushed)
            .map_err(spill_error)?;
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Stream bytes cut into segment payloads, sent to the sealing and writing thread.
struct Segments<'a> {
    /// The segment being filled: one byte of room for the sealer's coding
    /// byte, then always `payload` bytes (so file data can be read straight
    /// into it), of which `used` are stream bytes. It is sealed in place.
    buf: Vec<u8>,
    used: usize,
    payload: usize,
    offset: u64,
    sent: u64,
    to: ToSealer<'a>,
    pool: Receiver<Vec<u8>>,
    /// Hashing left to the sealing thread since the last segment was sent.
    ops: Vec<Op>,
    /// Index entries, on file before a segment that may finish their digests is sent.
    spill: Spill,
}

fn sealer_stopped() -> Error {
    Error::Format {
        reason: "the tape writer stopped".into(),
    }
}

impl Segments<'_> {
    /// Whether to leave the hashing of a file of `len` bytes to the sealing
    /// thread: a file no bigger than a segment, when the sealing thread has
    /// sealed every segment sent and waits for work. Hashing is cheapest
    /// right after reading, while the data is in this core's cache: left
    /// when segments wait, or for a large file (whose reading and sealing
    /// already keep both threads busy), it costs more than it saves.
    fn leave_hashing(&self, len: u64) -> bool {
        self.to.leave.unwrap_or_else(|| {
            len <= self.payload as u64 && self.to.sealed.load(Ordering::Relaxed) == self.sent
        })
    }

    /// Has the sealing thread finish every digest left to it, including
    /// those in the segment still being filled.
    fn finish_digests(&mut self) -> Result<()> {
        self.spill.flush()?;
        let (back, answer) = sync_channel(1);
        let mut block = std::mem::take(&mut self.buf);
        block.truncate(1 + self.used);
        let ops = std::mem::take(&mut self.ops);
        self.to
            .tx
            .send(ToSeal::Digests { block, ops, back })
            .map_err(|_| sealer_stopped())?;
        let mut block = answer.recv().map_err(|_| sealer_stopped())?;
        block.resize(1 + self.payload, 0);
        self.buf = block;
        Ok(())
    }

    fn seal(&mut self, last: bool) -> Result<()> {
        self.spill.flush()?;
        let mut next = self
            .pool
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(1 + self.payload + stream::SEGMENT_OVERHEAD));
        // A buffer that went out full comes back full: nothing to clear.
        next.resize(1 + self.payload, 0);
        let mut full = std::mem::replace(&mut self.buf, next);
        full.truncate(1 + self.used);
        self.used = 0;
        self.sent += 1;
        let ops = std::mem::take(&mut self.ops);
        self.to
            .tx
            .send(ToSeal::Segment {
                block: full,
                last,
                ops,
            })
            .map_err(|_| sealer_stopped())
    }

    fn write(&mut self, mut b: &[u8]) -> Result<()> {
        while !b.is_empty() {
            if self.used == self.payload {
                self.seal(false)?;
            }
            let n = (self.payload - self.used).min(b.len());
            let at = 1 + self.used;
            self.buf[at..at + n].copy_from_slice(&b[..n]);
            self.used += n;
            self.offset += n as u64;
            b = &b[n..];
        }
        Ok(())
    }

    /// Reads up to `want` bytes of `r` straight into the segment as one
    /// data record, if the segment has room for it; returns the bytes
    /// read and whether the input ended, and `None` (nothing read) when
    /// there is no room.
    fn read_data(
        &mut self,
        r: &mut dyn std::io::Read,
        want: u64,
    ) -> std::io::Result<Option<(&[u8], bool)>> {
        if self.used == self.payload {
            return Ok(None);
        }
        let room = self.payload - self.used;
        if room < DIRECT_MIN {
            return Ok(None);
        }
        let want = want.min((room - format::DATA_HEADER).min(MAX_DATA) as u64) as usize;
        let head = 1 + self.used;
        let at = head + format::DATA_HEADER;
        let n = crate::io::fill(r, &mut self.buf[at..at + want])?;
        if n > 0 {
            self.buf[head..at].copy_from_slice(&format::data_header(n));
            self.used += format::DATA_HEADER + n;
            self.offset += (format::DATA_HEADER + n) as u64;
        }
        Ok(Some((&self.buf[at..at + n], n < want)))
    }
}

/// Data is read straight into a segment when at least this much of it is free.
const DIRECT_MIN: usize = 4096;

struct Produced {
    objects: u64,
    bytes: u64,
    logical: u64,
    stream_bytes: u64,
    segments: u64,
    changed: Vec<String>,
    warnings: Vec<String>,
}

struct Saver<'a> {
    seg: Segments<'a>,
    entries: u64,
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Paths of any length made usable (see [`walk::Access`]).
    access: walk::Access,
    opts: &'a SaveOptions,
    info: &'a Info,
    progress: &'a Progress,
    /// For the few bytes at a segment's end too short to read into directly.
    buf: Vec<u8>,
    rec: Vec<u8>,
    bytes: u64,
    logical: u64,
    changed: Vec<String>,
    warnings: Vec<String>,
}

/// Reads a file on from `pos` with `pread`: the kernel has no shared file
/// offset to lock for each call.
struct ReadAt<'a> {
    f: &'a File,
    pos: u64,
}

impl std::io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.f.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path.display().to_string(), e)
}

fn times(md: &std::fs::Metadata) -> ((i64, u32), (i64, u32)) {
    (
        (md.mtime(), md.mtime_nsec() as u32),
        (md.atime(), md.atime_nsec() as u32),
    )
}

impl<'a> Saver<'a> {
    fn new(
        payload: u32,
        to: ToSealer<'a>,
        pool: Receiver<Vec<u8>>,
        spill: File,
        opts: &'a SaveOptions,
        info: &'a Info,
        progress: &'a Progress,
    ) -> Self {
        let payload = payload as usize;
        Saver {
            seg: Segments {
                buf: {
                    let mut b = Vec::with_capacity(1 + payload + stream::SEGMENT_OVERHEAD);
                    b.resize(1 + payload, 0);
                    b
                },
                used: 0,
                payload,
                offset: 0,
                sent: 0,
                to,
                pool,
                ops: Vec::new(),
                spill: Spill {
                    file: spill,
                    buf: Vec::with_capacity(1 << 16),
                    flushed: 0,
                },
            },
            entries: 0,
            links: HashMap::new(),
            access: walk::Access::default(),
            opts,
            info,
            progress,
            buf: vec![0; DIRECT_MIN],
            rec: Vec::with_capacity(256),
            bytes: 0,
            logical: 0,
            changed: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn run(mut self) -> Result<Produced> {
        format::put_info(
            &serde_json::to_vec(&self.info).expect("info serializes"),
            &mut self.rec,
        )?;
        self.emit_record()?;
        match &self.opts.source {
            Source::Tree { root, filter } => {
                let root = std::fs::canonicalize(root).map_err(io(root))?;
                walk::walk_ahead(
                    &root,
                    filter,
                    self.opts.since,
                    &mut |abs, _rel, md, file| self.object(abs, md, file),
                )?;
            }
            Source::Stdin { name } => self.stdin(name)?,
        }
        self.finish()
    }

    fn emit_record(&mut self) -> Result<()> {
        let rec = std::mem::take(&mut self.rec);
        let r = self.seg.write(&rec);
        self.rec = rec;
        self.rec.clear();
        r
    }

    /// Puts an object's index entry in the spill file; returns where its digest lies there.
    fn index(&mut self, e: &Entry) -> Result<u64> {
        let at = self.seg.spill.put(e)?;
        self.entries += 1;
        self.logical += e.meta.size;
        self.progress.objects.fetch_add(1, Ordering::Relaxed);
        Ok(at)
    }

    /// Writes an object's end record. A digest left to the sealing thread
    /// (`None`) is written there by it, and at `spill` in the index, whose
    /// entry is already in the spill file.
    fn end(&mut self, digest: Option<[u8; 32]>, flags: u8, spill: Option<u64>) -> Result<()> {
        if digest.is_none() {
            self.seg.ops.push(Op::Digest {
                at: self.seg.offset + format::END_DIGEST_AT as u64,
                spill,
            });
        }
        format::put_end(&digest.unwrap_or_default(), flags, &mut self.rec);
        self.emit_record()
    }

    /// Saves one entry; `opened` is the regular file, opened by the walker.
    fn object(
        &mut self,
        abs: &Path,
        md: &std::fs::Metadata,
        opened: Option<walk::Opened>,
    ) -> Result<()> {
        let (file, xattrs) = match opened {
            Some(o) => {
                self.warnings.extend(o.warnings);
                (Some(o.file), Some(o.xattrs))
            }
            None => (None, None),
        };
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::CharDevice
        } else if ft.is_block_device() {
            Kind::BlockDevice
        } else {
            // As tar: a socket is made by the program that listens on it.
            self.warnings
                .push(format!("{}: socket not saved", abs.display()));
            return Ok(());
        };
        // Incremental and cumulative: unchanged files are left out (directories are kept for the structure).
        if kind != Kind::Dir && !walk::changed_since(md, self.opts.since) {
            return Ok(());
        }
        let path = walk::stored_path(abs);
        if path.is_empty() {
            // The root directory itself is not an object.
            return Ok(());
        }
        let (mtime, atime) = times(md);
        let mut meta = Meta {
            kind,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime,
            atime,
            size: if kind == Kind::File { md.len() } else { 0 },
            sparse: false,
            path,
            target: Vec::new(),
            xattrs: Vec::new(),
        };
        if kind.is_device() {
            meta.target = md.rdev().to_be_bytes().to_vec();
        }
        if kind == Kind::Symlink {
            meta.target = std::os::unix::ffi::OsStrExt::as_bytes(
                self.access
                    .path(abs)
                    .and_then(|p| std::fs::read_link(&*p))
                    .map_err(io(abs))?
                    .as_os_str(),
            )
            .to_vec();
        }
        let link_key = (md.dev(), md.ino());
        if kind == Kind::File && md.nlink() > 1 {
            if let Some(first) = self.links.get(&link_key) {
                meta.kind = Kind::HardLink;
                meta.target = first.clone();
                meta.size = 0;
            }
        }
        // A file is opened before anything of it is written, so one removed
        // since it was listed is left out whole, with a warning.
        let mut opened = None;
        if meta.kind == Kind::File {
            let access = &mut self.access;
            match file.map_or_else(
                || access.path(abs).and_then(|p| walk::open_file(&p, md)),
                Ok,
            ) {
                Ok(f) => opened = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.warnings.push(format!(
                        "{}: removed before it was read; not saved",
                        abs.display()
                    ));
                    return Ok(());
                }
                Err(e) => return Err(io(abs)(e)),
            }
            if md.nlink() > 1 {
                self.links.insert(link_key, meta.path.clone());
            }
        }
        if kind != Kind::Symlink {
            meta.xattrs = match xattrs {
                Some(x) => x,
                None => match self.access.path(abs) {
                    Ok(p) => walk::read_xattrs(&p, opened.as_ref(), &mut self.warnings),
                    Err(e) => {
                        self.warnings.push(format!(
                            "{}: extended attributes not read: {e}",
                            abs.display()
                        ));
                        Vec::new()
                    }
                },
            };
        }
        let mut attempt = 0;
        loop {
            let start = self.seg.offset;
            format::put_object(&meta, &mut self.rec)?;
            self.emit_record()?;
            let (digest, changed, size) = if meta.kind == Kind::File {
                self.file_content(abs, md, opened.take())?
            } else {
                (Some(*blake3::hash(b"").as_bytes()), false, 0)
            };
            let mut flags = 0;
            if changed {
                let shown = abs.display().to_string();
                match self.opts.on_change {
                    OnChange::Fail => {
                        return Err(Error::Format {
                            reason: format!(
                            "{shown} changed while it was saved (save-while-active policy: fail)"
                        ),
                        })
                    }
                    OnChange::Retry(n) if attempt < n => {
                        attempt += 1;
                        self.end(digest, FLAG_CHANGED, None)?;
                        continue;
                    }
                    _ => {
                        flags = FLAG_CHANGED;
                        self.warnings
                            .push(format!("{shown} changed while it was saved; kept as read"));
                        self.changed.push(shown);
                    }
                }
            }
            meta.size = size;
            return self.close_object(start, meta, digest, flags);
        }
    }

    /// Ends an object that began at stream offset `start`: its index entry
    /// first (a digest left to the sealing thread is written into it there,
    /// once the end record is sealed), then its end record.
    fn close_object(
        &mut self,
        start: u64,
        meta: Meta,
        digest: Option<[u8; 32]>,
        flags: u8,
    ) -> Result<()> {
        let e = Entry {
            start,
            end: self.seg.offset + format::END_LEN as u64,
            digest: digest.unwrap_or_default(),
            flags,
            meta,
        };
        let spill = self.index(&e)?;
        self.end(digest, flags, Some(spill))
    }

    /// Writes a file's content; returns its digest (`None`: left to the
    /// sealing thread), whether it changed while read, and the bytes read.
    /// `opened` is the file opened already (a retry opens it again).
    fn file_content(
        &mut self,
        abs: &Path,
        before: &std::fs::Metadata,
        opened: Option<File>,
    ) -> Result<(Option<[u8; 32]>, bool, u64)> {
        let f = match opened {
            Some(f) => f,
            None => self
                .access
                .path(abs)
                .and_then(|p| walk::open_file(&p, before))
                .map_err(io(abs))?,
        };
        // As listed: a file changed since is caught after reading.
        let md0 = before;
        let sparse = md0.blocks() * 512 < md0.len();
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
        let left;
        if sparse {
            use nix::unistd::{lseek, Whence};
            loop {
                let data = match lseek(&f, pos as i64, Whence::SeekData) {
                    Ok(d) => d as u64,
                    Err(nix::errno::Errno::ENXIO) => md0.len().max(pos),
                    Err(e) => return Err(Error::io(abs.display().to_string(), e.into())),
                };
                if data > pos {
                    self.hole(data - pos, &mut hasher)?;
                    pos = data;
                }
                if pos >= md0.len() {
                    break;
                }
                let hole = lseek(&f, pos as i64, Whence::SeekHole)
                    .map_err(|e| Error::io(abs.display().to_string(), e.into()))?
                    as u64;
                let mut from = ReadAt { f: &f, pos };
                pos += self.copy(&mut from, abs, hole - pos, Some(&mut hasher))?;
                if pos < hole {
                    break; // the file shrank
                }
            }
            left = false;
        } else {
            // The size listed, as tar reads: no read to meet the end, and a
            // file that grew since is caught below as changed.
            left = self.seg.leave_hashing(md0.len());
            let h = if left { None } else { Some(&mut hasher) };
            pos = self.copy(&mut ReadAt { f: &f, pos: 0 }, abs, md0.len(), h)?;
        }
        // Changed while read: what was read is not the file listed, or its
        // size or modification time moved. (A file replaced by another under
        // its name while it was read was read whole, as it was: that is a
        // consistent copy, and the next incremental takes the new one.)
        let md1 = f.metadata().map_err(io(abs))?;
        let changed = md1.len() != pos
            || (md1.dev(), md1.ino()) != (before.dev(), before.ino())
            || (md1.mtime(), md1.mtime_nsec()) != (before.mtime(), before.mtime_nsec());
        let digest = (!left).then(|| *hasher.finalize().as_bytes());
        Ok((digest, changed, pos))
    }

    fn hole(&mut self, n: u64, hasher: &mut blake3::Hasher) -> Result<()> {
        format::put_hole(n, &mut self.rec);
        self.emit_record()?;
        format::hash_zeros(hasher, n);
        Ok(())
    }

    /// Copies up to `limit` bytes of `r` as data records, hashed into
    /// `hasher`, or (`None`) by the sealing thread.
    fn copy(
        &mut self,
        r: &mut dyn std::io::Read,
        what: &Path,
        limit: u64,
        mut hasher: Option<&mut blake3::Hasher>,
    ) -> Result<u64> {
        let mut done = 0u64;
        while done < limit {
            if self.seg.used == self.seg.payload {
                self.seg.seal(false)?;
            }
            let (n, ended) = match self.seg.read_data(r, limit - done).map_err(io(what))? {
                // Straight into the segment when it has room: no copy.
                Some((d, ended)) => {
                    let n = d.len();
                    match hasher.as_deref_mut() {
                        Some(h) => {
                            h.update(d);
                        }
                        None => self.seg.ops.push(Op::Data {
                            from: self.seg.offset - n as u64,
                            to: self.seg.offset,
                        }),
                    }
                    (n, ended)
                }
                // The segment's last few bytes: a small record through `buf`,
                // running on into the next segment.
                None => {
                    let want = (limit - done).min(self.buf.len() as u64) as usize;
                    let n = crate::io::fill(r, &mut self.buf[..want]).map_err(io(what))?;
                    if n > 0 {
                        format::put_data_header(n, &mut self.rec);
                        self.emit_record()?;
                        match hasher.as_deref_mut() {
                            Some(h) => {
                                h.update(&self.buf[..n]);
                            }
                            None => self.seg.ops.push(Op::Data {
                                from: self.seg.offset,
                                to: self.seg.offset + n as u64,
                            }),
                        }
                        self.seg.write(&self.buf[..n])?;
                    }
                    (n, n < want)
                }
            };
            self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
            self.bytes += n as u64;
            done += n as u64;
            if ended {
                break;
            }
        }
        Ok(done)
    }

    fn stdin(&mut self, name: &str) -> Result<()> {
        let path = name.trim_start_matches('/').as_bytes().to_vec();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut meta = Meta {
            kind: Kind::Stream,
            mode: 0o100600,
            uid: 0,
            gid: 0,
            mtime: (now, 0),
            atime: (now, 0),
            size: 0,
            sparse: false,
            path,
            target: Vec::new(),
            xattrs: Vec::new(),
        };
        let start = self.seg.offset;
        format::put_object(&meta, &mut self.rec)?;
        self.emit_record()?;
        // A stream is as long as it is: hashed here, as a large file is.
        let mut hasher = blake3::Hasher::new();
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        meta.size = self.copy(
            &mut lock,
            Path::new("standard input"),
            u64::MAX,
            Some(&mut hasher),
        )?;
        let digest = *hasher.finalize().as_bytes();
        self.close_object(start, meta, Some(digest), 0)
    }

    fn finish(mut self) -> Result<Produced> {
        let index_offset = self.seg.offset;
        // Every digest in place, in the stream and in the entries, before the index is copied.
        self.seg.finish_digests()?;
        let mut hasher = blake3::Hasher::new();
        let mut chunk = vec![0u8; 1 << 16];
        let mut at = 0;
        loop {
            let n = self
                .seg
                .spill
                .file
                .read_at(&mut chunk, at)
                .map_err(spill_error)?;
            if n == 0 {
                break;
            }
            at += n as u64;
            hasher.update(&chunk[..n]);
            self.seg.write(&chunk[..n])?;
        }
        let t = Trailer {
            index_offset,
            entries: self.entries,
            index_digest: *hasher.finalize().as_bytes(),
        };
        let mut rec = Vec::new();
        format::put_trailer(&t, &mut rec);
        self.seg.write(&rec)?;
        self.seg.seal(true)?;
        Ok(Produced {
            objects: self.entries,
            bytes: self.bytes,
            logical: self.logical,
            stream_bytes: self.seg.offset,
            segments: self.seg.sent,
            changed: self.changed,
            warnings: self.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FileKeySource;
    use crate::saveset::dest::Verify;
    use crate::saveset::read::SaveSet;
    use crate::vtl::state::{LibraryConfig, FORMAT};
    use crate::vtl::Library;

    /// Saves `source` with hashing on the reading thread or left to the
    /// sealing thread; returns the index (path, digest) and what verify found.
    type Saved = (Vec<(Vec<u8>, [u8; 32])>, u64);

    fn save_and_read(dir: &Path, source: &Path, leave: bool) -> Saved {
        let lib = Library::create(
            &dir.join(format!("lib-{leave}")),
            LibraryConfig {
                format: FORMAT,
                name: "t".into(),
                slots: 2,
                drives: 1,
                ie_ports: 0,
                capacity: 1 << 30,
                early_warning: 1 << 20,
            },
        )
        .unwrap();
        lib.add("AB0001", None, None, "").unwrap();
        let mut keys = FileKeySource::init(&dir.join(format!("key-{leave}"))).unwrap();
        let opts = SaveOptions {
            source: Source::Tree {
                root: source.to_path_buf(),
                filter: Filter::default(),
            },
            level: Level::Full,
            since: None,
            compression: false,
            on_change: OnChange::Fail,
            // Small segments: content and digests run across segment ends,
            // and data comes both straight into segments and through `buf`.
            payload: 4096 + 700,
            date: LabelDate::from_unix(0),
            started: 0,
        };
        let mut session = lib.session().unwrap();
        LEAVE_HASHING.with(|c| c.set(Some(leave)));
        let report = save(
            &mut session,
            Target::Scratch,
            &mut keys,
            &opts,
            &Progress::default(),
        );
        LEAVE_HASHING.with(|c| c.set(None));
        let report = report.unwrap();
        assert!(report.segments > 20, "{} segments", report.segments);
        let s = &report.file.sections[0];
        let mut ss =
            SaveSet::open(&mut session, &s.volser, report.file.sequence, &mut keys).unwrap();
        let index = ss.index().unwrap();
        let entries: Vec<_> = ss
            .index()
            .unwrap()
            .map(|e| e.map(|e| (e.meta.path, e.digest)).unwrap())
            .collect();
        let run = ss.run(index, &mut Verify, &Progress::default()).unwrap();
        assert!(run.failed.is_empty(), "{:?}", run.failed);
        (entries, run.ok)
    }

    #[test]
    fn digests_are_the_same_whichever_thread_hashes() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let sizes = [
            0usize, 1, 31, 32, 33, 1024, 4095, 4096, 4097, 5000, 9000, 20000, 70001,
        ];
        for (i, n) in sizes.iter().enumerate() {
            let content: Vec<u8> = (0..*n).map(|j| (j * 31 + i) as u8).collect();
            std::fs::write(src.join(format!("f{i:02}")), content).unwrap();
        }
        let here = save_and_read(t.path(), &src, false);
        let left = save_and_read(t.path(), &src, true);
        assert_eq!(here.1, sizes.len() as u64 + 1, "every object verified");
        assert_eq!(here, left);
        for (path, digest) in &left.0 {
            let name = String::from_utf8_lossy(path)
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            if name.starts_with('f') {
                let want = blake3::hash(&std::fs::read(src.join(&name)).unwrap());
                assert_eq!(digest, want.as_bytes(), "{name}");
            }
        }
    }
}
