//! Errors of the admin side. Each names the machine and, through [`Error::hint`], says what
//! to do next.

use std::path::PathBuf;

use clan_generation::reply::Failure;

use crate::deploy::AGENT_ENV;

/// Why an SSH connection failed, read from OpenSSH's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SshFailure {
    HostKeyMismatch,
    HostKeyUnknown,
    PermissionDenied,
    Unreachable,
    Other,
}

impl SshFailure {
    /// Classifies OpenSSH's stderr after it exited with 255.
    pub fn classify(stderr: &str) -> SshFailure {
        let text = stderr.to_ascii_lowercase();
        if text.contains("remote host identification has changed")
            || text.contains("host key for") && text.contains("has changed")
        {
            SshFailure::HostKeyMismatch
        } else if text.contains("host key verification failed") {
            SshFailure::HostKeyUnknown
        } else if text.contains("permission denied") {
            SshFailure::PermissionDenied
        } else if [
            "connection timed out",
            "no route to host",
            "connection refused",
            "could not resolve hostname",
            "network is unreachable",
            "operation timed out",
            "timeout, server",
            "connection closed",
            "connection reset",
            "broken pipe",
        ]
        .iter()
        .any(|needle| text.contains(needle))
        {
            SshFailure::Unreachable
        } else {
            SshFailure::Other
        }
    }
}

/// One route tried, and why it failed.
#[derive(Debug)]
pub struct RouteAttempt {
    /// `root@10.0.0.1:22 (network lan)`.
    pub route: String,
    pub reason: String,
    /// The hint of the failure, when it has one.
    pub hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("machine `{machine}`: cannot connect to `{target}`: {detail}")]
    Ssh {
        machine: String,
        target: String,
        failure: SshFailure,
        detail: String,
    },
    /// The connection broke while a command ran over it (ssh exited 255 on an open
    /// connection): the route died, not the command.
    #[error("machine `{machine}`: lost the connection to `{target}` while a command ran on the machine{}", ssh_said.as_deref().map(|said| format!(" (ssh: {said})")).unwrap_or_default())]
    ConnectionLost {
        machine: String,
        target: String,
        /// ssh's own last message, when it left one among the remote command's output.
        ssh_said: Option<String>,
    },
    /// Every route of a machine with several failed.
    #[error("machine `{machine}`: no route answered:{}", attempts.iter().map(|a| format!("\n  {}: {}", a.route, a.reason)).collect::<String>())]
    NoRoute {
        machine: String,
        attempts: Vec<RouteAttempt>,
    },
    #[error("machine `{machine}`: `{command}` failed on the machine ({status}): {stderr}")]
    Remote {
        machine: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("machine `{machine}`: activation of generation {generation} failed: {failure}")]
    Activation {
        machine: String,
        generation: String,
        failure: Box<Failure>,
    },
    /// Another agent command failed; the agent said how.
    #[error("machine `{machine}`: `{command}` failed on the machine: {failure}")]
    Agent {
        machine: String,
        command: String,
        failure: Box<Failure>,
    },
    #[error("machine `{machine}`: generation {generation} was not confirmed: {reason}")]
    NotConfirmed {
        machine: String,
        generation: String,
        reason: String,
    },
    #[error(
        "machine `{machine}` has class `{class}`, which `clan machines update` cannot deploy yet"
    )]
    UnsupportedClass { machine: String, class: String },
    /// No target for the machine, or an invalid one.
    #[error(transparent)]
    Network(#[from] clan_network::Error),
    #[error(
        "machine `{machine}`: the agent answered something unexpected to `{command}`: {reason}"
    )]
    Protocol {
        machine: String,
        command: String,
        reason: String,
    },
    #[error("{context} `{}`", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write `{}`", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: clan_fs::Error,
    },
    #[error("running `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("machine `{machine}`: invalid configuration: {source}")]
    InvalidConfig {
        machine: String,
        #[source]
        source: clan_generation::InvalidConfig,
    },
    #[error("the machine agent `{}` is missing: it is built beside `clan`", path.display())]
    AgentMissing { path: PathBuf },
    #[error("machine `{machine}`: vars: {source}")]
    Vars {
        machine: String,
        #[source]
        source: Box<clan_vars::Error>,
    },
    #[error("machine `{machine}`: its vars cannot be generated: {reason}")]
    VarsMissing { machine: String, reason: String },
}

/// An evaluation error (an unknown machine) reaches a deploy wrapped once, as the network
/// crate's, which resolves machines the same way.
impl From<clan_eval::Error> for Error {
    fn from(error: clan_eval::Error) -> Self {
        Error::Network(error.into())
    }
}

impl clan_error::Hint for Error {
    /// What the user should do next, when there is something to say.
    fn hint(&self) -> Option<String> {
        match self {
            Error::Ssh {
                machine, failure, ..
            } => Some(match failure {
                SshFailure::HostKeyMismatch => format!(
                    "the host key of `{machine}` differs from the one in known_hosts: if the machine was \
                     reinstalled, remove the old key with `ssh-keygen -R <host>`; otherwise someone may \
                     be intercepting the connection"
                ),
                SshFailure::HostKeyUnknown => format!(
                    "the host key of `{machine}` is not known (first contact): compare its \
                     fingerprint with the machine's and pass `--host-key-check ask` to be asked, \
                     or `tofu` to trust it on first use"
                ),
                SshFailure::PermissionDenied => format!(
                    "the key offered was refused: load the admin key into ssh-agent or set \
                     IdentityFile in ~/.ssh/config, and check root's authorized_keys on `{machine}`"
                ),
                SshFailure::Unreachable => format!(
                    "check that `{machine}` is up and reachable, or set `deploy.targetHost` in clan.toml"
                ),
                SshFailure::Other => "run `ssh -v` to the target to see what fails".to_owned(),
            }),
            Error::ConnectionLost { .. } => Some(
                "the machine goes on with what it was doing, and a deploy it cannot confirm \
                 reverts by itself; run the command again, and clan tries every route again"
                    .to_owned(),
            ),
            Error::Network(error) => error.hint(),
            Error::NoRoute { attempts, .. } => {
                let mut hints: Vec<&str> = Vec::new();
                for hint in attempts.iter().filter_map(|a| a.hint.as_deref()) {
                    if !hints.contains(&hint) {
                        hints.push(hint);
                    }
                }
                (!hints.is_empty()).then(|| hints.join("; "))
            }
            Error::UnsupportedClass { .. } => {
                Some("only `linux` machines are deployed by clan for now".to_owned())
            }
            Error::NotConfirmed { .. } => Some(
                "the machine reverted to its previous generation by itself; check that it stays \
                 reachable after activation (firewall, sshd, network units)"
                    .to_owned(),
            ),
            Error::Activation { machine, .. } => Some(format!(
                "`{machine}` is back on its previous generation; `clan machines generations {machine}` \
                 shows the history"
            )),
            Error::AgentMissing { .. } => Some(format!(
                "build both binaries with `cargo build --release -p clan` (not only `cargo run`), \
                 or point `{AGENT_ENV}` at a clan-agent of this clan's version"
            )),
            Error::Vars { source, .. } => source.hint(),
            _ => None,
        }
    }

    /// Whatever went wrong with one machine (unreachable, a failed activation, an invalid
    /// configuration for it) is a failure of the run; local I/O is not.
    fn exit(&self) -> clan_error::Exit {
        match self {
            Error::Network(error) => error.exit(),
            _ if self.machine().is_some() => clan_error::Exit::Failed,
            _ => clan_error::Exit::Error,
        }
    }
}

clan_error::register!(Error);

impl Error {
    /// The agent's own account of the failure, when the agent failed.
    pub fn agent_failure(&self) -> Option<&Failure> {
        match self {
            Error::Activation { failure, .. } | Error::Agent { failure, .. } => Some(failure),
            _ => None,
        }
    }

    /// The stage-independent machine name, when the error is about one machine.
    pub fn machine(&self) -> Option<&str> {
        match self {
            Error::Ssh { machine, .. }
            | Error::ConnectionLost { machine, .. }
            | Error::NoRoute { machine, .. }
            | Error::Remote { machine, .. }
            | Error::Activation { machine, .. }
            | Error::Agent { machine, .. }
            | Error::NotConfirmed { machine, .. }
            | Error::UnsupportedClass { machine, .. }
            | Error::Protocol { machine, .. }
            | Error::InvalidConfig { machine, .. }
            | Error::Vars { machine, .. }
            | Error::VarsMissing { machine, .. } => Some(machine),
            Error::Network(error) => error.machine(),
            _ => None,
        }
    }
}
