//! Deploying many machines: a bounded number at once, every machine attempted whatever
//! happens to the others, each outcome reported as [`Event`]s and returned for the summary.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clan_config::{MachineClass, MachineName};
use clan_error::Hint as _;

use crate::deploy::{deploy, DeployOptions, MachineDeploy};
use crate::events::{Event, Outcome, Stage};
use crate::host::Host;
use crate::relay::Relay;
use crate::ssh::{ControlDir, SshHost, SshOptions};
use crate::Error;
use clan_generation::{Generation, SecretFile};
use clan_network::Candidate;

/// How one machine is reached, under the name callers of this crate know it by.
pub use clan_network::Route;

/// The largest sops file a deploy reads (secrets are small files).
const MAX_SECRET_FILE: u64 = 16 << 20;

/// One machine of a run: what to deploy where, or why that could not be worked out.
pub struct Job {
    pub machine: MachineName,
    pub plan: Result<(Vec<Candidate>, MachineDeploy), Error>,
}

/// How one machine ended.
pub struct MachineResult {
    pub machine: MachineName,
    pub target: Option<String>,
    pub generation: Option<String>,
    pub result: Result<Outcome, (Stage, Error)>,
    pub elapsed: Duration,
}

/// Deploys `jobs` over SSH, at most `concurrency` at a time; never stops early.
/// Results come back in the order of `jobs`.
pub fn run(
    jobs: Vec<Job>,
    ssh: &SshOptions,
    options: &DeployOptions,
    concurrency: usize,
    emit: &(dyn Fn(Event) + Sync),
) -> Result<Vec<MachineResult>, Error> {
    let control_dir = ControlDir::new()?;
    let connect = |slot: usize, machine: &str, routes: &[Candidate], host_key: Option<&str>| {
        let mut host = SshHost::new(machine, routes.to_vec(), ssh.clone(), &control_dir, slot);
        if let Some(key) = host_key {
            host.trust_host_key(key);
        }
        Ok(Box::new(host) as Box<dyn Host>)
    };
    Ok(run_over(jobs, &connect, options, concurrency, emit))
}

/// How a run reaches machine `machine` (job `slot`) over `routes`, trusting `host_key`.
type Connect<'a> =
    dyn Fn(usize, &str, &[Candidate], Option<&str>) -> Result<Box<dyn Host>, Error> + Sync + 'a;

/// [`run`] over the hosts `connect` makes.
fn run_over(
    jobs: Vec<Job>,
    connect: &Connect<'_>,
    options: &DeployOptions,
    concurrency: usize,
    emit: &(dyn Fn(Event) + Sync),
) -> Vec<MachineResult> {
    let total = jobs.len();
    let relay = Relay::for_run(total);
    let queue: Mutex<VecDeque<(usize, Job)>> = Mutex::new(jobs.into_iter().enumerate().collect());
    let results: Mutex<Vec<(usize, MachineResult)>> = Mutex::new(Vec::with_capacity(total));
    std::thread::scope(|scope| {
        if !options.dry_run {
            scope.spawn(|| relay.prepare(&options.agent));
        }
        for _ in 0..concurrency.clamp(1, total.max(1)) {
            scope.spawn(|| loop {
                let Some((slot, job)) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
                else {
                    break;
                };
                let result = run_one(slot, job, connect, options, &relay, emit);
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((slot, result));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(slot, _)| *slot);
    results.into_iter().map(|(_, r)| r).collect()
}

fn run_one(
    slot: usize,
    job: Job,
    connect: &Connect<'_>,
    options: &DeployOptions,
    relay: &Relay,
    emit: &(dyn Fn(Event) + Sync),
) -> MachineResult {
    let start = Instant::now();
    let machine = job.machine;
    let finish = |target: Option<String>,
                  generation: Option<String>,
                  result: Result<Outcome, (Stage, Error)>| {
        let elapsed = start.elapsed();
        match &result {
            Ok(outcome) => emit(Event::Done {
                machine: machine.to_string(),
                generation: generation.clone().unwrap_or_default(),
                outcome: *outcome,
                elapsed_ms: elapsed.as_millis() as u64,
            }),
            Err((stage, error)) => emit(Event::Failed {
                machine: machine.to_string(),
                stage: *stage,
                error: error.to_string(),
                hint: error.hint(),
                failure: error.agent_failure().cloned(),
            }),
        }
        MachineResult {
            machine: machine.clone(),
            target,
            generation,
            result,
            elapsed,
        }
    };
    let (routes, work) = match job.plan {
        Ok(plan) => plan,
        Err(error) => return finish(None, None, Err((Stage::Resolve, error))),
    };
    let id = work.generation.id.clone();
    let first = routes
        .first()
        .map(Candidate::destination)
        .unwrap_or_default();
    emit(Event::Resolve {
        machine: machine.to_string(),
        target: first.clone(),
        source: routes.first().map(|r| r.source.clone()).unwrap_or_default(),
        routes: if routes.len() > 1 {
            routes.iter().map(Candidate::describe).collect()
        } else {
            Vec::new()
        },
        generation: id.clone(),
    });
    let mut host = match connect(slot, &machine, &routes, work.host_key.as_deref()) {
        Ok(host) => host,
        Err(error) => return finish(Some(first), Some(id), Err((Stage::Resolve, error))),
    };
    let result = deploy(host.as_mut(), &work, options, relay, &|event| emit(event));
    let target = host.route_used().map_or(first, |used| used.target);
    // Its connection ends before the result is reported.
    drop(host);
    finish(Some(target), Some(id), result)
}

/// The jobs for `names` (all machines when empty) of an evaluated clan. An unknown name is an
/// error for the whole run; anything else wrong with one machine (no target, an unsupported
/// class, an invalid configuration) becomes that machine's failure.
///
/// `admin` finds the admin's age identities (they decrypt the machines' keys); it is asked
/// once, and only when some machine has secrets.
pub fn jobs(
    fleet: &clan_eval::Fleet,
    clan_dir: &Path,
    names: &[MachineName],
    target_override: Option<&str>,
    admin: &dyn Fn() -> Result<clan_secrets::Identities, clan_secrets::Error>,
) -> Result<Vec<Job>, Error> {
    let names: Vec<MachineName> = if names.is_empty() {
        fleet.summary.machines.keys().cloned().collect()
    } else {
        names.to_vec()
    };
    let mut jobs = Vec::new();
    let mut identities = None;
    for name in names {
        let machine = fleet.machine(&name)?;
        let plan = plan_machine(
            fleet,
            clan_dir,
            &machine,
            target_override,
            admin,
            &mut identities,
        );
        jobs.push(Job {
            machine: name,
            plan,
        });
    }
    Ok(jobs)
}

fn plan_machine(
    fleet: &clan_eval::Fleet,
    clan_dir: &Path,
    machine: &clan_eval::EvaluatedMachine,
    target_override: Option<&str>,
    admin: &dyn Fn() -> Result<clan_secrets::Identities, clan_secrets::Error>,
    identities: &mut Option<clan_secrets::Identities>,
) -> Result<(Vec<Candidate>, MachineDeploy), Error> {
    let name = &machine.summary.name;
    if machine.summary.class != MachineClass::Linux {
        return Err(Error::UnsupportedClass {
            machine: name.to_string(),
            class: machine.summary.class.to_string(),
        });
    }
    let routes = clan_network::candidates(fleet, clan_dir, machine, target_override)?;
    let (generation, has_secrets) = build_generation(clan_dir, machine)?;
    let vars_error = |source| Error::Vars {
        machine: name.to_string(),
        source: Box::new(source),
    };
    let age_key = if !has_secrets {
        None
    } else {
        if identities.is_none() {
            *identities = Some(admin().map_err(|e| vars_error(e.into()))?);
        }
        let admin = identities.as_ref().expect("set above");
        let key = clan_vars::machine_age_key(clan_dir, name, admin).map_err(vars_error)?;
        Some(zeroize::Zeroizing::new(
            String::from_utf8_lossy(key.expose()).into_owned(),
        ))
    };
    Ok((
        routes,
        MachineDeploy {
            generation,
            age_key,
            host_key: clan_vars::ssh_host_key(clan_dir, name, &machine.config),
        },
    ))
}

/// The generation the clan builds for `machine` now (its secrets as the clan stores them,
/// still encrypted: no key is needed), and whether it carries secrets.
pub fn build_generation(
    clan_dir: &Path,
    machine: &clan_eval::EvaluatedMachine,
) -> Result<(Generation, bool), Error> {
    let name = &machine.summary.name;
    let vars_error = |source| Error::Vars {
        machine: name.to_string(),
        source: Box::new(source),
    };
    let mut deployable =
        clan_vars::deployable_secrets(clan_dir, name, &machine.config).map_err(vars_error)?;
    deployable.extend(
        clan_vars::machine_clan_secrets(clan_dir, name, &machine.config).map_err(vars_error)?,
    );
    let secrets = deployable
        .iter()
        .map(|secret| {
            // Through the clan tree: a link planted at a secret is refused, never followed.
            let relative = secret
                .sops_path
                .strip_prefix(clan_dir)
                .unwrap_or(&secret.sops_path);
            let sops = clan_fs::Tree::open(clan_dir)
                .and_then(|tree| tree.read(relative, MAX_SECRET_FILE))
                .map_err(|source| Error::Io {
                    context: "reading",
                    path: secret.sops_path.clone(),
                    source: std::io::Error::other(source),
                })?;
            Ok(SecretFile {
                generator: &secret.generator,
                file: &secret.file,
                owner: &secret.owner,
                group: &secret.group,
                mode: secret.mode,
                needed_for: &secret.needed_for,
                sops,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let generation = Generation::build(name, &machine.config, &secrets).map_err(|source| {
        Error::InvalidConfig {
            machine: name.to_string(),
            source,
        }
    })?;
    Ok((generation, !secrets.is_empty()))
}

#[cfg(test)]
mod tests {
    //! The fleet runner over fake hosts (see `deploy::tests`): no root, no machine.

    use super::*;
    use crate::deploy::tests::{exit, job, options, status, Fake};

    #[test]
    fn every_machine_is_attempted_and_results_come_in_job_order() {
        // The fake hosts need no routes.
        let target = |_: &str| Vec::<Candidate>::new();
        let jobs: Vec<Job> = ["ok", "no-target", "unreachable", "fails"]
            .into_iter()
            .map(|name| Job {
                machine: name.parse().unwrap(),
                plan: match name {
                    "no-target" => Err(Error::Network(clan_network::Error::NoTarget {
                        machine: name.to_owned(),
                    })),
                    _ => Ok((target(name), job(false))),
                },
            })
            .collect();
        let unchanged = jobs[0].plan.as_ref().unwrap().1.generation.id.clone();
        let connect = |_: usize, machine: &str, _: &[Candidate], _: Option<&str>| {
            let unchanged = unchanged.clone();
            match machine {
                "unreachable" => Err(Error::Ssh {
                    machine: machine.to_owned(),
                    target: "root@192.0.2.1".into(),
                    failure: crate::SshFailure::Unreachable,
                    detail: "connection timed out".into(),
                }),
                "ok" => Ok(Box::new(Fake::new(move |word, _| match word {
                    "status" => status(Some(&unchanged), false),
                    other => panic!("unexpected `{other}`"),
                })) as Box<dyn Host>),
                _ => Ok(Box::new(Fake::new(|word, _| match word {
                    "status" => status(None, false),
                    "receive" => exit(0, b""),
                    "activate" => exit(2, b""),
                    other => panic!("unexpected `{other}`"),
                })) as Box<dyn Host>),
            }
        };
        let cache = tempfile::tempdir().unwrap();
        let events = Mutex::new(Vec::new());
        let results = run_over(jobs, &connect, &options(false, cache.path()), 2, &|event| {
            events.lock().unwrap().push(event)
        });
        let summary: Vec<(&str, Result<Outcome, Stage>)> = results
            .iter()
            .map(|r| {
                let result = r.result.as_ref().map(|o| *o).map_err(|(stage, _)| *stage);
                (r.machine.as_str(), result)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("ok", Ok(Outcome::Unchanged)),
                ("no-target", Err(Stage::Resolve)),
                ("unreachable", Err(Stage::Resolve)),
                ("fails", Err(Stage::Activate)),
            ]
        );
        let mut failed: Vec<String> = events
            .into_inner()
            .unwrap()
            .into_iter()
            .filter_map(|event| match event {
                Event::Failed { machine, .. } => Some(machine),
                _ => None,
            })
            .collect();
        failed.sort();
        assert_eq!(failed, ["fails", "no-target", "unreachable"]);
    }
}
