//! A repository another user owns (root running clan in a user's checkout): git refuses it,
//! and so does clan, saying so, instead of taking it for a directory without git (a lock of
//! its own beside the clan, nothing committed). Alone in its file: it sets the process's
//! git configuration.

use std::os::unix::fs::chown;
use std::path::Path;

use clan_git::{ClanLock, Error};

mod repo;

fn chown_all(path: &Path, uid: u32) {
    chown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_all(&entry.unwrap().path(), uid);
        }
    }
}

#[test]
fn another_users_repository_is_refused_by_name_not_taken_for_no_git() {
    if !rustix::process::geteuid().is_root() {
        clan_testbed::skip("needs root to give the repository to another user");
        return;
    }
    // No safe.directory from the machine's own configuration.
    std::env::set_var("GIT_CONFIG_GLOBAL", "/dev/null");
    std::env::remove_var("SUDO_UID");
    let dir = repo::repo();
    repo::write(dir.path(), "clan.toml", "[meta]\n");
    chown_all(dir.path(), 4242);

    for commits in [true, false] {
        let Err(error) =
            ClanLock::acquire(dir.path(), "clan machines create web", commits, |_, _| {})
        else {
            panic!("another user's repository was taken");
        };
        assert!(matches!(error, Error::NotTrusted { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("another user owns"), "{message}");
        assert!(message.contains("dubious ownership"), "{message}");
    }
    // A command that only reads goes on.
    assert!(!clan_git::interrupted(dir.path()).unwrap());
    assert!(
        !dir.path().join(".clan.lock").exists(),
        "no lock of its own beside the clan"
    );
}
