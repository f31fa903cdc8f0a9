//! The one helper through which clan resolves, reads and writes paths inside a tree (the clan
//! directory, a generator's `$out`, an import directory, a machine's `/`), so that nothing a
//! hostile commit, generator script or local user puts there makes clan touch a file outside
//! it.
//!
//! A [`Tree`] holds a directory file descriptor. Every path given to it is relative, resolved
//! beneath that descriptor with Linux `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` — or, on kernels without `openat2`, one `openat(O_NOFOLLOW)` per
//! component — so a symbolic link anywhere in the path is an error naming it, never followed.
//! Files are read only when `fstat` says they are regular files (a FIFO never blocks, a device
//! is never read), up to a size limit; writes are atomic (a `0600` temporary file in the same
//! directory, synced, then renamed); removal never descends through a link; a link that clan
//! itself stores as data (sops recipient links) is read with [`Tree::read_link`]. Files
//! outside any tree the caller holds (state files, keys, caches) are written atomically by
//! [`write_file`], the one implementation of atomic and private writes.
//!
//! [`system`] applies the machine-side policy of the agent, which must follow the system's own
//! links (`/lib → usr/lib`) but none a non-root user controls.
//!
//! This crate must never follow a symbolic link it was not told to trust, and never open a
//! file that is not regular for reading.

mod error;
pub mod system;
mod tree;

use std::path::Path;

pub use error::{Error, Kind};
pub use tree::{Entry, Tree, WriteOptions};

/// A size limit for files clan reads as values (public vars, sops files, manifests).
pub const DEFAULT_LIMIT: u64 = 64 << 20;

#[cfg(test)]
mod tests;

/// Replaces the file at `path` atomically, as [`Tree::write`] does (`0600` temporary file
/// beside it, owner and mode set, synced, renamed, directory synced), for a file whose
/// directory the caller chose: links in the directory's own path are followed, the file
/// itself is never followed. The directory must exist.
pub fn write_file(path: &Path, content: &[u8], options: WriteOptions) -> Result<(), Error> {
    let (dir, name) = split(path)?;
    Tree::open(dir)?.write(name, content, options)
}

/// [`write_file`] with the temporary file in `staging` (on the same file system), for
/// directories where any name beside `path` would be read as data.
pub fn write_file_staged(
    path: &Path,
    staging: &Path,
    content: &[u8],
    options: WriteOptions,
) -> Result<(), Error> {
    let (dir, name) = split(path)?;
    Tree::open(dir)?.write_staged(name, content, options, &Tree::open(staging)?)
}

/// Whether the directory `path` can be changed by this process's user only: a real directory,
/// not a link, owned by the effective user, writable by neither group nor others, in a
/// directory where no one else can rename it (owned by this user or root, and not writable by
/// others unless sticky, as `/tmp`). What clan reads back from a cache must be in such a place:
/// in a shared one another user could plant what root then trusts.
pub fn only_mine(path: &Path) -> bool {
    const STICKY: u32 = 0o1000;
    let me = rustix::process::geteuid().as_raw();
    let directory = |dir: &Path, ok: &dyn Fn(&rustix::fs::Stat) -> bool| {
        rustix::fs::lstat(dir)
            .is_ok_and(|st| Kind::from_mode(st.st_mode) == Kind::Directory && ok(&st))
    };
    let mine = directory(path, &|st| st.st_uid == me && st.st_mode & 0o022 == 0);
    let holder_safe = match path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        None => true,
        Some(parent) => directory(parent, &|st| {
            (st.st_uid == me || st.st_uid == 0)
                && (st.st_mode & 0o022 == 0 || st.st_mode & STICKY != 0)
        }),
    };
    mine && holder_safe
}

/// Whether no one but this process's user (and root) can change the directory `path` or any
/// directory above it: each a real directory, owned by this user or root, writable by no one
/// else unless sticky (`/tmp`). Below such a path another user can neither plant a link nor
/// rename a directory, so state written there (keys, disks) stays where it was written.
pub fn private_ancestry(path: &Path) -> bool {
    const STICKY: u32 = 0o1000;
    let me = rustix::process::geteuid().as_raw();
    let Ok(path) = std::path::absolute(path) else {
        return false;
    };
    path.ancestors().all(|dir| {
        rustix::fs::lstat(dir).is_ok_and(|st| {
            Kind::from_mode(st.st_mode) == Kind::Directory
                && (st.st_uid == me || st.st_uid == 0)
                && (st.st_mode & 0o022 == 0 || st.st_mode & STICKY != 0)
        })
    })
}

/// `path`'s directory (`.` for a bare name) and file name.
fn split(path: &Path) -> Result<(&Path, &Path), Error> {
    let name = path.file_name().ok_or_else(|| Error::NotAFile {
        path: path.to_path_buf(),
        kind: Kind::Directory,
    })?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, Path::new(name)))
}
