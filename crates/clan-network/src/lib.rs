//! How a machine is reached: its SSH target from `--target-host`, `deploy.targetHost`, the
//! fleet's network exports (the reachable network with the highest priority) or
//! `root@<machine>.<domain>`, and the clan-generated host key it presents once deployed.
//! Deciding only: the SSH transport is `clan_deploy::ssh`'s. The networking issue (13) fills
//! this crate: several networks per machine, var hosts, racing the live routes.

mod target;

use std::path::Path;

use clan_config::MachineName;

pub use target::{resolve, Target};

/// Why a machine's target cannot be worked out.
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
            Error::InvalidTarget { .. } => None,
            Error::Eval(error) => error.hint(),
        }
    }

    /// A machine that cannot be reached fails the run; the evaluation says for itself.
    fn exit(&self) -> clan_error::Exit {
        match self {
            Error::Eval(error) => error.exit(),
            _ => clan_error::Exit::Failed,
        }
    }
}

clan_error::register!(Error);

impl Error {
    /// The machine the error is about.
    pub fn machine(&self) -> Option<&str> {
        match self {
            Error::NoTarget { machine } | Error::InvalidTarget { machine, .. } => Some(machine),
            Error::Eval(_) => None,
        }
    }
}

/// Where `machine` is reached: `--target-host` when given, else as [`resolve`]
/// decides from the clan.
pub fn machine_target(
    fleet: &clan_eval::Fleet,
    machine: &clan_eval::EvaluatedMachine,
    target_override: Option<&str>,
) -> Result<Target, Error> {
    let name = &machine.summary.name;
    match target_override {
        Some(text) => Target::parse(name, text, "--target-host"),
        None => resolve(
            name,
            machine.summary.target_host.as_deref(),
            &fleet.summary.exports,
            &fleet.summary.meta.domain,
        ),
    }
}

/// How one machine of a clan is reached: where to connect, and the clan-generated host key
/// it presents once deployed (trusted besides the user's known_hosts).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub machine: MachineName,
    pub target: Target,
    pub host_key: Option<String>,
}

impl Route {
    /// The route to machine `name` of `fleet`; `target_override` is `--target-host`.
    pub fn of(
        fleet: &clan_eval::Fleet,
        clan_dir: &Path,
        name: &MachineName,
        target_override: Option<&str>,
    ) -> Result<Route, Error> {
        let machine = fleet.machine(name)?;
        let target = machine_target(fleet, &machine, target_override)?;
        let host_key = clan_vars::ssh_host_key(clan_dir, name, &machine.config);
        Ok(Route {
            machine: name.clone(),
            target,
            host_key,
        })
    }
}
