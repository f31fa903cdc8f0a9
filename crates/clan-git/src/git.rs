//! Running git, and where a clan directory sits in its repository.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::Error;

/// Runs `git -C dir args…` with no standard input (messages in English: some are read).
pub(crate) fn git(dir: &Path, action: &'static str, args: &[&OsStr]) -> Result<Output, Error> {
    Command::new("git")
        .env("LC_ALL", "C")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| git_error(action, dir, error.to_string()))
}

pub(crate) fn git_error(action: &'static str, dir: &Path, message: String) -> Error {
    Error::Git {
        action,
        dir: dir.to_path_buf(),
        message,
    }
}

/// Fails with git's own message unless `output` is a success.
pub(crate) fn succeeded(action: &'static str, dir: &Path, output: Output) -> Result<Output, Error> {
    if output.status.success() {
        return Ok(output);
    }
    let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    Err(git_error(action, dir, message))
}

/// Runs git with `input` on its standard input.
pub(crate) fn git_with_input(
    dir: &Path,
    action: &'static str,
    args: &[&str],
    input: &[u8],
) -> Result<Output, Error> {
    let spawn_error = |error: std::io::Error| git_error(action, dir, error.to_string());
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let Some(mut stdin) = child.stdin.take() else {
        return Err(spawn_error(std::io::Error::other("no pipe to git")));
    };
    // Written from a thread so that git's output cannot fill its pipe while we write.
    let (written, output) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || stdin.write_all(input));
        let output = child.wait_with_output();
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked")));
        (written, output)
    });
    match (written, output) {
        (_, Err(error)) => Err(spawn_error(error)),
        (Err(error), Ok(output)) if output.status.success() => Err(spawn_error(error)),
        (_, Ok(output)) => Ok(output),
    }
}

pub(crate) fn trim_newline(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\n").unwrap_or(bytes)
}

/// Where a clan directory sits in git.
#[derive(Clone, Debug)]
pub(crate) struct Repo {
    /// The top of the work tree.
    pub top: PathBuf,
    /// The work tree's own git directory (index, HEAD).
    pub git_dir: PathBuf,
    /// The directory shared by all work trees of the repository (refs, objects).
    pub common_dir: PathBuf,
    /// The clan directory relative to `top`, ending in `/` unless empty.
    pub prefix: Vec<u8>,
}

impl Repo {
    /// `None` when `clan_dir` is not in a git work tree.
    pub(crate) fn discover(clan_dir: &Path) -> Result<Option<Repo>, Error> {
        let args = [
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-dir",
            "--git-common-dir",
            "--show-prefix",
        ];
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let output = git(clan_dir, "rev-parse", &args)?;
        if !output.status.success() {
            let message = String::from_utf8_lossy(&output.stderr);
            // Taken for "no git", another user's repository would get a lock of its own
            // beside the clan and no commits (`sudo clan …` in a user's checkout).
            if message.contains("dubious ownership") {
                return Err(Error::NotTrusted {
                    dir: clan_dir.to_path_buf(),
                    message: message.trim().to_owned(),
                });
            }
            return Ok(None);
        }
        let mut lines = output.stdout.split(|&b| b == b'\n');
        let mut next = || lines.next().filter(|line| !line.is_empty());
        let (Some(top), Some(git_dir), Some(common_dir)) = (next(), next(), next()) else {
            let printed = String::from_utf8_lossy(&output.stdout).into_owned();
            return Err(git_error("rev-parse", clan_dir, printed));
        };
        let path = |bytes: &[u8]| PathBuf::from(OsStr::from_bytes(bytes));
        Ok(Some(Repo {
            top: path(top),
            git_dir: path(git_dir),
            common_dir: path(common_dir),
            prefix: next().unwrap_or_default().to_vec(),
        }))
    }
}
