//! [`Tree`]: a directory descriptor and the operations on relative paths beneath it.

use std::ffi::{OsStr, OsString};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rand::RngCore as _;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;

use crate::{Error, Kind};

/// Set once `openat2` answered `ENOSYS`: from then on paths are walked one component at a time.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A directory, held open; every path given to it is relative to it and resolved beneath it
/// without following any symbolic link.
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
    /// Where the directory was when opened, for messages.
    path: PathBuf,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
}

/// How [`Tree::write`] writes.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
}

impl WriteOptions {
    /// Mode `mode`, owned by the caller, synced (file and directory) before returning.
    pub fn new(mode: u32) -> WriteOptions {
        WriteOptions {
            mode,
            owner: None,
            group: None,
        }
    }

    /// Owner and group set on the open file (`fchown`) before it gets its name.
    pub fn owner(mut self, owner: Option<u32>, group: Option<u32>) -> WriteOptions {
        self.owner = owner;
        self.group = group;
        self
    }
}

/// The components of a relative path; `..`, absolute paths and prefixes leave the tree.
fn components<'p>(root: &Path, rel: &'p Path) -> Result<Vec<&'p OsStr>, Error> {
    let mut parts = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Outside {
                    path: root.join(rel),
                    root: root.to_path_buf(),
                })
            }
        }
    }
    Ok(parts)
}

fn join(parts: &[&OsStr]) -> PathBuf {
    parts.iter().collect()
}

fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Kind, Errno> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map(|st| Kind::from_mode(st.st_mode))
}

impl Tree {
    /// Opens the directory at `path` (links in `path` itself are followed: the caller chose it).
    pub fn open(path: impl Into<PathBuf>) -> Result<Tree, Error> {
        let path = path.into();
        let fd = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            Errno::NOTDIR => Error::NotADirectory {
                path: path.clone(),
                kind: Kind::File,
            },
            errno => Error::io("open", &path, errno),
        })?;
        Ok(Tree { fd, path })
    }

    /// A tree of an already open directory (`path` is for messages).
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> Tree {
        Tree { fd, path }
    }

    /// A second handle on the same directory.
    pub fn try_clone(&self) -> Result<Tree, Error> {
        Ok(Tree {
            fd: self.dir(&[])?,
            path: self.path.clone(),
        })
    }

    /// The same tree, named `path` in messages (say, empty: paths relative to it).
    pub fn shown_as(self, path: impl Into<PathBuf>) -> Tree {
        Tree {
            fd: self.fd,
            path: path.into(),
        }
    }

    /// Where the directory was when opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` as a path under [`Tree::path`], for messages.
    pub fn display_path(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// A directory beneath this one, as a tree of its own.
    pub fn subtree(&self, rel: &Path) -> Result<Tree, Error> {
        let parts = components(&self.path, rel)?;
        Ok(Tree {
            fd: self.dir(&parts)?,
            path: self.path.join(rel),
        })
    }

    /// Opens the directory `parts` beneath the tree.
    fn dir(&self, parts: &[&OsStr]) -> Result<OwnedFd, Error> {
        if parts.is_empty() {
            return rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
                .map_err(|errno| Error::io("open", &self.path, errno));
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let rel = join(parts);
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            // EAGAIN: a rename elsewhere in the file system raced the lookup; try again.
            for _ in 0..16 {
                match rustix::fs::openat2(&self.fd, &rel, DIR_FLAGS, Mode::empty(), resolve) {
                    Ok(fd) => return Ok(fd),
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    Err(errno) => return Err(self.diagnose(parts, errno)),
                }
            }
        }
        self.walk(parts)
    }

    /// The fallback of [`Tree::dir`]: one `openat(O_NOFOLLOW)` per component.
    fn walk(&self, parts: &[&OsStr]) -> Result<OwnedFd, Error> {
        let mut current: Option<OwnedFd> = None;
        for (i, part) in parts.iter().enumerate() {
            let parent = current.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
            match rustix::fs::openat(parent, *part, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => current = Some(fd),
                Err(errno) => return Err(self.diagnose(&parts[..=i], errno)),
            }
        }
        current.ok_or_else(|| unreachable_empty(&self.path))
    }

    /// Names the component of `parts` that made opening it fail with `errno`.
    fn diagnose(&self, parts: &[&OsStr], errno: Errno) -> Error {
        let mut current: Option<OwnedFd> = None;
        for (i, part) in parts.iter().enumerate() {
            let path = self.path.join(join(&parts[..=i]));
            let parent = current.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
            match kind_at(parent, part) {
                Ok(Kind::Directory) => {}
                Ok(Kind::Symlink) => return Error::Symlink { path },
                Ok(kind) => return Error::NotADirectory { path, kind },
                Err(errno) => return Error::io("open", &path, errno),
            }
            match rustix::fs::openat(parent, *part, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => current = Some(fd),
                Err(errno) => return Error::io("open", &path, errno),
            }
        }
        let path = self.path.join(join(parts));
        match errno {
            Errno::XDEV => Error::Outside {
                path,
                root: self.path.clone(),
            },
            Errno::LOOP => Error::Symlink { path },
            errno => Error::io("open", &path, errno),
        }
    }

    /// The directory holding `rel` and the last component's name.
    fn parent<'p>(&self, rel: &'p Path) -> Result<(OwnedFd, &'p OsStr), Error> {
        let parts = components(&self.path, rel)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(Error::NotAFile {
                path: self.path.clone(),
                kind: Kind::Directory,
            });
        };
        Ok((self.dir(dirs)?, name))
    }

    /// [`Tree::parent`], `None` when a directory on the way is missing.
    fn existing_parent<'p>(&self, rel: &'p Path) -> Result<Option<(OwnedFd, &'p OsStr)>, Error> {
        match self.parent(rel) {
            Ok(found) => Ok(Some(found)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// What `rel` is (not following a final link); `None` when it (or a parent) is missing.
    pub fn kind(&self, rel: &Path) -> Result<Option<Kind>, Error> {
        let parts = components(&self.path, rel)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Ok(Some(Kind::Directory));
        };
        let dir = match self.dir(dirs) {
            Ok(dir) => dir,
            Err(error) if error.is_not_found() => return Ok(None),
            Err(error) => return Err(error),
        };
        match kind_at(dir.as_fd(), name) {
            Ok(kind) => Ok(Some(kind)),
            Err(Errno::NOENT) => Ok(None),
            Err(errno) => Err(Error::io("inspect", &self.path.join(rel), errno)),
        }
    }

    /// Opens the regular file `rel` for reading: never a link, FIFO (without blocking) or
    /// device.
    pub fn open_file(&self, rel: &Path) -> Result<std::fs::File, Error> {
        let path = self.path.join(rel);
        let (dir, name) = self.parent(rel)?;
        // Looked at first so that a device is never opened; checked again on the open file.
        let kind = kind_at(dir.as_fd(), name).map_err(|errno| Error::io("open", &path, errno))?;
        let not_regular = |kind| match kind {
            Kind::Symlink => Error::Symlink { path: path.clone() },
            kind => Error::NotAFile {
                path: path.clone(),
                kind,
            },
        };
        if kind != Kind::File {
            return Err(not_regular(kind));
        }
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd =
            rustix::fs::openat(&dir, name, flags, Mode::empty()).map_err(|errno| match errno {
                Errno::LOOP => Error::Symlink { path: path.clone() },
                errno => Error::io("open", &path, errno),
            })?;
        let st = rustix::fs::fstat(&fd).map_err(|errno| Error::io("inspect", &path, errno))?;
        let kind = Kind::from_mode(st.st_mode);
        if kind != Kind::File {
            return Err(not_regular(kind));
        }
        Ok(std::fs::File::from(fd))
    }

    /// The content of the regular file `rel`, at most `limit` bytes.
    pub fn read(&self, rel: &Path, limit: u64) -> Result<Vec<u8>, Error> {
        let path = || self.path.join(rel);
        let file = self.open_file(rel)?;
        let mut content = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(|source| Error::Io {
                action: "read",
                path: path(),
                source,
            })?;
        if content.len() as u64 > limit {
            return Err(Error::TooLarge {
                path: path(),
                limit,
            });
        }
        Ok(content)
    }

    /// Like [`Tree::read`], `None` when `rel` does not exist.
    pub fn read_optional(&self, rel: &Path, limit: u64) -> Result<Option<Vec<u8>>, Error> {
        match self.read(rel, limit) {
            Ok(content) => Ok(Some(content)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The target of the symbolic link `rel`, as data (it is not followed).
    pub fn read_link(&self, rel: &Path) -> Result<PathBuf, Error> {
        let path = self.path.join(rel);
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::readlinkat(&dir, name, Vec::new()) {
            Ok(target) => Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes()))),
            Err(Errno::INVAL) => Err(Error::NotASymlink {
                kind: kind_at(dir.as_fd(), name).unwrap_or(Kind::Unknown),
                path,
            }),
            Err(errno) => Err(Error::io("read the link", &path, errno)),
        }
    }

    /// The entries of the directory `rel`, sorted by name; empty when it does not exist.
    pub fn list(&self, rel: &Path) -> Result<Vec<Entry>, Error> {
        let parts = components(&self.path, rel)?;
        let dir = match self.dir(&parts) {
            Ok(dir) => dir,
            Err(error) if error.is_not_found() => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        list_fd(dir, &self.path.join(rel))
    }

    /// Creates the directory `rel` and its missing parents with `mode`; returns it.
    pub fn create_dir_all(&self, rel: &Path, mode: u32) -> Result<Tree, Error> {
        let parts = components(&self.path, rel)?;
        let mut current = self.dir(&[])?;
        for (i, part) in parts.iter().enumerate() {
            let path = self.path.join(join(&parts[..=i]));
            let created = match rustix::fs::mkdirat(&current, *part, Mode::from_raw_mode(mode)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(errno) => return Err(Error::io("create", &path, errno)),
            };
            current = match rustix::fs::openat(&current, *part, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(match kind_at(current.as_fd(), part) {
                        Ok(Kind::Symlink) | Err(_) => Error::Symlink { path },
                        Ok(kind) => Error::NotADirectory { path, kind },
                    })
                }
                Err(errno) => return Err(Error::io("open", &path, errno)),
            };
            if created {
                // mkdir's mode went through the umask.
                rustix::fs::fchmod(&current, Mode::from_raw_mode(mode))
                    .map_err(|errno| Error::io("set the mode of", &path, errno))?;
            }
        }
        Ok(Tree {
            fd: current,
            path: self.path.join(rel),
        })
    }

    /// Replaces (or creates) the file `rel` with `content` atomically: a temporary file
    /// created `0600` in the same directory, written, owner and mode set on it, synced, renamed
    /// over `rel`, and the directory synced. Parent directories must exist.
    pub fn write(&self, rel: &Path, content: &[u8], options: WriteOptions) -> Result<(), Error> {
        let path = self.path.join(rel);
        let (dir, name) = self.parent(rel)?;
        write_in(&dir, name, &path, content, options, None)
    }

    /// [`Tree::write`] with the temporary file in `staging` (same file system) instead of
    /// beside `rel`, for directories whose every name means something to their reader: a
    /// crash leaves the temporary file in `staging`, which the owner empties when it starts.
    pub fn write_staged(
        &self,
        rel: &Path,
        content: &[u8],
        options: WriteOptions,
        staging: &Tree,
    ) -> Result<(), Error> {
        let path = self.path.join(rel);
        let (dir, name) = self.parent(rel)?;
        write_in(
            &dir,
            name,
            &path,
            content,
            options,
            Some(staging.fd.as_fd()),
        )
    }

    /// Creates the new file `rel` (`O_EXCL`: an existing name, link or not, is an error) with
    /// `mode` before writing `content`; not synced.
    pub fn write_new(&self, rel: &Path, content: &[u8], mode: u32) -> Result<(), Error> {
        let path = self.path.join(rel);
        let (dir, name) = self.parent(rel)?;
        let mut file = create_exclusive(&dir, name, &path)?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
            .map_err(|errno| Error::io("set the mode of", &path, errno))?;
        file.write_all(content).map_err(|source| Error::Io {
            action: "write",
            path,
            source,
        })
    }

    /// Creates the symbolic link `rel` pointing at `target` (stored as is, never followed).
    pub fn symlink(&self, target: &Path, rel: &Path) -> Result<(), Error> {
        let path = self.path.join(rel);
        let (dir, name) = self.parent(rel)?;
        rustix::fs::symlinkat(target, &dir, name).map_err(|errno| Error::io("link", &path, errno))
    }

    /// Removes the file or link `rel`; whether it existed. A directory is an error.
    pub fn remove_file(&self, rel: &Path) -> Result<bool, Error> {
        let path = self.path.join(rel);
        let Some((dir, name)) = self.existing_parent(rel)? else {
            return Ok(false);
        };
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(Errno::ISDIR) => Err(Error::NotAFile {
                path,
                kind: Kind::Directory,
            }),
            Err(errno) => Err(Error::io("remove", &path, errno)),
        }
    }

    /// Removes `rel`, whatever it is, and everything below it without following a link;
    /// whether it existed.
    pub fn remove_all(&self, rel: &Path) -> Result<bool, Error> {
        let path = self.path.join(rel);
        let Some((dir, name)) = self.existing_parent(rel)? else {
            return Ok(false);
        };
        match kind_at(dir.as_fd(), name) {
            Ok(Kind::Directory) => remove_dir_in(&dir, name, &path).map(|()| true),
            Ok(_) => match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
                Ok(()) => Ok(true),
                Err(Errno::NOENT) => Ok(false),
                Err(errno) => Err(Error::io("remove", &path, errno)),
            },
            Err(Errno::NOENT) => Ok(false),
            Err(errno) => Err(Error::io("remove", &path, errno)),
        }
    }

    /// Removes the directory `rel` if it is empty; whether it did.
    pub fn remove_empty_dir(&self, rel: &Path) -> Result<bool, Error> {
        let Some((dir, name)) = self.existing_parent(rel)? else {
            return Ok(false);
        };
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR).is_ok())
    }

    /// Renames `from` to `to`, both in this tree (`to` is replaced if it exists).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), Error> {
        self.rename_with(from, to, RenameFlags::empty())
    }

    /// Exchanges `from` and `to` in one step (both must exist).
    pub fn exchange(&self, from: &Path, to: &Path) -> Result<(), Error> {
        self.rename_with(from, to, RenameFlags::EXCHANGE)
    }

    fn rename_with(&self, from: &Path, to: &Path, flags: RenameFlags) -> Result<(), Error> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        rustix::fs::renameat_with(&from_dir, from_name, &to_dir, to_name, flags).map_err(|errno| {
            let path = if errno == Errno::NOENT && kind_at(from_dir.as_fd(), from_name).is_ok() {
                to
            } else {
                from
            };
            Error::io("rename", &self.path.join(path), errno)
        })
    }

    /// Syncs the whole file system the tree is on.
    pub fn sync(&self) -> Result<(), Error> {
        rustix::fs::syncfs(&self.fd).map_err(|errno| Error::io("sync", &self.path, errno))
    }
}

impl AsFd for Tree {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn unreachable_empty(path: &Path) -> Error {
    Error::Io {
        action: "open",
        path: path.to_path_buf(),
        source: std::io::Error::other("empty path"),
    }
}

fn list_fd(dir: OwnedFd, path: &Path) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    let reader =
        rustix::fs::Dir::read_from(&dir).map_err(|errno| Error::io("list", path, errno))?;
    for entry in reader {
        let entry = entry.map_err(|errno| Error::io("list", path, errno))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let mut kind = Kind::from(entry.file_type());
        if kind == Kind::Unknown {
            kind = kind_at(dir.as_fd(), name).map_or(Kind::Unknown, Kind::from);
        }
        entries.push(Entry {
            name: name.to_owned(),
            kind,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn create_exclusive(dir: impl AsFd, name: &OsStr, path: &Path) -> Result<std::fs::File, Error> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))
        .map(std::fs::File::from)
        .map_err(|errno| Error::io("create", path, errno))
}

/// [`Tree::write`] in an open directory: `name` is a single component; the temporary file is
/// made in `staging` when given, else in `dir`.
fn write_in(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    content: &[u8],
    options: WriteOptions,
    staging: Option<BorrowedFd<'_>>,
) -> Result<(), Error> {
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{:016x}", rand::rngs::OsRng.next_u64()));
    let temp = temp_name.as_os_str();
    let staging = staging.unwrap_or(dir.as_fd());
    let mut file = create_exclusive(staging, temp, path)?;
    let result = (|| {
        if options.owner.is_some() || options.group.is_some() {
            rustix::fs::fchown(
                &file,
                options.owner.map(rustix::fs::Uid::from_raw),
                options.group.map(rustix::fs::Gid::from_raw),
            )
            .map_err(|errno| Error::io("change the owner of", path, errno))?;
        }
        let io = |source| Error::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        };
        file.write_all(content).map_err(io)?;
        // After fchown, which clears set-id bits.
        rustix::fs::fchmod(&file, Mode::from_raw_mode(options.mode))
            .map_err(|errno| Error::io("set the mode of", path, errno))?;
        file.sync_all().map_err(io)?;
        rustix::fs::renameat(staging, temp, dir, name).map_err(|errno| match errno {
            Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => Error::NotAFile {
                path: path.to_path_buf(),
                kind: Kind::Directory,
            },
            errno => Error::io("replace", path, errno),
        })
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(staging, temp, AtFlags::empty());
        return result;
    }
    rustix::fs::fsync(dir).map_err(|errno| Error::io("sync the directory of", path, errno))?;
    Ok(())
}

/// Removes the directory `name` in `dir` and everything in it; links are removed, never
/// followed.
fn remove_dir_in(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<(), Error> {
    let inner = match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        // Replaced by a link or file meanwhile: remove that instead.
        Err(Errno::LOOP | Errno::NOTDIR) => {
            return rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|errno| Error::io("remove", path, errno))
        }
        Err(errno) => return Err(Error::io("open", path, errno)),
    };
    let entries = list_fd(
        rustix::io::fcntl_dupfd_cloexec(&inner, 0)
            .map_err(|errno| Error::io("list", path, errno))?,
        path,
    )?;
    for entry in entries {
        let child = path.join(&entry.name);
        if entry.kind == Kind::Directory {
            remove_dir_in(&inner, &entry.name, &child)?;
        } else {
            match rustix::fs::unlinkat(&inner, &entry.name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(errno) => return Err(Error::io("remove", &child, errno)),
            }
        }
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(errno) => Err(Error::io("remove", path, errno)),
    }
}

#[cfg(test)]
impl Tree {
    /// The fallback resolution, tested on kernels that have `openat2`.
    pub(crate) fn walk_for_test(&self, rel: &Path) -> Result<Tree, Error> {
        let parts = components(&self.path, rel)?;
        Ok(Tree {
            fd: self.walk(&parts)?,
            path: self.path.join(rel),
        })
    }
}
