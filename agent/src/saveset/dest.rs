//! Restoring objects into a destination directory, never outside it.
//!
//! Every path is walked from the destination one component at a time with
//! `O_NOFOLLOW`: a symlink already in the destination is never followed,
//! and stored paths cannot hold `..` or be absolute (the format refuses
//! them). Content goes to an unnamed file (or a temporary name) and is named
//! only after its digest matched, so a failed object never looks restored.
//! Files are made on a writer thread, fed in bounded batches.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::format::{Entry, Kind, Meta};
use super::read::Sink;
use super::walk::glob_match;
use crate::error::{Error, Result};

/// What to do when an object already exists in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Keep,
    Replace,
}

struct Current {
    parent: Rc<OwnedFd>,
    name: Vec<u8>,
    tmp: Vec<u8>,
    file: Option<File>,
    pos: u64,
    /// End of the last data written.
    written: u64,
    /// The file has no name yet (O_TMPFILE) rather than a temporary one.
    anonymous: bool,
}

/// The destination directory: its descriptor and its name for messages.
struct Dest {
    root: OwnedFd,
    name: String,
}

/// Writes objects into the destination, on the restore's writer thread.
struct Writer {
    dest: Dest,
    existing: Existing,
    owners: bool,
    current: Option<Current>,
    /// Suffix of temporary names (".cinta-PID").
    tmp_suffix: String,
    /// The restoring user's (uid, gid): new files already belong to it.
    ids: (u32, u32),
    /// The last parent directory opened, by its stored path: consecutive
    /// objects mostly share one.
    parent: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// The process's umask: a file created with its mode already got it
    /// whole when the umask takes nothing away.
    umask: u32,
    dirs: Vec<Meta>,
    restored: u64,
    warnings: Vec<String>,
    /// Objects that could not be written: (name as shown, why, whether
    /// their data had read back whole).
    failed: Vec<(String, String, bool)>,
    /// Hard links whose file is not in the destination (see [`Op::Orphans`]).
    orphans: Vec<Entry>,
}

/// A stored path's directory part and last name.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    }
}

/// Longest name a directory entry can have (Linux file systems).
const NAME_MAX: usize = 255;

/// The temporary name `name` is written under before it is renamed in
/// place: `.NAME.cinta-PID`, or, when that would be longer than a name can
/// be, `.cinta-PID-` and a digest of the name (so a name near the limit
/// restores too, and two names never share a temporary one).
fn temp_name(name: &[u8], suffix: &str) -> Vec<u8> {
    let long = [b".".as_slice(), name, suffix.as_bytes()].concat();
    if long.len() <= NAME_MAX {
        return long;
    }
    let h = blake3::hash(name);
    format!("{suffix}-{}", &h.to_hex()[..32]).into_bytes()
}

fn shown(p: &[u8]) -> String {
    super::names::escape(p)
}

fn ts((s, ns): (i64, u32)) -> TimeSpec {
    TimeSpec::new(s, i64::from(ns))
}

impl Dest {
    /// What is refused or wrong about one object.
    fn err(&self, path: &[u8], reason: impl std::fmt::Display) -> Error {
        Error::Format {
            reason: format!("{}: {reason}", self.doing(path)),
        }
    }

    /// A system call on one object failed (its errno kept, so a full or
    /// read-only destination stops the restore: see [`stops_restore`]).
    fn os(&self, path: &[u8], e: impl Into<std::io::Error>) -> Error {
        self.os_on(path, "", e)
    }

    /// As [`Dest::os`], on `what` (a directory on the way).
    fn os_on(&self, path: &[u8], what: &str, e: impl Into<std::io::Error>) -> Error {
        Error::io(format!("{}{what}", self.doing(path)), e.into())
    }

    /// What errors about one object start with.
    fn doing(&self, path: &[u8]) -> String {
        format!("restoring {} into {}", shown(path), self.name)
    }
}

/// Whether an error writing one object means no other object can be
/// written either (the destination is full, read-only or failing): the
/// restore stops. Any other error costs only the object it concerns.
fn stops_restore(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS | libc::EIO)
        ),
        _ => false,
    }
}

impl Dest {
    /// Opens the directories of `dir_path` (creating missing ones if
    /// `create`), following no symlink.
    fn open_dirs(&self, path: &[u8], dir_path: &[u8], create: bool) -> Result<OwnedFd> {
        let parts: Vec<&[u8]> = if dir_path.is_empty() {
            Vec::new()
        } else {
            dir_path.split(|&b| b == b'/').collect()
        };
        let mut dir = self
            .root
            .try_clone()
            .map_err(|e| Error::io(self.name.clone(), e))?;
        for c in parts {
            let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
            let next = match openat(&dir, c, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(&dir, c, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(self.os_on(
                                path,
                                &format!(": cannot create directory {}", shown(c)),
                                e,
                            ))
                        }
                    }
                    openat(&dir, c, flags, Mode::empty())
                        .map_err(|e| self.os_on(path, &format!(": {}", shown(c)), e))?
                }
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    return Err(self.err(
                        path,
                        format!(
                            "refused: {} in the destination is a symlink or not a directory",
                            shown(c)
                        ),
                    ))
                }
                Err(e) => return Err(self.os_on(path, &format!(": {}", shown(c)), e)),
            };
            dir = next;
        }
        Ok(dir)
    }
}

/// The process's umask (reading it means setting it: it is put back at once).
fn current_umask() -> u32 {
    let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
    nix::sys::stat::umask(old);
    old.bits()
}

impl Writer {
    fn new(dest: Dest, existing: Existing, umask: u32) -> Self {
        Writer {
            dest,
            existing,
            owners: nix::unistd::geteuid().is_root(),
            current: None,
            parent: None,
            umask,
            tmp_suffix: format!(".cinta-{}", std::process::id()),
            ids: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            dirs: Vec::new(),
            restored: 0,
            warnings: Vec::new(),
            failed: Vec::new(),
            orphans: Vec::new(),
        }
    }

    fn err(&self, path: &[u8], reason: impl std::fmt::Display) -> Error {
        self.dest.err(path, reason)
    }

    fn os(&self, path: &[u8], e: impl Into<std::io::Error>) -> Error {
        self.dest.os(path, e)
    }

    /// Opens the directory that will hold `path`, creating missing
    /// directories, following no symlink. Returns it and the last name.
    fn parent_of(&mut self, path: &[u8]) -> Result<(Rc<OwnedFd>, Vec<u8>)> {
        let (dir_path, name) = split(path);
        let name = name.to_vec();
        if let Some((p, fd)) = &self.parent {
            if p.as_slice() == dir_path {
                return Ok((fd.clone(), name));
            }
        }
        let dir = Rc::new(self.dest.open_dirs(path, dir_path, true)?);
        self.parent = Some((dir_path.to_vec(), dir.clone()));
        Ok((dir, name))
    }

    fn apply_owner_xattrs(&mut self, fd: impl AsFd, m: &Meta) {
        // New files belong to the restoring user already; change only what differs.
        let mine = self.ids == (m.uid, m.gid);
        if self.owners && !mine {
            if let Err(e) = fchown(
                fd.as_fd(),
                Some(Uid::from_raw(m.uid)),
                Some(Gid::from_raw(m.gid)),
            ) {
                self.warnings
                    .push(format!("{}: owner not restored: {e}", shown(&m.path)));
            }
        }
        if !m.xattrs.is_empty() {
            let f = File::from(fd.as_fd().try_clone_to_owned().expect("dup"));
            for (k, v) in &m.xattrs {
                if let Err(e) = xattr::FileExt::set_xattr(&f, std::ffi::OsStr::from_bytes(k), v) {
                    self.warnings.push(format!(
                        "{}: extended attribute {} not restored: {e}",
                        shown(&m.path),
                        shown(k)
                    ));
                }
            }
        }
    }

    /// Links an unnamed file under its name; replacing goes through a
    /// temporary name so the old file stays until the new one is whole.
    fn name_anonymous(&self, f: &File, c: &Current, m: &Meta) -> Result<()> {
        let link = |dir: &OwnedFd, name: &[u8]| -> nix::Result<()> {
            match linkat(f, "", dir, name, AtFlags::AT_EMPTY_PATH) {
                // Without CAP_DAC_READ_SEARCH, through /proc.
                Err(Errno::ENOENT) | Err(Errno::EPERM) => {
                    use std::os::fd::AsRawFd;
                    let proc = format!("/proc/self/fd/{}", f.as_raw_fd());
                    linkat(
                        nix::fcntl::AT_FDCWD,
                        proc.as_str(),
                        dir,
                        name,
                        AtFlags::AT_SYMLINK_FOLLOW,
                    )
                }
                r => r,
            }
        };
        match link(&c.parent, &c.name) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) if self.existing == Existing::Replace => {
                let _ = unlinkat(&c.parent, c.tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
                link(&c.parent, &c.tmp).map_err(|e| self.os(&m.path, e))?;
                renameat(&c.parent, c.tmp.as_slice(), &c.parent, c.name.as_slice())
                    .map_err(|e| self.os(&m.path, e))
            }
            Err(e) => Err(self.os(&m.path, e)),
        }
    }

    /// Records that `e` could not be written, or, when no other object
    /// could be either, stops the restore with `err`.
    fn failed(&mut self, e: &Entry, err: Error, read_whole: bool) -> Result<()> {
        if stops_restore(&err) {
            return Err(err);
        }
        let why = match err {
            Error::Format { reason } => reason,
            other => other.to_string(),
        };
        let doing = format!("{}: ", self.dest.doing(&e.meta.path));
        let why = why.strip_prefix(&doing).unwrap_or(&why).to_string();
        self.failed.push((shown(&e.meta.path), why, read_whole));
        Ok(())
    }

    /// Applies directories' metadata, deepest first (their times change while they fill).
    fn finish(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for m in dirs.iter().rev() {
            let fd = self.parent_of(&m.path).and_then(|(parent, name)| {
                openat(
                    &parent,
                    name.as_slice(),
                    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY,
                    Mode::empty(),
                )
                .map_err(|e| self.os(&m.path, e))
            });
            let fd = match fd {
                Ok(fd) => fd,
                Err(e) if stops_restore(&e) => return Err(e),
                Err(e) => {
                    self.warnings
                        .push(format!("directory metadata not applied: {e}"));
                    continue;
                }
            };
            self.apply_owner_xattrs(&fd, m);
            let _ = fchmod(&fd, Mode::from_bits_truncate(m.mode & 0o7777));
            let _ = futimens(&fd, &ts(m.atime), &ts(m.mtime));
        }
        Ok(())
    }
}

impl Writer {
    fn begin(&mut self, e: &Entry) -> Result<()> {
        let m = &e.meta;
        let (parent, name) = self.parent_of(&m.path)?;
        let tmp = temp_name(&name, &self.tmp_suffix);
        let mut file = None;
        let mut anonymous = false;
        match m.kind {
            Kind::Dir => {
                match mkdirat(&parent, name.as_slice(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        let st = fstatat(&parent, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)
                            .map_err(|e| self.os(&m.path, e))?;
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                            return Err(self.err(
                                &m.path,
                                "refused: it exists in the destination and is not a directory",
                            ));
                        }
                    }
                    Err(e) => return Err(self.os(&m.path, e)),
                }
                self.dirs.push(m.clone());
            }
            Kind::File | Kind::Stream => {
                // An unnamed file in the directory: it gets its name only
                // once its digest matched, and vanishes if the restore stops.
                let anon = openat(
                    &parent,
                    ".",
                    OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(m.mode & 0o777),
                );
                let fd = match anon {
                    Ok(fd) => {
                        anonymous = true;
                        fd
                    }
                    // No O_TMPFILE on this file system: a temporary name, renamed at the end.
                    Err(_) => {
                        let flags = OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC;
                        let mode = Mode::from_bits_truncate(m.mode & 0o777);
                        match openat(&parent, tmp.as_slice(), flags, mode) {
                            // A temporary name left by an earlier run that stopped: replace it.
                            Err(Errno::EEXIST) => {
                                let _ =
                                    unlinkat(&parent, tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
                                openat(&parent, tmp.as_slice(), flags, mode)
                            }
                            r => r,
                        }
                        .map_err(|e| self.os(&m.path, e))?
                    }
                };
                file = Some(File::from(fd));
            }
            Kind::Symlink | Kind::HardLink | Kind::Fifo | Kind::CharDevice | Kind::BlockDevice => {}
        }
        self.current = Some(Current {
            parent,
            name,
            tmp,
            file,
            pos: 0,
            written: 0,
            anonymous,
        });
        Ok(())
    }

    fn data(&mut self, d: &[u8]) -> Result<()> {
        let c = self.current.as_mut().expect("begun");
        if let Some(f) = &c.file {
            f.write_all_at(d, c.pos)
                .map_err(|e| Error::io(format!("writing {}", shown(&c.name)), e))?;
        }
        c.pos += d.len() as u64;
        c.written = c.pos;
        Ok(())
    }

    fn hole(&mut self, n: u64) -> Result<()> {
        let c = self.current.as_mut().expect("begun");
        c.pos += n;
        Ok(())
    }

    /// The object ended (`ok`: its digest matched): it is named, or, when
    /// it cannot be, whatever was made for it is removed.
    fn end(&mut self, e: &Entry, ok: bool) -> Result<()> {
        let Some(mut c) = self.current.take() else {
            return Ok(());
        };
        if !ok {
            self.discard(&c);
            return Ok(());
        }
        match self.name_object(&mut c, e) {
            Ok(true) => {
                self.restored += 1;
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(err) => {
                self.discard(&c);
                Err(err)
            }
        }
    }

    /// Removes the temporary name an object was being made under.
    fn discard(&self, c: &Current) {
        if !c.anonymous {
            let _ = unlinkat(&c.parent, c.tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
        }
    }

    /// A symlink, FIFO or device node made under its temporary name gets
    /// its owner, `mode` (not for a symlink), times, then its name.
    fn name_node(&self, c: &Current, m: &Meta, mode: Option<Mode>) -> Result<()> {
        if self.owners {
            let _ = fchownat(
                &c.parent,
                c.tmp.as_slice(),
                Some(Uid::from_raw(m.uid)),
                Some(Gid::from_raw(m.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
        if let Some(mode) = mode {
            let _ = fchmodat(
                &c.parent,
                c.tmp.as_slice(),
                mode,
                FchmodatFlags::FollowSymlink,
            );
        }
        let _ = utimensat(
            &c.parent,
            c.tmp.as_slice(),
            &ts(m.atime),
            &ts(m.mtime),
            UtimensatFlags::NoFollowSymlink,
        );
        renameat(&c.parent, c.tmp.as_slice(), &c.parent, c.name.as_slice())
            .map_err(|e| self.os(&m.path, e))
    }

    /// Gives a whole object its name and metadata. False: a hard link
    /// whose file is not in the destination, kept for a copy of the data.
    fn name_object(&mut self, c: &mut Current, e: &Entry) -> Result<bool> {
        let m = &e.meta;
        match m.kind {
            Kind::Dir => {}
            Kind::File | Kind::Stream => {
                let mut f = c.file.take().expect("a file was opened");
                if c.pos > c.written {
                    // A hole at the end: the length comes from set_len.
                    f.set_len(c.pos).map_err(|e| self.os(&m.path, e))?;
                }
                f.flush().map_err(|e| self.os(&m.path, e))?;
                self.apply_owner_xattrs(&f, m);
                // Created with its permission bits: set the mode again only
                // when the umask took some away or there are set-id or sticky
                // bits (which a change of owner would clear anyway).
                if m.mode & 0o7000 != 0 || m.mode & 0o777 & self.umask != 0 {
                    let _ = fchmod(&f, Mode::from_bits_truncate(m.mode & 0o7777));
                }
                let _ = futimens(&f, &ts(m.atime), &ts(m.mtime));
                if c.anonymous {
                    self.name_anonymous(&f, c, m)?;
                } else {
                    renameat(&c.parent, c.tmp.as_slice(), &c.parent, c.name.as_slice())
                        .map_err(|e| self.os(&m.path, e))?;
                }
            }
            Kind::Symlink => {
                let _ = unlinkat(&c.parent, c.tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
                symlinkat(m.target.as_slice(), &c.parent, c.tmp.as_slice())
                    .map_err(|e| self.os(&m.path, e))?;
                self.name_node(c, m, None)?;
            }
            Kind::Fifo | Kind::CharDevice | Kind::BlockDevice => {
                let (sflag, dev) = match m.kind {
                    Kind::Fifo => (SFlag::S_IFIFO, 0),
                    k => {
                        let n: [u8; 8] = m.target.as_slice().try_into().map_err(|_| {
                            self.err(&m.path, "a device without an 8-byte device number")
                        })?;
                        let f = if k == Kind::CharDevice {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (f, u64::from_be_bytes(n))
                    }
                };
                let mode = Mode::from_bits_truncate(m.mode & 0o7777);
                let _ = unlinkat(&c.parent, c.tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
                mknodat(&c.parent, c.tmp.as_slice(), sflag, mode, dev)
                    .map_err(|e| self.os(&m.path, e))?;
                // Made under the umask: its mode set exactly.
                self.name_node(c, m, Some(mode))?;
            }
            Kind::HardLink => {
                super::format::check_path(&m.target)?;
                // Its file's directory is not there (or was refused): nor is its file.
                let (tdir, tname) = match self.parent_of(&m.target) {
                    Ok(t) => t,
                    Err(err) if stops_restore(&err) => return Err(err),
                    Err(_) => {
                        self.orphans.push(e.clone());
                        return Ok(false);
                    }
                };
                let _ = unlinkat(&c.parent, c.tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
                match linkat(
                    &tdir,
                    tname.as_slice(),
                    &c.parent,
                    c.tmp.as_slice(),
                    AtFlags::empty(),
                ) {
                    Ok(()) => {}
                    // Its file was not restored (not selected, or it failed):
                    // the reading side restores a copy of the data instead.
                    Err(Errno::ENOENT) => {
                        self.orphans.push(e.clone());
                        return Ok(false);
                    }
                    Err(err) => {
                        return Err(
                            self.err(&m.path, format!("hard link to {}: {err}", shown(&m.target)))
                        )
                    }
                }
                renameat(&c.parent, c.tmp.as_slice(), &c.parent, c.name.as_slice())
                    .map_err(|e| self.os(&m.path, e))?;
            }
        }
        Ok(true)
    }
}

/// What the reading thread hands the writer thread, in stream order.
enum Op {
    Begin(Box<Entry>),
    /// The next this many bytes of the batch's data.
    Data(usize),
    Hole(u64),
    /// The object ended; whether its digest matched.
    End(bool),
    /// Send back the hard links whose file was not in the destination so
    /// far, so the reading side restores them as copies of the data.
    Orphans(Sender<Vec<Entry>>),
    /// Every object was handed over: apply directories' metadata.
    Finish,
}

/// Operations handed over together, so the threads meet once per batch,
/// not once per object.
#[derive(Default)]
struct Batch {
    ops: Vec<Op>,
    data: Vec<u8>,
}

/// A batch is handed over once it holds this many bytes or operations.
const BATCH_BYTES: usize = 1 << 20;
const BATCH_OPS: usize = 4096;
/// Batches in flight between the threads (memory: about this many times
/// [`BATCH_BYTES`] plus one segment's data). Deep enough to ride out the
/// file system's uneven pace: restoring 100,000 small files on tmpfs took
/// 0.83 s with 4 batches of 256 KiB, 0.70 s with 16 of 1 MiB.
const BATCHES: usize = 16;

/// What the writer thread did, when it ended.
struct Done {
    restored: u64,
    warnings: Vec<String>,
    failed: Vec<(String, String, bool)>,
}

/// A restore into a directory. The reading thread (the caller's) picks the
/// objects and checks their digests; a writer thread creates them, so file
/// system calls overlap reading, decrypting and hashing. What fails on the
/// writer thread is returned by the next call, or by [`Restore::finish`].
pub struct Restore {
    dest: Dest,
    /// The selection as bytes (written as `ls` prints names), without leading or trailing `/`.
    select: Vec<Vec<u8>>,
    /// The selection names objects exactly (no globs, nothing below them).
    exact: bool,
    /// Some object was selected.
    pub matched: bool,
    existing: Existing,
    /// The last directory looked up by [`Restore::exists`], by stored path.
    looked: Option<(Vec<u8>, OwnedFd)>,
    /// The last directory of the save set found missing from the
    /// destination: the restore creates it, so nothing in it predates the
    /// restore and its files need no look before they are written.
    fresh: Option<Vec<u8>>,
    batch: Batch,
    tx: Option<SyncSender<Batch>>,
    pool: Receiver<Batch>,
    writer: Option<JoinHandle<Result<Done>>>,
    pub restored: u64,
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
    /// Objects read whole but not written (name as shown, why).
    pub failed: Vec<(String, String)>,
}

impl Restore {
    /// A restore into `root` (created if missing) of the objects matching
    /// `select` (globs over stored paths, written as `ls` prints names:
    /// `\xNN` for a byte that is not UTF-8; all if empty), and what lies
    /// below a selected directory.
    pub fn new(root: &Path, select: Vec<String>, existing: Existing) -> Result<Self> {
        let select = select
            .iter()
            .map(|s| super::names::unescape(s.trim_start_matches('/').trim_end_matches('/')))
            .collect();
        let name = root.display().to_string();
        std::fs::create_dir_all(root).map_err(|e| Error::io(format!("destination {name}"), e))?;
        let fd = nix::fcntl::open(
            root,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format!("destination {name}"), e.into()))?;
        let theirs = Dest {
            root: fd
                .try_clone()
                .map_err(|e| Error::io(format!("destination {name}"), e))?,
            name: name.clone(),
        };
        // Read here, before the writer runs: reading it means setting it.
        let umask = current_umask();
        let (tx, rx) = sync_channel::<Batch>(BATCHES);
        let (pool_tx, pool) = channel::<Batch>();
        let writer = std::thread::Builder::new()
            .name("restore-writer".into())
            .spawn(move || write_batches(Writer::new(theirs, existing, umask), rx, pool_tx))
            .map_err(|e| Error::io("starting the restore's writer thread", e))?;
        Ok(Restore {
            dest: Dest { root: fd, name },
            select,
            exact: false,
            matched: false,
            existing,
            looked: None,
            fresh: None,
            batch: Batch::default(),
            tx: Some(tx),
            pool,
            writer: Some(writer),
            restored: 0,
            skipped: Vec::new(),
            warnings: Vec::new(),
            failed: Vec::new(),
        })
    }

    /// Whether `path` exists in the destination (without creating anything).
    fn exists(&mut self, path: &[u8]) -> bool {
        let (dir_path, name) = split(path);
        let stat = |dir: &OwnedFd| fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok();
        if let Some((p, fd)) = &self.looked {
            if p.as_slice() == dir_path {
                return stat(fd);
            }
        }
        match self.dest.open_dirs(path, dir_path, false) {
            Ok(d) => {
                let found = stat(&d);
                self.looked = Some((dir_path.to_vec(), d));
                found
            }
            Err(_) => false,
        }
    }

    fn push(&mut self, op: Op) -> Result<()> {
        self.batch.ops.push(op);
        if self.batch.ops.len() >= BATCH_OPS || self.batch.data.len() >= BATCH_BYTES {
            self.hand_over()?;
        }
        Ok(())
    }

    fn hand_over(&mut self) -> Result<()> {
        let next = self.pool.try_recv().unwrap_or_default();
        let b = std::mem::replace(&mut self.batch, next);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(b).is_ok());
        if sent {
            Ok(())
        } else {
            // The writer stopped: it failed, and says why when joined.
            Err(self.join().err().unwrap_or_else(|| Error::Format {
                reason: format!("restoring into {}: the writer stopped", self.dest.name),
            }))
        }
    }

    fn join(&mut self) -> Result<()> {
        self.tx = None;
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let done = w.join().map_err(|_| Error::Format {
            reason: format!(
                "restoring into {}: the writer thread panicked",
                self.dest.name
            ),
        })??;
        self.restored = done.restored;
        self.warnings.extend(done.warnings);
        // An object whose data did not read back whole is the reading
        // side's failure, said there already.
        self.failed.extend(
            done.failed
                .into_iter()
                .filter(|f| f.2)
                .map(|(p, why, _)| (p, why)),
        );
        Ok(())
    }

    /// Counts the objects read whole but not written as failed in
    /// `report` (after [`Restore::finish`]).
    pub fn settle(&self, report: &mut super::read::RunReport) {
        report.ok = report.ok.saturating_sub(self.failed.len() as u64);
        report.failed.extend(self.failed.iter().cloned());
    }

    /// The selection names exactly these objects (as `ls` prints them):
    /// `*`, `?` and `[` in a name are the name's own, and nothing below a
    /// directory named comes with it.
    pub fn exactly(mut self) -> Self {
        self.exact = true;
        self
    }

    /// Whether `p` is in the selection.
    fn selected(&self, p: &[u8]) -> bool {
        if self.exact {
            return self.select.iter().any(|s| s == p);
        }
        self.select.is_empty()
            || self
                .select
                .iter()
                .any(|s| glob_match(s, p) || (p.starts_with(s) && p.get(s.len()) == Some(&b'/')))
    }

    /// Waits for every object to be written, then applies directories'
    /// metadata, deepest first (their times change while they fill).
    pub fn finish(&mut self) -> Result<()> {
        if self.writer.is_none() {
            return Ok(());
        }
        self.batch.ops.push(Op::Finish);
        self.hand_over()?;
        self.join()
    }
}

impl Drop for Restore {
    /// Stops the writer: an object it had begun is not named.
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// The writer thread: applies batches until [`Op::Finish`], or until the
/// reading side stops (then an object begun is left unnamed). An object
/// that cannot be written is recorded and the next one goes on; only what
/// no object could survive (see [`stops_restore`]) stops it.
fn write_batches(mut w: Writer, rx: Receiver<Batch>, pool: Sender<Batch>) -> Result<Done> {
    let mut entry: Option<Box<Entry>> = None;
    // The object begun failed: the rest of its data is dropped.
    let mut failing = false;
    let r = (|| {
        for mut b in rx.iter() {
            let mut at = 0;
            for op in b.ops.drain(..) {
                match op {
                    Op::Begin(e) => {
                        failing = false;
                        if let Err(err) = w.begin(&e) {
                            w.failed(&e, err, true)?;
                            failing = true;
                        }
                        entry = Some(e);
                    }
                    Op::Data(n) => {
                        if !failing {
                            if let Err(err) = w.data(&b.data[at..at + n]) {
                                let e = entry.as_deref().expect("begun");
                                let _ = w.end(e, false);
                                w.failed(e, err, true)?;
                                failing = true;
                            }
                        }
                        at += n;
                    }
                    Op::Hole(n) => {
                        if !failing {
                            w.hole(n)?;
                        }
                    }
                    Op::End(ok) => {
                        if let Some(e) = entry.take() {
                            if failing {
                                // Said already; whether it read whole decides
                                // who counts it (see `Restore::settle`).
                                if let Some(f) = w.failed.last_mut() {
                                    f.2 = ok;
                                }
                            } else if let Err(err) = w.end(&e, ok) {
                                w.failed(&e, err, ok)?;
                            }
                        }
                        failing = false;
                    }
                    Op::Orphans(tx) => {
                        let _ = tx.send(std::mem::take(&mut w.orphans));
                    }
                    Op::Finish => {
                        w.finish()?;
                        return Ok(true);
                    }
                }
            }
            b.data.clear();
            let _ = pool.send(b);
        }
        Ok(false)
    })();
    if !matches!(r, Ok(true)) {
        // Stopped part-way: the object begun is dropped, never named.
        if let Some(e) = entry {
            let _ = w.end(&e, false);
        }
    }
    r.map(|_| Done {
        restored: w.restored,
        warnings: w.warnings,
        failed: w.failed,
    })
}

impl Sink for Restore {
    fn wanted(&mut self, e: &Entry) -> bool {
        let p = &e.meta.path;
        let selected = self.selected(p);
        self.matched |= selected;
        if !selected || self.existing == Existing::Replace {
            return selected;
        }
        if e.meta.kind == Kind::Dir {
            if !self.exists(p) {
                self.fresh = Some(p.clone());
            }
            return true;
        }
        if self.fresh.as_deref() != Some(split(p).0) && self.exists(p) {
            self.skipped.push(shown(p));
            return false;
        }
        true
    }

    fn begin(&mut self, e: &Entry) -> Result<()> {
        self.push(Op::Begin(Box::new(e.clone())))
    }

    fn data(&mut self, d: &[u8]) -> Result<()> {
        self.batch.data.extend_from_slice(d);
        self.push(Op::Data(d.len()))
    }

    fn hole(&mut self, n: u64) -> Result<()> {
        self.push(Op::Hole(n))
    }

    fn end(&mut self, _: &Entry, ok: bool) -> Result<()> {
        self.push(Op::End(ok))
    }

    fn selects(&self, path: &[u8]) -> bool {
        self.selected(path)
    }

    fn orphans(&mut self) -> Result<Vec<Entry>> {
        let (tx, rx) = channel();
        self.push(Op::Orphans(tx))?;
        self.hand_over()?;
        rx.recv().map_err(|_| {
            self.join().err().unwrap_or_else(|| Error::Format {
                reason: format!("restoring into {}: the writer stopped", self.dest.name),
            })
        })
    }
}

/// A sink that reads everything and writes nothing: `verify`.
#[derive(Default)]
pub struct Verify;

impl Sink for Verify {
    fn wanted(&mut self, _: &Entry) -> bool {
        true
    }
    fn begin(&mut self, _: &Entry) -> Result<()> {
        Ok(())
    }
    fn data(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn hole(&mut self, _: u64) -> Result<()> {
        Ok(())
    }
    fn end(&mut self, _: &Entry, _: bool) -> Result<()> {
        Ok(())
    }
}
