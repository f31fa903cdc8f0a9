//! `ClanLock::commit` against real git: the commit holds exactly the given paths as they
//! are in the work tree (new, changed, deleted, symlinks, executable bits, odd names), the
//! index agrees with it afterwards, and unrelated changes stay uncommitted.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clan_git::ClanLock;

mod repo;

use repo::{git, repo, write};

fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

fn commit_paths(dir: &Path, paths: &[PathBuf], message: &str) -> Result<bool, clan_git::Error> {
    ClanLock::acquire(dir, "clan test", true, |_, _| {})?.commit(paths, message)
}

#[test]
fn commits_exactly_the_given_paths_and_keeps_the_index_in_step() {
    let dir = repo();
    let root = dir.path();
    // The first commit of a branch (nothing to build on yet).
    write(root, "vars/a/value", "one\n");
    write(root, "unrelated", "not mine\n");
    assert!(commit_paths(root, &paths(&["vars"]), "first").unwrap());
    assert_eq!(git(root, &["ls-files"]), "vars/a/value\n");

    write(root, "vars/a/value", "two\n");
    write(root, "vars/b c/\"quoted\"\\name", "odd\n");
    std::os::unix::fs::symlink("../../sops/users/alice", root.join("vars/a/alice")).unwrap();
    write(root, "vars/run.sh", "#!/bin/sh\n");
    std::fs::set_permissions(
        root.join("vars/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(root, "other/file", "left alone\n");
    assert!(commit_paths(root, &paths(&["vars"]), "second").unwrap());

    assert_eq!(git(root, &["log", "--format=%s"]), "second\nfirst\n");
    assert_eq!(git(root, &["show", "HEAD:vars/a/value"]), "two\n");
    assert_eq!(
        git(root, &["show", "HEAD:vars/b c/\"quoted\"\\name"]),
        "odd\n"
    );
    let tree = git(root, &["ls-tree", "-r", "HEAD"]);
    assert!(tree.contains("120000 blob"), "{tree}");
    assert!(tree.contains("100755 blob"), "{tree}");
    assert!(
        !tree.contains("other/file") && !tree.contains("unrelated"),
        "{tree}"
    );
    assert_eq!(
        git(root, &["show", "HEAD:vars/a/alice"]),
        "../../sops/users/alice"
    );
    // The index agrees with the commit: only the unrelated files show up.
    let status = git(root, &["status", "--porcelain", "--untracked-files=all"]);
    assert_eq!(status, "?? other/file\n?? unrelated\n");

    // Deleting a directory is committed; nothing changed makes no commit.
    std::fs::remove_dir_all(root.join("vars/b c")).unwrap();
    assert!(commit_paths(root, &paths(&["vars/b c"]), "third").unwrap());
    assert!(!git(root, &["ls-files"]).contains("b c"));
    assert!(!commit_paths(root, &paths(&["vars"]), "nothing").unwrap());
    assert_eq!(git(root, &["rev-list", "--count", "HEAD"]), "3\n");
    assert_eq!(
        git(root, &["for-each-ref", "refs/clan"]),
        "",
        "no helper ref is left"
    );
    assert_eq!(
        git(root, &["reflog", "-1", "--format=%gs", "main"]),
        "commit: third\n"
    );
    git(root, &["fsck", "--strict"]);
}

#[test]
fn detached_head_gets_a_plain_commit() {
    let dir = repo();
    let root = dir.path();
    write(root, "vars/a", "one\n");
    assert!(commit_paths(root, &paths(&["vars"]), "first").unwrap());
    git(root, &["checkout", "-q", "--detach"]);
    write(root, "vars/a", "two\n");
    assert!(commit_paths(root, &paths(&["vars"]), "on a detached head").unwrap());
    assert_eq!(
        git(root, &["log", "-1", "--format=%s"]),
        "on a detached head\n"
    );
    assert_eq!(git(root, &["show", "HEAD:vars/a"]), "two\n");
    assert_eq!(git(root, &["log", "-1", "--format=%s", "main"]), "first\n");
}

#[test]
fn outside_a_work_tree_nothing_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "vars/a", "one\n");
    assert!(!commit_paths(dir.path(), &paths(&["vars"]), "x").unwrap());
}

#[test]
fn ignored_files_stay_out_of_the_commit_as_with_git_add() {
    let dir = repo();
    let root = dir.path();
    write(root, ".gitignore", "*.plain\nscratch/\n");
    write(root, "vars/a/value", "one\n");
    write(root, "vars/a/value.plain", "a decrypted copy\n");
    write(root, "vars/scratch/dump", "work in progress\n");
    assert!(commit_paths(root, &paths(&["vars"]), "first").unwrap());
    assert_eq!(
        git(root, &["ls-tree", "-r", "--name-only", "HEAD"]),
        "vars/a/value\n"
    );
    assert_eq!(
        git(root, &["ls-files"]),
        "vars/a/value\n",
        "the index agrees"
    );

    // A file tracked before it became ignored is still committed, as `git add` does.
    git(root, &["add", "-f", "vars/a/value.plain"]);
    write(root, "vars/a/value.plain", "changed\n");
    assert!(commit_paths(root, &paths(&["vars"]), "second").unwrap());
    assert_eq!(git(root, &["show", "HEAD:vars/a/value.plain"]), "changed\n");
    assert!(!git(root, &["ls-tree", "-r", "HEAD"]).contains("scratch"));
}

#[test]
fn a_fifo_in_the_scope_is_an_error_naming_it_not_a_read_that_never_ends() {
    let dir = repo();
    let root = dir.path();
    write(root, "vars/a/value", "one\n");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("vars/a/pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let error = commit_paths(root, &paths(&["vars"]), "first").unwrap_err();
    assert!(error.to_string().contains("vars/a/pipe"), "{error}");
    assert_eq!(git(root, &["rev-list", "--all", "--count"]), "0\n");
}
