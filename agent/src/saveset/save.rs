//! Saving: a source read, encoded as records, sealed into segments and written as one tape file; the index goes last.
//!
//! Three threads: the walker lists the tree ahead ([`walk::walk_ahead`]),
//! the reader reads, encodes and seals; the caller's thread writes sealed
//! blocks to tape. Bounded channels join them, so
//! memory is a few segments whatever the data size; index entries wait in
//! an unnamed temporary file, not in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read as _, Seek, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use serde::Serialize;

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
    };
    let mut w = FileWriter::begin(changer, target, spec)?;
    w.write_block(&header_block)?;
    // The reader thread reads, hashes and encodes; this thread seals and writes.
    let (tx, rx) = sync_channel::<(Vec<u8>, bool)>(8);
    let (pool_tx, pool_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut sealer = sealer;
    let payload = sealer.header().payload;
    let info_ref = &info;
    let produced = std::thread::scope(|s| {
        let producer =
            s.spawn(move || Saver::new(payload, tx, pool_rx, opts, info_ref, progress)?.run());
        let written = (|| -> Result<()> {
            for (mut block, last) in rx.iter() {
                sealer.seal_in_place(&mut block, last)?;
                w.write_block(&block)?;
                let _ = pool_tx.send(block);
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
        warnings: produced.warnings,
    })
}

/// Stream bytes cut into segment payloads, sent to the sealing and writing thread.
struct Segments {
    /// The segment being filled: one byte of room for the sealer's coding
    /// byte, then always `payload` bytes (so file data can be read straight
    /// into it), of which `used` are stream bytes. It is sealed in place.
    buf: Vec<u8>,
    used: usize,
    payload: usize,
    offset: u64,
    sent: u64,
    tx: SyncSender<(Vec<u8>, bool)>,
    pool: Receiver<Vec<u8>>,
}

impl Segments {
    fn seal(&mut self, last: bool) -> Result<()> {
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
        self.tx.send((full, last)).map_err(|_| Error::Format {
            reason: "the tape writer stopped".into(),
        })
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
    seg: Segments,
    spill: BufWriter<File>,
    entries: u64,
    links: HashMap<(u64, u64), Vec<u8>>,
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
        tx: SyncSender<(Vec<u8>, bool)>,
        pool: Receiver<Vec<u8>>,
        opts: &'a SaveOptions,
        info: &'a Info,
        progress: &'a Progress,
    ) -> Result<Self> {
        let payload = payload as usize;
        let spill = tempfile::tempfile().map_err(|e| Error::io("index spill file", e))?;
        Ok(Saver {
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
                tx,
                pool,
            },
            spill: BufWriter::new(spill),
            entries: 0,
            links: HashMap::new(),
            opts,
            info,
            progress,
            buf: vec![0; DIRECT_MIN],
            rec: Vec::with_capacity(256),
            bytes: 0,
            logical: 0,
            changed: Vec::new(),
            warnings: Vec::new(),
        })
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

    fn index(&mut self, e: &Entry) -> Result<()> {
        let mut rec = Vec::with_capacity(128);
        format::put_entry(e, &mut rec)?;
        self.spill
            .write_all(&rec)
            .map_err(|e| Error::io("index spill file", e))?;
        self.entries += 1;
        self.logical += e.meta.size;
        self.progress.objects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Extended attributes, read through `file` when it is open (no path
    /// lookup), else through the path.
    fn xattrs(&mut self, path: &Path, file: Option<&File>) -> Vec<(Vec<u8>, Vec<u8>)> {
        use xattr::FileExt;
        let mut out = Vec::new();
        let names = match file {
            Some(f) => f.list_xattr(),
            None => xattr::list(path),
        };
        match names {
            Ok(names) => {
                for n in names {
                    let value = match file {
                        Some(f) => f.get_xattr(&n),
                        None => xattr::get(path, &n),
                    };
                    match value {
                        Ok(Some(v)) => out.push((
                            std::os::unix::ffi::OsStrExt::as_bytes(n.as_os_str()).to_vec(),
                            v,
                        )),
                        Ok(None) => {}
                        Err(e) => self.warnings.push(format!(
                            "{}: extended attribute {n:?} not read: {e}",
                            path.display()
                        )),
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => self.warnings.push(format!(
                "{}: extended attributes not read: {e}",
                path.display()
            )),
        }
        out
    }

    /// Saves one entry; `file` is the regular file, opened by the walker.
    fn object(&mut self, abs: &Path, md: &std::fs::Metadata, file: Option<File>) -> Result<()> {
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            self.warnings.push(format!(
                "{}: special file (device, fifo or socket) not saved",
                abs.display()
            ));
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
        if kind == Kind::Symlink {
            meta.target = std::os::unix::ffi::OsStrExt::as_bytes(
                std::fs::read_link(abs).map_err(io(abs))?.as_os_str(),
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
            match file.map_or_else(|| walk::open_file(abs), Ok) {
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
            meta.xattrs = self.xattrs(abs, opened.as_ref());
        }
        let mut attempt = 0;
        loop {
            let start = self.seg.offset;
            format::put_object(&meta, &mut self.rec)?;
            self.emit_record()?;
            let (digest, changed, size) = if meta.kind == Kind::File {
                self.file_content(abs, md, opened.take())?
            } else {
                (*blake3::hash(b"").as_bytes(), false, 0)
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
                        format::put_end(&digest, FLAG_CHANGED, &mut self.rec);
                        self.emit_record()?;
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
            format::put_end(&digest, flags, &mut self.rec);
            self.emit_record()?;
            meta.size = size;
            let e = Entry {
                start,
                end: self.seg.offset,
                digest,
                flags,
                meta,
            };
            return self.index(&e);
        }
    }

    /// Writes a file's content; returns its digest, whether it changed while read, and the bytes read.
    /// `opened` is the file opened already (a retry opens it again).
    fn file_content(
        &mut self,
        abs: &Path,
        before: &std::fs::Metadata,
        opened: Option<File>,
    ) -> Result<([u8; 32], bool, u64)> {
        let mut f = match opened {
            Some(f) => f,
            None => walk::open_file(abs).map_err(io(abs))?,
        };
        // As listed: a file changed since is caught after reading.
        let md0 = before;
        let sparse = md0.blocks() * 512 < md0.len();
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
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
                f.seek(std::io::SeekFrom::Start(pos)).map_err(io(abs))?;
                pos += self.copy(&mut f, abs, hole - pos, &mut hasher)?;
                if pos < hole {
                    break; // the file shrank
                }
            }
        } else {
            // The size listed, as tar reads: no read to meet the end, and a
            // file that grew since is caught below as changed.
            pos = self.copy(&mut f, abs, md0.len(), &mut hasher)?;
        }
        // Changed while read: what was read is not the file listed, or its
        // size or modification time moved. (A file replaced by another under
        // its name while it was read was read whole, as it was: that is a
        // consistent copy, and the next incremental takes the new one.)
        let md1 = f.metadata().map_err(io(abs))?;
        let changed = md1.len() != pos
            || (md1.dev(), md1.ino()) != (before.dev(), before.ino())
            || (md1.mtime(), md1.mtime_nsec()) != (before.mtime(), before.mtime_nsec());
        Ok((*hasher.finalize().as_bytes(), changed, pos))
    }

    fn hole(&mut self, n: u64, hasher: &mut blake3::Hasher) -> Result<()> {
        format::put_hole(n, &mut self.rec);
        self.emit_record()?;
        format::hash_zeros(hasher, n);
        Ok(())
    }

    /// Copies up to `limit` bytes of `r` as data records.
    fn copy(
        &mut self,
        r: &mut dyn std::io::Read,
        what: &Path,
        limit: u64,
        hasher: &mut blake3::Hasher,
    ) -> Result<u64> {
        let mut done = 0u64;
        while done < limit {
            if self.seg.used == self.seg.payload {
                self.seg.seal(false)?;
            }
            let (n, ended) = match self.seg.read_data(r, limit - done).map_err(io(what))? {
                // Straight into the segment when it has room: no copy.
                Some((d, ended)) => {
                    hasher.update(d);
                    (d.len(), ended)
                }
                // The segment's last few bytes: a small record through `buf`,
                // running on into the next segment.
                None => {
                    let want = (limit - done).min(self.buf.len() as u64) as usize;
                    let n = crate::io::fill(r, &mut self.buf[..want]).map_err(io(what))?;
                    if n > 0 {
                        format::put_data_header(n, &mut self.rec);
                        self.emit_record()?;
                        self.seg.write(&self.buf[..n])?;
                        hasher.update(&self.buf[..n]);
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
        let mut hasher = blake3::Hasher::new();
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        meta.size = self.copy(
            &mut lock,
            Path::new("standard input"),
            u64::MAX,
            &mut hasher,
        )?;
        let digest = *hasher.finalize().as_bytes();
        format::put_end(&digest, 0, &mut self.rec);
        self.emit_record()?;
        let e = Entry {
            start,
            end: self.seg.offset,
            digest,
            flags: 0,
            meta,
        };
        self.index(&e)
    }

    fn finish(mut self) -> Result<Produced> {
        let index_offset = self.seg.offset;
        let mut spill = self
            .spill
            .into_inner()
            .map_err(|e| Error::io("index spill file", e.into_error()))?;
        spill
            .rewind()
            .map_err(|e| Error::io("index spill file", e))?;
        let mut reader = BufReader::with_capacity(1 << 16, spill);
        let mut hasher = blake3::Hasher::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = reader
                .read(&mut chunk)
                .map_err(|e| Error::io("index spill file", e))?;
            if n == 0 {
                break;
            }
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
