//! Committing what an operation changed: only the given paths, with the operation's message.
//! The caller decides whether to commit at all (clan skips it when `CLAN_NO_COMMIT=1`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

fn git(
    dir: &Path,
    action: &'static str,
    args: &[&std::ffi::OsStr],
) -> Result<std::process::Output, Error> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| Error::Git {
            action,
            dir: dir.to_path_buf(),
            message: error.to_string(),
        })
}

/// Stages and commits `paths` (relative to `clan_dir`, deleted ones included) with `message`.
/// Returns `false` without doing anything when `clan_dir` is not in a git work tree or
/// nothing changed.
pub fn commit_paths(clan_dir: &Path, paths: &[PathBuf], message: &str) -> Result<bool, Error> {
    let inside = git(
        clan_dir,
        "rev-parse",
        &["rev-parse".as_ref(), "--is-inside-work-tree".as_ref()],
    )?;
    if !inside.status.success() || paths.is_empty() {
        return Ok(false);
    }
    // Paths that neither exist nor are known to git (created and removed again) would make
    // `git add` fail.
    let mut pathspecs: Vec<&PathBuf> = Vec::new();
    for path in paths {
        let known = clan_dir.join(path).symlink_metadata().is_ok() || {
            let listed = git(
                clan_dir,
                "ls-files",
                &["ls-files".as_ref(), "--".as_ref(), path.as_os_str()],
            )?;
            !listed.stdout.is_empty()
        };
        if known {
            pathspecs.push(path);
        }
    }
    if pathspecs.is_empty() {
        return Ok(false);
    }
    let run = |action: &'static str, head: &[&str]| -> Result<std::process::Output, Error> {
        let mut args: Vec<&std::ffi::OsStr> = head.iter().map(|a| a.as_ref()).collect();
        args.push("--".as_ref());
        args.extend(pathspecs.iter().map(|p| p.as_os_str()));
        git(clan_dir, action, &args)
    };
    let added = run("add", &["add", "--all"])?;
    if !added.status.success() {
        return Err(Error::Git {
            action: "add",
            dir: clan_dir.to_path_buf(),
            message: String::from_utf8_lossy(&added.stderr).trim().to_owned(),
        });
    }
    let diff = run("diff", &["diff", "--cached", "--quiet"])?;
    if diff.status.success() {
        return Ok(false);
    }
    let committed = run("commit", &["commit", "--quiet", "-m", message])?;
    if !committed.status.success() {
        return Err(Error::Git {
            action: "commit",
            dir: clan_dir.to_path_buf(),
            message: String::from_utf8_lossy(&committed.stderr).trim().to_owned(),
        });
    }
    Ok(true)
}
