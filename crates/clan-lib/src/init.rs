//! `init`: a new clan directory with its clan.toml, a git repository, and — as clan-core's
//! `clan init` does — the admin's age key (unless one exists) and their sops user, all in
//! one first commit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clan_secrets::{KeySources, Recipient, UserName};
use clan_vars::VarsStore;

use crate::{change, Error, Progress};

/// What to create.
pub struct InitOptions {
    /// The directory (it may exist, but must not hold a clan.toml yet).
    pub dir: PathBuf,
    /// The clan's name; default: the directory's name, made valid.
    pub name: Option<String>,
    /// The domain machines are reachable under, `<machine>.<domain>`.
    pub domain: String,
    /// The sops user to create for the admin; default: the logged-in user
    /// ([`crate::vars::login_user`]).
    pub user: Option<UserName>,
    /// Where the admin's age keys are.
    pub keys: KeySources,
}

/// What `init` did.
#[derive(Debug)]
pub struct Initialized {
    pub name: String,
    /// git had no user identity, so the repository commits as `clan <clan@localhost>`.
    pub git_identity_set: bool,
    /// The age key created, when the admin had none: its file and public key.
    pub key_created: Option<(PathBuf, Recipient)>,
    /// The admin's sops user: created now, or the existing user holding their key.
    pub user: UserName,
    pub user_created: bool,
}

/// clan-core's rule for a clan's name: letters, digits, `-` and `_`.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 63 {
        Some("it is longer than 63 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Some("only letters, digits, `-` and `_` are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidClanName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A valid name made from a directory's name (`.tmpX1` → `tmpX1`, `my clan` → `my-clan`).
fn name_from_dir(dir: &Path) -> String {
    let base = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name: String = name.trim_matches('-').chars().take(63).collect();
    if name.is_empty() {
        "clan".to_owned()
    } else {
        name
    }
}

/// Creates the clan described by `options`.
pub fn init(options: &InitOptions, progress: &dyn Progress) -> Result<Initialized, Error> {
    let dir = &options.dir;
    let clan_toml = dir.join(clan_inventory::CLAN_TOML);
    if clan_toml.exists() {
        return Err(Error::ClanExists { path: clan_toml });
    }
    let name = match &options.name {
        Some(name) => {
            validate_name(name)?;
            name.clone()
        }
        None => name_from_dir(dir),
    };
    // Before anything is created: a user name that cannot be told stops here.
    let user = match &options.user {
        Some(user) => user.clone(),
        None => crate::vars::login_user()?,
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        context: "creating",
        path: dir.clone(),
        source,
    })?;
    let git_identity_set = git_init(dir)?;
    let change = change::begin(dir, &[clan_inventory::CLAN_TOML, "sops"], progress)?;
    // Again under the lock: another `clan init` may have been quicker.
    if clan_toml.exists() {
        return Err(Error::ClanExists { path: clan_toml });
    }
    clan_inventory::write_atomically(
        &clan_toml,
        clan_inventory::new_clan_toml(&name, &options.domain).as_bytes(),
    )?;
    let keys = clan_vars::ops::keygen(&VarsStore::new(dir), &options.keys, &user)?;
    let mut paths = vec![PathBuf::from(clan_inventory::CLAN_TOML)];
    let user_created = keys.user_added.is_some();
    if let Some(changes) = &keys.user_added {
        paths.extend(changes.paths.iter().cloned());
    }
    change.commit(&paths, "clan init")?;
    Ok(Initialized {
        name,
        git_identity_set,
        key_created: keys.created,
        user,
        user_created,
    })
}

/// `git init`, and a repository-local identity when the user has none, so commits work.
/// Returns whether that identity was set.
fn git_init(dir: &Path) -> Result<bool, Error> {
    let git = |args: &[&str], command: &'static str| -> Result<(), Error> {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|source| Error::Io {
                context: "running git in",
                path: dir.to_path_buf(),
                source,
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::GitCommand {
                command,
                dir: dir.to_path_buf(),
            })
        }
    };
    git(&["init", "--quiet"], "git init")?;
    let has_identity = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["config", "user.email"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_identity {
        git(&["config", "user.name", "clan"], "git config user.name")?;
        git(
            &["config", "user.email", "clan@localhost"],
            "git config user.email",
        )?;
    }
    Ok(!has_identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_clan_core_and_directories_give_valid_ones() {
        assert!(validate_name("my-clan_2").is_ok());
        for bad in ["", "my clan", "a.b", "ünï", &"x".repeat(64)] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidClanName { .. })),
                "{bad:?} accepted"
            );
        }
        assert_eq!(name_from_dir(Path::new("/x/.tmpAb3")), "tmpAb3");
        assert_eq!(name_from_dir(Path::new("/x/my clan")), "my-clan");
        assert_eq!(name_from_dir(Path::new("/")), "clan");
    }
}
