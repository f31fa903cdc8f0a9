//! The errors of this crate. Each names its subject (a path relative to the clan directory, a
//! user, a secret) and keeps the cause as `source`; their `clan_error::Hint` says what the user can
//! do.

use std::path::PathBuf;

use crate::sops::SopsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation that failed, naming the action and the path.
    #[error(transparent)]
    Io(#[from] clan_error::IoError),

    #[error("failed to {action} `{}`", path.display())]
    Sops {
        action: &'static str,
        path: PathBuf,
        source: SopsError,
    },

    #[error("cannot decrypt `{}`: none of your keys is a recipient; it can be decrypted by {}", path.display(), describe_holders(holders))]
    NotARecipient { path: PathBuf, holders: Vec<String> },

    #[error("invalid {kind} name `{name}`: {rule}")]
    InvalidName {
        kind: &'static str,
        name: String,
        rule: &'static str,
    },

    #[error("{kind} `{name}` does not exist")]
    NotFound { kind: &'static str, name: String },

    #[error("{kind} `{name}` already exists")]
    AlreadyExists { kind: &'static str, name: String },

    #[error("refusing to remove the last key of user `{user}`")]
    LastKey { user: String },

    #[error("refusing to leave {what} without recipients: {}", paths.join(", "))]
    NoRecipientsLeft { what: String, paths: Vec<String> },

    #[error("no age key found (looked in {searched})")]
    NoAdminKey { searched: String },

    #[error("none of your keys ({}) belongs to a user in `sops/users`", keys.join(", "))]
    UnknownAdmin { keys: Vec<String> },

    #[error("failed to read age keys from {source_name}: {reason}")]
    KeyFile { source_name: String, reason: String },

    #[error("{variable} is set to `{}`, which does not exist", path.display())]
    KeyFileMissing {
        variable: &'static str,
        path: PathBuf,
    },

    #[error("{variable}{} holds no age identity", path.as_ref().map(|p| format!(" (`{}`)", p.display())).unwrap_or_default())]
    NoIdentity {
        variable: &'static str,
        path: Option<PathBuf>,
    },

    #[error("malformed key file `{}`: {reason}", path.display())]
    KeyJson { path: PathBuf, reason: String },

    #[error("`{}` exists but is not a symlink", path.display())]
    NotALink { path: PathBuf },

    /// A path in the clan directory that is a link, FIFO, device or too large, or I/O on it.
    #[error(transparent)]
    Fs(#[from] clan_fs::Error),
}

fn describe_holders(holders: &[String]) -> String {
    if holders.is_empty() {
        "no known user or machine".to_owned()
    } else {
        holders.join(", ")
    }
}

impl clan_error::Hint for Error {
    /// What the user can do about this error, when there is something.
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NotARecipient { holders, .. } => {
                let user = holders.iter().find_map(|h| h.strip_prefix("user "));
                match user {
                    Some(user) => format!(
                        "ask {user} (or another holder) to run `clan secrets users add-secret <you> <secret>`, \
                         or point SOPS_AGE_KEY_FILE at a key that is a recipient"
                    ),
                    None => "point SOPS_AGE_KEY_FILE at a key that is a recipient".to_owned(),
                }
            }
            Error::Sops {
                source: SopsError::MacMismatch | SopsError::Authentication(_),
                path,
                ..
            } => format!(
                "restore `{}` from git (`git checkout -- {}`) or set the secret again",
                path.display(),
                path.display()
            ),
            Error::Sops {
                source: SopsError::NotARecipient { .. },
                ..
            } => "point SOPS_AGE_KEY_FILE at a key that is a recipient".to_owned(),
            Error::InvalidName { .. } => "pick a name that follows the rule above".to_owned(),
            Error::NotFound { kind: "secret", .. } => {
                "`clan secrets list` shows the secrets".to_owned()
            }
            Error::NotFound { kind, .. } => {
                format!("`clan secrets {kind}s list` shows what exists")
            }
            Error::AlreadyExists { kind: "secret", .. } => {
                "pick another name or remove it first".to_owned()
            }
            Error::AlreadyExists { .. } => "pass `--force` to overwrite".to_owned(),
            Error::LastKey { user } => {
                format!("add another key first (`clan secrets users add-key {user} …`) or remove the user")
            }
            Error::NoRecipientsLeft { .. } => {
                "remove those secrets first, or give someone else access to them".to_owned()
            }
            Error::KeyFileMissing { variable, .. } => format!(
                "point {variable} at your age key file or unset it; `clan secrets key generate` creates a new key there"
            ),
            Error::NoIdentity { path: None, variable } => {
                format!("set {variable} to your age secret key (AGE-SECRET-KEY-…) or unset it")
            }
            Error::NoIdentity { variable, .. } => {
                format!("point {variable} at a file holding your age secret key, or unset it")
            }
            Error::NoAdminKey { .. } => {
                "run `clan secrets key generate`, or set SOPS_AGE_KEY_FILE to your age key file"
                    .to_owned()
            }
            Error::UnknownAdmin { keys } => format!(
                "add yourself with `clan secrets users add <your-name> {}`",
                keys.first().map_or("age1…", String::as_str)
            ),
            Error::NotALink { path } => format!(
                "move `{}` away; clan manages that directory",
                path.display()
            ),
            _ => return None,
        })
    }
}

impl clan_error::Hint for SopsError {}

clan_error::register!(Error, SopsError);
