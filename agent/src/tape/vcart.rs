//! Virtual cartridges: a [`TapeDevice`] over a SIMH `.tap` image, with a rebuildable position index beside it.
//!
//! The image is plain SIMH (see [`super::simh`]): any SIMH-format reader can
//! read it. A cleanly closed cartridge ends with one end-of-medium word, and
//! its index (`<image>.idx`) records where every filemark and every
//! [`CHECKPOINT_EVERY`]-th block sits, so locate and space-over-filemarks
//! never scan the whole image. The index is a cache: it is trusted only when
//! it describes exactly the image on disk (same end of data, end-of-medium
//! word in place, checksum good), and is rebuilt from the image otherwise.
//!
//! Crash safety: the first write after opening removes the clean-close
//! marks (the end-of-medium word goes, the index is deleted). A cartridge
//! whose image does not end in end-of-medium was not closed: on open, the
//! image is scanned, a record cut short at the end is never returned as
//! data, and end of data is set after the last complete record. The next
//! write discards the torn bytes.
//!
//! Storage is a trait so the same reader runs over a file or over bytes in
//! memory (the fuzz target).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::path::{Path, PathBuf};

use super::simh::{self, Word};
use super::{Read, TapeDevice, Written};
use crate::error::{Error, Result};

/// A checkpoint is kept every this many blocks (and at every filemark), so
/// locate reads at most this many length words.
pub const CHECKPOINT_EVERY: u64 = 1024;

/// Positioned, vectored byte storage holding one cartridge image.
pub trait Storage: Send {
    /// Bytes in the image.
    fn size(&self) -> io::Result<u64>;
    /// Reads at `off`; may return fewer bytes than asked only at the end.
    fn read_at(&self, bufs: &mut [IoSliceMut<'_>], off: u64) -> io::Result<usize>;
    /// Writes at `off`; may write fewer bytes than given.
    fn write_at(&mut self, bufs: &[IoSlice<'_>], off: u64) -> io::Result<usize>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
}

/// A cartridge image in a file.
pub struct FileStorage(pub File);

impl Storage for FileStorage {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, bufs: &mut [IoSliceMut<'_>], off: u64) -> io::Result<usize> {
        nix::sys::uio::preadv(&self.0, bufs, off as libc::off_t).map_err(io::Error::from)
    }
    fn write_at(&mut self, bufs: &[IoSlice<'_>], off: u64) -> io::Result<usize> {
        nix::sys::uio::pwritev(&self.0, bufs, off as libc::off_t).map_err(io::Error::from)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// A cartridge image in memory (fuzzing, tests).
#[derive(Default, Clone)]
pub struct MemStorage(pub Vec<u8>);

impl Storage for MemStorage {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
    fn read_at(&self, bufs: &mut [IoSliceMut<'_>], off: u64) -> io::Result<usize> {
        let mut at = usize::try_from(off).unwrap_or(usize::MAX).min(self.0.len());
        let mut n = 0;
        for b in bufs {
            let k = b.len().min(self.0.len() - at);
            b[..k].copy_from_slice(&self.0[at..at + k]);
            at += k;
            n += k;
        }
        Ok(n)
    }
    fn write_at(&mut self, bufs: &[IoSlice<'_>], off: u64) -> io::Result<usize> {
        let mut at = off as usize;
        for b in bufs {
            if self.0.len() < at + b.len() {
                self.0.resize(at + b.len(), 0);
            }
            self.0[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        }
        Ok(at - off as usize)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.resize(len as usize, 0);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn read_full<S: Storage + ?Sized>(
    s: &S,
    mut bufs: &mut [IoSliceMut<'_>],
    mut off: u64,
) -> io::Result<usize> {
    let mut total = 0;
    while !bufs.is_empty() {
        let n = s.read_at(bufs, off)?;
        if n == 0 {
            break;
        }
        total += n;
        off += n as u64;
        IoSliceMut::advance_slices(&mut bufs, n);
    }
    Ok(total)
}

fn write_full<S: Storage + ?Sized>(
    s: &mut S,
    mut bufs: &mut [IoSlice<'_>],
    mut off: u64,
) -> io::Result<()> {
    while !bufs.is_empty() {
        let n = s.write_at(bufs, off)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        off += n as u64;
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// A remembered position: a filemark, or a block at a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    obj: u64,
    off: u64,
    filemark: bool,
}

/// What opening a cartridge found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The image ended with end-of-medium: it was closed cleanly.
    pub clean: bool,
    /// The index beside the image was valid and used (no scan).
    pub index_used: bool,
    /// Bytes of a record cut short at the end (a torn write); never read.
    pub torn_bytes: u64,
    /// Bytes after an end-of-medium word that is not at the end; never read.
    pub bytes_after_eom: u64,
    /// Records whose trailing length word differs from the leading one
    /// (read past when scanning; reading one says it is damaged).
    pub damaged_records: u64,
}

impl OpenReport {
    /// Whether the last writer stopped without closing the cartridge.
    pub fn crashed(&self) -> bool {
        !self.clean
    }
}

/// A virtual cartridge.
pub struct Cartridge<S: Storage = FileStorage> {
    name: String,
    store: S,
    index_path: Option<PathBuf>,
    capacity: u64,
    early_warning: u64,
    pos: u64,
    obj: u64,
    eod: u64,
    eod_obj: u64,
    file_len: u64,
    marks: Vec<Mark>,
    dirty: bool,
    next_word: Option<(u64, u32)>,
    report: OpenReport,
}

/// Path of the index kept beside a cartridge image.
pub fn index_path(image: &Path) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(".idx");
    PathBuf::from(p)
}

impl Cartridge<FileStorage> {
    /// Creates a new, blank cartridge image; refuses to replace an existing file.
    pub fn create(path: &Path, name: &str, capacity: u64, early_warning: u64) -> Result<Self> {
        let _ = std::fs::remove_file(index_path(path));
        Self::open_file(path, name, capacity, early_warning, true)
    }

    /// Opens an existing cartridge image for reading and writing.
    pub fn open(path: &Path, name: &str, capacity: u64, early_warning: u64) -> Result<Self> {
        Self::open_file(path, name, capacity, early_warning, false)
    }

    fn open_file(
        path: &Path,
        name: &str,
        capacity: u64,
        early_warning: u64,
        new: bool,
    ) -> Result<Self> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(new)
            .open(path)
            .map_err(|e| Error::io(format!("cartridge {name} ({})", path.display()), e))?;
        Self::from_storage(
            FileStorage(f),
            name,
            capacity,
            early_warning,
            Some(index_path(path)),
        )
    }
}

impl<S: Storage> Cartridge<S> {
    /// Opens a cartridge over any storage; `index` is where its index lives, if anywhere.
    pub fn from_storage(
        store: S,
        name: &str,
        capacity: u64,
        early_warning: u64,
        index: Option<PathBuf>,
    ) -> Result<Self> {
        let file_len = store.size().map_err(|e| Error::io(name, e))?;
        let mut c = Cartridge {
            name: name.to_string(),
            store,
            index_path: index,
            capacity,
            early_warning: early_warning.min(capacity),
            pos: 0,
            obj: 0,
            eod: 0,
            eod_obj: 0,
            file_len,
            marks: Vec::new(),
            dirty: false,
            next_word: None,
            report: OpenReport::default(),
        };
        if file_len == 0 {
            c.report.clean = true;
            return Ok(c);
        }
        if c.load_index() {
            c.report.clean = true;
            c.report.index_used = true;
            return Ok(c);
        }
        c.scan()?;
        Ok(c)
    }

    /// What opening found (clean or crashed, torn bytes).
    pub fn report(&self) -> &OpenReport {
        &self.report
    }

    /// Bytes of recorded data (end of data).
    pub fn used(&self) -> u64 {
        self.eod
    }

    /// Blocks and filemarks recorded.
    pub fn objects(&self) -> u64 {
        self.eod_obj
    }

    /// The name errors give this cartridge.
    fn dev(&self) -> String {
        format!("cartridge {}", self.name)
    }

    fn io(&self, e: io::Error) -> Error {
        Error::io(self.dev(), e)
    }

    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::CorruptRecord {
            device: self.dev(),
            offset,
            reason: reason.into(),
        }
    }

    fn read_word(&self, off: u64) -> Result<Option<u32>> {
        let mut w = [0u8; 4];
        let n =
            read_full(&self.store, &mut [IoSliceMut::new(&mut w)], off).map_err(|e| self.io(e))?;
        Ok((n == 4).then(|| simh::word(w)))
    }

    fn load_index(&mut self) -> bool {
        let Some(path) = &self.index_path else {
            return false;
        };
        let Ok(bytes) = std::fs::read(path) else {
            return false;
        };
        let Some(ix) = decode_index(&bytes) else {
            return false;
        };
        if ix.eod + 4 != self.file_len || ix.eod > self.capacity {
            return false;
        }
        if !matches!(self.read_word(ix.eod), Ok(Some(simh::END_OF_MEDIUM))) {
            return false;
        }
        self.eod = ix.eod;
        self.eod_obj = ix.eod_obj;
        self.marks = ix.marks;
        true
    }

    /// Whether a record boundary at `off` looks like one: the end of the
    /// image, or a word that starts a filemark, the end of medium or a
    /// record whose trailing word matches.
    fn word_follows(&self, off: u64) -> Result<bool> {
        if off == self.file_len {
            return Ok(true);
        }
        let Some(w) = self.read_word(off)? else {
            return Ok(false);
        };
        Ok(match simh::classify(w) {
            Word::TapeMark | Word::EndOfMedium => true,
            Word::Record(len) => {
                let span = simh::record_span(len);
                off + span <= self.file_len && self.read_word(off + span - 4)? == Some(w)
            }
            Word::Invalid(_) => false,
        })
    }

    /// Walks the image from the start, rebuilding end of data and the marks.
    fn scan(&mut self) -> Result<()> {
        let (mut off, mut obj) = (0u64, 0u64);
        self.marks.clear();
        loop {
            if off == self.file_len {
                break;
            }
            let Some(w) = self.read_word(off)? else {
                self.report.torn_bytes = self.file_len - off;
                break;
            };
            match simh::classify(w) {
                Word::EndOfMedium => {
                    self.report.clean = off + 4 == self.file_len;
                    self.report.bytes_after_eom = self.file_len - off - 4;
                    break;
                }
                Word::TapeMark => {
                    self.marks.push(Mark {
                        obj,
                        off,
                        filemark: true,
                    });
                    off += 4;
                }
                Word::Invalid(why) => {
                    return Err(self.damage(off, format!("length word {w:#010x}: {why}")))
                }
                Word::Record(len) => {
                    let span = simh::record_span(len);
                    if off + span > self.file_len {
                        self.report.torn_bytes = self.file_len - off;
                        break;
                    }
                    let tail = self.read_word(off + span - 4)?;
                    // A trailing word that differs damages that record only
                    // when the leading one leads to a valid word (or the
                    // end): read past it as a positioned read does, and
                    // reading the record says it is damaged.
                    if tail != Some(w) && !self.word_follows(off + span)? {
                        return Err(self.damage(
                            off,
                            format!(
                                "leading length word {w} and trailing {} differ",
                                tail.unwrap_or(0)
                            ),
                        ));
                    }
                    if tail != Some(w) {
                        self.report.damaged_records += 1;
                    }
                    if obj % CHECKPOINT_EVERY == 0 {
                        self.marks.push(Mark {
                            obj,
                            off,
                            filemark: false,
                        });
                    }
                    off += span;
                }
            }
            obj += 1;
        }
        self.eod = off;
        self.eod_obj = obj;
        Ok(())
    }

    fn damage(&self, off: u64, reason: String) -> Error {
        if off == 0 {
            Error::NotSimh {
                file: self.dev(),
                reason: format!("first {reason}"),
            }
        } else {
            self.corrupt(off, reason)
        }
    }

    fn eod_error(&self) -> Error {
        Error::EndOfData {
            device: self.dev(),
            block: self.obj,
        }
    }

    /// The word at the current position (pos < eod), from the read-ahead cache if there.
    fn word_here(&mut self) -> Result<u32> {
        if let Some((off, w)) = self.next_word {
            if off == self.pos {
                return Ok(w);
            }
        }
        match self.read_word(self.pos)? {
            Some(w) => Ok(w),
            None => Err(self.corrupt(self.pos, "image ends inside a length word")),
        }
    }

    /// Classifies the object at the position; returns (is_filemark, span).
    fn object_here(&mut self) -> Result<(bool, u64)> {
        if self.pos >= self.eod {
            return Err(self.eod_error());
        }
        let w = self.word_here()?;
        match simh::classify(w) {
            Word::TapeMark => Ok((true, 4)),
            Word::Record(len) if self.pos + simh::record_span(len) <= self.eod => {
                Ok((false, simh::record_span(len)))
            }
            Word::Record(len) => Err(self.corrupt(
                self.pos,
                format!("record of {len} bytes runs past end of data"),
            )),
            Word::EndOfMedium | Word::Invalid(_) => Err(self.corrupt(
                self.pos,
                format!("length word {w:#010x} where a record should start"),
            )),
        }
    }

    /// Writes the index of the image as it stands (closed cleanly).
    fn write_index(&self) -> Result<()> {
        if let Some(p) = &self.index_path {
            let bytes = encode_index(&Index {
                eod: self.eod,
                eod_obj: self.eod_obj,
                marks: self.marks.clone(),
            });
            let tmp = p.with_extension("idx.tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::rename(&tmp, p))
                .map_err(|e| Error::io(format!("index of cartridge {}", self.name), e))?;
        }
        Ok(())
    }

    fn prepare_write(&mut self) -> Result<()> {
        if !self.dirty {
            if let Some(p) = &self.index_path {
                match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::io(format!("index of cartridge {}", self.name), e))
                    }
                }
            }
            self.dirty = true;
        }
        if self.file_len != self.pos {
            self.store.set_len(self.pos).map_err(|e| self.io(e))?;
            self.file_len = self.pos;
        }
        self.eod = self.pos;
        self.eod_obj = self.obj;
        let obj = self.obj;
        let keep = self.marks.partition_point(|m| m.obj < obj);
        self.marks.truncate(keep);
        self.next_word = None;
        Ok(())
    }

    fn room_for(&self, span: u64) -> Result<()> {
        if self.pos + span > self.capacity {
            return Err(Error::EndOfMedium {
                device: self.dev(),
                needed: span,
                used: self.pos,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    fn wrote(&mut self, span: u64, filemark: bool) -> Written {
        if filemark || self.obj.is_multiple_of(CHECKPOINT_EVERY) {
            self.marks.push(Mark {
                obj: self.obj,
                off: self.pos,
                filemark,
            });
        }
        self.pos += span;
        self.obj += 1;
        self.eod = self.pos;
        self.eod_obj = self.obj;
        self.file_len = self.pos;
        if self.pos > self.capacity - self.early_warning {
            Written::EarlyWarning
        } else {
            Written::Ok
        }
    }
}

impl<S: Storage> TapeDevice for Cartridge<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn write_block(&mut self, data: &[u8]) -> Result<Written> {
        super::check_block(&self.dev(), data)?;
        let len = data.len() as u32;
        let span = simh::record_span(len);
        // Check room before touching the image: a refused write changes nothing.
        self.room_for(span)?;
        self.prepare_write()?;
        let (head, tail) = simh::frame(len);
        let mut bufs = [
            IoSlice::new(&head),
            IoSlice::new(data),
            IoSlice::new(tail.as_bytes()),
        ];
        write_full(&mut self.store, &mut bufs, self.pos).map_err(|e| self.io(e))?;
        Ok(self.wrote(span, false))
    }

    fn write_filemark(&mut self) -> Result<Written> {
        self.room_for(4)?;
        self.prepare_write()?;
        let w = simh::TAPE_MARK.to_le_bytes();
        write_full(&mut self.store, &mut [IoSlice::new(&w)], self.pos).map_err(|e| self.io(e))?;
        Ok(self.wrote(4, true))
    }

    fn read_block(&mut self, buf: &mut Vec<u8>) -> Result<Read> {
        let (filemark, span) = self.object_here()?;
        if filemark {
            self.pos += 4;
            self.obj += 1;
            return Ok(Read::Filemark);
        }
        let len = (span - 8) as usize;
        let data_len = self.word_here()? as usize;
        buf.resize(data_len, 0);
        // Pad byte, trailing word and the next record's leading word, in one read.
        let mut tail = [0u8; 9];
        let tail_len = len - data_len + 8;
        let got = read_full(
            &self.store,
            &mut [IoSliceMut::new(buf), IoSliceMut::new(&mut tail[..tail_len])],
            self.pos + 4,
        )
        .map_err(|e| self.io(e))?;
        let pad = len - data_len;
        if got < data_len + pad + 4 {
            return Err(self.corrupt(self.pos, "image ends inside a record"));
        }
        let trailer = simh::word(tail[pad..pad + 4].try_into().unwrap());
        if trailer as usize != data_len {
            return Err(self.corrupt(
                self.pos,
                format!("leading length word {data_len} and trailing {trailer} differ"),
            ));
        }
        let next = self.pos + span;
        self.next_word = (got == data_len + tail_len)
            .then(|| (next, simh::word(tail[pad + 4..pad + 8].try_into().unwrap())));
        self.pos = next;
        self.obj += 1;
        Ok(Read::Block)
    }

    fn space_blocks(&mut self, count: i64) -> Result<()> {
        let mut left = count.unsigned_abs();
        while left > 0 {
            if count > 0 {
                let (filemark, span) = self.object_here()?;
                self.pos += span;
                self.obj += 1;
                if filemark {
                    return Err(Error::FilemarkHit {
                        device: self.dev(),
                        residual: left,
                    });
                }
                left -= 1;
            } else {
                if self.pos == 0 {
                    return Err(Error::BeginningOfTape {
                        device: self.dev(),
                        residual: left,
                    });
                }
                let w = match self.read_word(self.pos - 4)? {
                    Some(w) => w,
                    None => {
                        return Err(self.corrupt(self.pos - 4, "image ends inside a length word"))
                    }
                };
                match simh::classify(w) {
                    Word::TapeMark => {
                        // SCSI: stop on the beginning-of-tape side of the filemark.
                        self.pos -= 4;
                        self.obj -= 1;
                        return Err(Error::FilemarkHit {
                            device: self.dev(),
                            residual: left,
                        });
                    }
                    Word::Record(len) if simh::record_span(len) <= self.pos => {
                        self.pos -= simh::record_span(len);
                        self.obj -= 1;
                        left -= 1;
                    }
                    _ => {
                        return Err(self.corrupt(
                            self.pos - 4,
                            format!("trailing length word {w:#010x} is not valid"),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    fn space_filemarks(&mut self, count: i64) -> Result<()> {
        let n = count.unsigned_abs() as usize;
        if n == 0 {
            return Ok(());
        }
        let obj = self.obj;
        let found = if count > 0 {
            let from = self.marks.partition_point(|m| m.obj < obj);
            self.marks[from..]
                .iter()
                .filter(|m| m.filemark)
                .nth(n - 1)
                .copied()
        } else {
            let to = self.marks.partition_point(|m| m.obj < obj);
            self.marks[..to]
                .iter()
                .rev()
                .filter(|m| m.filemark)
                .nth(n - 1)
                .copied()
        };
        match (found, count > 0) {
            (Some(m), true) => {
                self.pos = m.off + 4;
                self.obj = m.obj + 1;
                Ok(())
            }
            (Some(m), false) => {
                self.pos = m.off;
                self.obj = m.obj;
                Ok(())
            }
            (None, true) => {
                self.pos = self.eod;
                self.obj = self.eod_obj;
                Err(self.eod_error())
            }
            (None, false) => {
                // SCSI residual: the filemarks asked for minus those crossed.
                let crossed = self
                    .marks
                    .iter()
                    .filter(|m| m.filemark && m.obj < obj)
                    .count() as u64;
                self.pos = 0;
                self.obj = 0;
                Err(Error::BeginningOfTape {
                    device: self.dev(),
                    residual: count.unsigned_abs() - crossed,
                })
            }
        }
    }

    fn rewind(&mut self) -> Result<()> {
        self.pos = 0;
        self.obj = 0;
        Ok(())
    }

    fn seek_end_of_data(&mut self) -> Result<()> {
        self.pos = self.eod;
        self.obj = self.eod_obj;
        Ok(())
    }

    fn locate(&mut self, block: u64) -> Result<()> {
        if block > self.eod_obj {
            self.seek_end_of_data()?;
            return Err(self.eod_error());
        }
        let i = self.marks.partition_point(|m| m.obj <= block);
        let (mut off, mut obj) = match i.checked_sub(1).map(|i| self.marks[i]) {
            Some(m) => (m.off, m.obj),
            None => (0, 0),
        };
        self.pos = off;
        self.obj = obj;
        while obj < block {
            let (_, span) = self.object_here()?;
            off += span;
            obj += 1;
            self.pos = off;
            self.obj = obj;
        }
        Ok(())
    }

    fn position(&mut self) -> Result<u64> {
        Ok(self.obj)
    }

    fn flush(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let eom = simh::END_OF_MEDIUM.to_le_bytes();
        write_full(&mut self.store, &mut [IoSlice::new(&eom)], self.eod).map_err(|e| self.io(e))?;
        self.file_len = self.eod + 4;
        self.store.sync().map_err(|e| self.io(e))?;
        self.write_index()?;
        self.dirty = false;
        Ok(())
    }

    fn unload(&mut self) -> Result<()> {
        self.flush()?;
        self.rewind()
    }

    /// An index that passed its own checks can still be wrong (forged, or
    /// written by another program): a reader that met damage has the image
    /// scanned once, and the index written again from what the scan found.
    fn relearn(&mut self) -> Result<bool> {
        if !self.report.index_used || self.dirty {
            return Ok(false);
        }
        let before = (
            std::mem::take(&mut self.marks),
            self.eod,
            self.eod_obj,
            self.report.clone(),
        );
        self.report.index_used = false;
        if let Err(e) = self.scan() {
            // The image itself is damaged there: the index is not disproven.
            tracing::warn!(cartridge = %self.name, error = %e, "scanning the image to check its index failed");
            (self.marks, self.eod, self.eod_obj, self.report) = before;
            return Ok(false);
        }
        self.pos = 0;
        self.obj = 0;
        self.next_word = None;
        tracing::warn!(cartridge = %self.name, "the cartridge's index did not match its image: rebuilt from the image");
        if self.report.clean {
            self.write_index()?;
        } else if let Some(p) = &self.index_path {
            let _ = std::fs::remove_file(p);
        }
        Ok(true)
    }
}

impl<S: Storage> Drop for Cartridge<S> {
    fn drop(&mut self) {
        if self.dirty {
            if let Err(e) = self.flush() {
                tracing::error!(cartridge = %self.name, error = %e, "closing cartridge failed");
            }
        }
    }
}

/// The index beside a cartridge image.
struct Index {
    eod: u64,
    eod_obj: u64,
    marks: Vec<Mark>,
}

const INDEX_MAGIC: &[u8; 8] = b"CINTAIX1";

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Index bytes: magic, end of data, objects, count, then (object, offset with
/// the top bit set for a filemark) pairs, all u64 little-endian, then an
/// FNV-1a checksum of everything before it.
fn encode_index(ix: &Index) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + 16 * ix.marks.len());
    out.extend_from_slice(INDEX_MAGIC);
    for v in [ix.eod, ix.eod_obj, ix.marks.len() as u64] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for m in &ix.marks {
        out.extend_from_slice(&m.obj.to_le_bytes());
        out.extend_from_slice(&(m.off | (u64::from(m.filemark) << 63)).to_le_bytes());
    }
    let sum = fnv64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn decode_index(b: &[u8]) -> Option<Index> {
    let u =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    if b.len() < 40 || &b[..8] != INDEX_MAGIC {
        return None;
    }
    let body = b.len() - 8;
    if fnv64(&b[..body]) != u(body)? {
        return None;
    }
    let count = usize::try_from(u(24)?).ok()?;
    if count.checked_mul(16)?.checked_add(32)? != body {
        return None;
    }
    let mut marks = Vec::with_capacity(count);
    let mut last: Option<u64> = None;
    for i in 0..count {
        let obj = u(32 + 16 * i)?;
        let raw = u(40 + 16 * i)?;
        if last.is_some_and(|l| l >= obj) {
            return None;
        }
        last = Some(obj);
        marks.push(Mark {
            obj,
            off: raw & !(1 << 63),
            filemark: raw >> 63 == 1,
        });
    }
    Some(Index {
        eod: u(8)?,
        eod_obj: u(16)?,
        marks,
    })
}

/// The fuzz target's body: opens arbitrary bytes as a cartridge and walks it
/// every way a reader can. It must return (errors are fine), never panic,
/// and never allocate more than [`super::MAX_BLOCK`] for a block.
pub fn fuzz_cartridge_reader(bytes: &[u8]) {
    let Ok(mut c) =
        Cartridge::from_storage(MemStorage(bytes.to_vec()), "FUZZ", u64::MAX / 2, 0, None)
    else {
        return;
    };
    let mut buf = Vec::new();
    for _ in 0..10_000 {
        if c.read_block(&mut buf).is_err() {
            break;
        }
    }
    let _ = c.space_blocks(-3);
    let _ = c.space_filemarks(-1);
    let _ = c.space_filemarks(2);
    let _ = c.locate(bytes.len() as u64 / 7);
    let _ = c.space_blocks(5);
    let _ = c.read_block(&mut buf);
    let _ = c.seek_end_of_data();
    let _ = c.space_blocks(-1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn index_round_trips_and_rejects_damage() {
        let ix = Index {
            eod: 1000,
            eod_obj: 40,
            marks: vec![
                Mark {
                    obj: 0,
                    off: 0,
                    filemark: false,
                },
                Mark {
                    obj: 3,
                    off: 96,
                    filemark: true,
                },
            ],
        };
        let b = encode_index(&ix);
        let back = decode_index(&b).unwrap();
        assert_eq!(
            (back.eod, back.eod_obj, back.marks),
            (1000, 40, ix.marks.clone())
        );
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(decode_index(&bad).is_none(), "flip at {i} accepted");
        }
        assert!(decode_index(&b[..b.len() - 1]).is_none());
    }

    /// Counts reads, to show what locate and open cost.
    struct Counting(MemStorage, std::sync::Arc<std::sync::atomic::AtomicU64>);

    impl Storage for Counting {
        fn size(&self) -> io::Result<u64> {
            self.0.size()
        }
        fn read_at(&self, bufs: &mut [IoSliceMut<'_>], off: u64) -> io::Result<usize> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.read_at(bufs, off)
        }
        fn write_at(&mut self, bufs: &[IoSlice<'_>], off: u64) -> io::Result<usize> {
            self.0.write_at(bufs, off)
        }
        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn locate_reads_at_most_one_checkpoint_interval() {
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut c = Cartridge::from_storage(
            Counting(MemStorage::default(), reads.clone()),
            "T",
            1 << 30,
            0,
            None,
        )
        .unwrap();
        for i in 0..10_000u32 {
            c.write_block(&i.to_le_bytes()).unwrap();
            if i % 3000 == 2999 {
                c.write_filemark().unwrap();
            }
        }
        let mut buf = Vec::new();
        for target in [9_000u64, 17, 5_000, 9_999] {
            reads.store(0, std::sync::atomic::Ordering::Relaxed);
            c.locate(target).unwrap();
            let n = reads.load(std::sync::atomic::Ordering::Relaxed);
            assert!(n <= CHECKPOINT_EVERY, "locate({target}) read {n} times");
        }
        reads.store(0, std::sync::atomic::Ordering::Relaxed);
        c.rewind().unwrap();
        c.space_filemarks(3).unwrap();
        assert_eq!(
            reads.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "spacing filemarks reads nothing"
        );
        assert_eq!(c.position().unwrap(), 9_003);
        c.read_block(&mut buf).unwrap();
        assert_eq!(buf, 9_000u32.to_le_bytes());
    }

    #[test]
    fn the_index_is_used_when_it_matches_and_rebuilt_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("A.tap");
        let mut c = Cartridge::create(&p, "A", 1 << 30, 0).unwrap();
        for i in 0..3000u32 {
            c.write_block(&i.to_le_bytes()).unwrap();
        }
        c.write_filemark().unwrap();
        c.unload().unwrap();
        drop(c);
        let c = Cartridge::open(&p, "A", 1 << 30, 0).unwrap();
        assert!(c.report().clean && c.report().index_used);
        let marks = c.marks.clone();
        drop(c);
        // A damaged index is ignored and the image scanned: same result.
        let ix = index_path(&p);
        let mut bytes = std::fs::read(&ix).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&ix, &bytes).unwrap();
        let c = Cartridge::open(&p, "A", 1 << 30, 0).unwrap();
        assert!(c.report().clean && !c.report().index_used);
        assert_eq!(c.marks, marks);
        drop(c);
        // A missing one too; and a write removes it until the next clean close.
        std::fs::remove_file(&ix).unwrap();
        let mut c = Cartridge::open(&p, "A", 1 << 30, 0).unwrap();
        assert!(!c.report().index_used && c.objects() == 3001);
        c.seek_end_of_data().unwrap();
        c.write_block(b"more").unwrap();
        assert!(!ix.exists());
        c.flush().unwrap();
        assert!(ix.exists());
        // Overwriting in the middle leaves a cleanly closed, shorter image.
        c.locate(10).unwrap();
        c.write_block(b"over").unwrap();
        c.unload().unwrap();
        drop(c);
        let c = Cartridge::open(&p, "A", 1 << 30, 0).unwrap();
        assert!(
            c.report().clean && c.report().index_used,
            "{:?}",
            c.report()
        );
        assert_eq!(
            (c.objects(), c.used() + 4),
            (11, std::fs::metadata(&p).unwrap().len())
        );
    }

    proptest! {
        #[test]
        fn reader_agrees_with_the_reference_parser(bytes in proptest::collection::vec(any::<u8>(), 0..600), records in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 1..50)), 0..20)) {
            // Either a well-formed image or arbitrary bytes: the file-backed
            // reader returns exactly what simh::parse_image returns.
            let mut image = Vec::new();
            for r in &records {
                match r { Some(d) => image.extend_from_slice(&simh::encode_record(d)), None => image.extend_from_slice(&[0; 4]) }
            }
            for candidate in [image, bytes] {
                fuzz_cartridge_reader(&candidate);
                let (items, _end) = simh::parse_image(&candidate);
                if let Ok(mut c) = Cartridge::from_storage(MemStorage(candidate.clone()), "T", u64::MAX / 2, 0, None) {
                    let mut buf = Vec::new();
                    for it in &items {
                        match (c.read_block(&mut buf).unwrap(), it) {
                            (Read::Filemark, simh::Item::TapeMark) => {}
                            (Read::Block, simh::Item::Record(d)) => prop_assert_eq!(&buf[..], *d),
                            _ => prop_assert!(false),
                        }
                    }
                    prop_assert!(c.read_block(&mut buf).is_err());
                }
            }
        }
    }
}
