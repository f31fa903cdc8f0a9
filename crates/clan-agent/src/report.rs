//! Output for people and the deployer, in both binaries: JSON on stdout, and errors as
//! `error: …`, then each `Caused by: …`, then a `hint: …` when an error in the chain knows
//! what the user should do next. The `clan` binary adds the hints of the libraries only it
//! links.

use std::fmt::Display;
use std::io::Write as _;
use std::process::ExitCode;

/// Exit status for "ran, but something failed" (a machine failed, a check found problems).
pub const EXIT_FAILED: u8 = 1;
/// Exit status for usage errors and internal errors.
pub const EXIT_ERROR: u8 = 2;

/// An error with a hint attached by a binary, for cases the libraries cannot know about.
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

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

/// The first hint in the chain: a [`Hinted`], else what `library_hint` finds for a cause.
fn hint_for(
    error: &anyhow::Error,
    library_hint: &dyn Fn(&(dyn std::error::Error + 'static)) -> Option<String>,
) -> Option<String> {
    // A `Hinted` given as `.context(…)` is reached through anyhow, not through the chain.
    if let Some(hinted) = error.downcast_ref::<Hinted>() {
        return Some(hinted.hint.clone());
    }
    error
        .chain()
        .find_map(|cause| match cause.downcast_ref::<Hinted>() {
            Some(hinted) => Some(hinted.hint.clone()),
            None => library_hint(cause),
        })
}

/// Prints `error` to stderr and returns the exit code for it; `library_hint` gives the hint
/// of a library error in the chain.
pub fn print_error(
    error: &anyhow::Error,
    library_hint: &dyn Fn(&(dyn std::error::Error + 'static)) -> Option<String>,
) -> ExitCode {
    if is_broken_pipe(error) {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  Caused by: {cause}");
    }
    if let Some(hint) = hint_for(error, library_hint) {
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
