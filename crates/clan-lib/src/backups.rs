//! Backups of the machines' service state (`clan backups …`): each operation checks the
//! evaluated configuration first (a machine without a provider or state is an error before
//! any connection), then asks the machine's agent over SSH, reached as deploys reach it.
//! What runs on the machine is `clan_agent::backups`.

use std::path::Path;

pub use clan_deploy::agent::{
    Archive, BackupCreated, BackupStatus, ProviderArchives, ProviderStatus, Restored,
};
use clan_deploy::deploy::run_agent;
use clan_deploy::ssh::SshOptions;

use crate::Error;

/// Which machine, and how to reach it.
pub struct On<'a> {
    pub dir: &'a Path,
    pub machine: &'a clan_inventory::MachineName,
    /// Connect to `[user@]host[:port]` instead of the machine's target.
    pub target_host: Option<&'a str>,
    pub ssh: &'a SshOptions,
}

/// Fails unless `on.machine`'s evaluated config has `provider` (any, when `None`) and state
/// (`service`, when given).
fn check_declared(on: &On<'_>, provider: Option<&str>, service: Option<&str>) -> Result<(), Error> {
    let config = clan_eval::Fleet::open(on.dir)?.machine(on.machine)?.config;
    let providers = &config.backups.providers;
    let has_provider = match provider {
        Some(name) => providers.contains_key(name),
        None => !providers.is_empty(),
    };
    if !has_provider {
        return Err(Error::NoBackupProvider {
            machine: on.machine.to_string(),
            provider: provider.map(str::to_owned),
        });
    }
    let has_state = match service {
        Some(name) => config.state.contains_key(name),
        None => !config.state.is_empty(),
    };
    if !has_state {
        return Err(Error::NoState {
            machine: on.machine.to_string(),
            service: service.map(str::to_owned),
        });
    }
    Ok(())
}

fn ask<T: serde::de::DeserializeOwned>(on: &On<'_>, words: &[&str]) -> Result<T, Error> {
    let (_control_dir, host) = crate::deploy::connect(on.dir, on.machine, on.target_host, on.ssh)?;
    let mut argv = vec!["backups"];
    argv.extend_from_slice(words);
    Ok(run_agent(&host, &argv)?)
}

fn with_provider<'a>(mut words: Vec<&'a str>, provider: Option<&'a str>) -> Vec<&'a str> {
    if let Some(provider) = provider {
        words.extend(["--provider", provider]);
    }
    words
}

/// Backs `on.machine`'s state up now, with `provider` or every provider it has.
pub fn create(on: &On<'_>, provider: Option<&str>) -> Result<BackupCreated, Error> {
    check_declared(on, provider, None)?;
    ask(on, &with_provider(vec!["create"], provider))
}

/// The archives of `on.machine`, per provider.
pub fn list(on: &On<'_>, provider: Option<&str>) -> Result<Vec<ProviderArchives>, Error> {
    check_declared(on, provider, None)?;
    ask(on, &with_provider(vec!["list"], provider))
}

/// What to restore, and where.
pub struct RestoreRequest<'a> {
    pub provider: &'a str,
    pub archive: &'a str,
    /// One state (clan-core calls it the service); every state when `None`.
    pub service: Option<&'a str>,
    /// A staging directory on the machine instead of the live folders.
    pub to: Option<&'a str>,
}

/// Restores `request.archive` on `on.machine`: per state pre-restore, the provider's restore
/// and post-restore (none of the scripts under `--to`); every failing state in one error.
pub fn restore(on: &On<'_>, request: &RestoreRequest<'_>) -> Result<Restored, Error> {
    check_declared(on, Some(request.provider), request.service)?;
    let mut words = vec![
        "restore",
        "--provider",
        request.provider,
        "--name",
        request.archive,
    ];
    if let Some(service) = request.service {
        words.extend(["--service", service]);
    }
    if let Some(to) = request.to {
        words.extend(["--to", to]);
    }
    ask(on, &words)
}

/// Verifies `on.machine`'s repositories (each provider's check) and returns its status.
pub fn check(on: &On<'_>, provider: Option<&str>) -> Result<BackupStatus, Error> {
    check_declared(on, provider, None)?;
    ask(on, &with_provider(vec!["check"], provider))
}

/// One machine's backup status, or why it could not be asked for.
pub type MachineStatus = (clan_inventory::MachineName, Result<BackupStatus, Error>);

/// The status of every machine that has a backup provider, asked `jobs` at a time.
pub fn status(dir: &Path, ssh: &SshOptions, jobs: usize) -> Result<Vec<MachineStatus>, Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    let mut machines = Vec::new();
    for machine in fleet.machines()? {
        if !machine.config.backups.providers.is_empty() {
            machines.push(machine.summary.name.clone());
        }
    }
    Ok(crate::deploy::ask_each(
        &fleet,
        dir,
        &machines,
        ssh,
        jobs,
        "asking a machine for its backup status",
        |host| Ok(run_agent(host, &["backups", "status"])?),
    ))
}
