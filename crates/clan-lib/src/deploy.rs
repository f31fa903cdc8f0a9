//! Deploys: `update` (vars first, then the fleet run of `clan-deploy`, reporting each
//! machine's events to the [`Progress`] sink), dry runs, `generations` of one machine or the
//! whole fleet, and `rollback`.

use std::path::Path;

use clan_deploy::agent::Activation;
use clan_deploy::deploy::{run_agent, DeployOptions};
use clan_deploy::fleet::{MachineResult, Route};
use clan_deploy::ssh::{ControlDir, SshHost, SshOptions};
use clan_inventory::{MachineName, TagName};

use crate::vars::Prompter;
use crate::{Error, Event, Progress};

/// A deploy of the machines `machines` (all when empty) that carry every tag of `tags`.
pub struct UpdateRequest {
    pub machines: Vec<MachineName>,
    pub tags: Vec<TagName>,
    /// Connect to `[user@]host[:port]` instead of the machine's target (one machine only).
    pub target_host: Option<String>,
    /// Run vars generator scripts without bubblewrap.
    pub no_sandbox: bool,
    /// How many machines are deployed at once.
    pub jobs: usize,
    pub ssh: SshOptions,
    pub options: DeployOptions,
}

/// Deploys the machines `request` selects. Vars come first, for every selected machine,
/// all prompts before anything runs; a machine whose vars still fail to generate then fails
/// alone. Results come in the order of the selection; a failed machine is a result, not an
/// error.
pub fn update(
    dir: &Path,
    request: &UpdateRequest,
    prompter: &mut dyn Prompter,
    progress: &dyn Progress,
) -> Result<Vec<MachineResult>, Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    let machines = crate::machines::select(&fleet, &request.machines, &request.tags)?;
    if request.target_host.is_some() && machines.len() != 1 {
        return Err(Error::TargetHostForMany {
            count: machines.len(),
        });
    }
    let missing = if request.options.dry_run {
        crate::vars::Missing::default()
    } else {
        crate::vars::generate_missing(
            dir,
            &fleet,
            &machines,
            request.no_sandbox,
            prompter,
            progress,
        )?
    };
    // New public vars can change the machines' configuration: evaluate again then.
    let fleet = match missing.generated {
        Some(generated) => {
            progress.event(Event::VarsGenerated(generated));
            clan_eval::Fleet::open(dir)?
        }
        None => fleet,
    };
    let mut jobs =
        clan_deploy::fleet::jobs(&fleet, dir, &machines, request.target_host.as_deref())?;
    for job in &mut jobs {
        if let Some(reason) = missing.unanswered.get(job.machine.as_str()) {
            job.plan = Err(clan_deploy::Error::VarsMissing {
                machine: job.machine.to_string(),
                reason: reason.clone(),
            });
        }
    }
    let emit = |event| progress.event(Event::Deploy(Box::new(event)));
    Ok(clan_deploy::fleet::run(
        jobs,
        &request.ssh,
        &request.options,
        request.jobs,
        &emit,
    )?)
}

/// How machine `machine` is reached (`target_host` overrides its target).
pub fn route(dir: &Path, machine: &MachineName, target_host: Option<&str>) -> Result<Route, Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    Ok(Route::of(&fleet, dir, machine, target_host).map_err(clan_deploy::Error::from)?)
}

/// A connection to one machine, for operations outside a fleet run, and its control
/// directory (bound first, so that the host, dropped first, closes before the directory goes).
pub fn connect(
    dir: &Path,
    machine: &MachineName,
    target_host: Option<&str>,
    ssh: &SshOptions,
) -> Result<(ControlDir, SshHost), Error> {
    let route = route(dir, machine, target_host)?;
    let control_dir = ControlDir::new()?;
    let host = SshHost::connect_route(&route, ssh, &control_dir)?;
    Ok((control_dir, host))
}

/// A machine's generation history, as its agent reports it.
pub use clan_deploy::agent::Generations;

/// Machine `machine`'s generations.
pub fn generations(
    dir: &Path,
    machine: &MachineName,
    target_host: Option<&str>,
    ssh: &SshOptions,
) -> Result<Generations, Error> {
    let (_control_dir, host) = connect(dir, machine, target_host, ssh)?;
    Ok(run_agent(&host, &["generations"])?)
}

/// One machine's generations, or why they could not be asked for.
pub type MachineGenerations = (MachineName, Result<Generations, Error>);

/// The generations of every machine of the fleet, asked `jobs` machines at a time; a
/// machine that cannot be asked is a result, not an error.
pub fn fleet_generations(
    dir: &Path,
    ssh: &SshOptions,
    jobs: usize,
) -> Result<Vec<MachineGenerations>, Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    let machines = crate::machines::select(&fleet, &[], &[])?;
    Ok(ask_each(
        &fleet,
        dir,
        &machines,
        ssh,
        jobs,
        "asking a machine for its generations",
        |host| Ok(run_agent(host, &["generations"])?),
    ))
}

/// `ask` run on each of `machines` over its own connection, `jobs` machines at a time; the
/// results in the order of `machines` (`what` names the work if a thread panics).
pub(crate) fn ask_each<T: Send>(
    fleet: &clan_eval::Fleet,
    dir: &Path,
    machines: &[MachineName],
    ssh: &SshOptions,
    jobs: usize,
    what: &'static str,
    ask: impl Fn(&SshHost) -> Result<T, Error> + Sync,
) -> Vec<(MachineName, Result<T, Error>)> {
    let mut results = Vec::with_capacity(machines.len());
    for chunk in machines.chunks(jobs.max(1)) {
        std::thread::scope(|scope| {
            let asks: Vec<_> = chunk
                .iter()
                .map(|machine| {
                    let ask = &ask;
                    scope.spawn(move || {
                        let route = Route::of(fleet, dir, machine, None)
                            .map_err(clan_deploy::Error::from)?;
                        let control_dir = ControlDir::new()?;
                        let host = SshHost::connect_route(&route, ssh, &control_dir)?;
                        ask(&host)
                    })
                })
                .collect();
            for (machine, ask) in chunk.iter().zip(asks) {
                let result = ask.join().unwrap_or_else(|_| Err(Error::Panicked { what }));
                results.push((machine.clone(), result));
            }
        });
    }
    results
}

/// Re-activates an earlier generation of `machine`: `to` is a generation id (or its first
/// characters) or history number; default the previous one.
pub fn rollback(
    dir: &Path,
    machine: &MachineName,
    target_host: Option<&str>,
    to: Option<&str>,
    ssh: &SshOptions,
) -> Result<Activation, Error> {
    let (_control_dir, host) = connect(dir, machine, target_host, ssh)?;
    let mut words = vec!["rollback"];
    if let Some(to) = to {
        words.extend(["--to", to]);
    }
    Ok(run_agent(&host, &words)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clan_deploy::agent::HistoryEntry;

    fn entry(number: u64, generation: &str, action: &str) -> HistoryEntry {
        HistoryEntry {
            number,
            generation: generation.to_owned(),
            time: number,
            action: action.to_owned(),
            detail: None,
        }
    }

    #[test]
    fn the_current_entry_is_the_last_that_made_the_current_generation_current() {
        let generations = Generations {
            current: Some("a".into()),
            history: vec![
                entry(1, "a", "deploy"),
                entry(2, "b", "deploy"),
                entry(3, "a", "magic-rollback"),
                entry(4, "a", "failed"),
            ],
        };
        assert_eq!(generations.current_entry(), Some(2));
        let none = Generations {
            current: None,
            history: vec![entry(1, "a", "failed")],
        };
        assert_eq!(none.current_entry(), None);
    }
}
