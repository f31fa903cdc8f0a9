//! Renders errors for people: `error: …`, then each `Caused by: …`, then a `hint: …` when one
//! of the library errors in the chain knows what the user should do next.

use std::fmt::Display;
use std::process::ExitCode;

/// Exit status for "ran, but something failed" (a machine failed, a check found problems).
pub const EXIT_FAILED: u8 = 1;
/// Exit status for usage errors and internal errors.
pub const EXIT_ERROR: u8 = 2;

/// An error with a hint attached by the binary, for cases the libraries cannot know about.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// Builds an error whose rendering ends with `hint: …`.
pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// The first hint any error in the chain offers.
fn hint_for(error: &anyhow::Error) -> Option<String> {
    // A `Hinted` given as `.context(…)` is reached through anyhow, not through the chain.
    if let Some(hinted) = error.downcast_ref::<Hinted>() {
        return Some(hinted.hint.clone());
    }
    error.chain().find_map(|cause| {
        if let Some(hinted) = cause.downcast_ref::<Hinted>() {
            return Some(hinted.hint.clone());
        }
        if let Some(error) = cause.downcast_ref::<clan_lib::Error>() {
            return error.hint();
        }
        if let Some(error) = cause.downcast_ref::<clan_lib::mesher::Error>() {
            return error.hint();
        }
        if let Some(error) = cause.downcast_ref::<clan_secrets::Error>() {
            return error.hint();
        }
        if let Some(error) = cause.downcast_ref::<clan_inventory::Error>() {
            return error.hint();
        }
        if let Some(error) = cause.downcast_ref::<clan_eval::Error>() {
            return error.hint();
        }
        if let Some(error) = cause.downcast_ref::<clan_deploy::Error>() {
            return error.hint();
        }
        if let Some(error) = cause.downcast_ref::<clan_vars::Error>() {
            return error.hint();
        }
        if let Some(error) = cause.downcast_ref::<clan_git::Error>() {
            return error.hint();
        }
        None
    })
}

/// Prints `error` to stderr and returns the exit code for it.
pub fn print_error(error: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(error) {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  Caused by: {cause}");
    }
    if let Some(hint) = hint_for(error) {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(EXIT_ERROR)
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
