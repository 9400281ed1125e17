//! Restoring objects into a destination directory, never outside it.
//!
//! Every path is walked from the destination one component at a time with
//! `O_NOFOLLOW`: a symlink already in the destination is never followed,
//! and stored paths cannot hold `..` or be absolute (the format refuses
//! them). Content goes to a temporary name and is renamed into place only
//! after its digest matched, so a failed object never looks restored.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, futimens, mkdirat, utimensat, Mode, SFlag, UtimensatFlags};
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
    parent: OwnedFd,
    name: Vec<u8>,
    tmp: Vec<u8>,
    file: Option<File>,
    pos: u64,
    /// End of the last data written.
    written: u64,
    /// The file has no name yet (O_TMPFILE) rather than a temporary one.
    anonymous: bool,
}

/// A restore into a directory.
pub struct Restore {
    root: OwnedFd,
    root_name: String,
    select: Vec<String>,
    existing: Existing,
    owners: bool,
    current: Option<Current>,
    /// Suffix of temporary names (".cinta-PID").
    tmp_suffix: String,
    /// The restoring user's (uid, gid): new files already belong to it.
    ids: (u32, u32),
    /// The last parent directory opened, by its stored path: consecutive
    /// objects mostly share one.
    parent: Option<(Vec<u8>, OwnedFd)>,
    dirs: Vec<Meta>,
    pub restored: u64,
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
}

/// A stored path's directory part and last name.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    }
}

fn shown(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn ts((s, ns): (i64, u32)) -> TimeSpec {
    TimeSpec::new(s, i64::from(ns))
}

impl Restore {
    /// A restore into `root` (created if missing) of the objects matching
    /// `select` (globs over stored paths; all if empty), and what lies below
    /// a selected directory.
    pub fn new(root: &Path, select: Vec<String>, existing: Existing) -> Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("destination {}", root.display()), e))?;
        let fd = nix::fcntl::open(
            root,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format!("destination {}", root.display()), e.into()))?;
        Ok(Restore {
            root: fd,
            root_name: root.display().to_string(),
            select,
            existing,
            owners: nix::unistd::geteuid().is_root(),
            current: None,
            parent: None,
            tmp_suffix: format!(".cinta-{}", std::process::id()),
            ids: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            dirs: Vec::new(),
            restored: 0,
            skipped: Vec::new(),
            warnings: Vec::new(),
        })
    }

    fn err(&self, path: &[u8], reason: impl std::fmt::Display) -> Error {
        Error::Format {
            reason: format!(
                "restoring {} into {}: {reason}",
                shown(path),
                self.root_name
            ),
        }
    }

    /// Opens the directory that will hold `path`, creating missing
    /// directories, following no symlink. Returns it and the last name.
    fn parent_of(&mut self, path: &[u8]) -> Result<(OwnedFd, Vec<u8>)> {
        let (dir_path, name) = split(path);
        let name = name.to_vec();
        if let Some((p, fd)) = &self.parent {
            if p.as_slice() == dir_path {
                return Ok((
                    fd.try_clone()
                        .map_err(|e| Error::io(self.root_name.clone(), e))?,
                    name,
                ));
            }
        }
        let dir = self.open_dirs(path, dir_path, true)?;
        self.parent = Some((
            dir_path.to_vec(),
            dir.try_clone()
                .map_err(|e| Error::io(self.root_name.clone(), e))?,
        ));
        Ok((dir, name))
    }

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
            .map_err(|e| Error::io(self.root_name.clone(), e))?;
        for c in parts {
            let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
            let next = match openat(&dir, c, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(&dir, c, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(self
                                .err(path, format!("cannot create directory {}: {e}", shown(c))))
                        }
                    }
                    openat(&dir, c, flags, Mode::empty())
                        .map_err(|e| self.err(path, format!("{}: {e}", shown(c))))?
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
                Err(e) => return Err(self.err(path, format!("{}: {e}", shown(c)))),
            };
            dir = next;
        }
        Ok(dir)
    }

    /// Whether `path` exists in the destination (without creating anything).
    fn exists(&self, path: &[u8]) -> bool {
        let (dir_path, name) = split(path);
        let stat = |dir: &OwnedFd| fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok();
        match &self.parent {
            Some((p, fd)) if p.as_slice() == dir_path => stat(fd),
            _ => self
                .open_dirs(path, dir_path, false)
                .is_ok_and(|d| stat(&d)),
        }
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
                link(&c.parent, &c.tmp).map_err(|e| self.err(&m.path, e))?;
                renameat(&c.parent, c.tmp.as_slice(), &c.parent, c.name.as_slice())
                    .map_err(|e| self.err(&m.path, e))
            }
            Err(e) => Err(self.err(&m.path, e)),
        }
    }

    /// Applies directories' metadata, deepest first (their times change while they fill).
    pub fn finish(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for m in dirs.iter().rev() {
            let (parent, name) = self.parent_of(&m.path)?;
            let fd = openat(
                &parent,
                name.as_slice(),
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY,
                Mode::empty(),
            )
            .map_err(|e| self.err(&m.path, e))?;
            self.apply_owner_xattrs(&fd, m);
            let _ = fchmod(&fd, Mode::from_bits_truncate(m.mode & 0o7777));
            let _ = futimens(&fd, &ts(m.atime), &ts(m.mtime));
        }
        Ok(())
    }
}

impl Sink for Restore {
    fn wanted(&mut self, e: &Entry) -> bool {
        let p = &e.meta.path;
        let selected = self.select.is_empty()
            || self.select.iter().any(|s| {
                let s = s.trim_start_matches('/').trim_end_matches('/').as_bytes();
                glob_match(s, p) || (p.starts_with(s) && p.get(s.len()) == Some(&b'/'))
            });
        if !selected {
            return false;
        }
        if self.existing == Existing::Keep && e.meta.kind != Kind::Dir && self.exists(p) {
            self.skipped.push(shown(p));
            return false;
        }
        true
    }

    fn begin(&mut self, e: &Entry) -> Result<()> {
        let m = &e.meta;
        let (parent, name) = self.parent_of(&m.path)?;
        let tmp = [b".".as_slice(), &name, self.tmp_suffix.as_bytes()].concat();
        let mut file = None;
        let mut anonymous = false;
        match m.kind {
            Kind::Dir => {
                match mkdirat(&parent, name.as_slice(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        let st = fstatat(&parent, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)
                            .map_err(|e| self.err(&m.path, e))?;
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                            return Err(self.err(
                                &m.path,
                                "refused: it exists in the destination and is not a directory",
                            ));
                        }
                    }
                    Err(e) => return Err(self.err(&m.path, e)),
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
                    Mode::from_bits_truncate(0o600),
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
                        let mode = Mode::from_bits_truncate(0o600);
                        match openat(&parent, tmp.as_slice(), flags, mode) {
                            // A temporary name left by an earlier run that stopped: replace it.
                            Err(Errno::EEXIST) => {
                                let _ =
                                    unlinkat(&parent, tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
                                openat(&parent, tmp.as_slice(), flags, mode)
                            }
                            r => r,
                        }
                        .map_err(|e| self.err(&m.path, e))?
                    }
                };
                file = Some(File::from(fd));
            }
            Kind::Symlink | Kind::HardLink => {}
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

    fn end(&mut self, e: &Entry, ok: bool) -> Result<()> {
        let Some(mut c) = self.current.take() else {
            return Ok(());
        };
        let m = &e.meta;
        if !ok {
            if c.file.is_some() && !c.anonymous {
                let _ = unlinkat(&c.parent, c.tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
            }
            return Ok(());
        }
        match m.kind {
            Kind::Dir => {}
            Kind::File | Kind::Stream => {
                let mut f = c.file.take().expect("a file was opened");
                if c.pos > c.written {
                    // A hole at the end: the length comes from set_len.
                    f.set_len(c.pos).map_err(|e| self.err(&m.path, e))?;
                }
                f.flush().map_err(|e| self.err(&m.path, e))?;
                self.apply_owner_xattrs(&f, m);
                let _ = fchmod(&f, Mode::from_bits_truncate(m.mode & 0o7777));
                let _ = futimens(&f, &ts(m.atime), &ts(m.mtime));
                if c.anonymous {
                    self.name_anonymous(&f, &c, m)?;
                } else {
                    renameat(&c.parent, c.tmp.as_slice(), &c.parent, c.name.as_slice())
                        .map_err(|e| self.err(&m.path, e))?;
                }
            }
            Kind::Symlink => {
                let _ = unlinkat(&c.parent, c.tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
                symlinkat(m.target.as_slice(), &c.parent, c.tmp.as_slice())
                    .map_err(|e| self.err(&m.path, e))?;
                if self.owners {
                    let _ = fchownat(
                        &c.parent,
                        c.tmp.as_slice(),
                        Some(Uid::from_raw(m.uid)),
                        Some(Gid::from_raw(m.gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
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
                    .map_err(|e| self.err(&m.path, e))?;
            }
            Kind::HardLink => {
                super::format::check_path(&m.target)?;
                let (tdir, tname) = self.parent_of(&m.target)?;
                let _ = unlinkat(&c.parent, c.tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
                linkat(
                    &tdir,
                    tname.as_slice(),
                    &c.parent,
                    c.tmp.as_slice(),
                    AtFlags::empty(),
                )
                .map_err(|e| {
                    self.err(
                        &m.path,
                        format!("hard link to {} (restore it too): {e}", shown(&m.target)),
                    )
                })?;
                renameat(&c.parent, c.tmp.as_slice(), &c.parent, c.name.as_slice())
                    .map_err(|e| self.err(&m.path, e))?;
            }
        }
        self.restored += 1;
        Ok(())
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
