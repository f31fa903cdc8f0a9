//! Committing what an operation changed: only the given paths, with the operation's message.
//! Called under the clan lock only ([`crate::ClanLock::commit`]).
//!
//! A commit is written with `git fast-import` — one pack instead of a loose object per file
//! and directory, which is most of the cost when `vars generate` adds thousands of files —
//! and the index is then brought up to date with `git add`. Like clan-core (`git commit
//! --no-verify`) no pre-commit hook runs. When a plain `git commit` would behave differently
//! (commits are to be signed, or HEAD is detached) it is used instead.
//!
//! Every step can be interrupted: the commit is built under a ref of its own
//! (`refs/clan/commit-<pid>-<nanos>`, removed by the next run if it stays), the branch moves in
//! one transaction, and the index is brought in step even when the branch did not need to
//! move (an earlier run may have died between the two).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Read as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clan_fs::{Kind, Tree};

use crate::git::{git, git_error, git_with_input, succeeded, trim_newline};
use crate::Error;

/// Stages and commits `paths` (relative to `clan_dir`, which is at `prefix` in its work
/// tree; deleted ones included) with `message`. Returns whether a commit was made.
pub(crate) fn commit_paths(
    clan_dir: &Path,
    prefix: &[u8],
    paths: &[PathBuf],
    message: &str,
) -> Result<bool, Error> {
    if paths.is_empty() {
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
    // Read without following links, wherever they are: a file swapped for a link to
    // `/etc/shadow` while clan runs as root must not put that file's content in the commit.
    let tree = clan_fs::Tree::open(clan_dir)?;
    let mut stream = target.header(message);
    let mut files: BTreeSet<Vec<u8>> = BTreeSet::new();
    for path in &pathspecs {
        stream.extend_from_slice(b"D ");
        append_quoted(&mut stream, &[prefix, path.as_bytes()].concat());
        stream.push(b'\n');
        walk(&tree, Path::new(path), &mut files)?;
    }
    drop_ignored(clan_dir, &mut files)?;
    for file in &files {
        append_file(&mut stream, &tree, prefix, file)?;
    }
    fast_import(clan_dir, &stream)?;
    let moved = target.advance(clan_dir, message)?;
    // The index follows the commit: every file now there, and every entry under the paths
    // that no longer exists. Also when the branch did not move: it may have moved in a run
    // that died before this step.
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
    Ok(moved)
}

/// Collects what is at or under `path` (relative to the tree) that is not a directory,
/// relative to the tree; never a half-written temporary file, never through a link.
fn walk(tree: &Tree, path: &Path, files: &mut BTreeSet<Vec<u8>>) -> Result<(), Error> {
    match tree.kind(path)? {
        None => Ok(()),
        Some(Kind::Directory) => walk_dir(tree, path, files),
        Some(_) => {
            files.insert(path.as_os_str().as_bytes().to_vec());
            Ok(())
        }
    }
}

fn walk_dir(tree: &Tree, dir: &Path, files: &mut BTreeSet<Vec<u8>>) -> Result<(), Error> {
    for entry in tree.list(dir)? {
        if entry.name == ".git" || crate::is_temporary(&entry.name) {
            continue;
        }
        let path = dir.join(&entry.name);
        if entry.kind == Kind::Directory {
            walk_dir(tree, &path, files)?;
        } else {
            files.insert(path.into_os_string().into_vec());
        }
    }
    Ok(())
}

/// Leaves out of `files` what `git add` would leave out: untracked files a `.gitignore` (or
/// `info/exclude`, `core.excludesFile`) ignores. Tracked files stay, as git keeps them too.
fn drop_ignored(clan_dir: &Path, files: &mut BTreeSet<Vec<u8>>) -> Result<(), Error> {
    if files.is_empty() {
        return Ok(());
    }
    let mut list = Vec::new();
    for file in files.iter() {
        list.extend_from_slice(file);
        list.push(0);
    }
    let checked = git_with_input(
        clan_dir,
        "check-ignore",
        &["check-ignore", "-z", "--stdin"],
        &list,
    )?;
    // 0: some are ignored, 1: none is; anything else is git failing.
    if checked.status.code() == Some(1) {
        return Ok(());
    }
    let checked = succeeded("check-ignore", clan_dir, checked)?;
    for ignored in checked.stdout.split(|&b| b == 0).filter(|p| !p.is_empty()) {
        files.remove(ignored);
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
    /// The helper ref fast-import writes the commit to until it is known to change something.
    pending: String,
    branch: Vec<u8>,
    /// The branch has a commit to build on (it is not yet born otherwise).
    born: bool,
    author: Vec<u8>,
    committer: Vec<u8>,
}

impl Target {
    fn header(&self, message: &str) -> Vec<u8> {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"commit ");
        stream.extend_from_slice(self.pending.as_bytes());
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
        let pending = &self.pending;
        let mut revisions = vec![pending.clone(), format!("{pending}^{{tree}}")];
        if self.born {
            revisions.extend([format!("{pending}^1"), format!("{pending}^1^{{tree}}")]);
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
        transaction.push_str(&format!("delete {pending}\n"));
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
    if !head.status.success() || signs_commits(clan_dir)? {
        return Ok(None);
    }
    // `git var NAME` is as strict as `git commit` (`git var -l` makes an identity up): without
    // one, the plain commit fails with git's own "Please tell me who you are".
    let ident = |name: &'static str| -> Result<Option<Vec<u8>>, Error> {
        let output = git(clan_dir, "var", &["var".as_ref(), name.as_ref()])?;
        Ok(output
            .status
            .success()
            .then(|| trim_newline(&output.stdout).to_vec()))
    };
    let (Some(author), Some(committer)) =
        (ident("GIT_AUTHOR_IDENT")?, ident("GIT_COMMITTER_IDENT")?)
    else {
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
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    Ok(Some(Target {
        pending: format!(
            "{}commit-{}-{nanos}",
            crate::recover::REFS,
            std::process::id()
        ),
        branch,
        born,
        author,
        committer,
    }))
}

/// Whether commits are to be signed (`commit.gpgsign`, read as git reads a boolean: a bare
/// `gpgsign` is true, the last setting wins).
fn signs_commits(clan_dir: &Path) -> Result<bool, Error> {
    let args = ["config", "--type=bool", "--get", "commit.gpgsign"];
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let output = git(clan_dir, "config", &args)?;
    match output.status.code() {
        Some(0) => Ok(trim_newline(&output.stdout) == b"true"),
        // Not set.
        Some(1) => Ok(false),
        _ => succeeded("config", clan_dir, output).map(|_| false),
    }
}

/// Appends `data <n>\n<bytes>\n`.
fn append_data(stream: &mut Vec<u8>, bytes: &[u8]) {
    stream.extend_from_slice(format!("data {}\n", bytes.len()).as_bytes());
    stream.extend_from_slice(bytes);
    stream.push(b'\n');
}

/// Appends the command that puts `file` (relative to the tree, which is at `prefix` in the
/// work tree) into the commit with its content and mode.
fn append_file(stream: &mut Vec<u8>, tree: &Tree, prefix: &[u8], file: &[u8]) -> Result<(), Error> {
    let rel = Path::new(OsStr::from_bytes(file));
    let (mode, content): (&[u8], Vec<u8>) = if tree.kind(rel)? == Some(Kind::Symlink) {
        (b"120000", tree.read_link(rel)?.into_os_string().into_vec())
    } else {
        // A regular file only: a FIFO or device is an error, not a read that never ends.
        let mut opened = tree.open_file(rel)?;
        let read_error = |error: std::io::Error| {
            Error::from(clan_error::io("read", &tree.path().join(rel))(error))
        };
        let executable = opened.metadata().map_err(read_error)?.permissions().mode() & 0o111 != 0;
        let mut content = Vec::new();
        opened.read_to_end(&mut content).map_err(read_error)?;
        (if executable { b"100755" } else { b"100644" }, content)
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
