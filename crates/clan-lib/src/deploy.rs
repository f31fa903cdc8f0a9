//! Deploys: `update` (vars first, then the fleet run of `clan-deploy`, reporting each
//! machine's events to the [`Progress`] sink), dry runs, `generations` of one machine or the
//! whole fleet, `status` (where each machine stands against the clan), and `rollback`.

use std::path::Path;

use clan_deploy::agent::Activation;
use clan_deploy::agent::HistoryEntry;
use clan_deploy::deploy::{run_agent, run_agent_if_there, DeployOptions};
use clan_deploy::fleet::{MachineResult, Route};
use clan_deploy::ssh::{ControlDir, RouteUsed, SshHost, SshOptions};
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
    let sources = clan_secrets::KeySources::from_env();
    let admin = || crate::secrets::admin_identities(&sources);
    let mut jobs = clan_deploy::fleet::jobs(
        &fleet,
        dir,
        &machines,
        request.target_host.as_deref(),
        &admin,
    )?;
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
    connect_in(
        &clan_eval::Fleet::open(dir)?,
        dir,
        machine,
        target_host,
        ssh,
    )
}

/// [`connect`] with the fleet already evaluated.
pub(crate) fn connect_in(
    fleet: &clan_eval::Fleet,
    dir: &Path,
    machine: &MachineName,
    target_host: Option<&str>,
    ssh: &SshOptions,
) -> Result<(ControlDir, SshHost), Error> {
    let route = Route::of(fleet, dir, machine, target_host).map_err(clan_deploy::Error::from)?;
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

/// Where a machine stands: how it was reached, its current generation, whether that is the
/// generation the clan builds for it now, and its last deploy.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    pub machine: MachineName,
    /// The generation the clan builds for the machine now; `None` when its configuration
    /// does not build (`error` says why).
    pub wanted: Option<String>,
    /// How the machine was reached; `None` when it was not (`error` says why).
    pub reached: Option<RouteUsed>,
    /// The machine's current generation (`None`: never deployed, or not reached).
    pub current: Option<String>,
    /// Whether the machine runs what the clan builds; `None` when either side is unknown.
    pub in_sync: Option<bool>,
    /// The newest entry of its history: the last deploy, rollback or failure, and when.
    pub last: Option<HistoryEntry>,
    /// Why the machine could not be reached or its generation built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The status of the machines `machines` (all when empty) that carry every tag of `tags`,
/// asked `jobs` machines at a time, in the order of the selection; a machine that cannot be
/// reached is a status with its error, not an error.
pub fn status(
    dir: &Path,
    machines: &[MachineName],
    tags: &[TagName],
    ssh: &SshOptions,
    jobs: usize,
) -> Result<Vec<MachineStatus>, Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    let machines = crate::machines::select(&fleet, machines, tags)?;
    let asked = ask_each(
        &fleet,
        dir,
        &machines,
        ssh,
        jobs,
        "asking a machine for its status",
        |host| {
            Ok((
                host.route_used(),
                run_agent_if_there::<Generations>(host, &["generations"])?,
            ))
        },
    );
    let mut statuses = Vec::with_capacity(asked.len());
    for (machine, answer) in asked {
        let wanted = fleet
            .machine(&machine)
            .map_err(clan_deploy::Error::from)
            .and_then(|evaluated| clan_deploy::fleet::build_generation(dir, &evaluated));
        let mut status = MachineStatus {
            machine,
            wanted: None,
            reached: None,
            current: None,
            in_sync: None,
            last: None,
            error: None,
        };
        match wanted {
            Ok((generation, _)) => status.wanted = Some(generation.id),
            Err(error) => status.error = Some(error.to_string()),
        }
        match answer {
            Ok((reached, generations)) => {
                status.reached = reached;
                // A machine without an agent was never deployed: no generation, no history.
                let generations = generations.unwrap_or_default();
                status.in_sync = status
                    .wanted
                    .as_ref()
                    .map(|w| Some(w) == generations.current.as_ref());
                status.current = generations.current;
                status.last = generations.history.last().cloned();
            }
            Err(error) => {
                let unreached = error.to_string();
                status.error = Some(match status.error.take() {
                    Some(unbuilt) => format!("{unbuilt}; {unreached}"),
                    None => unreached,
                });
            }
        }
        statuses.push(status);
    }
    Ok(statuses)
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
