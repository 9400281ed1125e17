//! The btape-style conformance suite: the behaviour every tape back-end must show, run against each one.
//!
//! The suite runs against a [`Backend`]: something that can give a blank
//! medium, load it again, and (where it can) simulate a writer crash.
//! `cargo test` runs it on the in-memory and virtual-cartridge back-ends;
//! `cinta-agent tape conformance --device /dev/nstN` runs the cases a
//! single real drive can run (see deploy/TAPE-DRIVES.md).

use std::collections::BTreeMap;

use super::label::LabelDate;
use super::volume::{self, Changer, FileReader, FileSpec, FileWriter, Mounted, Outcome, Target};
use super::{Read, TapeDevice, Written, MAX_BLOCK};
use crate::error::{Error, Result};

/// A back-end under test.
pub trait Backend {
    /// A blank medium. `capacity` and `early_warning` are honoured where the
    /// back-end can set them ([`Backend::sized_media`]).
    fn blank(
        &mut self,
        volser: &str,
        capacity: u64,
        early_warning: u64,
    ) -> Result<Box<dyn TapeDevice>>;
    /// The same medium again, as a new load sees it.
    fn reload(&mut self, volser: &str) -> Result<Box<dyn TapeDevice>>;
    /// Drops a device as a crashed writer would (no close), leaving a
    /// record cut short if the back-end can. `false`: not possible here.
    fn crash(&mut self, device: Box<dyn TapeDevice>, volser: &str) -> Result<bool>;
    /// Whether media of a chosen size can be made (virtual back-ends can).
    fn sized_media(&self) -> bool {
        true
    }
    /// Whether more than one medium can be in use (spanning, crash drills).
    fn many_media(&self) -> bool {
        true
    }
}

/// Result of one case.
#[derive(Debug)]
pub struct CaseResult {
    pub name: &'static str,
    /// `Ok(true)` passed, `Ok(false)` skipped (not possible on this back-end).
    pub outcome: std::result::Result<bool, String>,
}

/// Runs every case; the report lists each with its outcome.
pub fn run_all(b: &mut dyn Backend) -> Vec<CaseResult> {
    type Case = fn(&mut dyn Backend) -> Result<bool>;
    let cases: [(&'static str, Case); 7] = [
        (
            "blocks round-trip (1 B to 1 MiB, filemarks)",
            blocks_round_trip,
        ),
        ("space over blocks and filemarks both ways, locate", spacing),
        (
            "append after end of data; overwrite discards the rest",
            append_after_end_of_data,
        ),
        ("early warning, then end of medium", early_warning),
        ("labels round-trip (VOL1, HDR/EOF)", labels_round_trip),
        (
            "fill to early warning and span volumes, read back byte-exact",
            spanning,
        ),
        ("cartridge cut short by a crash mid-write", crash_mid_write),
    ];
    cases
        .into_iter()
        .map(|(name, f)| CaseResult {
            name,
            outcome: f(b).map_err(|e| e.to_string()),
        })
        .collect()
}

fn fail(what: impl Into<String>) -> Error {
    Error::Unsupported {
        device: "conformance".into(),
        reason: what.into(),
    }
}

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(fail(format!($($msg)+)));
        }
    };
}

/// Deterministic block content: `len` bytes from a seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_expect(d: &mut dyn TapeDevice, want: Option<&[u8]>, at: &str) -> Result<()> {
    let mut buf = Vec::new();
    let r = d.read_block(&mut buf)?;
    match (r, want) {
        (Read::Filemark, None) => Ok(()),
        (Read::Block, Some(w)) if buf == w => Ok(()),
        (Read::Block, Some(w)) => Err(fail(format!(
            "{at}: block of {} bytes differs from the {} written",
            buf.len(),
            w.len()
        ))),
        (r, w) => Err(fail(format!(
            "{at}: read {r:?}, expected {}",
            if w.is_some() { "a block" } else { "a filemark" }
        ))),
    }
}

fn expect_err(r: Result<()>, at: &str, ok: impl Fn(&Error) -> bool) -> Result<()> {
    match r {
        Err(e) if ok(&e) => Ok(()),
        Err(e) => Err(fail(format!("{at}: unexpected error: {e}"))),
        Ok(()) => Err(fail(format!("{at}: succeeded, an error was expected"))),
    }
}

const BIG: u64 = 64 << 20;

fn blocks_round_trip(b: &mut dyn Backend) -> Result<bool> {
    let mut d = b.blank("CF0001", BIG, 1 << 20)?;
    let sizes = [1usize, 2, 3, 80, 4095, 65_537, 262_144, 1 << 20];
    for (i, &n) in sizes.iter().enumerate() {
        d.write_block(&pattern(i as u64, n))?;
    }
    d.write_filemark()?;
    d.write_block(&pattern(99, 512))?;
    d.write_filemark()?;
    check!(
        d.position()? == sizes.len() as u64 + 3,
        "position after writing is {}",
        d.position()?
    );
    expect_err(d.write_block(&[]).map(|_| ()), "zero-length block", |e| {
        matches!(e, Error::BadBlockSize { .. })
    })?;
    expect_err(
        d.write_block(&vec![0; MAX_BLOCK + 1]).map(|_| ()),
        "oversized block",
        |e| matches!(e, Error::BadBlockSize { .. }),
    )?;
    d.flush()?;
    d.rewind()?;
    check!(d.position()? == 0, "position after rewind");
    for (i, &n) in sizes.iter().enumerate() {
        read_expect(&mut *d, Some(&pattern(i as u64, n)), &format!("block {i}"))?;
    }
    read_expect(&mut *d, None, "first filemark")?;
    read_expect(&mut *d, Some(&pattern(99, 512)), "block after filemark")?;
    read_expect(&mut *d, None, "second filemark")?;
    let mut buf = Vec::new();
    expect_err(
        d.read_block(&mut buf).map(|_| ()),
        "read past end of data",
        |e| matches!(e, Error::EndOfData { .. }),
    )?;
    d.unload()?;
    Ok(true)
}

/// Objects: A0..A4 (0-4) FM(5) B0..B2 (6-8) FM(9) C0 C1 (10-11), EOD at 12.
fn spacing(b: &mut dyn Backend) -> Result<bool> {
    let mut d = b.blank("CF0002", BIG, 1 << 20)?;
    let block = |f: u64, i: u64| pattern(f * 100 + i, 100 + i as usize);
    for (f, n) in [(0u64, 5u64), (1, 3), (2, 2)] {
        for i in 0..n {
            d.write_block(&block(f, i))?;
        }
        if f < 2 {
            d.write_filemark()?;
        }
    }
    let pos = |d: &mut Box<dyn TapeDevice>, want: u64, at: &str| -> Result<()> {
        let p = d.position()?;
        check!(p == want, "{at}: position {p}, expected {want}");
        Ok(())
    };
    d.rewind()?;
    d.space_filemarks(1)?;
    pos(&mut d, 6, "after spacing one filemark forward")?;
    read_expect(&mut *d, Some(&block(1, 0)), "first block of file 2")?;
    expect_err(d.space_blocks(5), "space 5 blocks into a filemark", |e| {
        matches!(e, Error::FilemarkHit { residual: 3, .. })
    })?;
    pos(&mut d, 10, "forward spacing stops after the filemark")?;
    d.seek_end_of_data()?;
    pos(&mut d, 12, "end of data")?;
    d.space_blocks(-2)?;
    pos(&mut d, 10, "two blocks back")?;
    expect_err(d.space_blocks(-1), "space back into a filemark", |e| {
        matches!(e, Error::FilemarkHit { residual: 1, .. })
    })?;
    pos(&mut d, 9, "backward spacing stops before the filemark")?;
    d.seek_end_of_data()?;
    d.space_filemarks(-1)?;
    pos(&mut d, 9, "one filemark back")?;
    d.space_filemarks(-1)?;
    pos(&mut d, 5, "two filemarks back")?;
    expect_err(
        d.space_filemarks(-1),
        "space back past the first filemark",
        |e| matches!(e, Error::BeginningOfTape { .. }),
    )?;
    pos(&mut d, 0, "beginning of tape")?;
    d.space_filemarks(2)?;
    pos(&mut d, 10, "two filemarks forward")?;
    expect_err(
        d.space_filemarks(1),
        "space forward past the last filemark",
        |e| matches!(e, Error::EndOfData { .. }),
    )?;
    d.locate(7)?;
    read_expect(&mut *d, Some(&block(1, 1)), "block at 7 after locate")?;
    d.locate(3)?;
    d.space_blocks(-3)?;
    read_expect(&mut *d, Some(&block(0, 0)), "block 0 after spacing back")?;
    d.locate(12)?;
    let mut buf = Vec::new();
    expect_err(
        d.read_block(&mut buf).map(|_| ()),
        "read at end of data",
        |e| matches!(e, Error::EndOfData { .. }),
    )?;
    expect_err(d.locate(13), "locate past end of data", |e| {
        matches!(e, Error::EndOfData { .. })
    })?;
    d.rewind()?;
    expect_err(d.space_blocks(-1), "space back at the beginning", |e| {
        matches!(e, Error::BeginningOfTape { .. })
    })?;
    d.unload()?;
    Ok(true)
}

fn append_after_end_of_data(b: &mut dyn Backend) -> Result<bool> {
    let mut d = b.blank("CF0003", BIG, 1 << 20)?;
    for i in 0..3 {
        d.write_block(&pattern(i, 1000))?;
    }
    d.write_filemark()?;
    d.unload()?;
    drop(d);
    let mut d = b.reload("CF0003")?;
    d.seek_end_of_data()?;
    check!(
        d.position()? == 4,
        "end of data after reload is {}",
        d.position()?
    );
    for i in 3..5 {
        d.write_block(&pattern(i, 1001))?;
    }
    d.unload()?;
    drop(d);
    let mut d = b.reload("CF0003")?;
    for i in 0..3 {
        read_expect(&mut *d, Some(&pattern(i, 1000)), &format!("block {i}"))?;
    }
    read_expect(&mut *d, None, "filemark")?;
    for i in 3..5 {
        read_expect(
            &mut *d,
            Some(&pattern(i, 1001)),
            &format!("appended block {i}"),
        )?;
    }
    // Writing in the middle discards what follows, as on tape.
    d.locate(2)?;
    d.write_block(&pattern(7, 77))?;
    d.rewind()?;
    d.space_blocks(2)?;
    read_expect(&mut *d, Some(&pattern(7, 77)), "overwritten block")?;
    let mut buf = Vec::new();
    expect_err(
        d.read_block(&mut buf).map(|_| ()),
        "read after an overwrite",
        |e| matches!(e, Error::EndOfData { .. }),
    )?;
    d.unload()?;
    drop(d);
    // And so it stays when the medium is loaded again.
    let mut d = b.reload("CF0003")?;
    d.seek_end_of_data()?;
    check!(
        d.position()? == 3,
        "end of data after an overwrite and reload is {}",
        d.position()?
    );
    d.space_blocks(-1)?;
    read_expect(
        &mut *d,
        Some(&pattern(7, 77)),
        "overwritten block after reload",
    )?;
    d.unload()?;
    Ok(true)
}

fn early_warning(b: &mut dyn Backend) -> Result<bool> {
    if !b.sized_media() {
        return Ok(false);
    }
    let (cap, ew, bs) = (256 * 1024u64, 64 * 1024u64, 16 * 1024usize);
    let mut d = b.blank("CF0004", cap, ew)?;
    let mut n = 0u64;
    loop {
        let w = d.write_block(&pattern(n, bs))?;
        n += 1;
        if w == Written::EarlyWarning {
            break;
        }
        check!(
            n < 100,
            "no early warning after {n} blocks on a {cap}-byte medium"
        );
    }
    let crossing = n;
    // Room remains to close the volume properly.
    for i in 0..3 {
        d.write_block(&pattern(1000 + i, 80))?;
    }
    d.write_filemark()?;
    let written = d.position()?;
    // Then the physical end: the write that does not fit fails and writes nothing.
    let mut refused = false;
    for i in 0..20 {
        match d.write_block(&pattern(2000 + i, bs)) {
            Ok(_) => {}
            Err(Error::EndOfMedium { .. }) => {
                refused = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    check!(refused, "no end of medium reported");
    let end = d.position()?;
    d.unload()?;
    drop(d);
    let mut d = b.reload("CF0004")?;
    for i in 0..crossing {
        read_expect(&mut *d, Some(&pattern(i, bs)), &format!("block {i}"))?;
    }
    d.seek_end_of_data()?;
    check!(
        d.position()? == end && end >= written,
        "end of data moved after a refused write"
    );
    d.unload()?;
    Ok(true)
}

/// A changer over a back-end's media, for the label, spanning and crash cases.
pub struct RigChanger<'b> {
    backend: &'b mut dyn Backend,
    scratch: Vec<String>,
    /// Outcome of every dismount, by serial.
    pub outcomes: BTreeMap<String, Outcome>,
}

impl<'b> RigChanger<'b> {
    /// Makes `volsers` blank media of `capacity`, labels them, and offers them as scratch in that order.
    pub fn new(
        backend: &'b mut dyn Backend,
        volsers: &[&str],
        capacity: u64,
        early_warning: u64,
    ) -> Result<Self> {
        for v in volsers {
            let mut d = backend.blank(v, capacity, early_warning)?;
            volume::label_volume(&mut *d, v, "CONFORMANCE")?;
            d.unload()?;
        }
        Ok(RigChanger {
            backend,
            scratch: volsers.iter().rev().map(|s| s.to_string()).collect(),
            outcomes: BTreeMap::new(),
        })
    }
}

impl Changer for RigChanger<'_> {
    fn claim_scratch(&mut self) -> Result<String> {
        self.scratch.pop().ok_or_else(|| Error::Library {
            library: "conformance rig".into(),
            reason: "no scratch cartridge left".into(),
        })
    }
    fn mount(&mut self, volser: &str) -> Result<Mounted> {
        Ok(Mounted {
            volser: volser.to_string(),
            device: self.backend.reload(volser)?,
        })
    }
    fn dismount(&mut self, mut m: Mounted, outcome: Outcome) -> Result<()> {
        m.device.unload()?;
        self.outcomes.insert(m.volser, outcome);
        Ok(())
    }
}

fn spec(id: &str, max_block: u32) -> FileSpec {
    FileSpec {
        file_id: id.into(),
        created: Some(LabelDate {
            year: 2026,
            day: 327,
        }),
        expires: None,
        max_block,
        copy: 0,
    }
}

/// Writes `blocks` pattern blocks (sizes vary, some odd) as one tape file.
fn write_file<C: Changer>(
    c: &mut C,
    target: Target,
    id: &str,
    seed: u64,
    blocks: u64,
    max: usize,
) -> Result<volume::FileSummary> {
    let mut w = FileWriter::begin(c, target, spec(id, max as u32))?;
    for i in 0..blocks {
        w.write_block(&pattern(seed + i, max - (i as usize % 3)))?;
    }
    w.finish()
}

fn read_file_back<C: Changer>(
    c: &mut C,
    volser: &str,
    seq: u16,
    seed: u64,
    blocks: u64,
    max: usize,
) -> Result<Vec<volume::Section>> {
    let mut r = FileReader::open(c, volser, seq)?;
    let mut buf = Vec::new();
    let mut i = 0;
    while r.read_block(&mut buf)? {
        check!(i < blocks, "file {seq} has more than {blocks} blocks");
        check!(
            buf == pattern(seed + i, max - (i as usize % 3)),
            "file {seq} block {i} differs"
        );
        i += 1;
    }
    check!(i == blocks, "file {seq} read {i} of {blocks} blocks");
    Ok(r.sections())
}

fn labels_round_trip(b: &mut dyn Backend) -> Result<bool> {
    let mut c = RigChanger::new(b, &["CF0005"], BIG, 1 << 20)?;
    let s = write_file(&mut c, Target::Scratch, "CINTA.LABELS", 1, 10, 4096)?;
    check!(
        s.sequence == 1 && s.sections.len() == 1 && s.sections[0].blocks == 10,
        "summary {s:?}"
    );
    let mut m = c.mount("CF0005")?;
    let info = volume::inspect(&mut *m.device, "CF0005")?;
    check!(
        info.vol1.volser == "CF0005" && info.vol1.owner == "CONFORMANCE",
        "VOL1 {:?}",
        info.vol1
    );
    check!(
        info.files.len() == 1 && info.incomplete.is_none(),
        "files {:?}",
        info.files
    );
    let f = &info.files[0];
    check!(
        f.hdr1.file_id == "CINTA.LABELS" && f.hdr1.file_set_id == "CF0005" && f.blocks == 10,
        "HDR1 {:?}",
        f.hdr1
    );
    check!(
        f.hdr1.created
            == Some(LabelDate {
                year: 2026,
                day: 327
            }),
        "creation date {:?}",
        f.hdr1.created
    );
    check!(
        matches!(&f.trailer, Some((t1, t2)) if t1.block_count == 10 && t2.max_block == 4096),
        "trailer {:?}",
        f.trailer
    );
    expect_err(
        volume::inspect(&mut *m.device, "CF9999").map(|_| ()),
        "label of another volume",
        |e| e.to_string().contains("label mismatch"),
    )?;
    c.dismount(m, Outcome::Read)?;
    Ok(true)
}

fn spanning(b: &mut dyn Backend) -> Result<bool> {
    if !(b.sized_media() && b.many_media()) {
        return Ok(false);
    }
    let max = 64 * 1024;
    let mut c = RigChanger::new(
        b,
        &["CF0601", "CF0602", "CF0603", "CF0604"],
        1 << 20,
        200 * 1024,
    )?;
    let s = write_file(&mut c, Target::Scratch, "CINTA.SPAN", 10, 40, max)?;
    check!(
        s.sections.len() >= 2,
        "40 blocks of 64 KiB on 1 MiB volumes span, got {:?}",
        s.sections
    );
    check!(
        c.outcomes.get("CF0601") == Some(&Outcome::Written { full: true }),
        "first volume not marked full"
    );
    let read = read_file_back(&mut c, "CF0601", 1, 10, 40, max)?;
    check!(
        read == s.sections,
        "sections read {read:?} differ from written {:?}",
        s.sections
    );
    // Random access: forward onto a later volume, then back onto the first.
    {
        let mut r = FileReader::open(&mut c, "CF0601", 1)?;
        check!(r.total_blocks()? == 40, "total blocks across volumes");
        let mut buf = Vec::new();
        for n in [35u64, 2, 39, 20] {
            r.seek(n)?;
            check!(r.read_block(&mut buf)?, "block {n} after seek");
            check!(
                buf == pattern(10 + n, max - (n as usize % 3)),
                "block {n} after seek differs"
            );
        }
        // After block 20, reading on gives block 21.
        check!(
            r.read_block(&mut buf)? && buf == pattern(31, max),
            "reading on after a seek"
        );
        check!(r.seek(40).is_err(), "seek past the last block");
    }
    let last = s.sections.last().unwrap().volser.clone();
    let s2 = write_file(
        &mut c,
        Target::Append(last.clone()),
        "CINTA.APPEND",
        500,
        3,
        1000,
    )?;
    check!(
        s2.sections[0].volser == last && s2.sequence == 2,
        "appended file {s2:?}"
    );
    check!(
        s2.sections.len() == 1,
        "a small appended file stays on one volume"
    );
    read_file_back(&mut c, &last, 2, 500, 3, 1000)?;
    read_file_back(&mut c, "CF0601", 1, 10, 40, max)?;
    Ok(true)
}

fn crash_mid_write(b: &mut dyn Backend) -> Result<bool> {
    if !b.many_media() {
        return Ok(false);
    }
    let mut c = RigChanger::new(b, &["CF0701"], BIG, 1 << 20)?;
    write_file(&mut c, Target::Scratch, "CINTA.GOOD", 1, 5, 3000)?;
    let mut w = FileWriter::begin(
        &mut c,
        Target::Append("CF0701".into()),
        spec("CINTA.CUT", 3000),
    )?;
    for i in 0..4 {
        w.write_block(&pattern(900 + i, 3000))?;
    }
    let m = w.abandon().expect("mounted");
    if !c.backend.crash(m.device, "CF0701")? {
        return Ok(false);
    }
    let mut m = c.mount("CF0701")?;
    let info = volume::inspect(&mut *m.device, "CF0701")?;
    check!(
        info.files.len() == 1,
        "complete files after the crash: {}",
        info.files.len()
    );
    check!(
        info.incomplete
            .as_ref()
            .is_some_and(|f| f.hdr1.file_id == "CINTA.CUT"),
        "the cut file is not reported incomplete"
    );
    c.dismount(m, Outcome::Read)?;
    match FileReader::open(&mut c, "CF0701", 2) {
        Err(e) if e.to_string().contains("incomplete") => {}
        Err(e) => return Err(fail(format!("reading the cut file: unexpected error {e}"))),
        Ok(_) => return Err(fail("the cut file was opened as valid data")),
    }
    read_file_back(&mut c, "CF0701", 1, 1, 5, 3000)?;
    // Still usable: the next file goes where the cut one was.
    let s = write_file(
        &mut c,
        Target::Append("CF0701".into()),
        "CINTA.AFTER",
        40,
        6,
        3000,
    )?;
    check!(
        s.sequence == 2,
        "the file after the crash is number {}",
        s.sequence
    );
    read_file_back(&mut c, "CF0701", 2, 40, 6, 3000)?;
    read_file_back(&mut c, "CF0701", 1, 1, 5, 3000)?;
    Ok(true)
}

/// In-memory media, shared so a medium can be loaded again.
#[derive(Default)]
pub struct MemBackend {
    media: BTreeMap<String, std::sync::Arc<std::sync::Mutex<super::mem::MemTape>>>,
}

struct SharedMem(
    std::sync::Arc<std::sync::Mutex<super::mem::MemTape>>,
    String,
);

impl SharedMem {
    fn with<T>(&self, f: impl FnOnce(&mut super::mem::MemTape) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl TapeDevice for SharedMem {
    fn name(&self) -> &str {
        &self.1
    }
    fn write_block(&mut self, data: &[u8]) -> Result<Written> {
        self.with(|t| t.write_block(data))
    }
    fn write_filemark(&mut self) -> Result<Written> {
        self.with(|t| t.write_filemark())
    }
    fn read_block(&mut self, buf: &mut Vec<u8>) -> Result<Read> {
        self.with(|t| t.read_block(buf))
    }
    fn space_blocks(&mut self, count: i64) -> Result<()> {
        self.with(|t| t.space_blocks(count))
    }
    fn space_filemarks(&mut self, count: i64) -> Result<()> {
        self.with(|t| t.space_filemarks(count))
    }
    fn rewind(&mut self) -> Result<()> {
        self.with(|t| t.rewind())
    }
    fn seek_end_of_data(&mut self) -> Result<()> {
        self.with(|t| t.seek_end_of_data())
    }
    fn locate(&mut self, block: u64) -> Result<()> {
        self.with(|t| t.locate(block))
    }
    fn position(&mut self) -> Result<u64> {
        self.with(|t| t.position())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn unload(&mut self) -> Result<()> {
        self.with(|t| t.unload())
    }
}

impl Backend for MemBackend {
    fn blank(
        &mut self,
        volser: &str,
        capacity: u64,
        early_warning: u64,
    ) -> Result<Box<dyn TapeDevice>> {
        let t = std::sync::Arc::new(std::sync::Mutex::new(super::mem::MemTape::new(
            volser,
            capacity,
            early_warning,
        )));
        self.media.insert(volser.to_string(), t.clone());
        Ok(Box::new(SharedMem(t, volser.to_string())))
    }
    fn reload(&mut self, volser: &str) -> Result<Box<dyn TapeDevice>> {
        let t = self
            .media
            .get(volser)
            .ok_or_else(|| fail(format!("no medium {volser}")))?
            .clone();
        let mut d = SharedMem(t, volser.to_string());
        d.rewind()?;
        Ok(Box::new(d))
    }
    fn crash(&mut self, device: Box<dyn TapeDevice>, _volser: &str) -> Result<bool> {
        // Memory has no torn records: the file simply stops.
        drop(device);
        Ok(true)
    }
}

/// Virtual cartridges as SIMH files in a directory.
pub struct VcartBackend {
    dir: std::path::PathBuf,
    sizes: BTreeMap<String, (u64, u64)>,
}

impl VcartBackend {
    pub fn new(dir: &std::path::Path) -> Self {
        VcartBackend {
            dir: dir.to_path_buf(),
            sizes: BTreeMap::new(),
        }
    }
    fn path(&self, volser: &str) -> std::path::PathBuf {
        self.dir.join(format!("{volser}.tap"))
    }
}

impl Backend for VcartBackend {
    fn blank(
        &mut self,
        volser: &str,
        capacity: u64,
        early_warning: u64,
    ) -> Result<Box<dyn TapeDevice>> {
        let p = self.path(volser);
        let _ = std::fs::remove_file(&p);
        self.sizes
            .insert(volser.to_string(), (capacity, early_warning));
        Ok(Box::new(super::vcart::Cartridge::create(
            &p,
            volser,
            capacity,
            early_warning,
        )?))
    }
    fn reload(&mut self, volser: &str) -> Result<Box<dyn TapeDevice>> {
        let (cap, ew) = *self
            .sizes
            .get(volser)
            .ok_or_else(|| fail(format!("no cartridge {volser}")))?;
        Ok(Box::new(super::vcart::Cartridge::open(
            &self.path(volser),
            volser,
            cap,
            ew,
        )?))
    }
    fn crash(&mut self, device: Box<dyn TapeDevice>, volser: &str) -> Result<bool> {
        // The process dies: no close, and the record being written is cut short.
        std::mem::forget(device);
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(volser))
            .map_err(|e| Error::io(volser, e))?;
        let mut torn = 3000u32.to_le_bytes().to_vec();
        torn.extend_from_slice(&pattern(5, 1234));
        f.write_all(&torn).map_err(|e| Error::io(volser, e))?;
        let mut c = super::vcart::Cartridge::open(&self.path(volser), volser, u64::MAX / 2, 0)?;
        check!(
            c.report().crashed() && c.report().torn_bytes == torn.len() as u64,
            "the crash was not detected on load: {:?}",
            c.report()
        );
        c.rewind()?;
        std::mem::forget(c);
        Ok(true)
    }
}

/// A real drive through the st driver. Its tape is overwritten.
pub struct StBackend {
    path: std::path::PathBuf,
}

impl StBackend {
    pub fn new(path: &std::path::Path) -> Self {
        StBackend {
            path: path.to_path_buf(),
        }
    }
}

impl Backend for StBackend {
    fn blank(
        &mut self,
        _volser: &str,
        _capacity: u64,
        _early_warning: u64,
    ) -> Result<Box<dyn TapeDevice>> {
        let mut d = super::st::StDevice::open(&self.path)?;
        d.rewind()?;
        Ok(Box::new(d))
    }
    fn reload(&mut self, _volser: &str) -> Result<Box<dyn TapeDevice>> {
        let mut d = super::st::StDevice::open(&self.path)?;
        d.rewind()?;
        Ok(Box::new(d))
    }
    fn crash(&mut self, _device: Box<dyn TapeDevice>, _volser: &str) -> Result<bool> {
        Ok(false)
    }
    fn sized_media(&self) -> bool {
        false
    }
    fn many_media(&self) -> bool {
        false
    }
}
