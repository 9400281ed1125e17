//! What a save reads: a directory tree (with include/exclude patterns), one file, or standard input.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Matches `path` against a glob: `*` and `?` within one component, `**`
/// across components. A pattern without `/` matches any final component.
pub fn glob_match(pattern: &[u8], path: &[u8]) -> bool {
    if !pattern.contains(&b'/') {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        return matches(pattern, name);
    }
    matches(pattern, path)
}

fn matches(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
            (0..=s.len())
                .any(|i| (i == 0 || s[i - 1] == b'/' || rest.is_empty()) && matches(rest, &s[i..]))
        }
        Some(b'*') => (0..=s.len())
            .take_while(|&i| i == 0 || s[i - 1] != b'/')
            .any(|i| matches(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && s[0] != b'/' && matches(&p[1..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && matches(&p[1..], &s[1..]),
    }
}

/// Include and exclude patterns of a tree source.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Filter {
    /// Whether an entry (relative to the source root) is excluded.
    pub fn excluded(&self, rel: &[u8]) -> bool {
        self.exclude.iter().any(|p| glob_match(p.as_bytes(), rel))
    }
    /// Whether a file is wanted (directories are always walked).
    pub fn included(&self, rel: &[u8]) -> bool {
        self.include.is_empty() || self.include.iter().any(|p| glob_match(p.as_bytes(), rel))
    }
}

/// Paths at least this long are not handed to the kernel as they are (it
/// refuses those over PATH_MAX, 4096 bytes): see [`Access`].
const LONG_PATH: usize = 3840;

/// Paths the kernel accepts for entries of a tree of any depth: a path as
/// it is when short, else `/proc/self/fd/N/NAME` with N a descriptor of its
/// directory, opened a piece of the path at a time (as the restore walks
/// with `*at` calls). One directory is kept open: entries come directory by
/// directory.
#[derive(Default)]
pub struct Access {
    dir: Option<(PathBuf, OwnedFd)>,
}

impl Access {
    /// A path for `abs` that is short enough to use.
    pub fn path<'p>(&mut self, abs: &'p Path) -> std::io::Result<Cow<'p, Path>> {
        if abs.as_os_str().len() < LONG_PATH {
            return Ok(Cow::Borrowed(abs));
        }
        let (Some(dir), Some(name)) = (abs.parent(), abs.file_name()) else {
            return Ok(Cow::Borrowed(abs));
        };
        if self.dir.as_ref().map(|(p, _)| p.as_path()) != Some(dir) {
            self.dir = None;
            self.dir = Some((dir.to_path_buf(), open_long_dir(dir)?));
        }
        let fd = self.dir.as_ref().expect("just opened").1.as_raw_fd();
        Ok(Cow::Owned(
            Path::new(&format!("/proc/self/fd/{fd}")).join(name),
        ))
    }
}

/// Opens directory `dir` (any length) for use as a path prefix, a piece
/// shorter than [`LONG_PATH`] at a time.
fn open_long_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{open, openat, OFlag};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut rest = dir.as_os_str().as_bytes();
    let mut fd: Option<OwnedFd> = None;
    while !rest.is_empty() {
        let cut = if rest.len() < LONG_PATH {
            rest.len()
        } else {
            match rest[..LONG_PATH].iter().rposition(|&b| b == b'/') {
                Some(i) if i > 0 => i,
                _ => return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG)),
            }
        };
        let piece = OsStr::from_bytes(&rest[..cut]);
        let next = match &fd {
            None => open(piece, flags, Mode::empty()),
            Some(d) => openat(d, piece, flags, Mode::empty()),
        }?;
        fd = Some(next);
        rest = &rest[cut..];
        while let Some(r) = rest.strip_prefix(b"/") {
            rest = r;
        }
    }
    fd.ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))
}

/// The path an object is stored under: its absolute path without the leading `/`.
pub fn stored_path(abs: &Path) -> Vec<u8> {
    abs.as_os_str()
        .as_bytes()
        .strip_prefix(b"/")
        .unwrap_or(abs.as_os_str().as_bytes())
        .to_vec()
}

/// Whether an entry changed since `since` (seconds since 1970; `None`:
/// everything counts as changed), by its modification or change time: what
/// an incremental or cumulative save takes.
pub fn changed_since(md: &std::fs::Metadata, since: Option<i64>) -> bool {
    use std::os::unix::fs::MetadataExt;
    since.is_none_or(|t| md.mtime() > t || md.ctime() > t)
}

/// What [`walk`] calls for each entry: absolute path, path relative to the root, metadata.
pub type Visit<'a> = dyn FnMut(&Path, &[u8], &std::fs::Metadata) -> Result<()> + 'a;

/// Walks a tree depth-first in name order, without following symlinks,
/// calling `visit` with each entry's absolute path, its path relative to
/// the root and its metadata (not following symlinks); the root comes first.
pub fn walk(root: &Path, filter: &Filter, visit: &mut Visit<'_>) -> Result<()> {
    let root_md =
        std::fs::symlink_metadata(root).map_err(|e| Error::io(root.display().to_string(), e))?;
    visit(root, b"", &root_md)?;
    // A stack of directories still to list; each holds its sorted entries.
    let mut stack: Vec<(PathBuf, Vec<u8>, std::vec::IntoIter<std::ffi::OsString>)> = Vec::new();
    let mut access = Access::default();
    let mut list = |dir: &Path| -> Result<std::vec::IntoIter<std::ffi::OsString>> {
        let rd = access
            .path(dir)
            .and_then(|p| std::fs::read_dir(&*p))
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let mut names = Vec::new();
        for e in rd {
            names.push(
                e.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
                    .file_name(),
            );
        }
        names.sort();
        Ok(names.into_iter())
    };
    if std::fs::symlink_metadata(root)
        .map_err(|e| Error::io(root.display().to_string(), e))?
        .is_dir()
    {
        stack.push((root.to_path_buf(), Vec::new(), list(root)?));
    }
    let mut look = Access::default();
    while let Some((dir, rel, names)) = stack.last_mut() {
        let Some(name) = names.next() else {
            stack.pop();
            continue;
        };
        let path = dir.join(&name);
        let mut r = rel.clone();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(OsStr::new(&name).as_bytes());
        if filter.excluded(&r) {
            continue;
        }
        let md = match look
            .path(&path)
            .and_then(|p| std::fs::symlink_metadata(&*p))
        {
            Ok(m) => m,
            // Gone between listing and looking: it is simply not saved.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(path.display().to_string(), e)),
        };
        if md.is_dir() {
            visit(&path, &r, &md)?;
            let names = list(&path)?;
            stack.push((path, r, names));
        } else if filter.included(&r) {
            visit(&path, &r, &md)?;
        }
    }
    Ok(())
}

/// How many entries [`walk_ahead`] may list ahead of its visitor (each
/// regular file among them is held open: well within the usual 1024
/// descriptors).
pub const AHEAD: usize = 256;

/// Entries are handed over this many at a time, so the threads meet once
/// per batch rather than once per file.
const BATCH: usize = 32;

/// Files up to this size are read ahead whole by [`walk_ahead`]; larger ones
/// get the kernel's own sequential read-ahead once they are read.
const READ_AHEAD_MAX: u64 = 1 << 20;

/// A regular file [`walk_ahead`] opened, and its extended attributes.
pub struct Opened {
    pub file: File,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Attributes that could not be read, named.
    pub warnings: Vec<String>,
}

/// What [`walk_ahead`] calls for each entry: as [`Visit`], with regular
/// files already open (`None` when opening failed: the visitor opens again
/// and meets the error itself).
pub type VisitOpen<'a> =
    dyn FnMut(&Path, &[u8], &std::fs::Metadata, Option<Opened>) -> Result<()> + 'a;

/// Extended attributes of `path`, read through `file` when it is open (no
/// path lookup), else through the path; those that cannot be read are
/// named in `warnings`.
pub fn read_xattrs(
    path: &Path,
    file: Option<&File>,
    warnings: &mut Vec<String>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
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
                    Ok(Some(v)) => out.push((n.as_bytes().to_vec(), v)),
                    Ok(None) => {}
                    Err(e) => warnings.push(format!(
                        "{}: extended attribute {n:?} not read: {e}",
                        path.display()
                    )),
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
        Err(e) => warnings.push(format!(
            "{}: extended attributes not read: {e}",
            path.display()
        )),
    }
    out
}

/// [`walk`] on a second thread, up to [`AHEAD`] entries ahead of `visit`:
/// it opens each regular file and reads its extended attributes, and asks
/// the kernel to read each small file's content while the entries before
/// it are still being saved.
/// Listing directories and reading many small files is latency, not
/// bandwidth: this keeps several reads in flight instead of one, and takes
/// the opening off the saving thread. Same entries, same order, same errors
/// as [`walk`]. Files unchanged since `since` are neither opened nor read:
/// an incremental save leaves them out.
pub fn walk_ahead(
    root: &Path,
    filter: &Filter,
    since: Option<i64>,
    visit: &mut VisitOpen<'_>,
) -> Result<()> {
    type Batch = Vec<(PathBuf, Vec<u8>, std::fs::Metadata, Option<Opened>)>;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(AHEAD / BATCH);
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut batch = Batch::with_capacity(BATCH);
            let stopped = || Error::Format {
                reason: "stopped".into(),
            };
            // Per file system (device): whether its files live in memory anyway.
            let mut in_memory: Vec<(u64, bool)> = Vec::new();
            let mut access = Access::default();
            let r = walk(root, filter, &mut |abs, rel, md| {
                use std::os::unix::fs::MetadataExt;
                if md.is_dir() && !in_memory.iter().any(|&(d, _)| d == md.dev()) {
                    let m = access.path(abs).is_ok_and(|p| memory_fs(&p));
                    in_memory.push((md.dev(), m));
                }
                let file = if md.is_file() && changed_since(md, since) {
                    access.path(abs).and_then(|p| open_file(&p, md)).ok()
                } else {
                    None
                };
                let opened = file.map(|f| {
                    let small = md.len() > 0 && md.len() <= READ_AHEAD_MAX;
                    if small && in_memory.iter().any(|&(d, m)| d == md.dev() && !m) {
                        read_ahead(&f, md.len());
                    }
                    let mut warnings = Vec::new();
                    let xattrs = read_xattrs(abs, Some(&f), &mut warnings);
                    Opened {
                        file: f,
                        xattrs,
                        warnings,
                    }
                });
                batch.push((abs.to_path_buf(), rel.to_vec(), md.clone(), opened));
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Batch::with_capacity(BATCH));
                    // The visitor stopped (it failed): stop listing.
                    tx.send(Ok(full)).map_err(|_| stopped())?;
                }
                Ok(())
            });
            let _ = match r {
                Ok(()) => tx.send(Ok(batch)),
                // What was listed before the error is still visited first.
                Err(e) => tx.send(Ok(batch)).and_then(|()| tx.send(Err(e))),
            };
        });
        // The receiver is dropped on return, which stops the walker.
        for batch in rx {
            for (abs, rel, md, file) in batch? {
                visit(&abs, &rel, &md, file)?;
            }
        }
        Ok(())
    })
}

/// Opens a file to save (listed as `md`), never through a symlink swapped
/// in since it was listed, never waiting on a FIFO swapped in (O_NONBLOCK
/// changes nothing for a regular file). Reading it leaves its access time
/// as it was (O_NOATIME, as borg and `tar --atime-preserve=system` do): a
/// save is not a use, and "not read for a year" stays true. The kernel
/// allows that to the file's owner and to root; others read it plainly.
pub fn open_file(abs: &Path, md: &std::fs::Metadata) -> std::io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let euid = *EUID.get_or_init(|| nix::unistd::geteuid().as_raw());
    let open = |noatime: libc::c_int| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | noatime)
            .open(abs)
    };
    if euid == 0 || euid == md.uid() {
        match open(libc::O_NOATIME) {
            // Root without CAP_FOWNER, or the owner changed since listing.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            r => return r,
        }
    }
    open(0)
}

/// Whether the file system holding `dir` keeps its files in memory
/// (tmpfs, ramfs): nothing to read ahead there.
fn memory_fs(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    // RAMFS_MAGIC (linux/magic.h), which neither libc nor nix names.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    statfs(dir).is_ok_and(|s| [TMPFS_MAGIC, RAMFS_MAGIC].contains(&s.filesystem_type()))
}

/// Starts reading a file's content into the page cache, without waiting.
/// Only a hint: it changes nothing the save reads.
fn read_ahead(f: &File, len: u64) {
    let _ = nix::fcntl::posix_fadvise(
        f,
        0,
        len as libc::off_t,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.log", b"a/b/x.log"));
        assert!(!glob_match(b"*.log", b"a/b/x.log.1"));
        assert!(glob_match(b"a/*/c", b"a/b/c"));
        assert!(!glob_match(b"a/*/c", b"a/b/x/c"));
        assert!(glob_match(b"a/**/c", b"a/b/x/c"));
        assert!(glob_match(b"a/**/c", b"a/c"));
        assert!(glob_match(b"**/tmp", b"x/y/tmp"));
        assert!(glob_match(b"f?le", b"dir/file"));
        assert!(!glob_match(b"f?le", b"dir/fle"));
    }

    fn listed(root: &Path, how: fn(&Path, &Filter, &mut Visit<'_>) -> Result<()>) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        how(root, &Filter::default(), &mut |_, rel, _| {
            v.push(rel.to_vec());
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn walking_ahead_gives_the_same_entries_in_the_same_order() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..(AHEAD * 2 + 7) {
            let d = t.path().join(format!("d{}", i % 5));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("f{i}")), vec![7u8; i % 3000]).unwrap();
        }
        std::os::unix::fs::symlink("d0/f0", t.path().join("link")).unwrap();
        // Where the file system has user xattrs, one file carries one.
        let noted = xattr::set(t.path().join("d1/f1"), "user.cinta.note", b"kept").is_ok();
        let plain = listed(t.path(), walk);
        assert_eq!(plain.len(), AHEAD * 2 + 7 + 5 + 2);
        // Ahead: the same, and each regular file comes open, holding its
        // own content, with its own extended attributes.
        let mut ahead = Vec::new();
        let mut with_note = 0;
        walk_ahead(
            t.path(),
            &Filter::default(),
            None,
            &mut |abs, rel, md, opened| {
                assert_eq!(opened.is_some(), md.is_file(), "{abs:?}");
                if let Some(mut o) = opened {
                    let mut content = Vec::new();
                    std::io::Read::read_to_end(&mut o.file, &mut content).unwrap();
                    assert_eq!(content, std::fs::read(abs).unwrap());
                    assert_eq!(o.xattrs, read_xattrs(abs, None, &mut Vec::new()));
                    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
                    with_note += o
                        .xattrs
                        .iter()
                        .filter(|(n, v)| n == b"user.cinta.note" && v == b"kept")
                        .count();
                }
                ahead.push(rel.to_vec());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(ahead, plain);
        assert_eq!(with_note, usize::from(noted));
    }

    #[test]
    fn walking_ahead_for_an_incremental_opens_only_changed_files() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..40 {
            std::fs::write(t.path().join(format!("f{i:02}")), b"x").unwrap();
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let opened = |since: Option<i64>| {
            let (mut files, mut open) = (0, 0);
            walk_ahead(
                t.path(),
                &Filter::default(),
                since,
                &mut |_, _, md, file| {
                    files += usize::from(md.is_file());
                    open += usize::from(file.is_some());
                    Ok(())
                },
            )
            .unwrap();
            (files, open)
        };
        assert_eq!(opened(None), (40, 40));
        assert_eq!(
            opened(Some(now - 3600)),
            (40, 40),
            "all changed since an hour ago"
        );
        assert_eq!(
            opened(Some(now + 3600)),
            (40, 0),
            "none changed since: none opened"
        );
    }

    #[test]
    fn walking_ahead_stops_at_the_visitors_error_and_returns_it() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..(AHEAD * 3) {
            std::fs::write(t.path().join(format!("f{i:05}")), b"x").unwrap();
        }
        let mut seen = 0;
        let r = walk_ahead(t.path(), &Filter::default(), None, &mut |_, rel, _, _| {
            seen += 1;
            if rel == b"f00010" {
                return Err(Error::Format {
                    reason: "visitor says no".into(),
                });
            }
            Ok(())
        });
        assert!(matches!(r, Err(Error::Format { reason }) if reason == "visitor says no"));
        assert_eq!(seen, 12, "the root, then f00000 to f00010");
        let gone = walk_ahead(
            &t.path().join("missing"),
            &Filter::default(),
            None,
            &mut |_, _, _, _| Ok(()),
        );
        assert!(gone.is_err());
    }
}
