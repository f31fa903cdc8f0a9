//! The errors of driving host tools and building the root filesystem: each names the command
//! or file and, where it can, what to install or set.

/// A host tool that is missing or failed, or a root filesystem that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Installing packages, containers and network namespaces need root.
    #[error("this needs root (packages, network namespaces, containers); run as root")]
    NotRoot,

    /// A program clan runs on the host is not installed.
    #[error("`{tool}` not found: apt-get install {package}")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },

    /// A program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// A program could not be started at all.
    #[error("could not run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// A file operation that failed, naming the action and the path.
    #[error(transparent)]
    Io(#[from] clan_error::IoError),

    /// The host says nothing about its Debian suite.
    #[error("/etc/os-release names no VERSION_CODENAME: the root filesystem's Debian suite is the host's")]
    NoSuite,

    /// No apt source offers the Debian suite the root filesystem is built from.
    #[error("no apt source for Debian `{suite}` in /etc/apt/sources.list*; set CLAN_TESTBED_MIRROR to a Debian mirror URL")]
    NoMirror { suite: String },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl clan_error::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::NotRoot => Some("run the command with sudo".to_owned()),
            _ => None,
        }
    }
}

clan_error::register!(Error);
