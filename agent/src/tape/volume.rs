//! Labelled volumes: VOL1, tape files framed by HDR/EOF labels, and files that span volumes with EOV labels.
//!
//! A labelled volume, as written here:
//!
//! ```text
//! VOL1 | HDR1 HDR2 TM data... TM EOF1 EOF2 TM | HDR1 ... TM EOF1 EOF2 TM | TM
//! ```
//!
//! The double tape mark ends the volume; a new file is written over the
//! last one. A file reaching early warning ends its section with
//! `TM EOV1 EOV2 TM TM` (EOV2 names the next volume) and continues on that
//! volume as section 2, 3, ... A file whose trailer labels are missing was
//! cut short (a crash or a cancel): [`inspect`] reports it as incomplete,
//! [`FileReader`] refuses it, and the next write goes over it.
//!
//! Volumes come from a [`Changer`]: the virtual tape library, or a test rig.

use super::digest::BlockDigest;
use super::label::{self, FileLabel1, FileLabel2, Group, Label, LabelDate, Vol1};
use super::{Read, TapeDevice, Written};
use crate::error::{Error, Result};

/// A volume in a drive.
pub struct Mounted {
    pub volser: String,
    pub device: Box<dyn TapeDevice>,
}

/// How a volume is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was written; `full` when early warning was reached.
    Written { full: bool },
    /// It was only read.
    Read,
}

/// Where volumes come from: a tape library or a test rig.
pub trait Changer {
    /// Claims a labelled scratch volume for writing; it stops being scratch.
    fn claim_scratch(&mut self) -> Result<String>;
    /// Mounts a volume by serial.
    fn mount(&mut self, volser: &str) -> Result<Mounted>;
    /// Gives a mounted volume back.
    fn dismount(&mut self, mounted: Mounted, outcome: Outcome) -> Result<()>;
}

/// One tape file (one section of it) on a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeFile {
    pub hdr1: FileLabel1,
    pub hdr2: FileLabel2,
    /// Logical block of HDR1.
    pub header_block: u64,
    /// Logical block of the first data block.
    pub first_block: u64,
    /// Data blocks found on the volume.
    pub blocks: u64,
    /// EOF1/EOF2 or EOV1/EOV2; `None` when the file was cut short.
    pub trailer: Option<(FileLabel1, FileLabel2)>,
    /// The trailer label's block count, when it is not the number of blocks
    /// on the volume (blocks dropped or duplicated on the way): reported,
    /// and the blocks there are read.
    pub label_count: Option<u64>,
}

impl TapeFile {
    /// Whether the section continues on another volume.
    pub fn continues(&self) -> bool {
        matches!(&self.trailer, Some((t, _)) if t.group == Group::EndOfVolume)
    }
}

/// What a volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub vol1: Vol1,
    /// Complete tape files, in order.
    pub files: Vec<TapeFile>,
    /// A last file whose trailer is missing (cut short), if any.
    pub incomplete: Option<TapeFile>,
    /// Where the next file would be written; `None` when the volume ends
    /// with a file continuing elsewhere (the volume is full).
    pub append_at: Option<u64>,
}

/// Writes a fresh VOL1 (and the empty-volume double tape mark) at the
/// beginning of the medium, discarding everything on it.
pub fn label_volume(dev: &mut dyn TapeDevice, volser: &str, owner: &str) -> Result<()> {
    let vol1 = label::encode(&Label::Vol1(Vol1 {
        volser: volser.to_string(),
        owner: owner.to_string(),
    }))?;
    dev.rewind()?;
    dev.write_block(&vol1)?;
    dev.write_filemark()?;
    dev.write_filemark()?;
    dev.flush()
}

fn vol_err(volser: &str, reason: impl Into<String>) -> Error {
    Error::Volume {
        volser: volser.to_string(),
        reason: reason.into(),
    }
}

/// Reads the next item; end of data becomes `None`.
fn next(dev: &mut dyn TapeDevice, buf: &mut Vec<u8>) -> Result<Option<Read>> {
    match dev.read_block(buf) {
        Ok(r) => Ok(Some(r)),
        Err(Error::EndOfData { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

enum Step<T> {
    Got(T),
    /// The volume ended here: the file being read was cut short.
    Cut,
}

fn read_label(
    dev: &mut dyn TapeDevice,
    buf: &mut Vec<u8>,
    volser: &str,
    want: &str,
) -> Result<Step<Label>> {
    let at = dev.position()?;
    match next(dev, buf)? {
        None => Ok(Step::Cut),
        Some(Read::Filemark) => Err(vol_err(
            volser,
            format!("block {at}: expected {want}, found a tape mark"),
        )),
        Some(Read::Block) => {
            if !label::looks_like_label(buf) {
                return Err(vol_err(
                    volser,
                    format!(
                        "block {at}: expected {want}, found a {}-byte data block",
                        buf.len()
                    ),
                ));
            }
            label::decode(buf)
                .map(Step::Got)
                .map_err(|e| vol_err(volser, format!("block {at}: {e}")))
        }
    }
}

fn read_tape_mark(
    dev: &mut dyn TapeDevice,
    buf: &mut Vec<u8>,
    volser: &str,
    after: &str,
) -> Result<Step<()>> {
    let at = dev.position()?;
    match next(dev, buf)? {
        None => Ok(Step::Cut),
        Some(Read::Filemark) => Ok(Step::Got(())),
        Some(Read::Block) => Err(vol_err(
            volser,
            format!("block {at}: expected a tape mark after {after}"),
        )),
    }
}

/// Reads the VOL1 label at the beginning of the medium (leaving the
/// position after it). `name` is how errors name the cartridge; when
/// `expected` is given, the volume serial must be it.
pub fn read_vol1(dev: &mut dyn TapeDevice, name: &str, expected: Option<&str>) -> Result<Vol1> {
    let mut buf = Vec::new();
    dev.rewind()?;
    let vol1 = match next(dev, &mut buf)? {
        Some(Read::Block) if buf.starts_with(b"VOL1") => match label::decode(&buf) {
            Ok(Label::Vol1(v)) => v,
            Ok(_) => unreachable!("a VOL1 identifier decodes to a VOL1 label"),
            Err(e) => return Err(vol_err(name, format!("unreadable VOL1: {e}"))),
        },
        Some(_) => {
            return Err(vol_err(
                name,
                "not labelled: the first block is not a VOL1 label",
            ))
        }
        None => return Err(vol_err(name, "not labelled: the cartridge is blank")),
    };
    if let Some(want) = expected.filter(|w| *w != vol1.volser) {
        return Err(vol_err(
            name,
            format!(
                "label mismatch: barcode is {want} but the VOL1 label says {}",
                vol1.volser
            ),
        ));
    }
    Ok(vol1)
}

/// Reads the whole label structure of a volume: VOL1 (its serial must be
/// `expected`), every tape file with its block count, and where a new file
/// would go. Fails, naming the cartridge and block, on anything that is not
/// a well-formed labelled volume.
pub fn inspect(dev: &mut dyn TapeDevice, expected: &str) -> Result<VolumeInfo> {
    let mut buf = Vec::new();
    let vol1 = read_vol1(dev, expected, Some(expected))?;
    let mut info = VolumeInfo {
        vol1,
        files: Vec::new(),
        incomplete: None,
        append_at: None,
    };
    loop {
        let header_block = dev.position()?;
        let hdr1 = match next(dev, &mut buf)? {
            None | Some(Read::Filemark) => {
                info.append_at = Some(header_block);
                return Ok(info);
            }
            Some(Read::Block) => match label::looks_like_label(&buf).then(|| label::decode(&buf)) {
                Some(Ok(Label::File1(l))) if l.group == Group::Header => l,
                Some(Err(e)) => {
                    return Err(vol_err(expected, format!("block {header_block}: {e}")))
                }
                _ => {
                    return Err(vol_err(
                        expected,
                        format!("block {header_block}: expected HDR1 or the end of the volume"),
                    ))
                }
            },
        };
        let cut = |info: &mut VolumeInfo, file: TapeFile| {
            info.append_at = Some(file.header_block);
            info.incomplete = Some(file);
        };
        let mut file = TapeFile {
            hdr2: FileLabel2 {
                group: Group::Header,
                record_format: 'U',
                block_length: 0,
                record_length: 0,
                max_block: 0,
                next_volser: String::new(),
            },
            hdr1,
            header_block,
            first_block: header_block + 1,
            blocks: 0,
            trailer: None,
            label_count: None,
        };
        match read_label(dev, &mut buf, expected, "HDR2")? {
            Step::Got(Label::File2(l)) if l.group == Group::Header => file.hdr2 = l,
            Step::Got(_) => {
                return Err(vol_err(
                    expected,
                    format!("block {}: expected HDR2", header_block + 1),
                ))
            }
            Step::Cut => {
                cut(&mut info, file);
                return Ok(info);
            }
        }
        if let Step::Cut = read_tape_mark(dev, &mut buf, expected, "HDR2")? {
            cut(&mut info, file);
            return Ok(info);
        }
        file.first_block = dev.position()?;
        match dev.space_filemarks(1) {
            Ok(()) => file.blocks = dev.position()? - 1 - file.first_block,
            Err(Error::EndOfData { .. }) => {
                file.blocks = dev.position()? - file.first_block;
                cut(&mut info, file);
                return Ok(info);
            }
            Err(e) => return Err(e),
        }
        let t1 = match read_label(dev, &mut buf, expected, "EOF1 or EOV1")? {
            Step::Got(Label::File1(l)) if l.group != Group::Header => l,
            Step::Got(_) => {
                return Err(vol_err(
                    expected,
                    format!(
                        "file {}: expected EOF1 or EOV1 after the data",
                        file.hdr1.sequence
                    ),
                ))
            }
            Step::Cut => {
                cut(&mut info, file);
                return Ok(info);
            }
        };
        let t2 = match read_label(dev, &mut buf, expected, "EOF2 or EOV2")? {
            Step::Got(Label::File2(l)) if l.group == t1.group => l,
            Step::Got(_) => {
                return Err(vol_err(
                    expected,
                    format!("file {}: trailer labels do not pair", file.hdr1.sequence),
                ))
            }
            Step::Cut => {
                cut(&mut info, file);
                return Ok(info);
            }
        };
        if let Step::Cut = read_tape_mark(dev, &mut buf, expected, "the trailer labels")? {
            cut(&mut info, file);
            return Ok(info);
        }
        if t1.block_count != file.blocks {
            tracing::warn!(
                cartridge = expected,
                file = file.hdr1.sequence,
                "trailer label counts {} blocks but {} are on the volume; reading those there",
                t1.block_count,
                file.blocks
            );
            file.label_count = Some(t1.block_count);
        }
        if (&t1.file_id, t1.sequence, t1.section)
            != (&file.hdr1.file_id, file.hdr1.sequence, file.hdr1.section)
        {
            return Err(vol_err(
                expected,
                format!(
                    "file {}: trailer labels belong to another file",
                    file.hdr1.sequence
                ),
            ));
        }
        file.trailer = Some((t1, t2));
        let continues = file.continues();
        info.files.push(file);
        if continues {
            return Ok(info);
        }
    }
}

/// What a new tape file is called and how it is written.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// File identifier for the labels (up to 17 label characters).
    pub file_id: String,
    pub created: Option<LabelDate>,
    pub expires: Option<LabelDate>,
    /// Largest block the writer will write.
    pub max_block: u32,
    /// Which copy of the file this is: 0 the original, 1 its first
    /// duplicate, ... (HDR1's generation version number).
    pub copy: u8,
}

/// Where a new tape file goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// On a scratch volume claimed from the changer.
    Scratch,
    /// After the last complete file of this volume.
    Append(String),
}

/// One section of a written or read tape file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Section {
    pub volser: String,
    pub section: u16,
    pub first_block: u64,
    pub blocks: u64,
}

/// A tape file, all its sections.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileSummary {
    pub file_id: String,
    pub file_set_id: String,
    pub sequence: u16,
    pub sections: Vec<Section>,
    /// What the write got past (a scratch cartridge that could not be used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The data blocks' keyless digest (see [`super::digest`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

/// Scratch cartridges one write skips at most before it gives up.
const MAX_BAD_SCRATCH: usize = 8;

/// Claims a scratch volume and mounts it. One that cannot be mounted (its
/// image unreadable, its label wrong: the changer puts it in error state)
/// is skipped for the next, with a warning in `warnings`.
fn mount_scratch<C: Changer + ?Sized>(
    changer: &mut C,
    warnings: &mut Vec<String>,
) -> Result<(String, Mounted)> {
    let mut skipped = 0;
    loop {
        let volser = match changer.claim_scratch() {
            Ok(v) => v,
            Err(e) if warnings.is_empty() => return Err(e),
            Err(e) => {
                return Err(vol_err(
                    "",
                    format!("{e} (after skipping: {})", warnings.join("; ")),
                ))
            }
        };
        match changer.mount(&volser) {
            Ok(m) => return Ok((volser, m)),
            Err(e) if skipped < MAX_BAD_SCRATCH => {
                let w = format!(
                    "scratch cartridge {volser} could not be used ({e}); it is in error state, and the next scratch cartridge was used"
                );
                tracing::warn!(cartridge = %volser, "{w}");
                warnings.push(w);
                skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn write_labels(dev: &mut dyn TapeDevice, labels: [Label; 2]) -> Result<()> {
    for l in &labels {
        dev.write_block(&label::encode(l)?)?;
    }
    dev.write_filemark()?;
    Ok(())
}

/// Writes one tape file, spanning volumes at early warning.
pub struct FileWriter<'c, C: Changer + ?Sized> {
    changer: &'c mut C,
    mounted: Option<Mounted>,
    hdr1: FileLabel1,
    hdr2: FileLabel2,
    first_block: u64,
    blocks: u64,
    sections: Vec<Section>,
    early_warning: bool,
    warnings: Vec<String>,
    digest: BlockDigest,
}

impl<'c, C: Changer + ?Sized> FileWriter<'c, C> {
    /// Mounts the target volume and writes the file's header labels.
    pub fn begin(changer: &'c mut C, target: Target, spec: FileSpec) -> Result<Self> {
        let mut warnings = Vec::new();
        let (volser, mut mounted) = match target {
            Target::Scratch => mount_scratch(changer, &mut warnings)?,
            Target::Append(v) => {
                let m = changer.mount(&v)?;
                (v, m)
            }
        };
        let info = inspect(&mut *mounted.device, &volser)?;
        let Some(at) = info.append_at else {
            return Err(vol_err(
                &volser,
                "full: its last file continues on another volume",
            ));
        };
        if let Some(f) = &info.incomplete {
            tracing::warn!(cartridge = %volser, file = f.hdr1.sequence, "writing over an incomplete tape file");
        }
        let sequence = info.files.last().map_or(1, |f| f.hdr1.sequence + 1);
        if sequence > 9999 {
            return Err(vol_err(
                &volser,
                "holds 9999 files, the most labels can number",
            ));
        }
        let hdr1 = FileLabel1 {
            group: Group::Header,
            file_id: spec.file_id,
            file_set_id: info
                .files
                .first()
                .map_or(volser.clone(), |f| f.hdr1.file_set_id.clone()),
            section: 1,
            sequence,
            generation: 1,
            generation_version: spec.copy,
            created: spec.created,
            expires: spec.expires,
            block_count: 0,
        };
        let hdr2 = FileLabel2 {
            group: Group::Header,
            record_format: 'U',
            block_length: spec.max_block.min(99_999),
            record_length: 0,
            max_block: spec.max_block,
            next_volser: String::new(),
        };
        // Encode before touching the volume: a bad file id changes nothing.
        label::encode(&Label::File1(hdr1.clone()))?;
        let mut w = FileWriter {
            changer,
            mounted: None,
            hdr1,
            hdr2,
            first_block: 0,
            blocks: 0,
            sections: Vec::new(),
            early_warning: false,
            warnings,
            digest: BlockDigest::new(),
        };
        mounted.device.locate(at)?;
        w.start_section(mounted)?;
        Ok(w)
    }

    fn start_section(&mut self, mut m: Mounted) -> Result<()> {
        write_labels(
            &mut *m.device,
            [
                Label::File1(self.hdr1.clone()),
                Label::File2(self.hdr2.clone()),
            ],
        )?;
        self.first_block = m.device.position()?;
        self.blocks = 0;
        self.early_warning = false;
        self.mounted = Some(m);
        Ok(())
    }

    fn device(&mut self) -> &mut dyn TapeDevice {
        &mut *self
            .mounted
            .as_mut()
            .expect("a volume is mounted while writing")
            .device
    }

    /// The serial of the volume being written.
    pub fn volser(&self) -> &str {
        self.mounted.as_ref().map_or("", |m| m.volser.as_str())
    }

    /// Writes one data block. After the block that reaches early warning,
    /// the next block goes to a new volume.
    pub fn write_block(&mut self, data: &[u8]) -> Result<()> {
        if data.len() > self.hdr2.max_block as usize {
            return Err(Error::BadBlockSize {
                device: self.volser().to_string(),
                len: data.len(),
                reason: "larger than the file's block size",
            });
        }
        if self.early_warning {
            self.switch_volume()?;
        }
        if self.device().write_block(data)? == Written::EarlyWarning {
            self.early_warning = true;
        }
        self.digest.update(data);
        self.blocks += 1;
        Ok(())
    }

    fn trailer(&self, group: Group, next_volser: &str) -> [Label; 2] {
        let mut t1 = self.hdr1.clone();
        t1.group = group;
        t1.block_count = self.blocks;
        let mut t2 = self.hdr2.clone();
        t2.group = group;
        t2.next_volser = next_volser.to_string();
        [Label::File1(t1), Label::File2(t2)]
    }

    fn close_section(&mut self, group: Group, next_volser: &str) -> Result<Mounted> {
        let trailer = self.trailer(group, next_volser);
        let mut m = self
            .mounted
            .take()
            .expect("a volume is mounted while writing");
        m.device.write_filemark()?;
        write_labels(&mut *m.device, trailer)?;
        m.device.write_filemark()?;
        m.device.flush()?;
        self.sections.push(Section {
            volser: m.volser.clone(),
            section: self.hdr1.section,
            first_block: self.first_block,
            blocks: self.blocks,
        });
        Ok(m)
    }

    fn switch_volume(&mut self) -> Result<()> {
        let next = self.changer.claim_scratch()?;
        let done = self.close_section(Group::EndOfVolume, &next)?;
        self.changer
            .dismount(done, Outcome::Written { full: true })?;
        let mut m = self.changer.mount(&next)?;
        let info = inspect(&mut *m.device, &next)?;
        if !info.files.is_empty() || info.incomplete.is_some() {
            return Err(vol_err(&next, "was given as scratch but holds files"));
        }
        m.device.locate(info.append_at.unwrap_or(1))?;
        self.hdr1.section += 1;
        self.start_section(m)
    }

    /// The digest of the data blocks written so far.
    pub fn digest(&self) -> &BlockDigest {
        &self.digest
    }

    /// Writes the EOF labels and gives the volume back.
    pub fn finish(mut self) -> Result<FileSummary> {
        let m = self.close_section(Group::EndOfFile, "")?;
        let full = self.early_warning;
        self.changer.dismount(m, Outcome::Written { full })?;
        Ok(FileSummary {
            file_id: self.hdr1.file_id.clone(),
            file_set_id: self.hdr1.file_set_id.clone(),
            sequence: self.hdr1.sequence,
            sections: std::mem::take(&mut self.sections),
            warnings: std::mem::take(&mut self.warnings),
            digest: self.digest.text(),
        })
    }

    /// Stops without trailer labels and hands back the mounted volume. The
    /// file stays incomplete: never read as valid, written over by the next
    /// file. Used to cancel a write and for crash drills.
    pub fn abandon(mut self) -> Option<Mounted> {
        self.mounted.take()
    }
}

impl<C: Changer + ?Sized> Drop for FileWriter<'_, C> {
    /// A writer dropped before `finish` (an error, a cancel) gives its volume
    /// back; the file stays incomplete.
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let volser = m.volser.clone();
            if let Err(e) = self.changer.dismount(
                m,
                Outcome::Written {
                    full: self.early_warning,
                },
            ) {
                tracing::error!(cartridge = %volser, error = %e, "giving back the cartridge of a stopped write failed");
            }
        }
    }
}

/// Reads one tape file, following it across volumes, sequentially or at
/// any data block.
pub struct FileReader<'c, C: Changer + ?Sized> {
    changer: &'c mut C,
    mounted: Option<Mounted>,
    /// Sections found so far, in order; the last may continue elsewhere.
    sections: Vec<Part>,
    /// Section of the mounted volume.
    current: usize,
    /// Data block (counted across sections) the next read returns.
    pos: u64,
}

/// One section of the file being read.
#[derive(Debug, Clone)]
struct Part {
    volser: String,
    file: TapeFile,
    /// Index of its first block among all the file's data blocks.
    start: u64,
}

fn find_file(info: &VolumeInfo, volser: &str, sequence: u16) -> Result<TapeFile> {
    if let Some(f) = info.files.iter().find(|f| f.hdr1.sequence == sequence) {
        return Ok(f.clone());
    }
    if info
        .incomplete
        .as_ref()
        .is_some_and(|f| f.hdr1.sequence == sequence)
    {
        return Err(vol_err(
            volser,
            format!(
                "tape file {sequence} is incomplete (its write was cut short): it is not readable"
            ),
        ));
    }
    let have: Vec<String> = info
        .files
        .iter()
        .map(|f| f.hdr1.sequence.to_string())
        .collect();
    Err(vol_err(
        volser,
        format!(
            "holds no tape file {sequence} (files: {})",
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        ),
    ))
}

impl<C: Changer + ?Sized> Drop for FileReader<'_, C> {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let volser = m.volser.clone();
            if let Err(e) = self.changer.dismount(m, Outcome::Read) {
                tracing::error!(cartridge = %volser, error = %e, "giving back a cartridge after reading failed");
            }
        }
    }
}

impl<'c, C: Changer + ?Sized> FileReader<'c, C> {
    /// Mounts `volser` and positions at the first data block of tape file
    /// `sequence`, which must start on that volume.
    pub fn open(changer: &'c mut C, volser: &str, sequence: u16) -> Result<Self> {
        let mut r = FileReader {
            changer,
            mounted: None,
            sections: Vec::new(),
            current: 0,
            pos: 0,
        };
        let file = r.mount_file(volser, sequence)?;
        if file.hdr1.section != 1 {
            return Err(vol_err(
                volser,
                format!(
                    "tape file {sequence} starts on an earlier volume (this is section {})",
                    file.hdr1.section
                ),
            ));
        }
        r.sections.push(Part {
            volser: volser.to_string(),
            file,
            start: 0,
        });
        r.position_in_current()?;
        Ok(r)
    }

    /// The file's labels (first section).
    pub fn header(&self) -> &FileLabel1 {
        &self.sections[0].file.hdr1
    }

    /// The file's second header label (record format, block size).
    pub fn header2(&self) -> &FileLabel2 {
        &self.sections[0].file.hdr2
    }

    fn position_in_current(&mut self) -> Result<()> {
        match self.locate_current() {
            Err(e) if !self.relearn()? => Err(e),
            _ => Ok(()),
        }
    }

    fn locate_current(&mut self) -> Result<()> {
        let p = &self.sections[self.current];
        let block = p.file.first_block + (self.pos - p.start);
        self.mounted.as_mut().expect("mounted").device.locate(block)
    }

    /// Gives back the mounted volume, mounts `volser` and finds tape file
    /// `sequence` on it.
    fn mount_file(&mut self, volser: &str, sequence: u16) -> Result<TapeFile> {
        if let Some(m) = self.mounted.take() {
            self.changer.dismount(m, Outcome::Read)?;
        }
        let mut m = self.changer.mount(volser)?;
        let mut found =
            inspect(&mut *m.device, volser).and_then(|i| find_file(&i, volser, sequence));
        // What the device believed of the volume may be what is wrong.
        if found.is_err() && m.device.relearn()? {
            found = inspect(&mut *m.device, volser).and_then(|i| find_file(&i, volser, sequence));
        }
        self.mounted = Some(m);
        found
    }

    /// After damage was met on the mounted volume: has the device learn
    /// the volume again from the medium (see [`TapeDevice::relearn`]) and
    /// the tape file's place on it read again. `false` when that cannot
    /// help; after `true`, reading again may succeed.
    pub fn relearn(&mut self) -> Result<bool> {
        let Some(m) = self.mounted.as_mut() else {
            return Ok(false);
        };
        if !m.device.relearn()? {
            return Ok(false);
        }
        let volser = m.volser.clone();
        let seq = self.sections[0].file.hdr1.sequence;
        let info = inspect(&mut *m.device, &volser)?;
        let f = find_file(&info, &volser, seq)?;
        let i = self.current;
        self.sections[i].file = f;
        for k in i + 1..self.sections.len() {
            self.sections[k].start = self.sections[k - 1].start + self.sections[k - 1].file.blocks;
        }
        self.locate_current()?;
        Ok(true)
    }

    /// Mounts section `i` (known) and positions at `self.pos` in it.
    fn switch_to(&mut self, i: usize) -> Result<()> {
        if self.current != i || self.mounted.is_none() {
            let volser = self.sections[i].volser.clone();
            let f = self.mount_file(&volser, self.sections[0].file.hdr1.sequence)?;
            if f != self.sections[i].file {
                return Err(vol_err(
                    &volser,
                    "changed since it was read: its labels differ",
                ));
            }
            self.current = i;
        }
        self.position_in_current()
    }

    /// Finds the section after the last known one, through its EOV2 label.
    /// `false` when the last known section ends the file.
    fn discover_next(&mut self) -> Result<bool> {
        let last = self.sections.last().expect("one section at least").clone();
        if !last.file.continues() {
            return Ok(false);
        }
        let next = last
            .file
            .trailer
            .as_ref()
            .map(|(_, t2)| t2.next_volser.clone())
            .unwrap_or_default();
        let seq = last.file.hdr1.sequence;
        if next.is_empty() {
            return Err(vol_err(
                &last.volser,
                format!("file {seq} continues but EOV2 names no next volume"),
            ));
        }
        let f = self.mount_file(&next, seq)?;
        let want = (
            &last.file.hdr1.file_id,
            &last.file.hdr1.file_set_id,
            last.file.hdr1.section + 1,
        );
        if (&f.hdr1.file_id, &f.hdr1.file_set_id, f.hdr1.section) != want || f.header_block != 1 {
            return Err(vol_err(
                &next,
                format!(
                    "does not continue file {seq} of {} (section {} expected)",
                    last.volser, want.2
                ),
            ));
        }
        self.sections.push(Part {
            volser: next,
            start: last.start + last.file.blocks,
            file: f,
        });
        self.current = self.sections.len() - 1;
        Ok(true)
    }

    /// Total data blocks of the file, following it to its last volume if needed.
    pub fn total_blocks(&mut self) -> Result<u64> {
        while self.discover_next()? {}
        let last = self.sections.last().expect("one section at least");
        Ok(last.start + last.file.blocks)
    }

    /// Positions so the next read returns data block `n` (counted across volumes).
    pub fn seek(&mut self, n: u64) -> Result<()> {
        // Already there: reading on needs no positioning.
        let p = &self.sections[self.current];
        if n == self.pos && self.mounted.is_some() && n >= p.start && n < p.start + p.file.blocks {
            return Ok(());
        }
        loop {
            if let Some(i) = self
                .sections
                .iter()
                .position(|p| n >= p.start && n < p.start + p.file.blocks)
            {
                self.pos = n;
                return self.switch_to(i);
            }
            if !self.discover_next()? {
                let total = self.sections.last().map_or(0, |p| p.start + p.file.blocks);
                return Err(vol_err(
                    &self.sections[0].volser,
                    format!(
                        "file {} has {total} data blocks; block {n} does not exist",
                        self.header().sequence
                    ),
                ));
            }
        }
    }

    /// Cartridge and logical block of data block `n`, if its section is known.
    pub fn locate_block(&self, n: u64) -> Option<(String, u64)> {
        self.sections
            .iter()
            .find(|p| n >= p.start && n < p.start + p.file.blocks)
            .map(|p| (p.volser.clone(), p.file.first_block + (n - p.start)))
    }

    /// Reads the next data block into `buf`; `false` at the end of the file.
    pub fn read_block(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        loop {
            let part = &self.sections[self.current];
            let (end, seq) = (part.start + part.file.blocks, part.file.hdr1.sequence);
            if self.pos < end {
                if self.mounted.is_none() {
                    self.switch_to(self.current)?;
                }
                let m = self.mounted.as_mut().expect("mounted");
                let read = match m.device.read_block(buf) {
                    Err(e) if !self.relearn()? => return Err(e),
                    Err(_) => self
                        .mounted
                        .as_mut()
                        .expect("mounted")
                        .device
                        .read_block(buf)?,
                    Ok(r) => r,
                };
                let m = self.mounted.as_mut().expect("mounted");
                return match read {
                    Read::Block => {
                        self.pos += 1;
                        Ok(true)
                    }
                    Read::Filemark => Err(vol_err(
                        &m.volser,
                        format!(
                            "file {seq}: a tape mark where data block {} should be",
                            self.pos
                        ),
                    )),
                };
            }
            if self.current + 1 < self.sections.len() {
                self.switch_to(self.current + 1)?;
                continue;
            }
            if !self.discover_next()? {
                if let Some(m) = self.mounted.take() {
                    self.changer.dismount(m, Outcome::Read)?;
                }
                return Ok(false);
            }
            self.position_in_current()?;
        }
    }

    /// What the sections' labels say that the volumes do not (a trailer
    /// label's block count that is not the count on the volume), for reports.
    pub fn anomalies(&self) -> Vec<String> {
        self.sections
            .iter()
            .filter_map(|p| {
                p.file.label_count.map(|n| {
                    format!(
                        "cartridge {} file {}: the trailer label counts {n} blocks but {} are on the volume",
                        p.volser, p.file.hdr1.sequence, p.file.blocks
                    )
                })
            })
            .collect()
    }

    /// Sections seen so far.
    pub fn sections(&self) -> Vec<Section> {
        self.sections
            .iter()
            .map(|p| Section {
                volser: p.volser.clone(),
                section: p.file.hdr1.section,
                first_block: p.file.first_block,
                blocks: p.file.blocks,
            })
            .collect()
    }
}
