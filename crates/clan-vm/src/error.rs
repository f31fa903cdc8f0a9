//! The runner's errors: each names the machine or file and, where it can, what to do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host program missing or failing, or the Debian tree the image is made from that
    /// could not be built (the testbed's helpers run both).
    #[error(transparent)]
    Host(#[from] clan_host::Error),

    #[error(transparent)]
    Io(#[from] clan_error::IoError),

    #[error(transparent)]
    Fs(#[from] clan_fs::Error),

    /// The cached root filesystem holds no kernel, or no module the initramfs needs.
    #[error("the VM root filesystem `{}` {what}", root.display())]
    BadRootFilesystem { root: PathBuf, what: String },

    /// `run` for a machine whose VM still runs.
    #[error("machine `{machine}` already runs as a VM (QEMU pid {pid})")]
    AlreadyRunning { machine: String, pid: i32 },

    /// The VM's directory, or one above it, can be changed by another user.
    #[error("`{}` or a directory above it can be changed by another user; a VM's keys and disk must be private", path.display())]
    SharedStateDir { path: PathBuf },

    /// A machine with no running VM.
    #[error("machine `{machine}` does not run as a VM")]
    NotRunning { machine: String },

    /// A machine that has never booted as a VM has no console log.
    #[error("machine `{machine}` has not booted as a VM yet: no console log")]
    NoConsoleLog { machine: String },

    /// A `--publish` host port something else listens on.
    #[error("cannot publish {address}:{port} for machine `{machine}`: the port is already taken")]
    PortTaken {
        machine: String,
        address: std::net::IpAddr,
        port: u16,
        #[source]
        source: std::io::Error,
    },

    /// A `--publish` value that does not parse.
    #[error("invalid --publish `{value}`: {reason}")]
    InvalidPublish { value: String, reason: &'static str },

    /// sshd did not answer in time; the VM was stopped.
    #[error("machine `{machine}`'s VM did not boot within {seconds} s (sshd never answered); its console log `{}` ends with:\n{tail}", log.display())]
    BootTimeout {
        machine: String,
        seconds: u64,
        log: PathBuf,
        tail: String,
    },

    /// QEMU exited while the VM should be booting.
    #[error("machine `{machine}`'s VM exited while booting; its console log `{}` ends with:\n{tail}", log.display())]
    Exited {
        machine: String,
        log: PathBuf,
        tail: String,
    },

    /// QEMU refused to start (its own message).
    #[error("QEMU could not start machine `{machine}`'s VM: {stderr}")]
    Launch { machine: String, stderr: String },

    /// A QMP conversation that failed.
    #[error("QMP of machine `{machine}`'s VM (`{}`) failed", socket.display())]
    Qmp {
        machine: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A state file of a VM that cannot be read.
    #[error("bad VM state file `{}`", path.display())]
    StateFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl clan_error::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Host(error) => clan_error::Hint::hint(error),
            Error::SharedStateDir { .. } => Some(
                "set CLAN_VM_DIR (or CLAN_TESTBED_CACHE for the image) to a directory only you and root can change".to_owned(),
            ),
            Error::AlreadyRunning { machine, .. } => Some(format!(
                "reach it with `clan ssh {machine} --vm`, or stop it with `clan vms stop {machine}`"
            )),
            Error::NotRunning { machine } | Error::NoConsoleLog { machine } => {
                Some(format!("start it with `clan vms run {machine}`"))
            }
            Error::PortTaken { .. } => {
                Some("choose another host port: --publish HOST_PORT:GUEST_PORT".to_owned())
            }
            Error::BootTimeout { .. } => Some(
                "under TCG (no usable KVM) a boot takes 10-35 s; raise --boot-timeout".to_owned(),
            ),
            _ => None,
        }
    }

    fn exit(&self) -> clan_error::Exit {
        match self {
            Error::BootTimeout { .. } | Error::Exited { .. } => clan_error::Exit::Failed,
            _ => clan_error::Exit::Error,
        }
    }
}

clan_error::register!(Error);
