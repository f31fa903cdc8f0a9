//! What an interrupted command can leave, and how the next one clears it:
//!
//! - helper refs of an unfinished commit under `refs/clan/`: deleted (the branch never points
//!   at them; they only ever hold a commit not yet known to be wanted);
//! - git's own lock files (`index.lock`, `HEAD.lock`, `packed-refs.lock`, the branch's and
//!   clan's ref locks) of a git that was killed: removed when no process has them open;
//! - the journal a command writes before changing anything ([`ClanLock::begin`]), still
//!   there because it died before committing: the temporary files of atomic writes in its
//!   scope are removed and what remains of the scope is committed, with a message saying
//!   which command was interrupted. A command that fails after `begin` commits its own
//!   journal as it releases the lock, so later edits never join that commit.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::git::{git, git_with_input, succeeded, Repo};
use crate::lock::ClanLock;
use crate::{commit, Error};

/// The namespace of clan's helper refs; nothing else lives there.
pub(crate) const REFS: &str = "refs/clan/";
const JOURNAL: &str = "clan-journal";
const JOURNAL_HEADER: &[u8] = b"clan-journal 1";

/// One thing the recovery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// A helper ref of a commit that was never finished was deleted.
    StaleRef { name: String },
    /// A lock file of a git process that is gone was removed.
    StaleGitLock { path: PathBuf },
    /// A half-written temporary file (or directory) was removed.
    Temporary { path: PathBuf },
    /// What an interrupted command had changed was committed.
    Committed { command: String },
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovered::StaleRef { name } => {
                write!(f, "removed `{name}`, left by an interrupted commit")
            }
            Recovered::StaleGitLock { path } => write!(
                f,
                "removed `{}`, left by a git process that was killed",
                path.display()
            ),
            Recovered::Temporary { path } => write!(
                f,
                "removed `{}`, half written by an interrupted command",
                path.display()
            ),
            Recovered::Committed { command } => write!(
                f,
                "committed what the interrupted `{command}` had changed but not committed"
            ),
        }
    }
}

/// Whether a file name is one of the temporary files clan's atomic writes use
/// (`.<name>.tmp-<random>`, random being at least 6 letters or digits): never content.
pub fn is_temporary(name: &OsStr) -> bool {
    let name = name.as_bytes();
    let Some(rest) = name.strip_prefix(b".") else {
        return false;
    };
    let Some(at) = rest.windows(5).rposition(|window| window == b".tmp-") else {
        return false;
    };
    let random = &rest[at + 5..];
    at > 0 && random.len() >= 6 && random.iter().all(u8::is_ascii_alphanumeric)
}

/// Whether an interrupted command left changes for [`ClanLock::recover`] to commit.
pub fn interrupted(clan_dir: &Path) -> Result<bool, Error> {
    match Repo::discover(clan_dir) {
        Ok(repo) => Ok(repo.is_some_and(|repo| journal_path(&repo).exists())),
        // Another user's repository: its journal is theirs to recover; reading goes on.
        Err(Error::NotTrusted { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

fn journal_path(repo: &Repo) -> PathBuf {
    repo.git_dir.join(JOURNAL)
}

pub(crate) fn recover(lock: &ClanLock) -> Result<Vec<Recovered>, Error> {
    let Some(repo) = &lock.repo else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    // A journal write killed before its rename.
    remove_temporaries(&repo.git_dir, Path::new(JOURNAL), &mut done)?;
    // Git lock files nobody holds open are clan's killed git's only when a clan command was
    // interrupted: a live git closes some of its locks while it works (a `git commit`
    // waiting in its editor), and those must stay.
    if journal_path(repo).exists() {
        remove_stale_git_locks(repo, &mut done)?;
    }
    remove_stale_refs(repo, &mut done)?;
    if lock.commits {
        commit_journal(lock, repo, Left::Interrupted, &mut done)?;
    }
    Ok(done)
}

/// Why a journal is still there when it is committed.
#[derive(Clone, Copy)]
pub(crate) enum Left {
    /// Found by the next command: the one that wrote it died.
    Interrupted,
    /// Found as the lock is released: the command that wrote it failed after `begin`.
    Failed,
}

/// When the lock is released with the journal still there (the command failed after
/// [`ClanLock::begin`]), what it changed is committed now, before anyone else can edit the
/// clan; left to the next command, the commit would also take in edits made in between.
pub(crate) fn commit_own_journal(lock: &ClanLock) -> Result<(), Error> {
    match &lock.repo {
        Some(repo) if lock.commits && journal_path(repo).exists() => {
            commit_journal(lock, repo, Left::Failed, &mut Vec::new())
        }
        _ => Ok(()),
    }
}

fn remove_stale_git_locks(repo: &Repo, done: &mut Vec<Recovered>) -> Result<(), Error> {
    let mut candidates = vec![
        repo.git_dir.join("index.lock"),
        repo.git_dir.join("HEAD.lock"),
        repo.common_dir.join("packed-refs.lock"),
    ];
    if let Ok(head) = fs::read(repo.git_dir.join("HEAD")) {
        if let Some(branch) = head.strip_prefix(b"ref: ") {
            let branch = crate::git::trim_newline(branch);
            let mut lock = branch.to_vec();
            lock.extend_from_slice(b".lock");
            candidates.push(repo.common_dir.join(OsStr::from_bytes(&lock)));
        }
    }
    let clan_refs = repo.common_dir.join(REFS);
    if let Ok(entries) = fs::read_dir(&clan_refs) {
        candidates.extend(
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension() == Some(OsStr::new("lock"))),
        );
    }
    for path in candidates {
        let Ok(metadata) = path.symlink_metadata() else {
            continue;
        };
        if metadata.is_file() && !held_open(&metadata) {
            fs::remove_file(&path).map_err(clan_error::io("remove", &path))?;
            done.push(Recovered::StaleGitLock { path });
        }
    }
    Ok(())
}

/// Whether any process has the file open (git keeps its lock files open until it renames
/// or removes them). When a process that could be git cannot be inspected, it counts as
/// holding it.
fn held_open(metadata: &fs::Metadata) -> bool {
    let Ok(processes) = fs::read_dir("/proc") else {
        return true;
    };
    for process in processes.flatten() {
        let name = process.file_name();
        if !name.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let fds = match fs::read_dir(process.path().join("fd")) {
            Ok(fds) => fds,
            // Gone meanwhile, or a kernel thread.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => {
                // Only a process of the lock file's owner can have created it.
                let owner = process.metadata().map(|m| m.uid());
                if owner.map_or(true, |uid| uid == metadata.uid()) {
                    return true;
                }
                continue;
            }
        };
        for fd in fds.flatten() {
            if let Ok(open) = fs::metadata(fd.path()) {
                if open.dev() == metadata.dev() && open.ino() == metadata.ino() {
                    return true;
                }
            }
        }
    }
    false
}

fn remove_stale_refs(repo: &Repo, done: &mut Vec<Recovered>) -> Result<(), Error> {
    let args: Vec<&OsStr> = ["for-each-ref", "--format=%(refname)", REFS]
        .iter()
        .map(OsStr::new)
        .collect();
    let listed = succeeded(
        "for-each-ref",
        &repo.top,
        git(&repo.top, "for-each-ref", &args)?,
    )?;
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let transaction: String = names
        .iter()
        .map(|name| format!("delete {name}\n"))
        .collect();
    let deleted = git_with_input(
        &repo.top,
        "update-ref",
        &["update-ref", "--stdin"],
        transaction.as_bytes(),
    )?;
    succeeded("update-ref", &repo.top, deleted)?;
    done.extend(names.into_iter().map(|name| Recovered::StaleRef { name }));
    Ok(())
}

pub(crate) fn write_journal(lock: &ClanLock, repo: &Repo, scope: &[&Path]) -> Result<(), Error> {
    let mut journal = JOURNAL_HEADER.to_vec();
    journal.push(0);
    journal.extend_from_slice(lock.command.as_bytes());
    journal.push(0);
    for path in scope {
        // Relative to the top of the work tree, where the recovery commits.
        journal.extend_from_slice(&repo.prefix);
        journal.extend_from_slice(path.as_os_str().as_bytes());
        journal.push(0);
    }
    let options = clan_fs::WriteOptions::new(0o644);
    Ok(clan_fs::write_file(&journal_path(repo), &journal, options)?)
}

pub(crate) fn remove_journal(repo: &Repo) -> Result<(), Error> {
    let path = journal_path(repo);
    match fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(clan_error::io("remove", &path)(error).into())
        }
        _ => Ok(()),
    }
}

/// The interrupted command and its scope (relative to the top of the work tree).
fn read_journal(path: &Path) -> Result<Option<(String, Vec<PathBuf>)>, Error> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(clan_error::io("read", path)(error).into()),
    };
    let mut fields = bytes.split(|&b| b == 0);
    let (Some(JOURNAL_HEADER), Some(command)) = (fields.next(), fields.next()) else {
        return Err(Error::Journal {
            path: path.to_path_buf(),
        });
    };
    let scope = fields
        .filter(|field| !field.is_empty())
        .map(|field| PathBuf::from(OsStr::from_bytes(field)))
        .collect();
    Ok(Some((String::from_utf8_lossy(command).into_owned(), scope)))
}

fn commit_journal(
    lock: &ClanLock,
    repo: &Repo,
    left: Left,
    done: &mut Vec<Recovered>,
) -> Result<(), Error> {
    let path = journal_path(repo);
    let Some((command, scope)) = read_journal(&path)? else {
        return Ok(());
    };
    for path in &scope {
        remove_temporaries(&repo.top, path, done)?;
    }
    // Most journals left behind are of commands that failed before changing anything;
    // asking git is much cheaper than building a commit of the whole scope.
    if unchanged(repo, &scope)? {
        return remove_journal(repo);
    }
    let message = match left {
        Left::Interrupted => format!(
            "clan: commit what the interrupted `{command}` changed\n\n\
             It stopped before committing; `{}` found its changes and committed them.",
            lock.command
        ),
        Left::Failed => format!(
            "clan: commit what the failed `{command}` changed\n\n\
             It failed after changing the clan; what it changed is committed as it was left."
        ),
    };
    if commit::commit_paths(&repo.top, b"", &scope, &message)? {
        done.push(Recovered::Committed { command });
    }
    remove_journal(repo)
}

/// Whether `scope` (relative to the top of the work tree) is as committed, in the work
/// tree and in the index.
fn unchanged(repo: &Repo, scope: &[PathBuf]) -> Result<bool, Error> {
    let mut args: Vec<&OsStr> = ["status", "--porcelain", "-z", "--untracked-files=all", "--"]
        .iter()
        .map(OsStr::new)
        .collect();
    args.extend(scope.iter().map(|path| path.as_os_str()));
    let status = succeeded("status", &repo.top, git(&repo.top, "status", &args)?)?;
    Ok(status.stdout.is_empty())
}

/// Removes the temporary files of atomic writes at or under `path` (relative to `top`),
/// and next to it, without following a link.
fn remove_temporaries(top: &Path, path: &Path, done: &mut Vec<Recovered>) -> Result<(), Error> {
    let full = top.join(path);
    if let (Some(parent), Some(name)) = (full.parent(), full.file_name()) {
        let mut prefix = b".".to_vec();
        prefix.extend_from_slice(name.as_bytes());
        prefix.extend_from_slice(b".tmp-");
        if let Ok(entries) = fs::read_dir(parent) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.as_bytes().starts_with(&prefix) && is_temporary(&name) {
                    remove(&entry.path(), done)?;
                }
            }
        }
    }
    walk_temporaries(&full, done)
}

fn walk_temporaries(dir: &Path, done: &mut Vec<Recovered>) -> Result<(), Error> {
    match dir.symlink_metadata() {
        Ok(metadata) if metadata.is_dir() => {}
        _ => return Ok(()),
    }
    let entries = fs::read_dir(dir).map_err(clan_error::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(clan_error::io("list", dir))?;
        let path = entry.path();
        if is_temporary(&entry.file_name()) {
            remove(&path, done)?;
        } else {
            walk_temporaries(&path, done)?;
        }
    }
    Ok(())
}

fn remove(path: &Path, done: &mut Vec<Recovered>) -> Result<(), Error> {
    let removed = match path.symlink_metadata() {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path),
        _ => fs::remove_file(path),
    };
    removed.map_err(clan_error::io("remove", path))?;
    done.push(Recovered::Temporary {
        path: path.to_path_buf(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised() {
        let yes = [
            ".clan.toml.tmp-a1B2c3",
            ".secret.tmp-0123456789abcdef",
            ".a.b.tmp-zzzzzz",
        ];
        let no = [
            "clan.toml.tmp-a1B2c3",
            "..tmp-abcdef",
            ".secret.tmp-abc",
            ".secret.tmp-abc/def",
            ".secret",
            "value",
        ];
        for name in yes {
            assert!(is_temporary(OsStr::new(name)), "{name}");
        }
        for name in no {
            assert!(!is_temporary(OsStr::new(name)), "{name}");
        }
    }
}
