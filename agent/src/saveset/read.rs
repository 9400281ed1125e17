//! Reading a save set: its header and key, trailer and index, and any object by position; restore, verify and list run through here.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read as _, Seek, Write as _};

use serde::Serialize;

use super::format::{self, Entry, Event, Parser, Trailer};
use crate::error::{Error, Result};
use crate::keys::KeySource;
use crate::stream::{Header, Opener};
use crate::tape::volume::{Changer, FileReader};

/// Where a save set's segments come from: its tape file and its key.
struct Source<'c, C: Changer + ?Sized> {
    reader: FileReader<'c, C>,
    opener: Opener,
    segments: u64,
    block: Vec<u8>,
    /// Blocks found beyond (positive) or short of (negative) where the
    /// segments should be: blocks duplicated or dropped on the way. Segments
    /// are looked for at their place, then shifted by this.
    shift: i64,
}

impl<C: Changer + ?Sized> Source<'_, C> {
    /// Cartridge and block of segment `n`, for messages.
    fn where_is(&self, n: u64) -> (String, u64) {
        self.reader
            .locate_block(n + 1)
            .unwrap_or_else(|| ("?".into(), 0))
    }

    /// Reads tape data block `block` and opens it as segment `n`.
    fn try_block(&mut self, n: u64, block: u64, out: &mut Vec<u8>) -> Result<()> {
        self.reader.seek(block)?;
        if !self.reader.read_block(&mut self.block)? {
            return Err(Error::Format {
                reason: "the tape file ended early".into(),
            });
        }
        self.opener
            .open(n, n + 1 == self.segments, &mut self.block, out)
    }

    /// Reads and authenticates segment `n` into `out`; errors name the cartridge and block.
    fn load(&mut self, n: u64, out: &mut Vec<u8>) -> Result<()> {
        let r = self.try_block(n, n + 1, out);
        if r.is_err() && self.shift != 0 {
            if let Some(b) = (n + 1).checked_add_signed(self.shift).filter(|&b| b >= 1) {
                if self.try_block(n, b, out).is_ok() {
                    return Ok(());
                }
            }
        }
        r.map_err(|e| {
            let (volume, block) = self.where_is(n);
            let reason = match e {
                Error::Segment { reason, .. } => reason,
                other => other.to_string(),
            };
            Error::Damaged {
                volume,
                block,
                segment: n,
                reason,
            }
        })
    }
}

/// An open save set.
pub struct SaveSet<'c, C: Changer + ?Sized> {
    src: Source<'c, C>,
    /// What opening found wrong that did not stop it (dropped or extra blocks).
    pub anomalies: Vec<String>,
    stream_len: u64,
    trailer: Trailer,
    plain: Vec<u8>,
    loaded: Option<u64>,
}

impl<'c, C: Changer + ?Sized> SaveSet<'c, C> {
    /// Opens tape file `sequence` starting on `volser` as a save set, with
    /// the key its header names.
    pub fn open(
        changer: &'c mut C,
        volser: &str,
        sequence: u16,
        keys: &mut dyn KeySource,
    ) -> Result<Self> {
        let mut reader = FileReader::open(changer, volser, sequence)?;
        let mut hb = Vec::new();
        if !reader.read_block(&mut hb)? {
            return Err(Error::StreamHeader {
                reason: format!("tape file {sequence} on {volser} is empty: not a save set"),
            });
        }
        let header = Header::peek(&hb)?;
        let key = keys.get(&header.key_id)?;
        let opener = Opener::new(&key.key, &hb)?;
        drop(key);
        let total = reader.total_blocks()?;
        if total < 2 {
            return Err(Error::StreamHeader {
                reason: format!("save set {} has no segments: truncated", header.id_hex()),
            });
        }
        let src = Source {
            reader,
            opener,
            segments: total - 1,
            block: Vec::new(),
            shift: 0,
        };
        let mut ss = SaveSet {
            src,
            anomalies: Vec::new(),
            stream_len: 0,
            trailer: Trailer {
                index_offset: 0,
                entries: 0,
                index_digest: [0; 32],
            },
            plain: Vec::new(),
            loaded: None,
        };
        // A valid header whose segments do not open belongs to another save set.
        if let Err(e) = ss.load(0) {
            return Err(Error::Format {
                reason: format!("{e}; the header verifies under its key but the first segment does not: the header belongs to another save set, or the block is damaged"),
            });
        }
        let mut last = ss.src.segments - 1;
        if let Err(e) = ss.load(last) {
            // Blocks dropped or duplicated on the way shift the last segment
            // to another block: find which segment the last block holds.
            let blocks = ss.src.segments;
            let found = (1..=8i64).flat_map(|k| [k, -k]).find_map(|k| {
                let s = blocks.checked_add_signed(k).filter(|&s| s >= 1)?;
                ss.src.segments = s;
                let mut out = Vec::new();
                ss.src.try_block(s - 1, blocks, &mut out).ok().map(|()| s)
            });
            let Some(s) = found else {
                ss.src.segments = blocks;
                return Err(e);
            };
            ss.src.shift = blocks as i64 - s as i64;
            ss.anomalies.push(if ss.src.shift < 0 {
                format!("the tape file holds {} block(s) fewer than its {s} segments: blocks were dropped", -ss.src.shift)
            } else {
                format!("the tape file holds {} block(s) more than its {s} segments: blocks were duplicated or inserted", ss.src.shift)
            });
            last = s - 1;
            ss.loaded = None;
            ss.load(last)?;
        }
        // Counts the labels give that the volumes do not: said first.
        let counted = ss.src.reader.anomalies();
        ss.anomalies.splice(0..0, counted);
        ss.stream_len = last * ss.payload() + ss.plain.len() as u64;
        if ss.stream_len < format::TRAILER_LEN as u64 {
            return Err(Error::Format {
                reason: "the stream is shorter than its trailer".into(),
            });
        }
        let t = ss.read_range(
            ss.stream_len - format::TRAILER_LEN as u64,
            format::TRAILER_LEN,
        )?;
        ss.trailer = format::read_trailer(&t)?;
        if ss.trailer.index_offset > ss.stream_len {
            return Err(Error::Format {
                reason: "the trailer points past the end of the stream".into(),
            });
        }
        Ok(ss)
    }

    pub fn header(&self) -> &Header {
        self.src.opener.header()
    }

    fn payload(&self) -> u64 {
        u64::from(self.src.opener.header().payload)
    }

    /// The tape file's sections, one per cartridge (all known once opened:
    /// opening follows the file to its last segment).
    pub fn sections(&self) -> Vec<crate::tape::volume::Section> {
        self.src.reader.sections()
    }

    /// Cartridge and block of segment `n`, for messages.
    pub fn where_is(&self, n: u64) -> (String, u64) {
        self.src.where_is(n)
    }

    /// Authenticates segment `n` into the plain buffer.
    fn load(&mut self, n: u64) -> Result<()> {
        if self.loaded == Some(n) {
            return Ok(());
        }
        self.loaded = None;
        self.src.load(n, &mut self.plain)?;
        self.loaded = Some(n);
        Ok(())
    }

    fn read_range(&mut self, mut off: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let p = self.payload();
            self.load(off / p)?;
            let at = (off % p) as usize;
            let n = (len - out.len()).min(self.plain.len().saturating_sub(at));
            if n == 0 {
                return Err(Error::Format {
                    reason: "a read runs past the end of the stream".into(),
                });
            }
            out.extend_from_slice(&self.plain[at..at + n]);
            off += n as u64;
        }
        Ok(out)
    }

    /// The save set information record at the start of the stream.
    pub fn info(&mut self) -> Result<super::save::Info> {
        let mut parser = Parser::default();
        let mut seg = 0;
        while seg < self.src.segments {
            self.load(seg)?;
            let plain = std::mem::take(&mut self.plain);
            let mut input = &plain[..];
            let ev = parser.next(&mut input);
            let info = match ev {
                Ok(Some(Event::Info(j))) => {
                    Some(serde_json::from_slice(&j).map_err(|e| Error::Format {
                        reason: format!("save set information: {e}"),
                    }))
                }
                Ok(Some(other)) => Some(Err(Error::Format {
                    reason: format!("the stream starts with {other:?}, not save set information"),
                })),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            };
            self.plain = plain;
            if let Some(i) = info {
                return i;
            }
            seg += 1;
        }
        Err(Error::Format {
            reason: "no save set information".into(),
        })
    }

    /// Reads the index into a temporary file (memory stays bounded) and
    /// checks it against the trailer's count and digest.
    pub fn index(&mut self) -> Result<Index> {
        let file = tempfile::tempfile().map_err(|e| Error::io("index file", e))?;
        let mut out = BufWriter::new(file);
        let mut hasher = blake3::Hasher::new();
        let mut parser = Parser::at(self.trailer.index_offset);
        let mut count = 0u64;
        let mut content = 0u64;
        let p = self.payload();
        let mut seg = self.trailer.index_offset / p;
        let mut skip = (self.trailer.index_offset % p) as usize;
        let end = self.stream_len - format::TRAILER_LEN as u64;
        'outer: while seg < self.src.segments {
            self.load(seg)?;
            let plain = std::mem::take(&mut self.plain);
            let from = skip.min(plain.len());
            let upto = ((end.saturating_sub(seg * p)) as usize).min(plain.len());
            let mut input = &plain[from..upto.max(from)];
            hasher.update(input);
            let r = (|| -> Result<()> {
                while let Some(ev) = parser.next(&mut input)? {
                    match ev {
                        Event::Entry(e) => {
                            let mut rec = Vec::new();
                            format::put_entry(&e, &mut rec)?;
                            out.write_all(&rec)
                                .map_err(|e| Error::io("index file", e))?;
                            count += 1;
                            if e.meta.kind.has_content() {
                                content += e.meta.size;
                            }
                        }
                        other => {
                            return Err(Error::Format {
                                reason: format!("unexpected record in the index: {other:?}"),
                            })
                        }
                    }
                }
                Ok(())
            })();
            self.plain = plain;
            r?;
            skip = 0;
            if (seg + 1) * p >= end {
                break 'outer;
            }
            seg += 1;
        }
        if !parser.at_boundary()
            || count != self.trailer.entries
            || *hasher.finalize().as_bytes() != self.trailer.index_digest
        {
            return Err(Error::Format { reason: format!("the index does not match its trailer ({count} of {} entries, or its digest differs)", self.trailer.entries) });
        }
        let mut file = out
            .into_inner()
            .map_err(|e| Error::io("index file", e.into_error()))?;
        file.rewind().map_err(|e| Error::io("index file", e))?;
        Ok(Index {
            reader: BufReader::new(file),
            left: count,
            content_bytes: content,
        })
    }

    /// Feeds objects to `sink`, in stream order, positioning on each wanted
    /// one. A damaged segment fails the objects that touch it; the others
    /// are still read. A second thread reads and authenticates segments
    /// ahead while this one parses, checks digests and writes.
    pub fn run(
        &mut self,
        index: Index,
        sink: &mut dyn Sink,
        progress: &super::save::Progress,
    ) -> Result<RunReport>
    where
        C: Send,
    {
        let p = self.payload();
        let segments = self.src.segments;
        let (req_tx, req_rx) = std::sync::mpsc::channel::<(u64, u64)>();
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, u64, Result<Vec<u8>>)>(6);
        let (pool_tx, pool_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let src = &mut self.src;
        std::thread::scope(|sc| {
            sc.spawn(move || prefetch(src, segments, req_rx, tx, pool_rx));
            let mut feed = Feed {
                req: req_tx,
                rx,
                pool: pool_tx,
                generation: 0,
                expect: None,
                current: None,
                plain: Vec::new(),
            };
            walk_objects(&mut feed, p, index, sink, progress)
        })
    }
}

/// Reads segments from `start` on, sequentially, until asked to start
/// elsewhere or the channel closes.
fn prefetch<C: Changer + ?Sized>(
    src: &mut Source<'_, C>,
    segments: u64,
    req: std::sync::mpsc::Receiver<(u64, u64)>,
    tx: std::sync::mpsc::SyncSender<(u64, u64, Result<Vec<u8>>)>,
    pool: std::sync::mpsc::Receiver<Vec<u8>>,
) {
    use std::sync::mpsc::TryRecvError;
    let mut cur: Option<(u64, u64)> = None;
    loop {
        let asked = match cur {
            Some(_) => match req.try_recv() {
                Ok(r) => Some(r),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            },
            None => match req.recv() {
                Ok(r) => Some(r),
                Err(_) => return,
            },
        };
        if asked.is_some() {
            cur = asked;
        }
        let Some((generation, n)) = cur else { continue };
        if n >= segments {
            cur = None;
            continue;
        }
        let mut out = pool.try_recv().unwrap_or_default();
        let r = src.load(n, &mut out).map(|()| out);
        if tx.send((generation, n, r)).is_err() {
            return;
        }
        cur = Some((generation, n + 1));
    }
}

/// The consuming side of the prefetcher.
struct Feed {
    req: std::sync::mpsc::Sender<(u64, u64)>,
    rx: std::sync::mpsc::Receiver<(u64, u64, Result<Vec<u8>>)>,
    pool: std::sync::mpsc::Sender<Vec<u8>>,
    generation: u64,
    expect: Option<u64>,
    /// The segment `plain` holds.
    current: Option<u64>,
    plain: Vec<u8>,
}

impl Feed {
    /// Segment `n`'s stream bytes into `self.plain`.
    fn fetch(&mut self, n: u64) -> Result<()> {
        if self.current == Some(n) {
            return Ok(());
        }
        self.current = None;
        if self.expect != Some(n) {
            self.generation += 1;
            self.req
                .send((self.generation, n))
                .map_err(|_| Error::Format {
                    reason: "the segment reader stopped".into(),
                })?;
        }
        loop {
            let (g, m, r) = self.rx.recv().map_err(|_| Error::Format {
                reason: "the segment reader stopped".into(),
            })?;
            if g != self.generation {
                if let Ok(b) = r {
                    let _ = self.pool.send(b);
                }
                continue;
            }
            debug_assert_eq!(m, n);
            self.expect = Some(n + 1);
            let b = r?;
            let old = std::mem::replace(&mut self.plain, b);
            let _ = self.pool.send(old);
            self.current = Some(n);
            return Ok(());
        }
    }
}

fn walk_objects(
    feed: &mut Feed,
    p: u64,
    index: Index,
    sink: &mut dyn Sink,
    progress: &super::save::Progress,
) -> Result<RunReport> {
    use std::sync::atomic::Ordering;
    let mut report = RunReport::default();
    let mut bad: std::collections::BTreeMap<u64, String> = std::collections::BTreeMap::new();
    let mut parser = Parser::default();
    let mut valid = false; // the parser stands on the stream at parser.offset()
    for entry in index {
        let entry = entry?;
        if !sink.wanted(&entry) {
            continue;
        }
        let (first, last) = (entry.start / p, entry.end.saturating_sub(1) / p);
        let shown = super::names::escape(&entry.meta.path);
        if let Some((_, why)) = bad.range(first..=last).next() {
            report.fail(&shown, why.clone());
            continue;
        }
        if !valid || parser.offset() != entry.start {
            parser = Parser::at(entry.start);
        }
        valid = true;
        sink.begin(&entry)?;
        let mut hasher = blake3::Hasher::new();
        let mut started = false;
        let mut result: Option<std::result::Result<(), String>> = None;
        while result.is_none() {
            let off = parser.offset();
            let seg = off / p;
            if let Err(e) = feed.fetch(seg) {
                let why = e.to_string();
                bad.insert(seg, why.clone());
                report.damaged.push(why.clone());
                result = Some(Err(why));
                valid = false;
                break;
            }
            let plain = std::mem::take(&mut feed.plain);
            let mut input = &plain[((off % p) as usize).min(plain.len())..];
            if input.is_empty() {
                feed.plain = plain;
                result = Some(Err("the stream ends inside the object".into()));
                break;
            }
            while result.is_none() {
                let ev = match parser.next(&mut input) {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(e) => {
                        result = Some(Err(e.to_string()));
                        valid = false;
                        break;
                    }
                };
                let step = match ev {
                    Event::Object(m) if !started && m.path == entry.meta.path => {
                        started = true;
                        Ok(())
                    }
                    Event::Data(d) if started => {
                        hasher.update(d);
                        report.bytes += d.len() as u64;
                        progress.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                        sink.data(d)
                    }
                    Event::Hole(n) if started => {
                        format::hash_zeros(&mut hasher, n);
                        sink.hole(n)
                    }
                    Event::End { digest, .. } if started => {
                        let got = *hasher.finalize().as_bytes();
                        result = Some(if got != digest || got != entry.digest {
                            Err("content digest differs from the one saved".into())
                        } else {
                            Ok(())
                        });
                        Ok(())
                    }
                    other => {
                        result = Some(Err(format!(
                            "the stream holds {other:?} where the index says {shown} is"
                        )));
                        valid = false;
                        Ok(())
                    }
                };
                if let Err(e) = step {
                    feed.plain = plain;
                    sink.end(&entry, false)?;
                    return Err(e);
                }
            }
            feed.plain = plain;
        }
        match result.unwrap_or_else(|| Err("not read".into())) {
            Ok(()) => {
                sink.end(&entry, true)?;
                report.ok += 1;
                progress.objects.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                sink.end(&entry, false)?;
                report.fail(&shown, why);
            }
        }
    }
    Ok(report)
}

/// The index of a save set, read back from its temporary file.
pub struct Index {
    reader: BufReader<File>,
    left: u64,
    /// Bytes of content the index's objects hold.
    pub content_bytes: u64,
}

impl Iterator for Index {
    type Item = Result<Entry>;
    fn next(&mut self) -> Option<Result<Entry>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut head = [0u8; 5];
        Some((|| {
            self.reader
                .read_exact(&mut head)
                .map_err(|e| Error::io("index file", e))?;
            let n = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
            let mut body = vec![0u8; n];
            self.reader
                .read_exact(&mut body)
                .map_err(|e| Error::io("index file", e))?;
            format::decode_entry(&body)
        })())
    }
}

/// What restore, verify and list do with objects.
pub trait Sink {
    /// Whether this object is wanted (not wanted: never read).
    fn wanted(&mut self, e: &Entry) -> bool;
    fn begin(&mut self, e: &Entry) -> Result<()>;
    fn data(&mut self, d: &[u8]) -> Result<()>;
    fn hole(&mut self, n: u64) -> Result<()>;
    /// The object ended; `ok` when its digest matched.
    fn end(&mut self, e: &Entry, ok: bool) -> Result<()>;
}

/// What a run over objects found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunReport {
    pub ok: u64,
    pub bytes: u64,
    pub failed: Vec<(String, String)>,
    /// Damaged blocks, with cartridge, block and segment.
    pub damaged: Vec<String>,
}

impl RunReport {
    fn fail(&mut self, path: &str, why: String) {
        self.failed.push((path.to_string(), why));
    }
}
