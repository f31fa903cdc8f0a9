//! A clan commit is made as `git commit` would make it: without a configured identity it
//! fails with git's own message (never an identity made up), and where commits are to be
//! signed (`commit.gpgsign`, also written as a bare `gpgsign`) git signs it. Alone in its
//! file: it sets the process's git configuration.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clan_git::ClanLock;

mod repo;

use repo::{git, write};

/// A repository on `main` with no identity anywhere git looks.
fn bare_repo() -> tempfile::TempDir {
    std::env::set_var("GIT_CONFIG_GLOBAL", "/dev/null");
    std::env::set_var("GIT_CONFIG_NOSYSTEM", "1");
    for name in [
        "EMAIL",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
    ] {
        std::env::remove_var(name);
    }
    let dir = tempfile::tempdir().unwrap();
    let init = std::process::Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(init.success());
    dir
}

fn commit(dir: &Path) -> Result<bool, clan_git::Error> {
    write(dir, "vars/a/value", "1\n");
    ClanLock::acquire(dir, "clan vars generate", true, |_, _| {})?
        .commit(&[PathBuf::from("vars")], "vars: a")
}

#[test]
fn without_an_identity_the_commit_fails_with_gits_message() {
    let dir = bare_repo();
    // However the host is named, git takes no identity it was not given.
    std::fs::write(
        dir.path().join(".git/config"),
        "[user]\n\tuseConfigOnly = true\n",
    )
    .unwrap();
    let error = commit(dir.path()).expect_err("no identity");
    let message = error.to_string();
    assert!(message.contains("Please tell me who you are"), "{message}");
    let count = std::process::Command::new("git")
        .arg("-C")
        .arg(dir.path())
        .args(["rev-list", "--all", "--count"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&count.stdout),
        "0\n",
        "nothing committed"
    );
}

#[test]
fn a_bare_gpgsign_makes_git_sign_the_commit() {
    let dir = bare_repo();
    let signer = dir.path().join(".git/sign.sh");
    let called = dir.path().join(".git/signer-called");
    std::fs::write(
        &signer,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", called.display()),
    )
    .unwrap();
    std::fs::set_permissions(&signer, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join(".git/config"),
        format!(
            "[user]\n\tname = test\n\temail = test@example.org\n[commit]\n\tgpgsign\n[gpg]\n\tprogram = {}\n",
            signer.display()
        ),
    )
    .unwrap();
    // The signer refuses: the commit fails, and it was asked.
    let error = commit(dir.path()).expect_err("the signer refused");
    assert!(called.exists(), "git was not asked to sign: {error}");

    // Signing off again: the commit is made.
    git(dir.path(), &["config", "commit.gpgsign", "false"]);
    assert!(commit(dir.path()).unwrap());
}
