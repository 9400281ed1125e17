//! The key manager's own files (keystore and its WAL, audit log, backups) and the directory it makes for them: readable by its user only, 0600 and 0700, whatever the umask.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents, each new one 0700 (existing ones are left as they are).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A new file, 0600 (it must not exist).
pub fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// An append-only file (the audit log), made 0600 if new; an existing one
/// readable by others is made 0600.
pub fn open_append(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    tighten_file(&f)?;
    Ok(f)
}

/// Makes `path` 0600 if it exists and others or its group may read it.
///
/// By path (stat and chmod), never by opening it: closing any descriptor of
/// a file drops every POSIX lock this process holds on it, and SQLite's
/// locks on the keystore and its `-shm` file are such locks.
pub fn tighten(path: &Path) -> io::Result<()> {
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(private_mode(mode)))?;
    }
    Ok(())
}

fn tighten_file(f: &File) -> io::Result<()> {
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(private_mode(mode)))?;
    }
    Ok(())
}

/// The owner's bits of `mode`, with read and write; nothing for group and others.
fn private_mode(mode: u32) -> u32 {
    (mode & 0o700) | 0o600
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_are_private_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        // SAFETY: umask(2) in a test; it only changes the modes of files made after it.
        let old = unsafe { libc::umask(0o022) };
        let dir = d.path().join("a/b");
        create_dir(&dir).unwrap();
        let f = dir.join("ks.db");
        drop(create_file(&f).unwrap());
        let log = dir.join("audit.log");
        drop(open_append(&log).unwrap());
        let loose = dir.join("old");
        std::fs::write(&loose, b"x").unwrap();
        assert_eq!(
            std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777,
            0o644
        );
        tighten(&loose).unwrap();
        unsafe { libc::umask(old) };
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&d.path().join("a"))), (0o700, 0o700));
        assert_eq!((mode(&f), mode(&log), mode(&loose)), (0o600, 0o600, 0o600));
        assert!(create_file(&f).is_err(), "never over an existing file");
    }
}
