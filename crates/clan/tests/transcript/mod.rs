//! Transcripts of `clan` runs for snapshot tests: each step records the command, its exit
//! code, stdout and stderr, and the snapshot filters replace what differs between runs
//! (temporary paths, age keys, peer ids, ports, times, commit ids) by fixed placeholders.

// Each snapshot test file uses part of it.
#![allow(dead_code)]

use std::fmt::Write as _;

/// What one run printed, as recorded.
pub struct Step {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<&std::process::Output> for Step {
    fn from(output: &std::process::Output) -> Step {
        Step {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// The text a snapshot pins: `$ clan …`, `exit: N`, then stdout and stderr when not empty.
#[derive(Default)]
pub struct Transcript {
    text: String,
    /// Literal strings (temporary directories) replaced before the regex filters run.
    hidden: Vec<(String, String)>,
}

impl Transcript {
    /// Replaces `path` (and its canonical form) by `[name]` in everything recorded after.
    pub fn hide_path(&mut self, path: &std::path::Path, name: &str) {
        let placeholder = format!("[{name}]");
        if let Ok(canonical) = path.canonicalize() {
            self.hide_text(&canonical.display().to_string(), &placeholder);
        }
        self.hide_text(&path.display().to_string(), &placeholder);
    }

    /// Replaces `text` by `placeholder` in everything recorded after; the longest first, so
    /// that a directory inside another is replaced before its parent.
    pub fn hide_text(&mut self, text: &str, placeholder: &str) {
        self.hidden.push((text.to_owned(), placeholder.to_owned()));
        self.hidden
            .sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
    }

    fn hide(&self, text: &str) -> String {
        self.hidden
            .iter()
            .fold(text.to_owned(), |text, (path, name)| {
                text.replace(path, name)
            })
    }

    /// Records `args` and what the run printed; returns the step for further assertions.
    pub fn record(&mut self, args: &[&str], step: Step) -> Step {
        let _ = writeln!(self.text, "$ clan {}", self.hide(&args.join(" ")));
        let _ = writeln!(self.text, "exit: {}", step.code);
        for (name, stream) in [("stdout", &step.stdout), ("stderr", &step.stderr)] {
            if !stream.is_empty() {
                let _ = writeln!(self.text, "--- {name}");
                self.text.push_str(&self.hide(stream));
                if !stream.ends_with('\n') {
                    self.text.push('\n');
                }
            }
        }
        self.text.push('\n');
        step
    }

    /// Adds a line of its own (what the next steps are about).
    pub fn note(&mut self, line: &str) {
        let _ = writeln!(self.text, "# {line}\n");
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Regex filters for what varies between runs; applied by [`assert_transcript`].
pub const FILTERS: &[(&str, &str)] = &[
    (r"age1[0-9a-z]{58}", "[AGE_PUBLIC_KEY]"),
    (r"AGE-SECRET-KEY-1[0-9A-Z]{58}", "[AGE_SECRET_KEY]"),
    (r"12D3KooW[1-9A-HJ-NP-Za-km-z]{44}", "[PEER_ID]"),
    // Mesher network ids and node keys: 32 bytes in unpadded base64url.
    (r"\b[A-Za-z0-9_-]{43}\b", "[KEY]"),
    (
        r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?( ?[+-]\d{2}:?\d{2}|Z| UTC)?",
        "[TIME]",
    ),
    (r"\b(\d+\.)?\d+ ?(ms|s)\b", "[DURATION]"),
    (r#""elapsedMs":\d+"#, r#""elapsedMs":[DURATION]"#),
    (r"\bunix \d+\b", "[TIME]"),
    // The agent is this build of clan: its size changes with every change to the code.
    (r"uploaded agent \([^)]*\)", "uploaded agent ([SIZE])"),
    (
        r"((?:127\.0\.0\.1|\[::1\]|0\.0\.0\.0)):\d{2,5}\b",
        "$1:[PORT]",
    ),
    (r"/tcp/\d{2,5}\b", "/tcp/[PORT]"),
    // Testbed networks: each testbed gets a subnet of its own.
    (r"\b10\.\d+\.\d+\.\d+(/\d+)?\b", "[ADDRESS]"),
    // A table's padding after an address follows the address's length.
    (r"\[ADDRESS\]  +", "[ADDRESS]  "),
    (r"\b[0-9a-f]{40}\b", "[COMMIT]"),
    (r"\bpid \d+\b", "pid [PID]"),
];

/// Snapshots `transcript` under `name` with [`FILTERS`] applied.
#[macro_export]
macro_rules! assert_transcript {
    ($name:expr, $transcript:expr) => {
        insta::with_settings!({
            filters => $crate::transcript::FILTERS.iter().copied().collect::<Vec<_>>(),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $transcript.text());
        })
    };
}
