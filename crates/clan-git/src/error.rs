//! Errors of the lock, the commits and the recovery; each names the file or directory.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation that failed, naming the action and the path.
    #[error(transparent)]
    Io(#[from] clan_error::IoError),

    /// The journal could not be written atomically.
    #[error(transparent)]
    Fs(#[from] clan_fs::Error),

    #[error("git {action} failed in `{}`: {message}", dir.display())]
    Git {
        action: &'static str,
        dir: PathBuf,
        message: String,
    },

    /// Git refuses the repository: it belongs to another user.
    #[error("git refuses the repository of `{}`, which another user owns: {message}", dir.display())]
    NotTrusted { dir: PathBuf, message: String },

    #[error("`{}` is not a journal written by clan", path.display())]
    Journal { path: PathBuf },
}

impl clan_error::Hint for Error {
    /// What the user can do about this error, when there is something.
    fn hint(&self) -> Option<String> {
        match self {
            Error::Git { .. } => Some("see git's message above; `git status` shows the state of the repository".to_owned()),
            Error::Journal { path } => Some(format!(
                "something other than clan wrote `{}`; remove it and commit the clan's changes by hand",
                path.display()
            )),
            Error::NotTrusted { .. } => Some(
                "run clan as the user who owns the repository, or trust it as git's message says \
                 (`git config --global --add safe.directory …`)"
                    .to_owned(),
            ),
            Error::Io(_) | Error::Fs(_) => None,
        }
    }
}

clan_error::register!(Error);
