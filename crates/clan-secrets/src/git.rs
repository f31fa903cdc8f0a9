//! Committing what an operation changed: only the given paths, with the operation's message.
//! The caller decides whether to commit at all (clan skips it when `CLAN_NO_COMMIT=1`).
//!
//! A commit is written with `git fast-import` — one pack instead of a loose object per file
//! and directory, which is most of the cost when `vars generate` adds thousands of files —
//! and the index is then brought up to date with `git add`. Like clan-core (`git commit
//! --no-verify`) no pre-commit hook runs. When a plain `git commit` would behave differently
//! (commits are to be signed, or HEAD is detached) it is used instead.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::Error;

fn git(dir: &Path, action: &'static str, args: &[&OsStr]) -> Result<Output, Error> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| git_error(action, dir, error.to_string()))
}

fn git_error(action: &'static str, dir: &Path, message: String) -> Error {
    Error::Git {
        action,
        dir: dir.to_path_buf(),
        message,
    }
}

/// Fails with git's own message unless `output` is a success.
fn succeeded(action: &'static str, dir: &Path, output: Output) -> Result<Output, Error> {
    if output.status.success() {
        return Ok(output);
    }
    let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    Err(git_error(action, dir, message))
}

/// Stages and commits `paths` (relative to `clan_dir`, deleted ones included) with `message`.
/// Returns `false` without doing anything when `clan_dir` is not in a git work tree or
/// nothing changed.
pub fn commit_paths(clan_dir: &Path, paths: &[PathBuf], message: &str) -> Result<bool, Error> {
    let location = git(
        clan_dir,
        "rev-parse",
        &["rev-parse".as_ref(), "--show-prefix".as_ref()],
    )?;
    if !location.status.success() || paths.is_empty() {
        return Ok(false);
    }
    // Paths that neither exist nor are known to git (created and removed again) would make
    // `git add` fail.
    let mut pathspecs: Vec<&OsStr> = Vec::new();
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
            pathspecs.push(path.as_os_str());
        }
    }
    if pathspecs.is_empty() {
        return Ok(false);
    }
    let Some(target) = fast_import_target(clan_dir)? else {
        return plain_commit(clan_dir, &pathspecs, message);
    };
    let prefix = trim_newline(&location.stdout);
    let read_error = |error: std::io::Error| git_error("read", clan_dir, error.to_string());
    let mut stream = target.header(message);
    let mut files: BTreeSet<Vec<u8>> = BTreeSet::new();
    for path in &pathspecs {
        stream.extend_from_slice(b"D ");
        append_quoted(&mut stream, &[prefix, path.as_bytes()].concat());
        stream.push(b'\n');
        walk(clan_dir, Path::new(path), &mut files).map_err(read_error)?;
    }
    for file in &files {
        append_file(&mut stream, clan_dir, prefix, file).map_err(read_error)?;
    }
    fast_import(clan_dir, &stream)?;
    if !target.advance(clan_dir, message)? {
        return Ok(false);
    }
    // The index follows the commit: every file now there, and every entry under the paths
    // that no longer exists.
    let listed = git(
        clan_dir,
        "ls-files",
        &with_paths(&["ls-files", "-z"], &pathspecs),
    )?;
    let listed = succeeded("ls-files", clan_dir, listed)?;
    files.extend(
        listed
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(<[u8]>::to_vec),
    );
    let mut list = Vec::new();
    for file in &files {
        list.extend_from_slice(file);
        list.push(0);
    }
    let updated = git_with_input(
        clan_dir,
        "update-index",
        &["update-index", "--add", "--remove", "-z", "--stdin"],
        &list,
    )?;
    succeeded("update-index", clan_dir, updated)?;
    Ok(true)
}

/// Collects the files and symlinks at or under `path` (relative to `dir`), relative to `dir`.
fn walk(dir: &Path, path: &Path, files: &mut BTreeSet<Vec<u8>>) -> std::io::Result<()> {
    let full = dir.join(path);
    let metadata = match full.symlink_metadata() {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if !metadata.is_dir() {
        files.insert(path.as_os_str().as_bytes().to_vec());
        return Ok(());
    }
    for entry in std::fs::read_dir(&full)? {
        let name = entry?.file_name();
        if name != ".git" {
            walk(dir, &path.join(name), files)?;
        }
    }
    Ok(())
}

/// `head` (a git subcommand and its options), `--`, then `pathspecs`.
fn with_paths<'a>(head: &[&'static str], pathspecs: &[&'a OsStr]) -> Vec<&'a OsStr> {
    let mut args: Vec<&'a OsStr> = head.iter().map(|&a| OsStr::new(a)).collect();
    args.push(OsStr::new("--"));
    args.extend(pathspecs);
    args
}

/// `git add` and `git commit --no-verify` of the paths, for repositories where
/// `git fast-import` would not do what `git commit` does.
fn plain_commit(clan_dir: &Path, pathspecs: &[&OsStr], message: &str) -> Result<bool, Error> {
    let with_paths = |head: &[&'static str]| with_paths(head, pathspecs);
    let added = git(clan_dir, "add", &with_paths(&["add", "--all"]))?;
    succeeded("add", clan_dir, added)?;
    let diff = git(
        clan_dir,
        "diff",
        &with_paths(&["diff", "--cached", "--quiet"]),
    )?;
    if diff.status.success() {
        return Ok(false);
    }
    let mut commit = with_paths(&["commit", "--quiet", "--no-verify", "-m"]);
    commit.insert(4, message.as_ref());
    let committed = git(clan_dir, "commit", &commit)?;
    succeeded("commit", clan_dir, committed)?;
    Ok(true)
}

/// Where and as whom a fast-import commit goes.
struct Target {
    branch: Vec<u8>,
    /// The branch has a commit to build on (it is not yet born otherwise).
    born: bool,
    author: Vec<u8>,
    committer: Vec<u8>,
}

/// Where fast-import puts the commit until it is known to change something.
const PENDING: &str = "refs/clan/pending-commit";

impl Target {
    fn header(&self, message: &str) -> Vec<u8> {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"commit ");
        stream.extend_from_slice(PENDING.as_bytes());
        stream.extend_from_slice(b"\nauthor ");
        stream.extend_from_slice(&self.author);
        stream.extend_from_slice(b"\ncommitter ");
        stream.extend_from_slice(&self.committer);
        stream.push(b'\n');
        append_data(&mut stream, message.as_bytes());
        if self.born {
            stream.extend_from_slice(b"from ");
            stream.extend_from_slice(&self.branch);
            stream.extend_from_slice(b"^0\n");
        }
        stream
    }

    /// Moves the branch to the pending commit when its tree differs from the branch's (in one
    /// transaction that fails if the branch moved meanwhile) and drops the pending ref.
    /// Returns whether the branch moved.
    fn advance(&self, clan_dir: &Path, message: &str) -> Result<bool, Error> {
        let mut revisions = vec![PENDING.to_owned(), format!("{PENDING}^{{tree}}")];
        if self.born {
            revisions.extend([format!("{PENDING}^1"), format!("{PENDING}^1^{{tree}}")]);
        }
        let mut args: Vec<&OsStr> = vec!["rev-parse".as_ref()];
        args.extend(revisions.iter().map(OsStr::new));
        let parsed = succeeded("rev-parse", clan_dir, git(clan_dir, "rev-parse", &args)?)?;
        let parsed = String::from_utf8_lossy(&parsed.stdout).into_owned();
        let ids: Vec<&str> = parsed.lines().collect();
        let branch = String::from_utf8_lossy(&self.branch);
        let mut transaction = match ids.as_slice() {
            [_, tree, _, parent_tree] if tree == parent_tree => String::new(),
            [commit, _, parent, _] => format!("update {branch} {commit} {parent}\n"),
            [commit, _] => format!("create {branch} {commit}\n"),
            _ => return Err(git_error("rev-parse", clan_dir, parsed.clone())),
        };
        let moves = !transaction.is_empty();
        transaction.push_str(&format!("delete {PENDING}\n"));
        let subject = message.lines().next().unwrap_or_default();
        let reason = format!("commit: {subject}");
        let updated = git_with_input(
            clan_dir,
            "update-ref",
            &["update-ref", "-m", &reason, "--stdin"],
            transaction.as_bytes(),
        )?;
        succeeded("update-ref", clan_dir, updated)?;
        Ok(moves)
    }
}

/// The branch HEAD names and the identities `git commit` would use; `None` when a plain
/// `git commit` is needed (detached HEAD, signed commits, no identity configured).
fn fast_import_target(clan_dir: &Path) -> Result<Option<Target>, Error> {
    let head = git(
        clan_dir,
        "symbolic-ref",
        &["symbolic-ref".as_ref(), "-q".as_ref(), "HEAD".as_ref()],
    )?;
    let variables = git(clan_dir, "var", &["var".as_ref(), "-l".as_ref()])?;
    if !head.status.success() || !variables.status.success() {
        return Ok(None);
    }
    let mut author = None;
    let mut committer = None;
    for line in variables.stdout.split(|&b| b == b'\n') {
        if let Some(ident) = line.strip_prefix(b"GIT_AUTHOR_IDENT=") {
            author = Some(ident.to_vec());
        } else if let Some(ident) = line.strip_prefix(b"GIT_COMMITTER_IDENT=") {
            committer = Some(ident.to_vec());
        } else if let Some(value) = line.strip_prefix(b"commit.gpgsign=") {
            if !matches!(
                value.to_ascii_lowercase().as_slice(),
                b"false" | b"no" | b"off" | b"0"
            ) {
                return Ok(None);
            }
        }
    }
    let (Some(author), Some(committer)) = (author, committer) else {
        return Ok(None);
    };
    let branch = trim_newline(&head.stdout).to_vec();
    let born = git(
        clan_dir,
        "rev-parse",
        &[
            "rev-parse".as_ref(),
            "-q".as_ref(),
            "--verify".as_ref(),
            OsStr::from_bytes(&branch),
        ],
    )?
    .status
    .success();
    Ok(Some(Target {
        branch,
        born,
        author,
        committer,
    }))
}

/// Appends `data <n>\n<bytes>\n`.
fn append_data(stream: &mut Vec<u8>, bytes: &[u8]) {
    stream.extend_from_slice(format!("data {}\n", bytes.len()).as_bytes());
    stream.extend_from_slice(bytes);
    stream.push(b'\n');
}

/// Appends the command that puts `file` (relative to `dir`, which is at `prefix` in the
/// work tree) into the commit with its content and mode.
fn append_file(
    stream: &mut Vec<u8>,
    dir: &Path,
    prefix: &[u8],
    file: &[u8],
) -> std::io::Result<()> {
    let full = dir.join(OsStr::from_bytes(file));
    let metadata = full.symlink_metadata()?;
    let (mode, content): (&[u8], Vec<u8>) = if metadata.is_symlink() {
        (
            b"120000",
            std::fs::read_link(&full)?.into_os_string().into_vec(),
        )
    } else if metadata.permissions().mode() & 0o111 != 0 {
        (b"100755", std::fs::read(&full)?)
    } else {
        (b"100644", std::fs::read(&full)?)
    };
    stream.extend_from_slice(b"M ");
    stream.extend_from_slice(mode);
    stream.extend_from_slice(b" inline ");
    append_quoted(stream, &[prefix, file].concat());
    stream.push(b'\n');
    append_data(stream, &content);
    Ok(())
}

/// A path as fast-import reads it whatever it contains: C-style quoted.
fn append_quoted(stream: &mut Vec<u8>, path: &[u8]) {
    stream.push(b'"');
    for &byte in path {
        match byte {
            b'"' => stream.extend_from_slice(b"\\\""),
            b'\\' => stream.extend_from_slice(b"\\\\"),
            b'\n' => stream.extend_from_slice(b"\\n"),
            _ => stream.push(byte),
        }
    }
    stream.push(b'"');
}

fn fast_import(clan_dir: &Path, stream: &[u8]) -> Result<(), Error> {
    let imported = git_with_input(clan_dir, "fast-import", &["fast-import", "--quiet"], stream)?;
    succeeded("fast-import", clan_dir, imported).map(drop)
}

/// Runs git with `input` on its standard input.
fn git_with_input(
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
    let mut stdin = child.stdin.take().expect("piped");
    // Written from a thread so that git's output cannot fill its pipe while we write.
    let output = std::thread::scope(|scope| {
        let writer = scope.spawn(move || stdin.write_all(input));
        let output = child.wait_with_output();
        (writer.join().expect("writer does not panic"), output)
    });
    match output {
        (_, Err(error)) => Err(spawn_error(error)),
        (Err(error), Ok(output)) if output.status.success() => Err(spawn_error(error)),
        (_, Ok(output)) => Ok(output),
    }
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\n").unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_any_path() {
        let mut out = Vec::new();
        append_quoted(&mut out, b"a \"b\"\\c\nd");
        assert_eq!(out, b"\"a \\\"b\\\"\\\\c\\nd\"");
    }
}
