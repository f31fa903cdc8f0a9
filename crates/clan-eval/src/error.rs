//! Evaluation errors: each names the clan file, instance, role, machine or key at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Inventory(#[from] clan_inventory::Error),
    #[error(transparent)]
    Service(#[from] clan_service::Error),
    /// A machine's `facter.json` that is not a hardware report.
    #[error(transparent)]
    Hardware(#[from] clan_facter::ParseError),
    #[error("{}: `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
        hint: Option<String>,
    },
    #[error("machine `{machine}`: {conflict}")]
    Conflict {
        machine: String,
        conflict: clan_config::Conflict,
    },
    /// A value a service (or the machine's config.star) returned that cannot reach a machine.
    #[error("machine `{machine}`: {from}: {invalid}")]
    InvalidConfig {
        machine: String,
        /// The fragment's source: `instance `x` (service s, role r)`.
        from: String,
        invalid: clan_config::BadFragment,
    },
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the evaluation cache at `{}`", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown machine `{name}`")]
    UnknownMachine { name: String, hint: Option<String> },
    #[error("no machine has the tags {}", tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "))]
    NoMachineWithTags { tags: Vec<clan_inventory::TagName> },
}

impl clan_error::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Self::Inventory(error) => error.hint(),
            Self::Service(error) => error.hint(),
            Self::Hardware(error) => error.hint(),
            Self::Invalid { hint, .. } | Self::UnknownMachine { hint, .. } => hint.clone(),
            Self::NoMachineWithTags { .. } => Some(
                "`clan machines list` shows each machine's tags (`all` and the class name are \
                 implied)"
                    .to_owned(),
            ),
            Self::Conflict { conflict, .. } => conflict.hint(),
            Self::InvalidConfig { invalid, .. } => invalid.hint(),
            Self::Cache { .. } => Some("set XDG_CACHE_HOME to a writable directory".to_owned()),
            Self::Read { .. } => None,
        }
    }

    /// An invalid service result or two services disagreeing is a failed validation; an
    /// unknown machine or tag on the command line is a usage error.
    fn exit(&self) -> clan_error::Exit {
        match self {
            Self::Inventory(error) => error.exit(),
            Self::Service(error) => error.exit(),
            Self::Hardware(error) => error.exit(),
            Self::Invalid { .. } | Self::Conflict { .. } | Self::InvalidConfig { .. } => {
                clan_error::Exit::Failed
            }
            Self::Read { .. }
            | Self::Cache { .. }
            | Self::UnknownMachine { .. }
            | Self::NoMachineWithTags { .. } => clan_error::Exit::Error,
        }
    }
}

clan_error::register!(Error);
