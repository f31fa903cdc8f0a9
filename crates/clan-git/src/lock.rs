//! One clan-changing process at a time: an exclusive `flock` on `clan.lock` in the
//! repository's common git directory (so all work trees of a repository share it), or on
//! `.clan.lock` in a clan directory outside git. The kernel releases it when the holder
//! exits or dies, so a lock file left behind never blocks anyone. The holder writes its PID,
//! command line and start time into the file, for waiting processes to show.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;

use crate::git::Repo;
use crate::{commit, recover, Error, Recovered};

/// How long to wait silently before telling who holds the lock.
const PATIENCE: Duration = Duration::from_secs(1);

/// Held while changing the clan; dropping it (or dying) releases it.
#[derive(Debug)]
pub struct ClanLock {
    _file: File,
    path: PathBuf,
    clan_dir: PathBuf,
    pub(crate) repo: Option<Repo>,
    /// Whether changes are committed (and journaled before they are made).
    pub(crate) commits: bool,
    pub(crate) command: String,
    /// Whether releasing the lock commits a journal left by a failed command (see
    /// [`ClanLock::release_as_if_killed`]).
    commit_on_release: bool,
}

/// The process holding the lock, as it described itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    pub since: SystemTime,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = SystemTime::now()
            .duration_since(self.since)
            .unwrap_or_default()
            .as_secs();
        write!(
            f,
            "`{}` (PID {}) has held it for {held}s",
            self.command, self.pid
        )
    }
}

impl Holder {
    fn to_bytes(&self) -> Vec<u8> {
        let since = self
            .since
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        format!(
            "pid {}\nsince {since}\ncommand {}\n",
            self.pid, self.command
        )
        .into_bytes()
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut pid = None;
        let mut since = None;
        let mut command = None;
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("pid", value)) => pid = value.parse().ok(),
                Some(("since", value)) => {
                    since = value
                        .parse()
                        .ok()
                        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
                }
                Some(("command", value)) => command = Some(value.to_owned()),
                _ => {}
            }
        }
        Some(Holder {
            pid: pid?,
            command: command?,
            since: since?,
        })
    }
}

impl ClanLock {
    /// Takes the lock of the clan in `clan_dir`, waiting as long as another process holds
    /// it; after a second of waiting, `waiting` is told where the lock is and who holds it
    /// (when the holder could be read). `command` is what others are shown while this
    /// process holds it. `commits` says whether [`ClanLock::commit`] commits.
    ///
    /// Call [`ClanLock::recover`] next, before reading the clan.
    pub fn acquire(
        clan_dir: &Path,
        command: &str,
        commits: bool,
        waiting: impl FnOnce(&Path, Option<Holder>) + Send,
    ) -> Result<ClanLock, Error> {
        let repo = match Repo::discover(clan_dir) {
            // Without git nothing can be committed; that only matters when committing.
            Err(Error::Git { .. }) if !commits => None,
            found => found?,
        };
        let path = match &repo {
            Some(repo) => repo.common_dir.join("clan.lock"),
            None => clan_dir.join(".clan.lock"),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            // A `.clan.lock` outside git could be a link planted to make root truncate a file.
            .custom_flags(libc_nofollow())
            .mode(0o644)
            .open(&path)
            .map_err(clan_error::io("open", &path))?;
        lock(&file, &path, waiting)?;
        let holder = Holder {
            pid: std::process::id(),
            command: printable(command),
            since: SystemTime::now(),
        };
        let record = (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(&holder.to_bytes())
        })();
        record.map_err(clan_error::io("write", &path))?;
        Ok(ClanLock {
            _file: file,
            path,
            clan_dir: clan_dir.to_path_buf(),
            repo,
            commits,
            command: holder.command,
            commit_on_release: true,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Recovers what interrupted commands left (see [`Recovered`]) and returns what it did.
    /// Leftovers of the caller's own (such as a staging directory) should be removed before.
    pub fn recover(&self) -> Result<Vec<Recovered>, Error> {
        recover::recover(self)
    }

    /// Records, before anything is changed, that `scope` (paths relative to the clan
    /// directory) is about to change: if this process dies before [`ClanLock::commit`], the
    /// next [`ClanLock::recover`] commits what it changed there; if it fails (the lock is
    /// dropped without a commit), what it changed is committed as the lock is released.
    pub fn begin(&self, scope: &[&Path]) -> Result<(), Error> {
        match &self.repo {
            Some(repo) if self.commits => recover::write_journal(self, repo, scope),
            _ => Ok(()),
        }
    }

    /// Commits `paths` (relative to the clan directory, deleted ones included) with
    /// `message`, and forgets the journal [`ClanLock::begin`] wrote. Returns whether a commit
    /// was made: not outside git, when committing is off, or when nothing changed.
    pub fn commit(&self, paths: &[PathBuf], message: &str) -> Result<bool, Error> {
        let Some(repo) = self.repo.as_ref().filter(|_| self.commits) else {
            return Ok(false);
        };
        let committed = commit::commit_paths(&self.clan_dir, &repo.prefix, paths, message)?;
        recover::remove_journal(repo)?;
        Ok(committed)
    }
}

impl ClanLock {
    /// Releases the lock as a killed process does: a journal stays for the next command's
    /// recovery. For tests of that recovery.
    #[doc(hidden)]
    pub fn release_as_if_killed(mut self) {
        self.commit_on_release = false;
    }
}

impl Drop for ClanLock {
    fn drop(&mut self) {
        if self.commit_on_release {
            // Failing here leaves the journal for the next command's recovery, as a crash does.
            let _ = recover::commit_own_journal(self);
        }
    }
}

/// `O_NOFOLLOW`, spelled through rustix so that no libc dependency is needed.
fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Takes the flock on `file`, calling `waiting` once after [`PATIENCE`] if it is held.
fn lock(
    file: &File,
    path: &Path,
    waiting: impl FnOnce(&Path, Option<Holder>) + Send,
) -> Result<(), Error> {
    let flock = |operation| {
        rustix::fs::flock(file, operation)
            .map_err(|errno| Error::from(clan_error::io("lock", path)(errno.into())))
    };
    match flock(FlockOperation::NonBlockingLockExclusive) {
        Err(Error::Io(error)) if error.source.kind() == std::io::ErrorKind::WouldBlock => {}
        other => return other,
    }
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if wait.recv_timeout(PATIENCE).is_err() {
                waiting(path, read_holder(path));
            }
        });
        let locked = flock(FlockOperation::LockExclusive);
        drop(done);
        locked
    })
}

/// Who holds the lock at `path`, as its holder wrote it.
fn read_holder(path: &Path) -> Option<Holder> {
    let mut text = String::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(libc_nofollow())
        .open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    Holder::parse(&text)
}

/// `command` on one line, without control characters, at most 300 characters.
fn printable(command: &str) -> String {
    command
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_second_process_waits_and_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClanLock::acquire(dir.path(), "clan first", true, |_, _| {}).unwrap();
        let (told, heard) = mpsc::channel();
        std::thread::scope(|scope| {
            let second = scope.spawn(|| {
                ClanLock::acquire(dir.path(), "clan second", true, move |path, holder| {
                    told.send((path.to_path_buf(), holder)).unwrap();
                })
            });
            // Only released once the waiter has said who it waits for.
            let (path, holder) = heard.recv().unwrap();
            assert_eq!(path, dir.path().join(".clan.lock"));
            let holder = holder.expect("the holder is readable");
            assert_eq!(holder.pid, std::process::id());
            assert_eq!(holder.command, "clan first");
            assert!(holder.to_string().contains("`clan first` (PID "));
            drop(first);
            let second = second.join().unwrap().unwrap();
            assert_eq!(read_holder(second.path()).unwrap().command, "clan second");
        });
    }

    #[test]
    fn a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".clan.lock")).unwrap();
        let error = ClanLock::acquire(dir.path(), "clan", true, |_, _| {}).unwrap_err();
        assert!(error.to_string().contains(".clan.lock"), "{error}");
        assert_eq!(std::fs::read_to_string(victim).unwrap(), "keep me");
    }

    #[test]
    fn holder_lines_are_made_printable() {
        assert_eq!(printable("clan set\nx\u{1b}[2J"), "clan set x [2J");
    }
}
