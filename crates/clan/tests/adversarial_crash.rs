//! Issue 10, "every edit is serialized and complete": SIGKILL of `clan vars generate`,
//! `clan instances set` and `clan secrets set` at random moments and at random git calls
//! (`CLAN_ADVERSARIAL_TRIALS` trials each, default 8, seed printed), each followed by the
//! same command, which must succeed and leave the repository committed and consistent; and
//! the states the issue found stuck (a kill between the vars swap and the commit, a stale
//! `refs/clan/pending-commit`, a lock file of a killed git, a killed lock holder) recovered
//! by the next run; and without git, no change that would then stay uncommitted.

mod crash_support;
mod env;

use crash_support::{kill_trials, Clan, Kill};

#[test]
fn vars_generate_killed_anywhere_is_recovered_by_the_next_run() {
    let clan = Clan::new(&["web01", "web02"]);
    clan.ok(&["vars", "generate"], b"");
    kill_trials(
        "vars generate",
        &clan,
        |_| (strings(&["vars", "generate", "--regenerate"]), Vec::new()),
        |clan, trial| clan.assert_vars_valid(&format!("vars generate trial {trial}")),
    );
}

#[test]
fn instances_set_killed_anywhere_is_recovered_by_the_next_run() {
    let clan = Clan::new(&["web01"]);
    clan.ok(&["vars", "generate"], b"");
    kill_trials(
        "instances set",
        &clan,
        |trial| {
            let setting = format!("default.greeting=hello-{trial}");
            (
                strings(&["instances", "set", "hello", &setting]),
                Vec::new(),
            )
        },
        |clan, trial| {
            let expected = format!("hello-{trial}");
            assert!(clan.read("clan.toml").contains(&expected));
            assert!(clan.git(&["show", "HEAD:clan.toml"]).contains(&expected));
        },
    );
}

#[test]
fn secrets_set_killed_anywhere_is_recovered_by_the_next_run() {
    let clan = Clan::new(&["web01"]);
    clan.ok(&["vars", "generate"], b"");
    kill_trials(
        "secrets set",
        &clan,
        |trial| {
            (
                strings(&["secrets", "set", "api-token", "--machine", "web01"]),
                format!("token-{trial}").into_bytes(),
            )
        },
        |clan, trial| {
            assert_eq!(
                clan.ok(&["secrets", "get", "api-token"], b""),
                format!("token-{trial}")
            );
        },
    );
}

#[test]
fn generated_vars_left_uncommitted_by_a_kill_are_committed_by_vars_check() {
    let clan = Clan::new(&["web01"]);
    // Killed after the generators were swapped in, before the commit started.
    let killed = clan.run_killed(
        &["vars", "generate"],
        b"",
        &Kill::OnGit {
            subcommand: "fast-import",
            mode: "before",
        },
    );
    assert_eq!(killed.code, None, "{}", killed.stderr);
    assert!(clan
        .root()
        .join("vars/per-machine/web01/token/id/value")
        .exists());
    assert_ne!(clan.git(&["status", "--porcelain"]), "");

    let check = clan.run(&["vars", "check", "web01"], b"");
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert!(
        check
            .stderr
            .contains("recovered: committed what the interrupted `clan vars generate` had changed"),
        "{}",
        check.stderr
    );
    let message = clan.git(&["log", "-1", "--format=%s"]);
    assert!(
        message.starts_with("clan: commit what the interrupted"),
        "{message}"
    );
    clan.assert_consistent("after vars check");
    let again = clan.run(&["vars", "generate"], b"");
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(
        again.stderr.contains("all vars are up to date"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_kill_during_the_commit_leaves_nothing_that_blocks_later_commits() {
    let clan = Clan::new(&["web01"]);
    clan.ok(&["vars", "generate"], b"");
    // The whole process group dies while fast-import writes, and while the index is written.
    for subcommand in ["fast-import", "update-index", "update-ref"] {
        let killed = clan.run_killed(
            &["secrets", "set", "s", "--machine", "web01"],
            subcommand.as_bytes(),
            &Kill::OnGit {
                subcommand,
                mode: "during",
            },
        );
        assert_eq!(killed.code, None, "{subcommand}: {}", killed.stderr);
        clan.ok(&["machines", "create", &format!("after-{subcommand}")], b"");
        clan.assert_consistent(subcommand);
        assert_eq!(clan.ok(&["secrets", "get", "s"], b""), subcommand);
    }
}

#[test]
fn a_stale_pending_commit_ref_and_git_lock_files_do_not_block() {
    let clan = Clan::new(&[]);
    let head = clan.git(&["rev-parse", "HEAD"]);
    // What the issue found after a kill: every later committing command failed.
    clan.git(&["update-ref", "refs/clan/pending-commit", head.trim()]);
    std::fs::write(clan.root().join(".git/index.lock"), "").unwrap();
    // The killed command's journal says it was clan's (the lock is then its git's).
    std::fs::write(
        clan.root().join(".git/clan-journal"),
        b"clan-journal 1\0clan machines create web01\0clan.toml\0",
    )
    .unwrap();
    let run = clan.run(&["machines", "create", "web01"], b"");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("removed `refs/clan/pending-commit`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("index.lock`, left by a git process"),
        "{}",
        run.stderr
    );
    clan.assert_consistent("after the stale ref");
    assert!(clan.git(&["show", "HEAD:clan.toml"]).contains("web01"));
}

#[test]
fn a_killed_lock_holder_does_not_block() {
    let clan = Clan::new(&[]);
    let mut holder = clan.hold_lock();
    let pid = format!("pid {}\n", holder.id());
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The lock file stays, with the dead holder's PID in it: it must not matter.
    assert!(clan.lock_record().starts_with(&pid));
    let run = clan.run(&["machines", "create", "web02"], b"");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains("waiting"), "{}", run.stderr);
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn without_git_a_change_is_made_only_when_not_committing() {
    let clan = Clan::new(&[]);
    let no_git = clan.home().join("empty-path");
    std::fs::create_dir_all(&no_git).unwrap();
    let failed = clan
        .command(&["machines", "create", "web01"])
        .env("PATH", &no_git)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("git rev-parse failed"), "{stderr}");
    assert!(!clan.read("clan.toml").contains("web01"), "nothing changed");
    let uncommitted = clan
        .command(&["machines", "create", "web01"])
        .env("PATH", &no_git)
        .env("CLAN_NO_COMMIT", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&uncommitted.stderr);
    assert!(uncommitted.status.success(), "{stderr}");
    assert!(clan.read("clan.toml").contains("web01"));
}
