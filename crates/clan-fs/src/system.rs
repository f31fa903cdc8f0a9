//! The agent's policy for paths on a machine, where non-root users own some directories
//! (`/home/alice`) and the system has links of its own (`/lib → usr/lib`, `/var/run → /run`).
//!
//! A path is walked from the machine's root one directory descriptor at a time. A symbolic
//! link is followed only when root owns it and only root can write the directory holding it
//! (so no other user could have put it there or swapped it); any other link is refused with
//! an error naming it. What is found is then a [`Tree`] of the final directory, in which the
//! agent writes through temporary files renamed inside that descriptor: a directory renamed
//! or replaced by its owner afterwards can only receive the write itself, never redirect it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::{Error, Kind, Tree};

/// Links followed in one path at most (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// A machine's file system as the agent sees it: `/`, or an image directory standing for it.
#[derive(Debug)]
pub struct System {
    root: Tree,
}

impl System {
    pub fn open(root: &Path) -> Result<System, Error> {
        Ok(System {
            root: Tree::open(root)?,
        })
    }

    /// `path` (absolute on the machine) as shown in messages: under the image directory, if any.
    fn shown(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        self.root.path().join(relative)
    }

    /// The directory `dir` (absolute on the machine), following only trusted links; missing
    /// directories are created (owned by the agent) when `create` is given: `dir` itself with
    /// that mode, its missing parents `0755`.
    pub fn dir(&self, dir: &Path, create: Option<u32>) -> Result<Tree, Error> {
        let mut pending: VecDeque<OsString> = VecDeque::new();
        push_front(&mut pending, dir);
        let mut stack: Vec<OwnedFd> = vec![rustix::io::fcntl_dupfd_cloexec(&self.root, 0)
            .map_err(|errno| Error::io("open", self.root.path(), errno))?];
        let mut here = PathBuf::from("/");
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                if stack.len() > 1 {
                    stack.pop();
                    here.pop();
                }
                continue;
            }
            let current = stack.last().expect("the root stays");
            let next = here.join(&part);
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::statat(current, &part, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => match Kind::from_mode(st.st_mode) {
                    Kind::Directory => {
                        let fd = rustix::fs::openat(current, &part, flags, Mode::empty()).map_err(
                            |errno| match errno {
                                // Replaced by a link since: refused like one.
                                Errno::LOOP | Errno::NOTDIR => Error::UntrustedLink {
                                    path: self.shown(&next),
                                },
                                errno => Error::io("open", &self.shown(&next), errno),
                            },
                        )?;
                        stack.push(fd);
                        here = next;
                    }
                    Kind::Symlink => {
                        let parent = rustix::fs::fstat(current)
                            .map_err(|errno| Error::io("inspect", &self.shown(&here), errno))?;
                        let trusted =
                            st.st_uid == 0 && parent.st_uid == 0 && parent.st_mode & 0o022 == 0;
                        if !trusted {
                            return Err(Error::UntrustedLink {
                                path: self.shown(&next),
                            });
                        }
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(Error::Symlink {
                                path: self.shown(&next),
                            });
                        }
                        let target = rustix::fs::readlinkat(current, &part, Vec::new()).map_err(
                            |errno| Error::io("read the link", &self.shown(&next), errno),
                        )?;
                        let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                        if target.is_absolute() {
                            stack.truncate(1);
                            here = PathBuf::from("/");
                        }
                        push_front(&mut pending, target);
                    }
                    kind => {
                        return Err(Error::NotADirectory {
                            path: self.shown(&next),
                            kind,
                        })
                    }
                },
                Err(Errno::NOENT) if create.is_some() => {
                    let mode = match pending.is_empty() {
                        true => create.unwrap_or(0o755),
                        false => 0o755,
                    };
                    let mode = Mode::from_raw_mode(mode);
                    match rustix::fs::mkdirat(current, &part, mode) {
                        Ok(()) => {
                            let fd = rustix::fs::openat(current, &part, flags, Mode::empty())
                                .map_err(|_| Error::UntrustedLink {
                                    path: self.shown(&next),
                                })?;
                            // mkdir's mode went through the umask.
                            rustix::fs::fchmod(&fd, mode).map_err(|errno| {
                                Error::io("set the mode of", &self.shown(&next), errno)
                            })?;
                            stack.push(fd);
                            here = next;
                        }
                        // Created meanwhile: looked at again.
                        Err(Errno::EXIST) => pending.push_front(part),
                        Err(errno) => return Err(Error::io("create", &self.shown(&next), errno)),
                    }
                }
                Err(errno) => return Err(Error::io("open", &self.shown(&next), errno)),
            }
        }
        let fd = stack.pop().expect("the root stays");
        Ok(Tree::from_fd(fd, self.shown(&here)))
    }

    /// The directory holding `path` (absolute on the machine, see [`System::dir`]) and the
    /// file's name in it.
    pub fn parent(&self, path: &Path, create: Option<u32>) -> Result<(Tree, OsString), Error> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Error::NotAFile {
                path: self.shown(path),
                kind: Kind::Directory,
            });
        };
        Ok((self.dir(parent, create)?, name.to_owned()))
    }
}

/// Puts the components of `path` in front of `pending`, in order.
fn push_front(pending: &mut VecDeque<OsString>, path: &Path) {
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|component| match component {
            Component::Normal(part) => Some(part.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    for part in parts.into_iter().rev() {
        pending.push_front(part);
    }
}
