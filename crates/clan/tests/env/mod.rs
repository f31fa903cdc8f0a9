//! The environment of every `clan` (and git) a test starts, whichever helper starts it
//! (`cli::Workspace`, `crash_support::Clan`, `support::fixture::Fixture`): the admin's age key
//! file, a private `HOME` and cache, nothing inherited that names a clan or changes how it is
//! committed, and a fixed git identity. Each helper adds only what is its own; every test
//! file that uses one declares `mod env;` beside it.

use std::path::Path;
use std::process::Command;

/// Sets that environment on `command`: `admin_key` is `SOPS_AGE_KEY_FILE`.
pub fn clan_env<'c>(
    command: &'c mut Command,
    admin_key: &Path,
    home: &Path,
    cache: &Path,
) -> &'c mut Command {
    command
        .env_remove("SOPS_AGE_KEY")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("CLAN_NO_COMMIT")
        .env_remove("CLAN_DIR")
        .env_remove("CLAN_TOR_CONFIG")
        .env("SOPS_AGE_KEY_FILE", admin_key)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", cache)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org")
}
