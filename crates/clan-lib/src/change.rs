//! The one way a command changes the clan. [`lock`] takes the clan lock (saying, after a
//! second of waiting, who holds it) and clears what interrupted commands left behind
//! (committing their uncommitted changes); [`Change::begin`] records the scope about to
//! change, so that a crash before [`Change::commit`] is recovered by the next run ([`begin`]
//! does both). Everything the command reads from the clan to change it must be read after
//! [`lock`]. `CLAN_NO_COMMIT=1` turns committing (and the journal) off.

use std::path::{Path, PathBuf};

use clan_git::ClanLock;

use crate::{Error, Event, Progress};

/// Held while the command changes the clan; dropping it releases the lock.
pub struct Change {
    lock: ClanLock,
}

/// Takes the clan lock for a change of `scope` (paths relative to the clan directory).
pub fn begin(clan_dir: &Path, scope: &[&str], progress: &dyn Progress) -> Result<Change, Error> {
    let change = lock(clan_dir, progress)?;
    change.begin(scope)?;
    Ok(change)
}

/// Takes the clan lock for a command that may find nothing to change; it calls
/// [`Change::begin`] before it changes anything.
pub fn lock(clan_dir: &Path, progress: &dyn Progress) -> Result<Change, Error> {
    Ok(Change {
        lock: acquire(clan_dir, progress)?,
    })
}

impl Change {
    /// Records that `scope` (paths relative to the clan directory) is about to change.
    pub fn begin(&self, scope: &[&str]) -> Result<(), Error> {
        let scope: Vec<&Path> = scope.iter().map(Path::new).collect();
        self.lock
            .begin(&scope)
            .map_err(|source| Error::Journal { source })
    }

    /// Commits `paths` (relative to the clan directory) with `message`.
    pub fn commit(&self, paths: &[PathBuf], message: &str) -> Result<(), Error> {
        self.lock
            .commit(paths, message)
            .map_err(|source| Error::Commit { source })?;
        Ok(())
    }
}

/// For commands that only report the clan's state: first commits what an interrupted
/// command changed but did not commit, so that it is not reported as done.
pub fn recover_if_interrupted(clan_dir: &Path, progress: &dyn Progress) -> Result<(), Error> {
    if clan_git::interrupted(clan_dir)? {
        drop(acquire(clan_dir, progress)?);
    }
    Ok(())
}

fn acquire(clan_dir: &Path, progress: &dyn Progress) -> Result<ClanLock, Error> {
    let commits = std::env::var_os("CLAN_NO_COMMIT").is_none_or(|value| value != "1");
    let lock = ClanLock::acquire(clan_dir, &command_line(), commits, |path, holder| {
        progress.event(Event::WaitingForLock {
            path: path.to_path_buf(),
            holder: holder.map(|holder| holder.to_string()),
        })
    })?;
    // Vars staging directories of a killed run go first: the recovery may commit `vars/`.
    clan_vars::VarsStore::new(clan_dir).remove_stale_staging()?;
    for recovered in lock.recover().map_err(|source| Error::Recover { source })? {
        progress.event(Event::Recovered {
            what: recovered.to_string(),
        });
    }
    Ok(lock)
}

/// How this process is shown to others waiting for the lock: `clan` and its arguments
/// (which never hold a secret).
fn command_line() -> String {
    let mut words = vec!["clan".to_owned()];
    words.extend(
        std::env::args_os()
            .skip(1)
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}
