//! What every clan library error shares, so that a front end renders any of them without
//! knowing which crate it comes from:
//!
//! - [`Hint`]: what the user should do next, and whether the error means "the command ran and
//!   something failed" (exit 1) or "it could not do its job" (exit 2). Each library implements
//!   it for its error types and registers them with [`register!`]; [`find`] then recognises
//!   them in any error chain, so the renderer holds no list of crates.
//! - [`causes`]: an error chain as the messages to print, each cause once (a message that
//!   already contains its source's text is not followed by that text again).
//! - [`IoError`] and [`io`]: a failed file operation naming the action and the path, the one
//!   constructor the libraries' I/O errors share.
//!
//! This crate depends on no other clan crate (every one depends on it) and prints nothing.

use std::error::Error as StdError;
use std::path::PathBuf;

#[doc(hidden)]
pub use inventory;

/// Any error, as error chains hold them.
pub type AnyError = dyn StdError + 'static;

/// What an error means for the exit status of the command that met it (ripgrep's convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit 1: the command ran and something failed — a machine, a check, a validation of the
    /// clan's content (clan.toml, a service's result, generators).
    Failed,
    /// Exit 2: the command could not do its job — a usage error (an argument naming nothing,
    /// a missing key), the environment (I/O, a missing tool) or a bug.
    Error,
}

impl Exit {
    pub const fn code(self) -> u8 {
        match self {
            Exit::Failed => 1,
            Exit::Error => 2,
        }
    }
}

/// An error that can tell the user what to do next.
pub trait Hint: StdError + 'static {
    /// The next step, when this error knows one.
    fn hint(&self) -> Option<String> {
        None
    }

    /// What the error means for the exit status; [`Exit::Error`] unless it reports a failure
    /// found by a command that ran.
    fn exit(&self) -> Exit {
        Exit::Error
    }
}

/// One error type made known to [`find`] by [`register!`].
#[doc(hidden)]
pub struct Registration {
    pub downcast: fn(&AnyError) -> Option<&dyn Hint>,
}

inventory::collect!(Registration);

#[doc(hidden)]
pub fn downcast<T: Hint>(error: &AnyError) -> Option<&dyn Hint> {
    error.downcast_ref::<T>().map(|error| error as &dyn Hint)
}

/// Makes error types that implement [`Hint`] recognisable by [`find`]; call it once per type,
/// next to the `impl Hint`.
#[macro_export]
macro_rules! register {
    ($($error:ty),+ $(,)?) => {
        $(
            $crate::inventory::submit! {
                $crate::Registration { downcast: $crate::downcast::<$error> }
            }
        )+
    };
}

/// `error` as a [`Hint`] when its type is registered.
pub fn find(error: &AnyError) -> Option<&dyn Hint> {
    inventory::iter::<Registration>
        .into_iter()
        .find_map(|registration| (registration.downcast)(error))
}

/// `error` and its sources, outermost first.
pub fn chain(error: &AnyError) -> impl Iterator<Item = &AnyError> {
    std::iter::successors(Some(error), |&error| error.source())
}

/// The messages of a chain to print, each cause once: a message already contained in one
/// printed before it (an error that puts its source into its own message) is left out.
pub fn causes<'a>(chain: impl IntoIterator<Item = &'a AnyError>) -> Vec<String> {
    let mut printed: Vec<String> = Vec::new();
    for error in chain {
        let message = error.to_string();
        let repeated = message.is_empty() || printed.iter().any(|p| p.contains(&message));
        if !repeated {
            printed.push(message);
        }
    }
    printed
}

/// The chain on one line, `outer: cause: cause`, each cause once (for `[machine] …` lines).
pub fn one_line(error: &AnyError) -> String {
    causes(chain(error)).join(": ")
}

/// The first hint any error of the chain offers.
pub fn hint<'a>(chain: impl IntoIterator<Item = &'a AnyError>) -> Option<String> {
    chain
        .into_iter()
        .filter_map(find)
        .find_map(|error| error.hint())
}

/// The exit status for a chain: that of its outermost registered error, else [`Exit::Error`].
pub fn exit<'a>(chain: impl IntoIterator<Item = &'a AnyError>) -> Exit {
    chain
        .into_iter()
        .find_map(find)
        .map_or(Exit::Error, |error| error.exit())
}

/// A file operation that failed: `failed to <action> `<path>``, the I/O error as its source.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} `{}`", path.display())]
pub struct IoError {
    /// What was being done, as a verb: `read`, `create the directory`, `rename into place`.
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The `map_err` argument for a failed `action` on `path`:
/// `fs::read(&path).map_err(clan_error::io("read", &path))?`, converted by `From` into the
/// calling crate's error.
pub fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> IoError {
    let path = path.into();
    move |source| IoError {
        action,
        path,
        source,
    }
}

impl Hint for IoError {}
register!(IoError);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer with its cause: {source}")]
    struct Embeds {
        source: IoError,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("a check found problems")]
    struct CheckFailed;

    impl Hint for CheckFailed {
        fn hint(&self) -> Option<String> {
            Some("fix them".into())
        }
        fn exit(&self) -> Exit {
            Exit::Failed
        }
    }
    register!(CheckFailed);

    #[derive(Debug, thiserror::Error)]
    #[error("not registered")]
    struct Unregistered(#[source] CheckFailed);

    fn io_error() -> IoError {
        io("read", "/etc/clan.toml")(std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let error = Embeds { source: io_error() };
        let causes = causes(chain(&error));
        assert_eq!(
            causes,
            [
                "outer with its cause: failed to read `/etc/clan.toml`",
                "entity not found"
            ]
        );
        assert_eq!(
            one_line(&error),
            "outer with its cause: failed to read `/etc/clan.toml`: entity not found"
        );
    }

    #[test]
    fn registered_errors_are_found_anywhere_in_a_chain() {
        let error = Unregistered(CheckFailed);
        assert!(find(&error).is_none());
        assert_eq!(hint(chain(&error)), Some("fix them".into()));
        assert_eq!(exit(chain(&error)), Exit::Failed);
        // An I/O error has no hint and means the command could not do its job.
        let io = io_error();
        assert!(find(&io).is_some());
        assert_eq!(hint(chain(&io)), None);
        assert_eq!(exit(chain(&io)), Exit::Error);
    }
}
