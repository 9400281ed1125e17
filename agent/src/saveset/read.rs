//! Reading a save set: its header and key, trailer and index, and any object by position; restore, verify and list run through here.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read as _, Seek, Write as _};

use serde::Serialize;

use super::format::{self, Entry, Event, Kind, Parser, Trailer};
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
        let mut r = self.try_block(n, n + 1, out);
        // A cartridge's index that led to the wrong block is rebuilt once.
        if r.is_err() && self.reader.relearn()? {
            r = self.try_block(n, n + 1, out);
        }
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
    /// None when the last segment does not open: the index is then found
    /// by walking the objects' records.
    trailer: Option<Trailer>,
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
        // A damaged header is named where it lies.
        let at = |e: Error, reader: &FileReader<'c, C>| match e {
            Error::StreamHeader { reason } => {
                let (vol, block) = reader.locate_block(0).unwrap_or_else(|| ("?".into(), 0));
                Error::StreamHeader {
                    reason: format!(
                        "cartridge {vol} block {block} (tape file {sequence}): {reason}"
                    ),
                }
            }
            other => other,
        };
        let header = Header::peek(&hb).map_err(|e| at(e, &reader))?;
        let key = keys.get(&header.key_id)?;
        let opener = Opener::new(&key.key, &hb).map_err(|e| at(e, &reader))?;
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
            trailer: None,
            plain: Vec::new(),
            loaded: None,
        };
        let first = ss.load(0);
        let mut last = ss.src.segments - 1;
        let mut tail = true;
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
            ss.src.segments = blocks;
            match found {
                Some(s) => {
                    ss.src.segments = s;
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
                // Neither the first nor the last segment opens: a valid
                // header whose segments do not open belongs to another save set.
                None if first.is_err() => {
                    return Err(Error::Format {
                        reason: format!("{}; the header verifies under its key but neither the first nor the last segment opens: the header belongs to another save set, or the blocks are damaged", first.unwrap_err()),
                    });
                }
                None => {
                    // Opening as a segment that is not the last tells a
                    // truncated stream from a damaged last block.
                    ss.src.segments = blocks + 1;
                    let cut = ss
                        .src
                        .try_block(blocks - 1, blocks, &mut Vec::new())
                        .is_ok();
                    ss.src.segments = blocks;
                    let (vol, block) = ss.src.where_is(blocks - 1);
                    ss.anomalies.push(if cut {
                        format!("the tape file is truncated: its last block (cartridge {vol} block {block}) is not the stream's last segment, so what followed it, the index included, is lost; the objects are found by walking their records")
                    } else {
                        format!("{e}: the last segment does not open, so the trailer and the end of the index are lost; the objects are found by walking their records")
                    });
                    tail = false;
                }
            }
        }
        if let Err(e) = first {
            ss.anomalies.push(format!(
                "{e}: the first segment does not open (the header verifies and the last segment opens: only the objects it holds are lost)"
            ));
        }
        // Counts the labels give that the volumes do not: said first.
        let counted = ss.src.reader.anomalies();
        ss.anomalies.splice(0..0, counted);
        if !tail {
            return Ok(ss);
        }
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
        let trailer = format::read_trailer(&t)?;
        if trailer.index_offset > ss.stream_len {
            return Err(Error::Format {
                reason: "the trailer points past the end of the stream".into(),
            });
        }
        ss.trailer = Some(trailer);
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

    /// The index, in a temporary file (memory stays bounded): read and
    /// checked against the trailer's count and digest, or, when it cannot
    /// be (a damaged block in it, the trailer lost), rebuilt by walking the
    /// objects' records in the stream (said in [`SaveSet::anomalies`]).
    pub fn index(&mut self) -> Result<Index> {
        let read = match self.trailer {
            Some(t) => self.read_index(t),
            None => return self.index_from_stream(),
        };
        match read {
            Ok(i) => Ok(i),
            Err(e) => {
                self.anomalies.push(format!(
                    "the index cannot be read ({e}): it is rebuilt by walking the objects' records"
                ));
                self.index_from_stream()
            }
        }
    }

    /// An index made by reading every object record of the stream, from
    /// the start to the first index record. A damaged segment costs the
    /// objects it touches: reading goes on at the first object record after it.
    fn index_from_stream(&mut self) -> Result<Index> {
        let mut out = IndexWriter::new()?;
        let p = self.payload();
        let mut parser = Parser::default();
        // The object being read: where its record starts, and its metadata.
        let mut object: Option<(u64, format::Meta)> = None;
        // Whether the parser stands where the last segment left it.
        let mut synced = true;
        let mut seg = 0;
        'segments: while seg < self.src.segments {
            if let Err(e) = self.load(seg) {
                let e = e.to_string();
                if !self.anomalies.iter().any(|a| a.starts_with(&e)) {
                    self.anomalies.push(e);
                }
                // An object cut by the damage is listed, so a run names it
                // as it fails on this segment.
                if let Some((start, meta)) = object.take() {
                    out.push(&Entry {
                        start,
                        end: (seg + 1) * p,
                        digest: [0; 32],
                        flags: 0,
                        meta,
                    })?;
                }
                synced = false;
                seg += 1;
                continue;
            }
            let plain = std::mem::take(&mut self.plain);
            let mut input = &plain[..];
            if !synced {
                match format::find_object_record(&plain) {
                    Some(i) => {
                        parser = Parser::at(seg * p + i as u64);
                        input = &plain[i..];
                        synced = true;
                    }
                    None => {
                        self.plain = plain;
                        seg += 1;
                        continue;
                    }
                }
            }
            let r = loop {
                match parser.next(&mut input) {
                    Ok(None) => break Ok(false),
                    Ok(Some(Event::Object(m))) => object = Some((parser.record_start(), m)),
                    Ok(Some(Event::End { digest, flags })) => {
                        if let Some((start, meta)) = object.take() {
                            let e = Entry {
                                start,
                                end: parser.offset(),
                                digest,
                                flags,
                                meta,
                            };
                            if let Err(e) = out.push(&e) {
                                break Err(e);
                            }
                        }
                    }
                    Ok(Some(Event::Entry(_) | Event::Trailer(_))) => break Ok(true),
                    Ok(Some(_)) => {}
                    // Records that do not decode in an authenticated segment:
                    // go on at the next object record found.
                    Err(_) => {
                        object = None;
                        synced = false;
                        break Ok(false);
                    }
                }
            };
            self.plain = plain;
            if r? {
                break 'segments;
            }
            seg += 1;
        }
        out.finish()
    }

    /// Reads the index the trailer points to.
    fn read_index(&mut self, trailer: Trailer) -> Result<Index> {
        let mut out = IndexWriter::new()?;
        let mut hasher = blake3::Hasher::new();
        let mut parser = Parser::at(trailer.index_offset);
        let p = self.payload();
        let mut seg = trailer.index_offset / p;
        let mut skip = (trailer.index_offset % p) as usize;
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
                        Event::Entry(e) => out.push(&e)?,
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
            || out.count != trailer.entries
            || *hasher.finalize().as_bytes() != trailer.index_digest
        {
            return Err(Error::Format {
                reason: format!(
                    "the index does not match its trailer ({} of {} entries, or its digest differs)",
                    out.count, trailer.entries
                ),
            });
        }
        out.finish()
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
    mut index: Index,
    sink: &mut dyn Sink,
    progress: &super::save::Progress,
) -> Result<RunReport> {
    let mut w = Walk {
        feed,
        p,
        bad: std::collections::BTreeMap::new(),
        parser: Parser::default(),
        valid: false,
        report: RunReport::default(),
        progress,
    };
    // Hard links whose file is not restored: restored as copies of its data.
    let mut copies = Vec::new();
    for entry in index.by_ref() {
        let entry = entry?;
        if !sink.wanted(&entry) {
            continue;
        }
        if entry.meta.kind == Kind::HardLink && !sink.selects(&entry.meta.target) {
            copies.push(entry);
            continue;
        }
        w.object(&entry, &entry, sink)?;
    }
    // Those the sink could not link (their file failed or was not there)
    // were read and counted good already.
    let orphans = sink.orphans()?;
    w.report.ok = w.report.ok.saturating_sub(orphans.len() as u64);
    copies.extend(orphans);
    if !copies.is_empty() {
        w.copies(index.rewound()?, copies, sink)?;
        for o in sink.orphans()? {
            let why = format!(
                "a hard link to {}, which could not be restored, nor a copy of it",
                super::names::escape(&o.meta.target)
            );
            w.report.ok = w.report.ok.saturating_sub(1);
            w.report.fail(&super::names::escape(&o.meta.path), why);
        }
    }
    Ok(w.report)
}

/// The objects of one run over a save set, read in stream order.
struct Walk<'f, 'p> {
    feed: &'f mut Feed,
    p: u64,
    /// Segments found damaged, with why: objects touching them fail without a new read.
    bad: std::collections::BTreeMap<u64, String>,
    parser: Parser,
    /// The parser stands on the stream at `parser.offset()`.
    valid: bool,
    report: RunReport,
    progress: &'p super::save::Progress,
}

impl Walk<'_, '_> {
    /// Reads the object `at` describes and feeds it to `sink` as `as_`
    /// (the same entry, or a hard link restored as a copy of `at`'s data).
    fn object(&mut self, at: &Entry, as_: &Entry, sink: &mut dyn Sink) -> Result<()> {
        use std::sync::atomic::Ordering;
        let p = self.p;
        let (first, last) = (at.start / p, at.end.saturating_sub(1) / p);
        let shown = super::names::escape(&as_.meta.path);
        if let Some((_, why)) = self.bad.range(first..=last).next() {
            self.report.fail(&shown, why.clone());
            return Ok(());
        }
        if !self.valid || self.parser.offset() != at.start {
            self.parser = Parser::at(at.start);
        }
        self.valid = true;
        sink.begin(as_)?;
        let mut hasher = blake3::Hasher::new();
        let mut started = false;
        let mut result: Option<std::result::Result<(), String>> = None;
        while result.is_none() {
            let off = self.parser.offset();
            let seg = off / p;
            if let Err(e) = self.feed.fetch(seg) {
                let why = e.to_string();
                self.bad.insert(seg, why.clone());
                self.report.damaged.push(why.clone());
                result = Some(Err(why));
                self.valid = false;
                break;
            }
            let plain = std::mem::take(&mut self.feed.plain);
            let mut input = &plain[((off % p) as usize).min(plain.len())..];
            if input.is_empty() {
                self.feed.plain = plain;
                result = Some(Err("the stream ends inside the object".into()));
                break;
            }
            while result.is_none() {
                let ev = match self.parser.next(&mut input) {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(e) => {
                        result = Some(Err(e.to_string()));
                        self.valid = false;
                        break;
                    }
                };
                let step = match ev {
                    Event::Object(m) if !started && m.path == at.meta.path => {
                        started = true;
                        Ok(())
                    }
                    Event::Data(d) if started => {
                        hasher.update(d);
                        self.report.bytes += d.len() as u64;
                        self.progress
                            .bytes
                            .fetch_add(d.len() as u64, Ordering::Relaxed);
                        sink.data(d)
                    }
                    Event::Hole(n) if started => {
                        format::hash_zeros(&mut hasher, n);
                        sink.hole(n)
                    }
                    Event::End { digest, .. } if started => {
                        let got = *hasher.finalize().as_bytes();
                        result = Some(if got != digest || got != at.digest {
                            Err("content digest differs from the one saved".into())
                        } else {
                            Ok(())
                        });
                        Ok(())
                    }
                    other => {
                        result = Some(Err(format!(
                            "the stream holds {other:?} where the index says {} is",
                            super::names::escape(&at.meta.path)
                        )));
                        self.valid = false;
                        Ok(())
                    }
                };
                if let Err(e) = step {
                    self.feed.plain = plain;
                    sink.end(as_, false)?;
                    return Err(e);
                }
            }
            self.feed.plain = plain;
        }
        match result.unwrap_or_else(|| Err("not read".into())) {
            Ok(()) => {
                sink.end(as_, true)?;
                self.report.ok += 1;
                self.progress.objects.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                sink.end(as_, false)?;
                self.report.fail(&shown, why);
            }
        }
        Ok(())
    }

    /// Restores each hard link of `links` as a copy of its file's data
    /// (found in `index`); further links to the same file link to that copy.
    fn copies(&mut self, index: Index, links: Vec<Entry>, sink: &mut dyn Sink) -> Result<()> {
        let mut want: std::collections::HashMap<Vec<u8>, Vec<Entry>> =
            std::collections::HashMap::new();
        for l in links {
            want.entry(l.meta.target.clone()).or_default().push(l);
        }
        let mut found = Vec::new();
        for e in index {
            let e = e?;
            if e.meta.kind.has_content() {
                if let Some(links) = want.remove(&e.meta.path) {
                    found.push((e, links));
                }
            }
        }
        for links in want.into_values() {
            for l in links {
                let why = format!(
                    "a hard link to {}, which is not in the save set",
                    super::names::escape(&l.meta.target)
                );
                self.report.fail(&super::names::escape(&l.meta.path), why);
            }
        }
        for (file, links) in found {
            let mut links = links.into_iter();
            let Some(first) = links.next() else { continue };
            let mut copy = file.clone();
            copy.meta.path = first.meta.path.clone();
            self.object(&file, &copy, sink)?;
            for mut l in links {
                l.meta.target = first.meta.path.clone();
                sink.begin(&l)?;
                sink.end(&l, true)?;
                self.report.ok += 1;
            }
        }
        Ok(())
    }
}

/// An index being written to a temporary file.
struct IndexWriter {
    out: BufWriter<File>,
    count: u64,
    content: u64,
}

impl IndexWriter {
    fn new() -> Result<Self> {
        let file = tempfile::tempfile().map_err(|e| Error::io("index file", e))?;
        Ok(IndexWriter {
            out: BufWriter::new(file),
            count: 0,
            content: 0,
        })
    }

    fn push(&mut self, e: &Entry) -> Result<()> {
        let mut rec = Vec::new();
        format::put_entry(e, &mut rec)?;
        self.out
            .write_all(&rec)
            .map_err(|e| Error::io("index file", e))?;
        self.count += 1;
        if e.meta.kind.has_content() {
            self.content += e.meta.size;
        }
        Ok(())
    }

    fn finish(self) -> Result<Index> {
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| Error::io("index file", e.into_error()))?;
        file.rewind().map_err(|e| Error::io("index file", e))?;
        Ok(Index {
            reader: BufReader::new(file),
            left: self.count,
            count: self.count,
            content_bytes: self.content,
        })
    }
}

/// The index of a save set, read back from its temporary file.
pub struct Index {
    reader: BufReader<File>,
    left: u64,
    count: u64,
    /// Bytes of content the index's objects hold.
    pub content_bytes: u64,
}

impl Index {
    /// The same index, from its first entry again.
    pub fn rewound(mut self) -> Result<Index> {
        self.reader
            .rewind()
            .map_err(|e| Error::io("index file", e))?;
        self.left = self.count;
        Ok(self)
    }
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
    /// Whether an object by this path would be selected (a hard link to
    /// one that is not is restored as a copy of its data).
    fn selects(&self, _path: &[u8]) -> bool {
        true
    }
    /// Hard links handed over whose file the sink did not have: the run
    /// hands each over again as a copy of its file's data.
    fn orphans(&mut self) -> Result<Vec<Entry>> {
        Ok(Vec::new())
    }
}

/// What a run over objects found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunReport {
    pub ok: u64,
    pub bytes: u64,
    pub failed: Vec<(String, String)>,
    /// Damaged blocks, with cartridge, block and segment.
    pub damaged: Vec<String>,
    /// What copies of the save set served when the first place read could
    /// not (a cartridge missing, blocks damaged): one line per copy used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_copies: Vec<String>,
}

impl RunReport {
    fn fail(&mut self, path: &str, why: String) {
        self.failed.push((path.to_string(), why));
    }
}
