//! Output of the machine binary for people and the deployer: JSON on stdout, and errors as
//! `error: …`, each `Caused by: …` once, then a `hint: …` when an error in the chain has one
//! (every library error registers its hints with `clan_error`). [`Hinted`], [`print_json`] and
//! [`local_time`] (times for people) are shared with the `clan` binary, whose renderer adds
//! colour; [`Plain`] prints mesher results in the machine binary.

use std::fmt::Display;
use std::io::Write as _;
use std::process::ExitCode;

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

impl clan_error::Hint for Hinted {
    fn hint(&self) -> Option<String> {
        Some(self.hint.clone())
    }
}

clan_error::register!(Hinted);

/// Builds an error whose rendering ends with `hint: …`.
pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// The machine binary's printer: data on stdout, notes and failures on stderr.
pub struct Plain;

impl crate::mesher::Print for Plain {
    fn data(&self, line: &dyn Display) -> anyhow::Result<()> {
        writeln!(std::io::stdout().lock(), "{line}")?;
        Ok(())
    }

    fn content(&self, bytes: &[u8]) -> anyhow::Result<()> {
        std::io::stdout().lock().write_all(bytes)?;
        Ok(())
    }

    fn json(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        print_json(value)
    }

    fn note(&self, line: &dyn Display) {
        eprintln!("{line}");
    }

    fn failure(&self, line: &dyn Display) {
        eprintln!("{line}");
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

/// A Unix time for people: the local date, time and UTC offset in the zone `TZ` names (else
/// the system's), e.g. `2026-12-01 21:03:04 +0100`. JSON keeps the number.
#[allow(unsafe_code)]
pub fn local_time(unix_seconds: i64) -> String {
    let time: libc::time_t = unix_seconds;
    // SAFETY: an all-zero `tm` is a valid value (its zone pointer null); localtime_r reads
    // `time` and writes only `tm`, and is thread-safe.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&time, &mut tm) }.is_null() {
        return format!("unix {unix_seconds}");
    }
    let offset_minutes = tm.tm_gmtoff / 60;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {}{:02}{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        if offset_minutes < 0 { '-' } else { '+' },
        offset_minutes.abs() / 60,
        offset_minutes.abs() % 60,
    )
}

/// Prints `error` to stderr (no colour: the machine binary's stderr goes to the deployer or
/// a journal) and returns the exit code it means.
pub fn print_error(error: &anyhow::Error) -> ExitCode {
    let broken_pipe = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    for (index, cause) in clan_error::causes(error.chain()).iter().enumerate() {
        match index {
            0 => eprintln!("error: {cause}"),
            _ => eprintln!("  Caused by: {cause}"),
        }
    }
    // A `Hinted` given as `.context(…)` is reached through anyhow, not through the chain.
    let hint = error
        .downcast_ref::<Hinted>()
        .map(|hinted| hinted.hint.clone())
        .or_else(|| clan_error::hint(error.chain()));
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(clan_error::exit(error.chain()).code())
}
