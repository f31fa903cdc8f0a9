//! Renders errors for people: `error: …`, then each `Caused by: …` (a cause already in the
//! message above it is not repeated), then a `hint: …` when an error in the chain knows what
//! the user should do next; and the exit status the error means. It knows no library: every
//! library error implements `clan_error::Hint` and registers itself, and [`Hinted`] (shared
//! with the machine binary, [`clan_agent::report`]) carries the hints only a binary can give.

use std::process::ExitCode;

use clan_error::Exit;

use crate::commands::output::{printer, Printer, Style};

/// Exit status for "ran, but something failed" (a machine failed, a check found problems).
pub const EXIT_FAILED: u8 = Exit::Failed.code();
/// Exit status for usage errors and internal errors.
pub const EXIT_ERROR: u8 = Exit::Error.code();

pub use clan_agent::report::{hinted, Hinted};

/// What `error` prints: the message, each cause once, the hint (coloured by `printer`).
fn render(error: &anyhow::Error, printer: &Printer) -> String {
    let mut text = String::new();
    for (index, cause) in clan_error::causes(error.chain()).iter().enumerate() {
        if index == 0 {
            text.push_str(&printer.paint("error:", Style::Error));
            text.push(' ');
        } else {
            text.push_str("  Caused by: ");
        }
        text.push_str(cause);
        text.push('\n');
    }
    // A `Hinted` given as `.context(…)` is reached through anyhow, not through the chain.
    let hint = error
        .downcast_ref::<Hinted>()
        .map(|hinted| hinted.hint.clone())
        .or_else(|| clan_error::hint(error.chain()));
    if let Some(hint) = hint {
        text.push_str(&format!("{} {hint}\n", printer.paint("hint:", Style::Hint)));
    }
    text
}

/// Prints `error` to stderr and returns the exit code for it.
pub fn print_error(error: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(error) {
        return ExitCode::SUCCESS;
    }
    let printer = printer();
    printer.failure(render(error, &printer).trim_end_matches('\n'));
    ExitCode::from(clan_error::exit(error.chain()).code())
}

/// The exit code after a panic (a bug), which the panic hook has already described.
pub fn print_bug() -> ExitCode {
    printer().error(
        "clan stopped on an internal error (a bug), described above",
        Some("please report it, with the command you ran"),
    );
    ExitCode::from(EXIT_ERROR)
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load the clan: {source}")]
    struct Embeds {
        source: std::io::Error,
    }

    fn plain() -> Printer {
        Printer {
            level: crate::commands::output::Level::Normal,
            colour: false,
            bars: false,
        }
    }

    #[test]
    fn a_cause_is_printed_once() {
        let io = std::io::Error::other("disk on fire");
        let error = anyhow::Error::new(Embeds { source: io }).context("machines list");
        assert_eq!(
            render(&error, &plain()),
            "error: machines list\n  Caused by: cannot load the clan: disk on fire\n"
        );
    }

    #[test]
    fn colour_marks_error_and_hint_only_when_on() {
        let error = hinted("broken", "fix it");
        let coloured = Printer {
            colour: true,
            ..plain()
        };
        assert_eq!(
            render(&error, &coloured),
            "\x1b[1;31merror:\x1b[0m broken\n\x1b[36mhint:\x1b[0m fix it\n"
        );
        assert_eq!(render(&error, &plain()), "error: broken\nhint: fix it\n");
    }

    #[test]
    fn hints_come_from_contexts_and_from_library_errors() {
        let error = anyhow::Error::new(std::io::Error::other("x")).context(Hinted {
            message: "outer".into(),
            hint: "do this".into(),
        });
        assert!(
            render(&error, &plain()).ends_with("hint: do this\n"),
            "{}",
            render(&error, &plain())
        );
        let missing = clan_select::select("nosuch", &serde_json::json!({"a": 1})).unwrap_err();
        let error = anyhow::Error::new(missing).context("select");
        assert!(render(&error, &plain()).ends_with("hint: `clan select '*'` lists the roots\n"));
    }
}
