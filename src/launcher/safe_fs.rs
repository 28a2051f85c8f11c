//! File operations that never follow a link the run could have planted.
//!
//! The workspace is writable by the run's own containers, and a pod that
//! restarts runs `launcher init` again over whatever they left there: a
//! symlink at `.runyard/source.tar.gz.part` pointing into the binaries cache
//! (which `init` may write and workers may not) must not make `init`
//! overwrite a cached tool. So every file `init` creates is created new
//! (`O_CREAT | O_EXCL`, which never follows a final symlink, plus
//! `O_NOFOLLOW`), after removing whatever was at its path without following
//! it; and every directory it writes into is checked to be a real directory
//! (a link or a file there is removed and replaced by a directory).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
}

#[cfg(not(unix))]
fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    options
}

/// Creates a new file at `path`; fails if anything (a file, a dangling or
/// live symlink, a directory) is there.
pub fn create_new(path: &Path) -> io::Result<File> {
    no_follow(OpenOptions::new().write(true).create_new(true)).open(path)
}

/// Removes whatever is at `path` (a file, a link — not its target — or a
/// directory tree); nothing there is fine.
pub fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        // `remove_dir_all` does not follow links inside the tree.
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

/// A fresh file at `path`, replacing whatever was there without following it.
pub fn replace_file(path: &Path) -> io::Result<File> {
    remove_any(path)?;
    create_new(path)
}

/// Makes `path` a real directory: an existing directory is kept, anything
/// else there (a symlink to somewhere else, a file) is removed first. The
/// parent must already be a real directory.
pub fn ensure_dir(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            std::fs::remove_file(path)?;
            std::fs::create_dir(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(path),
        Err(e) => Err(e),
    }
}

/// [`ensure_dir`] for every component of `path` below `root` (which is
/// trusted: a mount point), e.g. `workspace/.runyard/binaries`.
pub fn ensure_dirs_below(root: &Path, path: &Path) -> io::Result<()> {
    let rel = path.strip_prefix(root).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not below {}", path.display(), root.display()),
        )
    })?;
    let mut current = root.to_path_buf();
    for part in rel.components() {
        current.push(part);
        ensure_dir(&current)?;
    }
    Ok(())
}

/// Writes `content` to `path` atomically: a new temporary file beside it
/// (never through a link), then a rename, which replaces a link at `path`
/// itself instead of writing through it.
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = replace_file(&tmp).and_then(|mut f| {
        f.write_all(content)?;
        f.sync_all()
    });
    match result {
        Ok(()) => std::fs::rename(&tmp, path),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_planted_link_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("cached-tool");
        std::fs::write(&target, b"original").expect("write");
        let planted = dir.path().join("download.part");
        std::os::unix::fs::symlink(&target, &planted).expect("symlink");
        assert!(create_new(&planted).is_err(), "O_EXCL refuses the link");
        {
            use std::io::Write;
            let mut f = replace_file(&planted).expect("replaced");
            f.write_all(b"attacker bytes").expect("write");
        }
        assert_eq!(std::fs::read(&target).expect("read"), b"original");
        assert!(!std::fs::symlink_metadata(&planted)
            .expect("meta")
            .file_type()
            .is_symlink());

        let linked_dir = dir.path().join("state");
        std::os::unix::fs::symlink(dir.path(), &linked_dir).expect("symlink");
        ensure_dir(&linked_dir).expect("replaced by a directory");
        assert!(std::fs::symlink_metadata(&linked_dir)
            .expect("meta")
            .is_dir());
        write_atomic(&dir.path().join("cached-tool"), b"new").expect("write");
        assert_eq!(std::fs::read(&target).expect("read"), b"new");
    }
}
