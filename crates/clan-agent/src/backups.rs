//! Backups on the machine (`clan-agent agent backups …`), from the current generation's
//! state and providers (clan-core's contract, see [`clan_config::BackupProvider`]): `create`
//! runs every state's pre-backup script, each provider's `create` with `FOLDERS`, then the
//! post-backup scripts; `restore` runs, per state, pre-restore, the provider's `restore` with
//! `NAME`, `FOLDERS` and `RESTORE_ROOT`, and post-restore, and reports every state's failure
//! together. Backups and restores of a machine wait for each other (their own lock, not the
//! deploy's). The last result per provider is kept in `/var/lib/clan/backups/status.json`,
//! which the timer's runs update too, so `clan backups status` sees scheduled failures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clan_config::{BackupProvider, State as ServiceState, StateName};
use clan_generation::reply::{
    Archive, BackupCreated, BackupStatus, ProviderArchives, ProviderStatus, Restored,
};

use crate::apply::Stored;
use crate::store::{now, read_json, write_json, Lock, Paths, State};
use crate::AgentError;

/// How long a backup or restore waits for another one of the same machine.
const LOCK_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How much of a failing script's output an error carries.
const OUTPUT_TAIL: usize = 600;

/// What the current generation declares for backups.
pub struct Declared {
    pub state: BTreeMap<StateName, ServiceState>,
    pub providers: BTreeMap<StateName, BackupProvider>,
}

impl Declared {
    pub fn load(paths: &Paths) -> Result<Declared, AgentError> {
        let current = State::load(paths)?.current.ok_or_else(|| {
            AgentError::Step("this machine has no generation yet: deploy it first".into())
        })?;
        let manifest = Stored::load(paths, &current)?.manifest;
        Ok(Declared {
            state: manifest.state,
            providers: manifest.backup_providers,
        })
    }

    /// The providers named, or all; an unknown name or none declared is an error.
    fn providers(&self, only: Option<&str>) -> Result<Vec<(&str, &BackupProvider)>, AgentError> {
        if self.providers.is_empty() {
            return Err(AgentError::Step(
                "no backup provider is deployed to this machine: add it to a borgbackup, \
                 restic or localbackup instance and deploy"
                    .into(),
            ));
        }
        match only {
            None => Ok(self
                .providers
                .iter()
                .map(|(name, provider)| (name.as_str(), provider))
                .collect()),
            Some(name) => match self.providers.get_key_value(name) {
                Some((name, provider)) => Ok(vec![(name.as_str(), provider)]),
                None => Err(AgentError::Step(format!(
                    "no backup provider `{name}` on this machine (it has: {})",
                    self.providers
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            },
        }
    }

    /// Every state's folders, `:`-joined, as `FOLDERS` (clan-core's form).
    fn all_folders(&self) -> String {
        let mut folders: Vec<&str> = self
            .state
            .values()
            .flat_map(|state| state.folders.iter().map(|folder| folder.as_str()))
            .collect();
        folders.sort_unstable();
        folders.dedup();
        folders.join(":")
    }
}

fn status_file(paths: &Paths) -> PathBuf {
    paths.state_dir().join("backups").join("status.json")
}

fn lock(paths: &Paths) -> Result<Lock, AgentError> {
    Lock::acquire_for(
        paths,
        "backups.lock",
        "backup or restore",
        LOCK_TIMEOUT,
        |holder| {
            eprintln!("waiting for another backup or restore of this machine to finish ({holder})")
        },
    )
}

/// Updates provider `name`'s entry of the status file.
fn record(
    paths: &Paths,
    name: &str,
    update: impl FnOnce(&mut ProviderStatus),
) -> Result<(), AgentError> {
    let path = status_file(paths);
    let mut status: BackupStatus = read_json(&path)?.unwrap_or_default();
    update(status.providers.entry(name.to_owned()).or_default());
    status.states.clear();
    write_json(&path, &status)
}

/// Runs `script` with `/bin/sh -c` from `/`, its stdout passed on as our stderr (stdout
/// carries the JSON reply); the error carries the tail of what it printed.
fn run_script(what: &str, script: &str, env: &[(&str, &str)]) -> Result<String, AgentError> {
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .current_dir("/")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .map_err(|error| AgentError::Step(format!("{what} could not start: {error}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stderr}");
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{stdout}");
    let printed = format!("{stdout}{stderr}");
    let printed = printed.trim();
    let start = printed.len().saturating_sub(OUTPUT_TAIL);
    let start = (start..printed.len())
        .find(|&i| printed.is_char_boundary(i))
        .unwrap_or(printed.len());
    let tail = &printed[start..];
    let code = output
        .status
        .code()
        .map_or_else(|| "was killed".to_owned(), |code| format!("exited {code}"));
    Err(AgentError::Step(if tail.is_empty() {
        format!("{what} {code}")
    } else {
        format!("{what} {code}: {tail}")
    }))
}

/// Runs each state's script chosen by `pick`; the failures, by state.
fn run_state_scripts(
    declared: &Declared,
    kind: &str,
    pick: impl Fn(&ServiceState) -> Option<&String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, state) in &declared.state {
        if let Some(script) = pick(state) {
            eprintln!("running the {kind} script of state `{name}`");
            if let Err(error) = run_script(&format!("{kind} script of state `{name}`"), script, &[])
            {
                failures.push(error.to_string());
            }
        }
    }
    failures
}

/// Backs every state up with each provider (or only `only`).
pub fn create(paths: &Paths, only: Option<&str>) -> Result<BackupCreated, AgentError> {
    let declared = Declared::load(paths)?;
    let providers = declared.providers(only)?;
    if declared.state.is_empty() {
        return Err(AgentError::Step(
            "no service on this machine declares state to back up".into(),
        ));
    }
    let _lock = lock(paths)?;
    let pre = run_state_scripts(&declared, "pre-backup", |s| s.pre_backup_script.as_ref());
    let mut failures = Vec::new();
    let mut made = Vec::new();
    if pre.is_empty() {
        let folders = declared.all_folders();
        for (name, provider) in &providers {
            eprintln!("backing up with `{name}`");
            match run_script(
                &format!("provider `{name}` create"),
                &provider.create,
                &[("FOLDERS", &folders)],
            ) {
                Ok(_) => {
                    made.push((*name).to_owned());
                    record(paths, name, |status| status.last_success = Some(now()))?;
                }
                Err(error) => failures.push(error.to_string()),
            }
        }
    } else {
        failures.push(format!("no archive was made: {}", pre.join("; ")));
    }
    // After a failed pre-backup too: post scripts undo what pre scripts began.
    failures.extend(run_state_scripts(&declared, "post-backup", |s| {
        s.post_backup_script.as_ref()
    }));
    if failures.is_empty() {
        return Ok(BackupCreated {
            providers: made,
            states: declared.state.keys().map(ToString::to_string).collect(),
            time: now(),
        });
    }
    let message = failures.join("; ");
    for (name, _) in &providers {
        if !made.iter().any(|made| made == name) {
            record(paths, name, |status| {
                status.last_failure = Some(now());
                status.last_error = Some(message.clone());
            })?;
        }
    }
    Err(AgentError::Step(format!("backup failed: {message}")))
}

/// Each provider's archives (or only `only`'s).
pub fn list(paths: &Paths, only: Option<&str>) -> Result<Vec<ProviderArchives>, AgentError> {
    let declared = Declared::load(paths)?;
    declared
        .providers(only)?
        .into_iter()
        .map(|(name, provider)| {
            Ok(ProviderArchives {
                provider: name.to_owned(),
                archives: list_one(name, provider)?,
            })
        })
        .collect()
}

fn list_one(name: &str, provider: &BackupProvider) -> Result<Vec<Archive>, AgentError> {
    let printed = run_script(&format!("provider `{name}` list"), &provider.list, &[])?;
    serde_json::from_str(&printed).map_err(|error| AgentError::Command {
        command: format!("provider `{name}` list"),
        detail: format!("did not print a JSON list of {{\"name\": …}} ({error})"),
    })
}

/// What a restore restores and where.
pub struct RestoreRequest<'a> {
    pub provider: &'a str,
    pub archive: &'a str,
    /// One state, or every state the machine declares.
    pub service: Option<&'a str>,
    /// A staging directory instead of `/` (the live folders and services are left alone:
    /// pre- and post-restore scripts do not run).
    pub to: Option<&'a Path>,
}

/// Restores archive `request.archive`; every failing state is named in the one error.
pub fn restore(paths: &Paths, request: &RestoreRequest<'_>) -> Result<Restored, AgentError> {
    let declared = Declared::load(paths)?;
    let (name, provider) = declared.providers(Some(request.provider))?[0];
    let states: Vec<(&StateName, &ServiceState)> = match request.service {
        None => declared.state.iter().collect(),
        Some(service) => match declared.state.get_key_value(service) {
            Some(entry) => vec![entry],
            None => {
                return Err(AgentError::Step(format!(
                    "no state `{service}` on this machine (it has: {})",
                    declared
                        .state
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        },
    };
    if states.is_empty() {
        return Err(AgentError::Step(
            "no service on this machine declares state to restore".into(),
        ));
    }
    let root = match request.to {
        None => "/".to_owned(),
        Some(dir) => staging_dir(dir)?,
    };
    let _lock = lock(paths)?;
    let archives = list_one(name, provider)?;
    if !archives
        .iter()
        .any(|archive| archive.name == request.archive)
    {
        return Err(AgentError::Step(format!(
            "provider `{name}` has no archive `{}`: see `clan backups list`",
            request.archive
        )));
    }
    let live = request.to.is_none();
    let mut failures = Vec::new();
    for (state_name, state) in &states {
        let step = |kind: &str, script: &Option<String>| match script {
            Some(script) if live => run_script(
                &format!("{kind} script of state `{state_name}`"),
                script,
                &[],
            )
            .map(drop),
            _ => Ok(()),
        };
        let folders: Vec<&str> = state.folders.iter().map(|f| f.as_str()).collect();
        let folders = folders.join(":");
        let result = step("pre-restore", &state.pre_restore_script)
            .and_then(|()| {
                eprintln!("restoring state `{state_name}` from `{}`", request.archive);
                run_script(
                    &format!("provider `{name}` restore"),
                    &provider.restore,
                    &[
                        ("NAME", request.archive),
                        ("FOLDERS", &folders),
                        ("RESTORE_ROOT", &root),
                    ],
                )
                .map(drop)
            })
            .and_then(|()| step("post-restore", &state.post_restore_script));
        if let Err(error) = result {
            failures.push(format!("state `{state_name}`: {error}"));
        }
    }
    if !failures.is_empty() {
        return Err(AgentError::Step(format!(
            "restore failed for {} of {} states: {}",
            failures.len(),
            states.len(),
            failures.join("; ")
        )));
    }
    Ok(Restored {
        provider: name.to_owned(),
        archive: request.archive.to_owned(),
        states: states.iter().map(|(name, _)| name.to_string()).collect(),
        root,
    })
}

/// `dir`, made root's alone when it does not exist; `/` and relative paths are refused (a
/// restore over live data is a restore without `--to`).
fn staging_dir(dir: &Path) -> Result<String, AgentError> {
    let text = dir.to_string_lossy();
    clan_config::AbsolutePath::parse(&text, "restore directory")
        .map_err(|error| AgentError::Step(error.to_string()))?;
    crate::store::create_dir(dir, 0o700)?;
    Ok(text.into_owned())
}

/// Runs each provider's (or only `only`'s) integrity check and records the results.
pub fn check(paths: &Paths, only: Option<&str>) -> Result<BackupStatus, AgentError> {
    let declared = Declared::load(paths)?;
    let providers = declared.providers(only)?;
    let _lock = lock(paths)?;
    let mut failures = Vec::new();
    for (name, provider) in providers {
        let Some(command) = &provider.check else {
            failures.push(format!("provider `{name}` has no check command"));
            continue;
        };
        eprintln!("checking `{name}`");
        let result = run_script(&format!("provider `{name}` check"), command, &[]);
        let error = result.as_ref().err().map(ToString::to_string);
        record(paths, name, |status| {
            status.last_check = Some(now());
            status.last_check_ok = Some(error.is_none());
            status.last_check_error = error.clone();
        })?;
        failures.extend(error);
    }
    if failures.is_empty() {
        status(paths)
    } else {
        Err(AgentError::Step(format!(
            "check failed: {}",
            failures.join("; ")
        )))
    }
}

/// The last results per provider, and the states the current generation declares; each
/// scheduled provider is compared with its timer's last run (see [`ProviderStatus::stale`]).
pub fn status(paths: &Paths) -> Result<BackupStatus, AgentError> {
    let declared = Declared::load(paths)?;
    let mut status: BackupStatus = read_json(&status_file(paths))?.unwrap_or_default();
    status.states = declared.state.keys().map(ToString::to_string).collect();
    // Providers no longer deployed drop out; deployed ones without a run yet show empty.
    status
        .providers
        .retain(|name, _| declared.providers.contains_key(name.as_str()));
    for (name, provider) in &declared.providers {
        let entry = status.providers.entry(name.to_string()).or_default();
        let timer = format!("clan-backup-{name}");
        let (scheduled, running) = if provider.start_at.is_some() && paths.is_live() {
            (last_trigger(&timer), unit_running(&timer))
        } else {
            (None, false)
        };
        entry.last_scheduled = scheduled;
        entry.stale = is_stale(entry, running);
    }
    Ok(status)
}

/// Stale: the latest backup failed, or the timer fired after the last success and its run is
/// over.
fn is_stale(status: &ProviderStatus, running: bool) -> bool {
    let failed_last = match (status.last_failure, status.last_success) {
        (Some(failure), Some(success)) => failure > success,
        (Some(_), None) => true,
        _ => false,
    };
    let missed = status
        .last_scheduled
        .is_some_and(|fired| status.last_success.is_none_or(|success| success < fired));
    failed_last || (missed && !running)
}

/// When timer `<unit>.timer` last fired (unix seconds), from systemd.
fn last_trigger(unit: &str) -> Option<u64> {
    let output = Command::new("systemctl")
        .args(["show", "--timestamp=unix", "-P", "LastTriggerUSec"])
        .arg(format!("{unit}.timer"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().strip_prefix('@')?.parse().ok()
}

/// Whether `<unit>.service` is running now (a backup the timer started).
fn unit_running(unit: &str) -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet"])
        .arg(format!("{unit}.service"))
        .status()
        .is_ok_and(|status| status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_when_the_latest_run_failed_or_a_scheduled_run_made_no_archive() {
        let status = |success, failure, scheduled| ProviderStatus {
            last_success: success,
            last_failure: failure,
            last_scheduled: scheduled,
            ..ProviderStatus::default()
        };
        assert!(!is_stale(&status(None, None, None), false), "never run");
        assert!(!is_stale(&status(Some(10), Some(5), Some(9)), false));
        assert!(is_stale(&status(Some(10), Some(11), None), false));
        assert!(is_stale(&status(None, Some(1), None), false));
        assert!(is_stale(&status(Some(10), None, Some(20)), false), "missed");
        assert!(
            !is_stale(&status(Some(10), None, Some(20)), true),
            "running now"
        );
    }
}
