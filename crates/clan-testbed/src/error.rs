//! The errors of the testbed: each names what failed and, where it can, what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong while starting, driving or stopping a testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host tool missing or failing, root missing, or the root filesystem not built.
    #[error(transparent)]
    Host(#[from] clan_host::Error),

    /// A file operation that failed, naming the action and the path.
    #[error(transparent)]
    Io(#[from] clan_error::IoError),

    /// An atomic write of a state file that failed.
    #[error(transparent)]
    Fs(#[from] clan_fs::Error),

    /// A machine name a caller gave is not usable.
    #[error("invalid machine name `{name}`: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// The options are unusable (no machines, too many, duplicate names, bad paths).
    #[error("invalid testbed options: {0}")]
    InvalidOptions(String),

    /// Every private subnet the harness may use is taken.
    #[error("no free subnet in 10.233.0.0/16 for another testbed; stop old ones with `clan testbed down --state-dir DIR`")]
    NoFreeSubnet,

    /// Machines did not answer on their SSH port, or did not finish booting, in time.
    #[error("machines {} did not finish booting within {seconds} s; see their console logs in `{}`", machines.join(", "), log_dir.display())]
    BootTimeout {
        machines: Vec<String>,
        seconds: u64,
        log_dir: PathBuf,
    },

    /// A machine's container exited while it should be running.
    #[error("machine `{name}` exited while booting ({status}); see `{}`", log.display())]
    MachineExited {
        name: String,
        status: String,
        log: PathBuf,
    },

    /// No testbed state in a directory given to `attach`.
    #[error("no testbed in `{}` (no state.json)", state_dir.display())]
    NoTestbed { state_dir: PathBuf },

    /// `up` into a state directory whose testbed still runs.
    #[error("a testbed is already running in `{}`; stop it first with `clan testbed down --state-dir {}`", state_dir.display(), state_dir.display())]
    AlreadyRunning { state_dir: PathBuf },

    /// The state file cannot be read or written.
    #[error("bad testbed state file `{}`", path.display())]
    StateFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A machine name not in this testbed.
    #[error("no machine `{name}` in this testbed")]
    UnknownMachine { name: String },

    /// Stopping left processes or namespaces behind.
    #[error("testbed teardown incomplete: {}", problems.join("; "))]
    Teardown { problems: Vec<String> },

    /// The private Tor network did not come up.
    #[error("private Tor network: {reason}")]
    TorNetwork { reason: String },
}

/// Result with the testbed's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl clan_error::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Host(clan_host::Error::NotRoot) => Some("run `sudo clan testbed up`".to_owned()),
            Error::Host(error) => clan_error::Hint::hint(error),
            _ => None,
        }
    }

    /// A machine that does not boot or whose sshd never answers failed; the rest means the
    /// testbed could not be driven at all.
    fn exit(&self) -> clan_error::Exit {
        match self {
            Error::BootTimeout { .. } | Error::MachineExited { .. } => clan_error::Exit::Failed,
            _ => clan_error::Exit::Error,
        }
    }
}

clan_error::register!(Error);
