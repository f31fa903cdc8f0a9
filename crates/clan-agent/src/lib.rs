//! The machine side of deploys, built as its own small binary (`clan-agent`) that the deploy
//! uploads to `/var/lib/clan/bin/`. It stores uploaded generations, activates them under a
//! per-machine lock, re-activates the previous generation when activation fails, and after a
//! successful activation waits (in a detached transient unit, so the deploying SSH session may
//! die) for the deployer's confirmation over a fresh connection — reverting by itself when none
//! comes in time. [`facter`] writes the machine's hardware report; [`serve`] passes the agent
//! on to the other machines of a run; [`cli`] is the binary's command line (`agent …` and
//! `mesher …`, the Data Mesher daemon and its tools, which run on machines too).
//!
//! Every agent command prints JSON on stdout for the deployer ([`clan_generation::reply`]) and
//! plain messages on stderr. It must never link the evaluator, Starlark or the deployer's
//! networking: every byte of it crosses the admin's uplink on a first deploy.

mod apply;
pub mod backups;
pub mod cli;
pub mod facter;
mod hosts;
pub mod mesher;
pub mod report;
pub mod serve;
mod store;
mod system;

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clan_generation::reply::{
    short, Activation, Changes, Failure, FailureKind, Generations, Status,
};

pub use apply::SECRETS_UNIT;
pub use store::Paths;

use apply::Stored;
use store::{Lock, Pending, State};

/// How many generations stay on disk besides the current one.
const KEEP_GENERATIONS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{context} `{}`: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{0}")]
    Step(String),
    /// A managed file that cannot be put in place.
    #[error("file `{path}`: {reason}")]
    File { path: String, reason: String },
    #[error("unit `{unit}` failed to {verb}: {detail}")]
    Unit {
        unit: String,
        verb: String,
        detail: String,
    },
    #[error("secrets: {0}")]
    Secret(String),
    #[error("machine busy: {0}")]
    Busy(String),
    #[error("generation `{0}` is not stored on this machine")]
    UnknownGeneration(String),
    #[error("state file corrupt: {0}")]
    Corrupt(String),
    #[error("upload refused: {0}")]
    Bundle(#[from] clan_generation::BundleError),
    #[error("{failure}; previous generation {restored}")]
    RolledBack {
        failure: Box<AgentError>,
        restored: String,
    },
    #[error("generation {0} was not confirmed in time and was rolled back")]
    Reverted(String),
    /// A path refused by the machine policy (a link a non-root user controls), or I/O on it.
    #[error(transparent)]
    Fs(#[from] clan_fs::Error),
}

impl AgentError {
    /// The failure as the agent reports it to the deployer (see [`Failure`]).
    pub fn failure(&self) -> Failure {
        let (kind, path, unit, cause) = match self {
            AgentError::Io { path, .. } => (FailureKind::Io, Some(path.as_path()), None, None),
            AgentError::Command { .. } => (FailureKind::Command, None, None, None),
            AgentError::Step(_) => (FailureKind::Step, None, None, None),
            AgentError::File { path, .. } => (
                FailureKind::Path,
                Some(Path::new(path.as_str())),
                None,
                None,
            ),
            AgentError::Unit { unit, .. } => (FailureKind::Unit, None, Some(unit.clone()), None),
            AgentError::Secret(_) => (FailureKind::Secret, None, None, None),
            AgentError::Busy(_) => (FailureKind::Busy, None, None, None),
            AgentError::UnknownGeneration(_) => (FailureKind::UnknownGeneration, None, None, None),
            AgentError::Corrupt(_) => (FailureKind::Corrupt, None, None, None),
            AgentError::Bundle(_) => (FailureKind::Upload, None, None, None),
            AgentError::RolledBack { failure, .. } => (
                FailureKind::RolledBack,
                None,
                None,
                Some(Box::new(failure.failure())),
            ),
            AgentError::Reverted(_) => (FailureKind::Reverted, None, None, None),
            AgentError::Fs(error) => {
                let kind = match error {
                    clan_fs::Error::Io { .. } => FailureKind::Io,
                    _ => FailureKind::Path,
                };
                (kind, Some(fs_path(error)), None, None)
            }
        };
        Failure {
            kind,
            message: message_with_causes(self),
            path: path.map(|path| path.display().to_string()),
            unit,
            cause,
        }
    }

    pub(crate) fn io(
        context: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.to_path_buf();
        move |source| AgentError::Io {
            context,
            path,
            source,
        }
    }
}

/// Whatever fails on the machine fails the deploy.
impl clan_error::Hint for AgentError {
    fn exit(&self) -> clan_error::Exit {
        clan_error::Exit::Failed
    }
}

clan_error::register!(AgentError);

/// Options of `clan agent activate`.
#[derive(Debug, Clone)]
pub struct ActivateOptions {
    /// `None`: no magic rollback.
    pub confirm_timeout: Option<Duration>,
    /// How long to wait for another deploy of this machine to finish.
    pub lock_timeout: Duration,
}

/// The agent, acting on the machine rooted at `paths.root`.
pub struct Agent {
    pub paths: Paths,
    /// The agent's own executable (for the boot unit and the confirmation waiter).
    pub executable: PathBuf,
}

impl Agent {
    pub fn new(root: &Path) -> Agent {
        Agent {
            paths: Paths::new(root),
            executable: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("clan")),
        }
    }

    pub fn status(&self) -> Result<Status, AgentError> {
        let state = State::load(&self.paths)?;
        let mut stored: Vec<String> = std::fs::read_dir(self.paths.generations())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|name| !name.contains('.'))
                    .collect()
            })
            .unwrap_or_default();
        stored.sort();
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            current: state.current,
            stored,
            has_key: self.paths.key_file().is_file(),
            pending: Pending::load(&self.paths)?.map(|p| p.generation),
        })
    }

    /// Stores the bundle read from `input` as generation `id`: written to `<id>.tmp`, then
    /// renamed, so an interrupted upload leaves nothing that looks like a generation.
    pub fn receive(&self, id: &str, input: impl std::io::Read) -> Result<(), AgentError> {
        let received = clan_generation::read_bundle(BufReader::new(input), id)?;
        let generations = self.paths.generations();
        store::create_dir(&generations, 0o700)?;
        let final_dir = self.paths.generation(id);
        if final_dir.is_dir() {
            return Ok(());
        }
        // Per process: two deploys of the same generation at once must not share a temp dir.
        let temp = generations.join(format!("{id}.tmp.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&temp);
        let written = (|| {
            store::create_dir(&temp.join("blobs"), 0o700)?;
            for (key, blob) in &received.blobs {
                store::write_private(&temp.join("blobs").join(key), blob)?;
            }
            store::write_private(&temp.join("manifest.json"), &received.manifest_bytes)?;
            std::fs::rename(&temp, &final_dir).map_err(AgentError::io("renaming", &temp))
        })();
        let _ = std::fs::remove_dir_all(&temp);
        match written {
            // Another upload of the same generation won the rename.
            Err(_) if final_dir.join("manifest.json").is_file() => Ok(()),
            other => other,
        }
    }

    /// Installs the machine's age key read from `input` (0600, atomically).
    pub fn install_key(&self, mut input: impl std::io::Read) -> Result<(), AgentError> {
        let mut key = zeroize::Zeroizing::new(String::new());
        input
            .read_to_string(&mut key)
            .map_err(AgentError::io("reading the key from", Path::new("stdin")))?;
        clan_secrets::Identities::parse(&key, "stdin").map_err(AgentError::Secret)?;
        store::write_private(&self.paths.key_file(), key.as_bytes())
    }

    /// What activating `id` would change.
    pub fn diff(&self, id: &str) -> Result<Changes, AgentError> {
        let new = Stored::load(&self.paths, id)?;
        let state = State::load(&self.paths)?;
        let old = self.stored_or_empty(state.current.as_deref(), &new.manifest.machine)?;
        apply::apply(&self.paths, &new, &old, &self.executable, true)
    }

    /// What activating the generation read from `input` would change, without storing it
    /// or anything else (a dry run of a generation the machine does not have).
    pub fn diff_bundle(&self, id: &str, input: impl std::io::Read) -> Result<Changes, AgentError> {
        let received = clan_generation::read_bundle(BufReader::new(input), id)?;
        let new = Stored::in_memory(received);
        let state = State::load(&self.paths)?;
        let old = self.stored_or_empty(state.current.as_deref(), &new.manifest.machine)?;
        apply::apply(&self.paths, &new, &old, &self.executable, true)
    }

    /// Generation `id`, or none on `machine` (before its first one).
    fn stored_or_empty(
        &self,
        id: Option<&str>,
        machine: &clan_config::MachineName,
    ) -> Result<Stored, AgentError> {
        id.map_or_else(
            || Ok(Stored::empty(machine)),
            |id| Stored::load(&self.paths, id),
        )
    }

    /// Activates generation `id`; on failure the previous one is re-activated and the
    /// error says why. With a confirm timeout, a detached waiter reverts unless
    /// [`Agent::confirm`] comes in time.
    pub fn activate(
        &self,
        id: &str,
        options: &ActivateOptions,
        on_wait: impl FnOnce(&str),
    ) -> Result<Activation, AgentError> {
        let new = Stored::load(&self.paths, id)?;
        let _lock = self.lock_when_idle(options.lock_timeout, on_wait)?;
        let mut state = State::load(&self.paths)?;
        let previous = state.current.clone();
        if previous.as_deref() == Some(id) {
            // Another deploy of this very generation got here first and was confirmed.
            return Ok(Activation {
                generation: id.to_owned(),
                previous,
                changes: Changes::default(),
                confirm_by: None,
            });
        }
        let old = self.stored_or_empty(previous.as_deref(), &new.manifest.machine)?;
        let window = options
            .confirm_timeout
            .filter(|_| self.paths.is_live())
            .map(|timeout| timeout.as_secs().max(1));
        let pending = |deadline| Pending {
            generation: id.to_owned(),
            previous: previous.clone(),
            deadline,
        };
        if let Some(window) = window {
            // Recorded before anything changes: a machine that goes down halfway through
            // the activation finds it at boot and reverts, as if never confirmed.
            pending(store::now() + window).save(&self.paths)?;
        }
        let changes = match self.switch(&mut state, &new, &old, "deploy") {
            Ok(changes) => changes,
            Err(error) => {
                if window.is_some() {
                    Pending::clear(&self.paths)?;
                }
                return Err(error);
            }
        };
        let confirm_by = match window {
            Some(window) => {
                // The window starts when the machine is ready to be reached, not before a
                // long activation (package installs).
                let deadline = store::now() + window;
                pending(deadline).save(&self.paths)?;
                if let Err(error) = self.spawn_waiter(id, false) {
                    // Without a waiter nothing would revert: undo now rather than hang unprotected.
                    Pending::clear(&self.paths)?;
                    let restored = self.switch(&mut state, &old, &new, "restore");
                    return Err(AgentError::RolledBack {
                        failure: Box::new(AgentError::Step(format!(
                            "starting the confirmation waiter: {error}"
                        ))),
                        restored: describe_restore(&old, restored.err()),
                    });
                }
                Some(deadline)
            }
            None => None,
        };
        self.collect_garbage(&state);
        Ok(Activation {
            generation: id.to_owned(),
            previous,
            changes,
            confirm_by,
        })
    }

    /// Takes the lock once no generation awaits confirmation (or refuses after `timeout`).
    fn lock_when_idle(
        &self,
        timeout: Duration,
        on_wait: impl FnOnce(&str),
    ) -> Result<Lock, AgentError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut on_wait = Some(on_wait);
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            let lock = Lock::acquire(&self.paths, remaining, |holder| {
                if let Some(f) = on_wait.take() {
                    f(holder);
                }
            })?;
            match Pending::load(&self.paths)? {
                None => return Ok(lock),
                // Its waiter died (or the machine was off) past the deadline: revert now.
                Some(pending) if store::now() >= pending.deadline => {
                    self.revert_unconfirmed(&pending)?;
                    return Ok(lock);
                }
                Some(pending) if remaining.is_zero() => {
                    return Err(AgentError::Busy(format!(
                        "generation {} of another deploy awaits confirmation for {} s more",
                        short(&pending.generation),
                        pending.deadline.saturating_sub(store::now())
                    )))
                }
                Some(pending) => {
                    drop(lock);
                    if let Some(f) = on_wait.take() {
                        f(&format!(
                            "generation {} awaits confirmation for {} s more",
                            short(&pending.generation),
                            pending.deadline.saturating_sub(store::now())
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Applies `new` over `old` and records it; on failure re-applies `old`.
    fn switch(
        &self,
        state: &mut State,
        new: &Stored,
        old: &Stored,
        action: &str,
    ) -> Result<Changes, AgentError> {
        match apply::apply(&self.paths, new, old, &self.executable, false) {
            Ok(changes) => {
                state.record(&new.id, action, None);
                state.save(&self.paths)?;
                Ok(changes)
            }
            Err(failure) => {
                let restored = apply::apply(&self.paths, old, new, &self.executable, false);
                state.record(&new.id, "failed", Some(failure.to_string()));
                state.save(&self.paths)?;
                Err(AgentError::RolledBack {
                    failure: Box::new(failure),
                    restored: describe_restore(old, restored.err()),
                })
            }
        }
    }

    /// Starts `clan agent await-confirm <id>` outside the SSH session: a transient systemd
    /// unit where systemd runs (restarted if it dies), else a new session via `setsid`. At
    /// boot (`queue_only`) the unit is only queued: waiting for it would wait for the boot
    /// that waits for us.
    fn spawn_waiter(&self, id: &str, queue_only: bool) -> Result<(), AgentError> {
        let executable = self.executable.display().to_string();
        let root = self.paths.root.display().to_string();
        let waiter = [
            executable.as_str(),
            "agent",
            "--root",
            &root,
            "await-confirm",
            id,
        ];
        if Path::new("/run/systemd/system").is_dir() {
            let unit = format!("clan-confirm-{}-{}", short(id), std::process::id());
            let mut argv = vec![
                "systemd-run",
                "--quiet",
                "--collect",
                "--property=Restart=on-failure",
                "--property=RestartSec=1",
                "--unit",
                &unit,
            ];
            if queue_only {
                argv.push("--no-block");
            }
            argv.push("--");
            argv.extend(waiter);
            system::run(&argv, None).map(drop)
        } else {
            let mut argv = vec!["setsid", "-f"];
            argv.extend(waiter);
            system::run(&argv, None).map(drop)
        }
    }

    /// Confirms generation `id`: the deployer reached the machine afresh after activation.
    pub fn confirm(&self, id: &str) -> Result<(), AgentError> {
        let _lock = Lock::acquire(&self.paths, Duration::from_secs(30), |_| {})?;
        match Pending::load(&self.paths)? {
            Some(pending) if pending.generation == id && store::now() < pending.deadline => {
                Pending::clear(&self.paths)
            }
            // Too late, and its waiter has not reverted yet (it died, or is just about to).
            Some(pending) if pending.generation == id => {
                self.revert_unconfirmed(&pending)?;
                Err(AgentError::Reverted(short(id).to_owned()))
            }
            _ if State::load(&self.paths)?.current.as_deref() == Some(id) => Ok(()),
            _ => Err(AgentError::Reverted(short(id).to_owned())),
        }
    }

    /// The waiter: polls until the confirmation for `id` arrives or its deadline passes, then
    /// re-activates the previous generation.
    pub fn await_confirm(&self, id: &str) -> Result<(), AgentError> {
        loop {
            let pending = match Pending::load(&self.paths)? {
                Some(pending) if pending.generation == id => pending,
                _ => return Ok(()),
            };
            if store::now() >= pending.deadline {
                let _lock = Lock::acquire(&self.paths, Duration::from_secs(600), |_| {})?;
                return match Pending::load(&self.paths)? {
                    Some(pending) if pending.generation == id => self.revert_unconfirmed(&pending),
                    _ => Ok(()),
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Puts the generation before the unconfirmed `pending` one back and clears the pending
    /// confirmation. The caller holds the lock.
    fn revert_unconfirmed(&self, pending: &Pending) -> Result<(), AgentError> {
        let id = &pending.generation;
        let mut state = State::load(&self.paths)?;
        let current = Stored::load(&self.paths, id)?;
        let previous =
            self.stored_or_empty(pending.previous.as_deref(), &current.manifest.machine)?;
        let result = apply::apply(&self.paths, &previous, &current, &self.executable, false);
        let detail = format!("generation {} was not confirmed in time", short(id));
        match &pending.previous {
            Some(previous) => state.record(previous, "magic-rollback", Some(detail)),
            None => {
                state.record(id, "failed", Some(detail));
                state.current = None;
            }
        }
        state.save(&self.paths)?;
        Pending::clear(&self.paths)?;
        result.map(drop)
    }

    /// Re-activates an earlier generation: `to` (id, id prefix or history number), else the
    /// one before the current.
    pub fn rollback(
        &self,
        to: Option<&str>,
        lock_timeout: Duration,
    ) -> Result<Activation, AgentError> {
        let _lock = self.lock_when_idle(lock_timeout, |_| {})?;
        let mut state = State::load(&self.paths)?;
        let target = match to {
            Some(wanted) => state
                .history
                .iter()
                .rev()
                .find(|e| {
                    e.number.to_string() == wanted
                        || (wanted.len() >= 6 && e.generation.starts_with(wanted))
                })
                .map(|e| e.generation.clone())
                .ok_or_else(|| AgentError::UnknownGeneration(wanted.to_owned()))?,
            None => state.previous().map(str::to_owned).ok_or_else(|| {
                AgentError::Step("there is no earlier generation to roll back to".into())
            })?,
        };
        let new = Stored::load(&self.paths, &target)?;
        let previous = state.current.clone();
        let old = self.stored_or_empty(previous.as_deref(), &new.manifest.machine)?;
        let changes = self.switch(&mut state, &new, &old, "rollback")?;
        Ok(Activation {
            generation: target,
            previous,
            changes,
            confirm_by: None,
        })
    }

    /// The current generation and the history, oldest first.
    pub fn generations(&self) -> Result<Generations, AgentError> {
        let state = State::load(&self.paths)?;
        Ok(Generations {
            current: state.current,
            history: state.history,
        })
    }

    /// At boot: decrypts the current generation's secrets into `/run/clan/secrets`. A
    /// generation still awaiting confirmation (the machine rebooted inside its window, which
    /// ended its waiter) gets its waiter again, which reverts it unless the confirmation
    /// comes by the original deadline.
    pub fn decrypt_current_secrets(&self) -> Result<usize, AgentError> {
        if let Some(pending) = Pending::load(&self.paths)? {
            if self.paths.is_live() {
                self.spawn_waiter(&pending.generation, true)?;
            }
        }
        let state = State::load(&self.paths)?;
        let Some(current) = state.current else {
            return Ok(0);
        };
        let generation = Stored::load(&self.paths, &current)?;
        let secrets = apply::decrypt_secrets(&self.paths, &generation)?;
        let accounts = system::Accounts::read(&self.paths);
        apply::install_secrets(
            &self.paths,
            &generation,
            &secrets,
            &accounts,
            None,
            &Stored::empty(&generation.manifest.machine),
            false,
        )?;
        Ok(secrets.len())
    }

    /// Removes stored generations beyond the newest [`KEEP_GENERATIONS`] in the history.
    fn collect_garbage(&self, state: &State) {
        let mut keep: Vec<&str> = Vec::new();
        for entry in state.history.iter().rev() {
            if keep.len() >= KEEP_GENERATIONS {
                break;
            }
            if !keep.contains(&entry.generation.as_str()) {
                keep.push(&entry.generation);
            }
        }
        if let Some(current) = &state.current {
            keep.push(current);
        }
        let Ok(entries) = std::fs::read_dir(self.paths.generations()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.contains('.') && !keep.contains(&name.as_str()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The path a file-system error names.
fn fs_path(error: &clan_fs::Error) -> &Path {
    use clan_fs::Error::*;
    match error {
        Symlink { path }
        | NotAFile { path, .. }
        | NotADirectory { path, .. }
        | NotASymlink { path, .. }
        | TooLarge { path, .. }
        | Outside { path, .. }
        | NotFound { path }
        | UntrustedLink { path }
        | Io { path, .. } => path,
    }
}

/// `error`'s message followed by those of its sources that it does not already include, on
/// one line (a program's output in it is joined with `; `), as the deployer prints it after
/// `[machine] `.
pub fn message_with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    let lines: Vec<&str> = message.lines().filter(|l| !l.trim().is_empty()).collect();
    lines.join("; ")
}

fn describe_restore(old: &Stored, error: Option<AgentError>) -> String {
    let name = if old.id.is_empty() {
        "(none: the machine's own state)".to_owned()
    } else {
        short(&old.id).to_owned()
    };
    match error {
        None => format!("{name} restored"),
        Some(error) => format!("{name} could NOT be fully restored: {error}"),
    }
}

#[cfg(test)]
mod tests;
