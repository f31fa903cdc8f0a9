//! One clan-mutating process at a time: an exclusive `flock` on `.git/clan.lock` (or
//! `.clan.lock` in a clan directory that is not a git work tree's top), released when the
//! [`ClanLock`] is dropped or the process dies.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::Error;

/// Held while changing the clan.
#[derive(Debug)]
pub struct ClanLock {
    _file: File,
    pub path: PathBuf,
}

impl ClanLock {
    /// Where the lock of `clan_dir` lives.
    pub fn path(clan_dir: &Path) -> PathBuf {
        let git = clan_dir.join(".git");
        if git.is_dir() {
            git.join("clan.lock")
        } else {
            clan_dir.join(".clan.lock")
        }
    }

    /// Takes the lock without waiting: [`Error::Locked`] when another process holds it.
    pub fn try_acquire(clan_dir: &Path) -> Result<ClanLock, Error> {
        Self::acquire_with(clan_dir, FlockOperation::NonBlockingLockExclusive)
    }

    /// Takes the lock, waiting for the other process.
    pub fn acquire(clan_dir: &Path) -> Result<ClanLock, Error> {
        Self::acquire_with(clan_dir, FlockOperation::LockExclusive)
    }

    fn acquire_with(clan_dir: &Path, operation: FlockOperation) -> Result<ClanLock, Error> {
        let path = Self::path(clan_dir);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        match rustix::fs::flock(&file, operation) {
            Ok(()) => Ok(ClanLock { _file: file, path }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked { path }),
            Err(errno) => Err(Error::Io {
                action: "lock",
                path,
                source: errno.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClanLock::try_acquire(dir.path()).unwrap();
        assert!(matches!(
            ClanLock::try_acquire(dir.path()),
            Err(Error::Locked { .. })
        ));
        drop(first);
        ClanLock::try_acquire(dir.path()).unwrap();
    }
}
