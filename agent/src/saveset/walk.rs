//! What a save reads: a directory tree (with include/exclude patterns), one file, or standard input.

use std::ffi::OsStr;
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

/// The path an object is stored under: its absolute path without the leading `/`.
pub fn stored_path(abs: &Path) -> Vec<u8> {
    abs.as_os_str()
        .as_bytes()
        .strip_prefix(b"/")
        .unwrap_or(abs.as_os_str().as_bytes())
        .to_vec()
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
    let list = |dir: &Path| -> Result<std::vec::IntoIter<std::ffi::OsString>> {
        let rd = std::fs::read_dir(dir)
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
        let md = match std::fs::symlink_metadata(&path) {
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
}
