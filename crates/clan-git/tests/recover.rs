//! Recovery against real git: every state an interrupted command can leave — a helper ref,
//! a killed git's lock file, changes made but not committed, an index behind its branch —
//! is cleared by the next command taking the lock, and its own commit then works.

use std::path::{Path, PathBuf};

use clan_git::{ClanLock, Recovered};

mod repo;

use repo::{git, write};

/// A repository with a first commit of `clan.toml`.
fn clan() -> tempfile::TempDir {
    let dir = repo::repo();
    write(dir.path(), "clan.toml", "[meta]\n");
    git(dir.path(), &["add", "clan.toml"]);
    git(dir.path(), &["commit", "-q", "-m", "init"]);
    dir
}

fn lock(dir: &Path, command: &str) -> ClanLock {
    ClanLock::acquire(dir, command, true, |_, _| {}).unwrap()
}

fn status(dir: &Path) -> String {
    git(dir, &["status", "--porcelain", "--untracked-files=all"])
}

#[test]
fn changes_of_a_command_that_died_before_committing_are_committed_by_the_next() {
    let dir = clan();
    let root = dir.path();
    {
        let first = lock(root, "clan secrets set a");
        first
            .begin(&[Path::new("sops"), Path::new("clan.toml")])
            .unwrap();
        write(root, "sops/secrets/a/secret", "encrypted\n");
        // Half-written files of atomic writes, next to and under the scope.
        write(root, "sops/secrets/a/.secret.tmp-0123456789abcdef", "half");
        write(root, ".clan.toml.tmp-Ab12Cd", "half");
        // Dies here: the lock goes with it, the journal stays.
        first.release_as_if_killed();
    }
    assert!(clan_git::interrupted(root).unwrap());
    let next = lock(root, "clan machines create web");
    let recovered = next.recover().unwrap();
    assert!(
        recovered.contains(&Recovered::Committed {
            command: "clan secrets set a".into()
        }),
        "{recovered:?}"
    );
    assert_eq!(
        recovered
            .iter()
            .filter(|r| matches!(r, Recovered::Temporary { .. }))
            .count(),
        2,
        "{recovered:?}"
    );
    assert!(!clan_git::interrupted(root).unwrap());
    assert_eq!(status(root), "");
    let message = git(root, &["log", "-1", "--format=%B"]);
    assert!(
        message.contains("interrupted `clan secrets set a`"),
        "{message}"
    );
    assert!(
        message.contains("`clan machines create web` found"),
        "{message}"
    );
    assert_eq!(
        git(root, &["show", "HEAD:sops/secrets/a/secret"]),
        "encrypted\n"
    );

    // A command that failed before changing anything leaves nothing to commit, silently.
    next.begin(&[Path::new("clan.toml")]).unwrap();
    drop(next);
    assert!(!clan_git::interrupted(root).unwrap());
    let quiet = lock(root, "clan instances list").recover().unwrap();
    assert_eq!(quiet, vec![]);
    assert_eq!(git(root, &["rev-list", "--count", "HEAD"]), "2\n");
}

#[test]
fn a_helper_ref_and_lock_files_of_a_killed_git_are_cleared() {
    let dir = clan();
    let root = dir.path();
    let head = git(root, &["rev-parse", "HEAD"]);
    git(
        root,
        &["update-ref", "refs/clan/pending-commit", head.trim()],
    );
    let git_dir = root.join(".git");
    // Without an interrupted clan command, an index.lock nobody holds open may be a live
    // git's (a `git commit` in its editor closes it): left alone.
    std::fs::write(git_dir.join("index.lock"), "").unwrap();
    let untouched = lock(root, "clan vars list").recover().unwrap();
    assert!(
        !untouched
            .iter()
            .any(|r| matches!(r, Recovered::StaleGitLock { .. })),
        "{untouched:?}"
    );
    assert!(git_dir.join("index.lock").exists());
    git(
        root,
        &["update-ref", "refs/clan/pending-commit", head.trim()],
    );
    for stale in ["index.lock", "refs/heads/main.lock", "packed-refs.lock"] {
        std::fs::write(git_dir.join(stale), "").unwrap();
    }
    // A clan command killed while its git ran leaves its journal too.
    let killed = lock(root, "clan vars generate");
    killed.begin(&[Path::new("vars")]).unwrap();
    killed.release_as_if_killed();
    // A lock file some live git holds open is not touched.
    std::fs::write(git_dir.join("HEAD.lock"), "").unwrap();
    let held = std::fs::File::open(git_dir.join("HEAD.lock")).unwrap();

    let lock = lock(root, "clan vars generate");
    let recovered = lock.recover().unwrap();
    assert!(recovered.contains(&Recovered::StaleRef {
        name: "refs/clan/pending-commit".into()
    }));
    for stale in ["index.lock", "refs/heads/main.lock", "packed-refs.lock"] {
        assert!(
            recovered.contains(&Recovered::StaleGitLock {
                path: git_dir.join(stale)
            }),
            "{stale}: {recovered:?}"
        );
        assert!(!git_dir.join(stale).exists());
    }
    assert!(git_dir.join("HEAD.lock").exists());
    drop(held);
    std::fs::remove_file(git_dir.join("HEAD.lock")).unwrap();

    write(root, "vars/a/value", "1\n");
    assert!(lock.commit(&[PathBuf::from("vars")], "vars: a").unwrap());
    assert_eq!(git(root, &["for-each-ref", "refs/clan"]), "");
    assert_eq!(status(root), "");
}

#[test]
fn an_index_behind_its_branch_is_brought_in_step() {
    let dir = clan();
    let root = dir.path();
    let lock = lock(root, "clan vars generate");
    lock.begin(&[Path::new("vars")]).unwrap();
    write(root, "vars/a/value", "1\n");
    assert!(lock.commit(&[PathBuf::from("vars")], "vars: a").unwrap());
    // As if killed after the branch moved but before the index was written.
    git(root, &["read-tree", "HEAD^"]);
    lock.begin(&[Path::new("vars")]).unwrap();
    lock.release_as_if_killed();
    assert_ne!(status(root), "");
    let next = self::lock(root, "clan vars generate");
    assert_eq!(next.recover().unwrap(), vec![]);
    assert_eq!(status(root), "");
    assert_eq!(git(root, &["rev-list", "--count", "HEAD"]), "2\n");
}

#[test]
fn without_committing_nothing_is_journaled_or_committed() {
    let dir = clan();
    let root = dir.path();
    let lock = ClanLock::acquire(root, "clan machines create a", false, |_, _| {}).unwrap();
    lock.begin(&[Path::new("clan.toml")]).unwrap();
    write(root, "clan.toml", "[meta]\nname = \"x\"\n");
    assert!(!lock.commit(&[PathBuf::from("clan.toml")], "x").unwrap());
    assert!(!clan_git::interrupted(root).unwrap());
    assert_eq!(status(root), " M clan.toml\n");
}

#[test]
fn a_journal_write_killed_before_its_rename_is_removed_by_the_next_command() {
    let dir = clan();
    let root = dir.path();
    let leftover = root.join(".git/.clan-journal.tmp-0123456789abcdef");
    std::fs::write(&leftover, "half a journal").unwrap();
    let next = lock(root, "clan machines create web");
    let recovered = next.recover().unwrap();
    assert!(
        recovered.contains(&Recovered::Temporary {
            path: leftover.clone()
        }),
        "{recovered:?}"
    );
    assert!(!leftover.exists());
    // Nothing was interrupted: no commit comes of it.
    assert!(!recovered
        .iter()
        .any(|r| matches!(r, Recovered::Committed { .. })));
}

#[test]
fn a_command_that_fails_after_begin_commits_its_changes_as_it_releases_the_lock() {
    let dir = clan();
    let root = dir.path();
    {
        let failing = lock(root, "clan vars generate web");
        failing.begin(&[Path::new("vars")]).unwrap();
        write(root, "vars/per-machine/web/a/value", "1\n");
        // Returns an error here: the lock is dropped without a commit.
    }
    assert!(!clan_git::interrupted(root).unwrap(), "no journal is left");
    assert_eq!(status(root), "");
    let message = git(root, &["log", "-1", "--format=%B"]);
    assert!(
        message.contains("failed `clan vars generate web`"),
        "{message}"
    );
    // The user's own edit after it is theirs to commit: the next command leaves it alone.
    write(root, "vars/per-machine/web/a/value", "edited by hand\n");
    let next = lock(root, "clan machines create db");
    assert_eq!(next.recover().unwrap(), vec![]);
    assert_eq!(status(root), " M vars/per-machine/web/a/value\n");
    assert_eq!(git(root, &["rev-list", "--count", "HEAD"]), "2\n");
}
