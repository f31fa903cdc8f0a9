//! How a machine is reached: the fleet's networks as clan-core builds them from exports
//! (`network`), the routes to one machine in the order they are tried — `--target-host`
//! alone, else `deploy.targetHost`, every host of every network the machine is a peer of by
//! priority, `root@<machine>.<domain>` when there is nothing else — with var hosts read only
//! when tried (`route`), the destinations themselves (`target`), and the clan-generated host
//! key a machine presents once deployed, and the Tor client and SOCKS connector a route over
//! a tor network goes through (`tor`). Deciding only otherwise: connecting, and racing the
//! routes, is `clan_deploy::ssh`'s.

mod network;
mod route;
mod target;
pub mod tor;

use std::path::Path;

use clan_config::MachineName;

pub use network::{from_exports, networks, HostRef, Network, Peer, VarRef, DIRECT_MODULE};
pub use route::{candidates, head_starts, Candidate, HEAD_START};
pub use target::Target;

/// Why a machine's routes cannot be worked out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("machine `{machine}`: no target host")]
    NoTarget { machine: String },
    #[error("machine `{machine}`: invalid target host `{target}`: {reason}")]
    InvalidTarget {
        machine: String,
        target: String,
        reason: String,
    },
    #[error("network `{instance}`{}: invalid export: {reason}", machine.as_ref().map(|m| format!(", machine `{m}`")).unwrap_or_default())]
    InvalidExport {
        instance: String,
        machine: Option<String>,
        reason: String,
    },
    #[error("network `{instance}`, machine `{machine}`: SSH option `{option}` is not supported (only jump hosts: `-J host`)")]
    UnsupportedSshOption {
        instance: String,
        machine: String,
        option: String,
    },
    #[error("machine `{machine}`: the host of network `{network}` is var `{}/{}` of machine `{}`, which is not generated yet", var.generator, var.file, var.machine)]
    VarHostMissing {
        machine: String,
        network: String,
        var: Box<VarRef>,
    },
    #[error("machine `{machine}`: the host of network `{network}` is var `{}/{}` of machine `{}`, which that machine does not declare", var.generator, var.file, var.machine)]
    VarHostUndeclared {
        machine: String,
        network: String,
        var: Box<VarRef>,
    },
    #[error("machine `{machine}`: cannot read var `{}/{}` of machine `{}` (a network host)", var.generator, var.file, var.machine)]
    VarHost {
        machine: String,
        var: Box<VarRef>,
        source: Box<clan_vars::Error>,
    },
    #[error("machine `{machine}`: var `{}/{}` of machine `{}` does not hold a host name", var.generator, var.file, var.machine)]
    InvalidVarHost { machine: String, var: Box<VarRef> },
    #[error("no network named `{network}`")]
    UnknownNetwork { network: String },
    #[error("machine `{machine}` is not a peer of {}", network.as_ref().map_or("any network".to_owned(), |n| format!("network `{n}`")))]
    NotAPeer {
        machine: String,
        network: Option<String>,
    },
    #[error("machine `{machine}`: {source}")]
    Tor {
        machine: String,
        source: tor::TorError,
    },
    #[error(transparent)]
    Eval(Box<clan_eval::Error>),
}

impl From<clan_eval::Error> for Error {
    fn from(error: clan_eval::Error) -> Self {
        Error::Eval(Box::new(error))
    }
}

impl clan_error::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::NoTarget { machine } => Some(format!(
                "set `machines.{machine}.deploy.targetHost` in clan.toml, or `meta.domain`"
            )),
            Error::VarHostMissing { var, .. } => Some(format!(
                "run `clan vars generate {} --generator {}`, then deploy {} (`clan machines update {}`)",
                var.machine, var.generator, var.machine, var.machine
            )),
            Error::VarHost { source, .. } => source.hint(),
            Error::VarHostUndeclared { network, .. } => Some(format!(
                "the service of network `{network}` exports a host from a generator its machines do not declare; `clan vars list <machine>` shows theirs"
            )),
            Error::UnsupportedSshOption { .. } => Some(
                "a service may export jump hosts only; other SSH options belong in your ~/.ssh/config"
                    .to_owned(),
            ),
            Error::UnknownNetwork { .. } => Some("`clan network list` shows the networks".to_owned()),
            Error::NotAPeer { .. } => Some(
                "add the machine to a network service instance (`internet`, …); `clan network list` shows the networks"
                    .to_owned(),
            ),
            Error::InvalidTarget { .. } | Error::InvalidExport { .. } | Error::InvalidVarHost { .. } => None,
            Error::Tor { source, .. } => source.hint(),
            Error::Eval(error) => error.hint(),
        }
    }

    /// A machine that cannot be reached fails the run; the evaluation says for itself.
    fn exit(&self) -> clan_error::Exit {
        match self {
            Error::Eval(error) => error.exit(),
            // A network the command line names that the clan does not have: usage.
            Error::UnknownNetwork { .. } => clan_error::Exit::Error,
            _ => clan_error::Exit::Failed,
        }
    }
}

clan_error::register!(Error);

impl Error {
    /// The machine the error is about.
    pub fn machine(&self) -> Option<&str> {
        match self {
            Error::NoTarget { machine }
            | Error::InvalidTarget { machine, .. }
            | Error::VarHostMissing { machine, .. }
            | Error::VarHostUndeclared { machine, .. }
            | Error::VarHost { machine, .. }
            | Error::InvalidVarHost { machine, .. }
            | Error::UnsupportedSshOption { machine, .. }
            | Error::NotAPeer { machine, .. }
            | Error::Tor { machine, .. } => Some(machine),
            Error::InvalidExport { machine, .. } => machine.as_deref(),
            Error::Eval(_) | Error::UnknownNetwork { .. } => None,
        }
    }
}

/// How one machine of a clan is reached: the routes to race, and the clan-generated host key
/// it presents once deployed (trusted besides the user's known_hosts).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub machine: MachineName,
    /// In the order they are tried (see [`candidates`]).
    pub routes: Vec<Candidate>,
    pub host_key: Option<String>,
}

impl Route {
    /// The routes to machine `name` of `fleet`; `target_override` is `--target-host`.
    pub fn of(
        fleet: &clan_eval::Fleet,
        clan_dir: &Path,
        name: &MachineName,
        target_override: Option<&str>,
    ) -> Result<Route, Error> {
        let machine = fleet.machine(name)?;
        let routes = candidates(fleet, clan_dir, &machine, target_override)?;
        let host_key = clan_vars::ssh_host_key(clan_dir, name, &machine.config);
        Ok(Route {
            machine: name.clone(),
            routes,
            host_key,
        })
    }
}
