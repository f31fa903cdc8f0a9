//! The [`Host`] trait: run an argv vector on a machine, with optional input, over the run's
//! shared connection or over a fresh one. [`crate::ssh::SshHost`] is the real implementation;
//! [`LocalHost`] runs the same quoted command line through the local shell, for tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::quote::command_line;
use crate::Error;

/// What a command run on a machine printed and how it ended.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl RemoteOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// `exit 3` or `killed by a signal`, for messages.
    pub fn status(&self) -> String {
        match self.code {
            Some(code) => format!("exit {code}"),
            None => "killed by a signal".to_owned(),
        }
    }
}

/// Input for a remote command.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    None,
    Bytes(&'a [u8]),
    /// Streamed from a local file (the agent binary).
    File(&'a Path),
}

/// A machine commands can run on. Transport failures are `Err`; a command that ran and
/// failed is an `Ok` with a non-zero code.
pub trait Host: Send {
    /// The clan machine name, for errors and output.
    fn machine(&self) -> &str;
    /// Opens the connection that later commands share (a no-op where there is none).
    fn connect(&mut self) -> Result<(), Error>;
    /// Runs `argv` over the shared connection.
    fn run(&self, argv: &[String], input: Input<'_>) -> Result<RemoteOutput, Error> {
        self.run_streaming(argv, input, &mut |_| {})
    }
    /// [`Host::run`], handing each line the command prints on stderr to `line` as it comes
    /// (a host that cannot stream hands them over when the command ends).
    fn run_streaming(
        &self,
        argv: &[String],
        input: Input<'_>,
        line: &mut dyn FnMut(&str),
    ) -> Result<RemoteOutput, Error>;
    /// Runs `argv` over a new connection, proving the machine can still be reached afresh.
    fn run_fresh(&self, argv: &[String]) -> Result<RemoteOutput, Error>;
    /// Starts `argv` and returns at once, its stdout piped; its stdin ends when the child is
    /// killed (which ends its session), whatever happens to the shared connection.
    fn spawn(&self, argv: &[String]) -> Result<Child, Error>;
    /// The host name or address the machine is reached at (what other machines may use).
    fn address(&self) -> &str;
    /// The route the connection took (`None` for hosts without routes).
    fn route_used(&self) -> Option<crate::ssh::RouteUsed> {
        None
    }
}

/// Runs commands on this computer through `sh -c`, quoted exactly as for SSH.
#[derive(Debug, Clone)]
pub struct LocalHost {
    pub name: String,
}

impl Host for LocalHost {
    fn machine(&self) -> &str {
        &self.name
    }

    fn connect(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn run_streaming(
        &self,
        argv: &[String],
        input: Input<'_>,
        line: &mut dyn FnMut(&str),
    ) -> Result<RemoteOutput, Error> {
        let mut command = Command::new("sh");
        command.arg("-c").arg(command_line(argv));
        run_with_input(command, input, line)
    }

    fn run_fresh(&self, argv: &[String]) -> Result<RemoteOutput, Error> {
        self.run(argv, Input::None)
    }

    fn spawn(&self, argv: &[String]) -> Result<Child, Error> {
        let mut command = Command::new("sh");
        command.arg("-c").arg(command_line(argv));
        spawn_piped(command)
    }

    fn address(&self) -> &str {
        "127.0.0.1"
    }
}

/// Starts `command` with stdin and stdout piped and stderr discarded. The stdin pipe stays
/// open with the child: a remote command sees its end when the child goes.
pub(crate) fn spawn_piped(mut command: Command) -> Result<Child, Error> {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| Error::Spawn { program, source })
}

/// Runs `command` to completion, feeding it `input` and capturing its output; each line of
/// its stderr also goes to `line` as it comes.
pub(crate) fn run_with_input(
    mut command: Command,
    input: Input<'_>,
    line: &mut dyn FnMut(&str),
) -> Result<RemoteOutput, Error> {
    let program = command.get_program().to_string_lossy().into_owned();
    let spawn_error = |source| Error::Spawn {
        program: program.clone(),
        source,
    };
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    match input {
        Input::None => {
            command.stdin(Stdio::null());
        }
        Input::Bytes(_) => {
            command.stdin(Stdio::piped());
        }
        Input::File(path) => {
            let file = std::fs::File::open(path).map_err(|source| Error::Io {
                context: "opening",
                path: path.to_path_buf(),
                source,
            })?;
            command.stdin(Stdio::from(file));
        }
    }
    let mut child = command.spawn().map_err(spawn_error)?;
    let writer = match (input, child.stdin.take()) {
        (Input::Bytes(bytes), Some(mut stdin)) => {
            let bytes = bytes.to_vec();
            // A thread, so a command that stops reading cannot deadlock us on a full pipe.
            Some(std::thread::spawn(move || {
                use std::io::Write as _;
                let _ = stdin.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let stdout = child.stdout.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut pipe, &mut bytes).map(|_| bytes)
        })
    });
    let mut stderr = Vec::new();
    if let Some(pipe) = child.stderr.take() {
        use std::io::BufRead as _;
        let mut reader = std::io::BufReader::new(pipe);
        let mut next = Vec::new();
        while reader.read_until(b'\n', &mut next).map_err(spawn_error)? > 0 {
            line(String::from_utf8_lossy(&next).trim_end());
            stderr.append(&mut next);
        }
    }
    let stdout = match stdout.map(std::thread::JoinHandle::join) {
        Some(Ok(read)) => read.map_err(spawn_error)?,
        _ => Vec::new(),
    };
    let status = child.wait().map_err(spawn_error)?;
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    Ok(RemoteOutput {
        code: status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_host_runs_argv_with_input() {
        let host = LocalHost {
            name: "here".into(),
        };
        let argv: Vec<String> = ["sh", "-c", "cat; echo \"$1\"", "sh", "it's $HOME"]
            .map(String::from)
            .to_vec();
        let output = host.run(&argv, Input::Bytes(b"in;")).unwrap();
        assert!(output.success());
        assert_eq!(output.stdout, b"in;it's $HOME\n");
        let failed = host.run(&["false".to_owned()], Input::None).unwrap();
        assert_eq!(failed.status(), "exit 1");
    }
}
