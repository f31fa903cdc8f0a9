//! Typed errors naming the path and what was found there.

use std::fmt;
use std::path::{Path, PathBuf};

/// What a path turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl Kind {
    pub(crate) fn from_mode(mode: u32) -> Kind {
        Kind::from(rustix::fs::FileType::from_raw_mode(mode))
    }
}

impl From<rustix::fs::FileType> for Kind {
    fn from(kind: rustix::fs::FileType) -> Kind {
        use rustix::fs::FileType as T;
        match kind {
            T::RegularFile => Kind::File,
            T::Directory => Kind::Directory,
            T::Symlink => Kind::Symlink,
            T::Fifo => Kind::Fifo,
            T::Socket => Kind::Socket,
            T::CharacterDevice => Kind::CharDevice,
            T::BlockDevice => Kind::BlockDevice,
            T::Unknown => Kind::Unknown,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "regular file",
            Kind::Directory => "directory",
            Kind::Symlink => "symbolic link",
            Kind::Fifo => "FIFO",
            Kind::Socket => "socket",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Unknown => "special file",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{}` is a symbolic link, which clan does not follow here", path.display())]
    Symlink { path: PathBuf },
    #[error("`{}` is a {kind}, not a regular file", path.display())]
    NotAFile { path: PathBuf, kind: Kind },
    #[error("`{}` is a {kind}, not a directory", path.display())]
    NotADirectory { path: PathBuf, kind: Kind },
    #[error("`{}` is a {kind}, not a symbolic link", path.display())]
    NotASymlink { path: PathBuf, kind: Kind },
    #[error("`{}` is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("`{}` leads outside `{}`", path.display(), root.display())]
    Outside { path: PathBuf, root: PathBuf },
    #[error("`{}` does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error(
        "`{}` is a symbolic link in a directory a non-root user can change (or owned by one); \
         the agent does not follow it",
        path.display()
    )]
    UntrustedLink { path: PathBuf },
    #[error("failed to {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Symlink { path }
            | Error::NotAFile { path, .. }
            | Error::NotADirectory { path, .. }
            | Error::NotASymlink { path, .. }
            | Error::TooLarge { path, .. }
            | Error::Outside { path, .. }
            | Error::NotFound { path }
            | Error::UntrustedLink { path }
            | Error::Io { path, .. } => path,
        }
    }

    pub(crate) fn io(action: &'static str, path: &Path, errno: rustix::io::Errno) -> Error {
        if errno == rustix::io::Errno::NOENT {
            return Error::NotFound {
                path: path.to_path_buf(),
            };
        }
        Error::Io {
            action,
            path: path.to_path_buf(),
            source: errno.into(),
        }
    }
}

impl clan_error::Hint for Error {}
clan_error::register!(Error);
