//! The one printer: how much goes to stderr (`-q` quiet, `-v` verbose), colour (only on a
//! terminal, never with `NO_COLOR` or `TERM=dumb`), progress per machine for fleet runs (bars
//! on a terminal, `[machine] …` lines otherwise), and the helpers for data on stdout (JSON,
//! aligned tables). stdout is for data only; notes, progress and errors go to stderr.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write};
use std::sync::{Mutex, OnceLock};

/// How much the commands say on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `-q`: errors and what a command must ask only.
    Quiet,
    Normal,
    /// `-v`: also what each step does.
    Verbose,
}

/// The printer's settings, fixed once from the global flags and the terminal.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub level: Level,
    /// Colour on stderr.
    pub colour: bool,
    /// Redrawn progress bars on stderr (a terminal that is not `dumb`, not quiet).
    pub bars: bool,
}

static PRINTER: OnceLock<Printer> = OnceLock::new();

/// Sets the printer from the global flags; call once, first.
pub fn init(level: Level) {
    let _ = PRINTER.set(Printer::detect(level));
}

/// The printer [`init`] set (the default one when it was not called: in unit tests).
pub fn printer() -> Printer {
    *PRINTER.get_or_init(|| Printer::detect(Level::Normal))
}

/// What the colours mean.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    Error,
    Hint,
    Success,
}

impl Printer {
    fn detect(level: Level) -> Printer {
        let terminal = std::io::stderr().is_terminal()
            && std::env::var_os("TERM").is_none_or(|term| term != "dumb");
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Printer {
            level,
            colour: terminal && !no_colour,
            bars: terminal && level > Level::Quiet,
        }
    }

    /// Prints a note (what was done, what comes next) on stderr, unless quiet.
    pub fn note(&self, line: impl std::fmt::Display) {
        if self.level > Level::Quiet {
            eprintln!("{line}");
        }
    }

    /// Prints a line about what failed or stopped (a machine, a check, an interrupted run)
    /// on stderr, whatever the level: `-q` keeps failures.
    pub fn failure(&self, line: impl std::fmt::Display) {
        eprintln!("{line}");
    }

    /// Prints `error: message` and `hint: …`, coloured, whatever the level.
    pub fn error(&self, message: impl std::fmt::Display, hint: Option<&str>) {
        self.failure(format_args!(
            "{} {message}",
            self.paint("error:", Style::Error)
        ));
        if let Some(hint) = hint {
            self.hint(hint);
        }
    }

    /// Prints `hint: …`, coloured, whatever the level (what to do about a failure).
    pub fn hint(&self, hint: impl std::fmt::Display) {
        self.failure(self.hint_line(hint));
    }

    /// `hint: …` with the mark coloured, for a note of its own.
    pub fn hint_line(&self, hint: impl std::fmt::Display) -> String {
        format!("{} {hint}", self.paint("hint:", Style::Hint))
    }

    /// Prints a question's text (a prompt) on stderr as given, whatever the level: `-q`
    /// keeps questions.
    pub fn ask(&self, text: impl std::fmt::Display) {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "{text}");
        let _ = stderr.flush();
    }

    /// Whether `-v` was given.
    pub fn verbose(&self) -> bool {
        self.level == Level::Verbose
    }

    /// `text` in the colour of `style` when colour is on.
    pub fn paint(&self, text: &str, style: Style) -> String {
        if !self.colour {
            return text.to_owned();
        }
        let code = match style {
            Style::Error => "1;31",
            Style::Hint => "36",
            Style::Success => "32",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// Progress of a run over several machines: a bar per machine showing its stage on a
/// terminal, `[machine] line` otherwise. Lines worth keeping (changes, failures, hints) are
/// printed above the bars.
pub struct MachineProgress {
    printer: Printer,
    bars: Option<(
        indicatif::MultiProgress,
        Mutex<BTreeMap<String, indicatif::ProgressBar>>,
    )>,
}

impl MachineProgress {
    pub fn new() -> MachineProgress {
        let printer = printer();
        let bars = printer.bars.then(|| {
            let multi =
                indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
            (multi, Mutex::new(BTreeMap::new()))
        });
        MachineProgress { printer, bars }
    }

    /// `[machine] …` lines even on a terminal, for news that comes without a run to hold
    /// the bars.
    pub fn lines_only() -> MachineProgress {
        MachineProgress {
            printer: printer(),
            bars: None,
        }
    }

    /// `machine`'s bar, added below the others when it is first heard of. Redrawn on events
    /// only, with no ticking thread: after Ctrl-C nothing draws over the report of where each
    /// machine stood.
    fn with_bar(&self, machine: &str, update: impl FnOnce(&indicatif::ProgressBar)) {
        let Some((multi, bars)) = &self.bars else {
            return;
        };
        let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars.entry(machine.to_owned()).or_insert_with(|| {
            let style = indicatif::ProgressStyle::with_template("{prefix} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            let bar = multi.add(indicatif::ProgressBar::new_spinner());
            bar.set_style(style);
            bar.set_prefix(format!("[{machine}]"));
            bar
        });
        update(bar);
    }

    /// `machine` reached `stage`, or other news not worth keeping (a line of remote output):
    /// shown on its bar; a line only with `-v`.
    pub fn stage(&self, machine: &str, stage: &str) {
        if self.bars.is_some() {
            self.with_bar(machine, |bar| bar.set_message(stage.to_owned()));
        } else if self.printer.verbose() {
            eprintln!("[{machine}] {stage}");
        }
    }

    /// Lines about `machine` to keep; `finished` ends its bar (`Some(true)` when it
    /// succeeded).
    pub fn lines(&self, machine: &str, lines: &[String], finished: Option<bool>) {
        if self.printer.level == Level::Quiet && finished != Some(false) {
            return;
        }
        match &self.bars {
            Some((multi, _)) => {
                for line in lines {
                    let _ = multi.println(format!("[{machine}] {line}"));
                }
                self.with_bar(machine, |bar| match finished {
                    Some(ok) => {
                        let outcome = lines.first().map_or("", String::as_str);
                        let style = if ok { Style::Success } else { Style::Error };
                        bar.finish_with_message(self.printer.paint(outcome, style));
                    }
                    None => {
                        if let Some(last) = lines.last() {
                            bar.set_message(last.clone());
                        }
                    }
                });
            }
            None => {
                let mut stderr = std::io::stderr().lock();
                for line in lines {
                    let _ = writeln!(stderr, "[{machine}] {line}");
                }
            }
        }
    }

    /// Ends every bar still running (the summary follows); finished bars stay on screen.
    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for bar in bars.lock().unwrap_or_else(|p| p.into_inner()).values() {
                if !bar.is_finished() {
                    bar.finish();
                }
            }
        }
    }
}

pub use clan_agent::report::print_json;

/// Per-machine results of a fleet-wide question as one JSON object: each machine's answer, or
/// `{"error": …}` for a machine that could not be asked.
pub fn print_fleet_json<T: serde::Serialize, E: std::fmt::Display>(
    results: &[(impl std::fmt::Display, Result<T, E>)],
) -> anyhow::Result<()> {
    let document: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(machine, result)| {
            let value = match result {
                Ok(answer) => serde_json::to_value(answer)?,
                Err(error) => serde_json::json!({ "error": error.to_string() }),
            };
            Ok((machine.to_string(), value))
        })
        .collect::<Result<_, serde_json::Error>>()?;
    print_json(&document)
}

/// Mesher results (`clan mesher …`) through this printer.
impl clan_agent::mesher::Print for Printer {
    fn data(&self, line: &dyn std::fmt::Display) -> anyhow::Result<()> {
        print_line(line)
    }

    fn content(&self, bytes: &[u8]) -> anyhow::Result<()> {
        std::io::stdout().lock().write_all(bytes)?;
        Ok(())
    }

    fn json(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        print_json(value)
    }

    fn note(&self, line: &dyn std::fmt::Display) {
        Printer::note(self, line);
    }

    fn failure(&self, line: &dyn std::fmt::Display) {
        Printer::failure(self, line);
    }
}

/// Prints one line of data on stdout.
pub fn print_line(line: impl std::fmt::Display) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

/// Prints rows as columns separated by two spaces; the header is the first row.
pub fn print_table(rows: &[Vec<String>]) -> anyhow::Result<()> {
    std::io::stdout()
        .lock()
        .write_all(format_table(rows).as_bytes())?;
    Ok(())
}

/// The lines [`print_table`] prints. Cells come from the clan (which may be hostile): any
/// width is padded by hand (`format!`'s width stops at 65,535), and control characters are
/// shown escaped rather than sent to the terminal.
fn format_table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| printable(cell)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if index + 1 < row.len() {
                let padding = widths[index] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', padding));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn printable(cell: &str) -> String {
    if !cell.chars().any(char::is_control) {
        return cell.to_owned();
    }
    cell.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_width() {
        let wide = "w".repeat(70_000);
        let rows = vec![
            vec!["NAME".to_owned(), "TARGET".to_owned()],
            vec![wide.clone(), "-".to_owned()],
            vec!["a".to_owned(), "b".to_owned()],
        ];
        let table = format_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0].find("TARGET"), Some(70_002));
        assert_eq!(lines[1], format!("{wide}  -"));
        assert_eq!(lines[2].find('b'), Some(70_002));
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        let rows = vec![vec!["a\u{1b}[2J\nb".to_owned(), "c".to_owned()]];
        assert_eq!(format_table(&rows), "a\\u{1b}[2J\\nb  c\n");
    }
}
