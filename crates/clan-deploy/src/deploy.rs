//! Deploying one machine over a [`Host`]: make sure the agent binary is there, stop early when
//! the machine already runs the generation, upload the generation, activate it, and confirm
//! over a fresh connection (magic rollback). Remote commands are argv vectors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::events::{Event, Outcome, Stage};
use crate::host::{Host, Input, RemoteOutput};
use crate::relay::{Delivery, Relay};
use crate::Error;
use clan_generation::reply::{Activation, Changes, Failure, FailureKind, Status};
use clan_generation::Generation;
use clan_generation::STATE_DIR;

/// The machine binary's file name, beside `clan`.
const AGENT_FILE: &str = "clan-agent";
/// Names another agent executable to upload (tests, a cross-built agent).
pub const AGENT_ENV: &str = "CLAN_AGENT";

/// The agent executable to upload and the name it gets on machines.
#[derive(Debug, Clone)]
pub struct AgentBinary {
    pub path: PathBuf,
    /// `clan-<version>-<first 12 hex of its sha256>`: a rebuilt binary is a new agent.
    pub name: String,
    /// Its SHA-256 in hex, which each machine checks before installing it.
    pub digest: String,
    /// Where its compressed form is kept (`agents/` in the user's cache directory).
    pub cache: PathBuf,
}

impl AgentBinary {
    /// The agent built with this executable: `clan-agent` beside it (same build, same
    /// architecture as the machines), or the one `$CLAN_AGENT` names.
    pub fn current() -> Result<AgentBinary, Error> {
        let path = match std::env::var_os(AGENT_ENV) {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe()
                .map_err(|source| Error::Io {
                    context: "finding the running executable",
                    path: PathBuf::from("/proc/self/exe"),
                    source,
                })?
                .with_file_name(AGENT_FILE),
        };
        if !path.is_file() {
            return Err(Error::AgentMissing { path });
        }
        AgentBinary::at(&path)
    }

    pub fn at(path: &Path) -> Result<AgentBinary, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            context: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        let digest = clan_generation::hash(&bytes);
        let eval = clan_eval::cache_root();
        Ok(AgentBinary {
            path: path.to_path_buf(),
            name: format!("clan-{}-{}", env!("CARGO_PKG_VERSION"), &digest[..12]),
            digest,
            cache: eval
                .parent()
                .map_or_else(|| eval.join("agents"), |base| base.join("agents")),
        })
    }

    /// The gzip-compressed agent (what travels to machines), made once per build in
    /// [`AgentBinary::cache`] (`<name>.gz`).
    pub fn compressed(&self) -> Result<PathBuf, Error> {
        crate::relay::compress_into(&self.path, &self.cache, &self.name)
    }

    /// Where the agent lives on machines.
    pub fn remote_path(&self) -> String {
        format!("{STATE_DIR}/bin/{}", self.name)
    }
}

/// Settings of a deploy run.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub agent: AgentBinary,
    /// `None`: no magic rollback.
    pub confirm_timeout: Option<Duration>,
    /// How long the agent waits for another deploy of the same machine.
    pub lock_timeout: Duration,
    pub dry_run: bool,
}

/// What one machine gets: its generation and, when it has secrets, its age key.
pub struct MachineDeploy {
    pub generation: Generation,
    /// The machine's age private key, uploaded when the machine lacks it.
    pub age_key: Option<zeroize::Zeroizing<String>>,
    /// The SSH host key the generation installs, trusted for this machine's connections.
    pub host_key: Option<String>,
}

/// Runs every stage for one machine; errors carry the stage they happened in.
pub fn deploy(
    host: &mut dyn Host,
    job: &MachineDeploy,
    options: &DeployOptions,
    relay: &Relay,
    emit: &dyn Fn(Event),
) -> Result<Outcome, (Stage, Error)> {
    let machine = host.machine().to_owned();
    let id = job.generation.id.clone();
    let stage = |stage: Stage| {
        emit(Event::Stage {
            machine: machine.clone(),
            stage,
        })
    };
    stage(Stage::Connect);
    host.connect().map_err(|e| (Stage::Connect, e))?;
    let agent = options.agent.remote_path();
    let call = |words: &[&str]| -> Vec<String> {
        let mut argv = vec![agent.clone(), "agent".to_owned()];
        argv.extend(words.iter().map(|w| w.to_string()));
        argv
    };

    if options.dry_run {
        return dry_run(host, job, &call, emit).map_err(|e| (Stage::Activate, e));
    }
    let status = match agent_json::<Status>(host, &call(&["status"]), Input::None) {
        Err(AgentCall::Missing) => {
            stage(Stage::Upload);
            let delivery = relay
                .deliver(host, &options.agent)
                .map_err(|e| (Stage::Upload, e))?;
            let (bytes, from) = match delivery {
                Delivery::FromAdmin { bytes } => (bytes, None),
                Delivery::FromPeer { machine } => (0, Some(machine)),
            };
            emit(Event::Upload {
                machine: machine.clone(),
                what: "agent",
                bytes,
                from,
            });
            agent_json::<Status>(host, &call(&["status"]), Input::None)
                .map_err(|e| (Stage::Upload, e.into_error(&machine, "clan agent status")))?
        }
        other => {
            other.map_err(|e| (Stage::Connect, e.into_error(&machine, "clan agent status")))?
        }
    };
    if status.current.as_deref() == Some(id.as_str()) && status.pending.is_none() {
        return Ok(Outcome::Unchanged);
    }
    if !status.stored.contains(&id) {
        stage(Stage::Upload);
        let bundle = job.generation.bundle();
        agent_ok(host, &call(&["receive", &id]), Input::Bytes(&bundle))
            .map_err(|e| (Stage::Upload, e.into_error(&machine, "clan agent receive")))?;
        emit(Event::Upload {
            machine: machine.clone(),
            what: "generation",
            bytes: bundle.len() as u64,
            from: None,
        });
    }
    if !job.generation.manifest.secrets.is_empty() && !status.has_key {
        let key = job.age_key.as_ref().ok_or_else(|| {
            (
                Stage::Upload,
                Error::Protocol {
                    machine: machine.clone(),
                    command: "clan agent install-key".into(),
                    reason: "the machine has no age key and none is available to upload; run `clan vars generate`".into(),
                },
            )
        })?;
        agent_ok(host, &call(&["install-key"]), Input::Bytes(key.as_bytes())).map_err(|e| {
            (
                Stage::Upload,
                e.into_error(&machine, "clan agent install-key"),
            )
        })?;
    }

    let lock_timeout = options.lock_timeout.as_secs().to_string();
    let confirm_timeout = options
        .confirm_timeout
        .map(|t| t.as_secs().max(1).to_string());
    let mut words = vec![
        "activate",
        id.as_str(),
        "--lock-timeout",
        lock_timeout.as_str(),
    ];
    match &confirm_timeout {
        Some(seconds) => words.extend(["--confirm-timeout", seconds.as_str()]),
        None => words.push("--no-magic-rollback"),
    }
    stage(Stage::Activate);
    let activated_at = std::time::Instant::now();
    let activation = agent_json::<Activation>(host, &call(&words), Input::None).map_err(|e| {
        let error = match e {
            AgentCall::Failed(output) => Error::Activation {
                machine: machine.clone(),
                generation: clan_generation::reply::short(&id).to_owned(),
                failure: Box::new(agent_failure(&output)),
            },
            other => other.into_error(&machine, "clan agent activate"),
        };
        (Stage::Activate, error)
    })?;
    emit(Event::Activate {
        machine: machine.clone(),
        generation: id.clone(),
        changes: activation.changes.clone(),
    });
    if let (Some(_), Some(timeout)) = (activation.confirm_by, options.confirm_timeout) {
        confirm(
            host,
            &call,
            &id,
            activation.previous.as_deref(),
            timeout,
            activated_at,
            emit,
        )?;
    }
    Ok(Outcome::Activated)
}

/// Confirms generation `id` over a new connection (magic rollback). When that connection
/// cannot get in, says what happened, waits for the machine to revert by itself to
/// `previous` within `timeout` of `activated_at`, and reconnects to confirm the revert.
fn confirm(
    host: &dyn Host,
    call: &dyn Fn(&[&str]) -> Vec<String>,
    id: &str,
    previous: Option<&str>,
    timeout: Duration,
    activated_at: std::time::Instant,
    emit: &dyn Fn(Event),
) -> Result<(), (Stage, Error)> {
    let machine = host.machine().to_owned();
    let previous = previous
        .map_or("none (nothing managed)", clan_generation::reply::short)
        .to_owned();
    let say = |message: String| {
        emit(Event::Message {
            machine: machine.clone(),
            message,
        })
    };
    let cut_off = |why: &str| {
        say(format!(
            "the new generation cut off SSH access ({why}); the machine returns to \
             generation {previous} within {} s",
            timeout.as_secs().max(1)
        ))
    };
    let not_confirmed = |reason: String| {
        Err((
            Stage::Confirm,
            Error::NotConfirmed {
                machine: machine.clone(),
                generation: clan_generation::reply::short(id).to_owned(),
                reason,
            },
        ))
    };
    emit(Event::Stage {
        machine: machine.clone(),
        stage: Stage::Confirm,
    });
    // A new connection: proves the machine is still reachable after activation.
    match host.run_fresh(&call(&["confirm", id])) {
        Ok(output) if output.success() => {
            emit(Event::Confirm {
                machine: machine.clone(),
                generation: id.to_owned(),
            });
            Ok(())
        }
        // It got in only once the machine had reverted by itself.
        Ok(output) if output.code == Some(i32::from(clan_generation::reply::EXIT_REVERTED)) => {
            cut_off("the confirmation got in only after the deadline");
            say(format!(
                "reconnected: the machine is back on generation {previous}"
            ));
            not_confirmed(format!(
                "it cut off SSH access; the machine reverted to generation {previous} by itself"
            ))
        }
        Ok(output) => not_confirmed(agent_failure(&output).message),
        Err(error) => {
            cut_off(&error.to_string());
            let window_ends = activated_at + timeout;
            let reason = match await_revert(host, &call(&["status"]), id, window_ends) {
                Some(current) => {
                    let now = current
                        .as_deref()
                        .map_or("none", clan_generation::reply::short);
                    say(format!(
                        "reconnected: the machine is back on generation {now}"
                    ));
                    format!(
                        "it cut off SSH access; the machine reverted to generation {now} by itself"
                    )
                }
                None => format!(
                    "it cut off SSH access; the machine reverts to generation {previous} by \
                     itself, but could not be reached again to confirm that"
                ),
            };
            not_confirmed(reason)
        }
    }
}

/// After a confirmation could not reach the machine: waits for what is left of its
/// confirmation window (ending by `window_ends`; the failed attempt may have used most of
/// it), then reconnects (for up to half a minute) until the machine reports a current
/// generation other than `id`. Returns that generation, or `None` when the machine stays
/// unreachable or still runs `id`.
fn await_revert(
    host: &dyn Host,
    status: &[String],
    id: &str,
    window_ends: std::time::Instant,
) -> Option<Option<String>> {
    let margin = Duration::from_secs(2);
    std::thread::sleep((window_ends + margin).saturating_duration_since(std::time::Instant::now()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(output) = host.run_fresh(status) {
            if let Ok(status) = serde_json::from_slice::<Status>(&output.stdout) {
                if status.current.as_deref() != Some(id) {
                    return Some(status.current);
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// What deploying `job` would change, with nothing written to the machine: the agent of
/// this build (or else the machine's newest one) compares the generation, sent on stdin and
/// held in memory, with what is active; a machine with no agent gets the whole generation
/// listed as new.
fn dry_run(
    host: &dyn Host,
    job: &MachineDeploy,
    call: &dyn Fn(&[&str]) -> Vec<String>,
    emit: &dyn Fn(Event),
) -> Result<Outcome, Error> {
    let machine = host.machine().to_owned();
    let id = &job.generation.id;
    let bundle = job.generation.bundle();
    let diff = |argv: Vec<String>| agent_json::<Changes>(host, &argv, Input::Bytes(&bundle));
    let mut latest = vec![LATEST_AGENT.to_owned(), "agent".to_owned()];
    latest.extend(["diff", "--stdin", id.as_str()].map(str::to_owned));
    let (changes, first_deploy) = match diff(call(&["diff", "--stdin", id])) {
        Ok(changes) => (changes, false),
        Err(AgentCall::Missing) => match diff(latest) {
            Ok(changes) => (changes, false),
            // No agent at all (or one too old to compare without storing): a first deploy.
            Err(AgentCall::Missing | AgentCall::Failed(_)) => {
                let mut changes = Changes::first_deploy(&job.generation.manifest);
                let paths: Vec<&String> = job.generation.manifest.files.keys().collect();
                changes.files_kept_aside = existing_paths(host, &paths)?;
                (changes, true)
            }
            Err(other) => return Err(other.into_error(&machine, "clan agent diff")),
        },
        Err(other) => return Err(other.into_error(&machine, "clan agent diff")),
    };
    emit(Event::DryRun {
        machine,
        generation: id.clone(),
        changes,
        first_deploy,
    });
    Ok(Outcome::DryRun)
}

/// Those of `paths` that exist on the machine (without an agent: a fixed shell loop over the
/// paths as positional parameters).
fn existing_paths(host: &dyn Host, paths: &[&String]) -> Result<Vec<String>, Error> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let script = r#"for p; do if [ -e "$p" ] || [ -L "$p" ]; then printf '%s\0' "$p"; fi; done"#;
    let mut argv: Vec<String> = ["sh", "-c", script, "sh"].map(str::to_owned).to_vec();
    argv.extend(paths.iter().map(|p| p.to_string()));
    let output = host.run(&argv, Input::None)?;
    if !output.success() {
        return Err(Error::Remote {
            machine: host.machine().to_owned(),
            command: "looking for files a first deploy would keep aside".into(),
            status: output.status(),
            stderr: output.stderr,
        });
    }
    Ok(output
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect())
}

/// How an agent call went wrong.
enum AgentCall {
    /// The agent binary is not on the machine (the shell's 127).
    Missing,
    Transport(Error),
    Failed(RemoteOutput),
    BadOutput(String),
}

impl AgentCall {
    fn into_error(self, machine: &str, command: &str) -> Error {
        match self {
            AgentCall::Transport(error) => error,
            AgentCall::Missing => Error::Protocol {
                machine: machine.to_owned(),
                command: command.to_owned(),
                reason: "the agent is missing after its upload".into(),
            },
            AgentCall::Failed(output) => Error::Agent {
                machine: machine.to_owned(),
                command: command.to_owned(),
                failure: Box::new(agent_failure(&output)),
            },
            AgentCall::BadOutput(reason) => Error::Protocol {
                machine: machine.to_owned(),
                command: command.to_owned(),
                reason,
            },
        }
    }
}

/// The failure a failed agent command reports on stdout. One that reported none (killed, an
/// agent older than typed failures, the shell failing to start it) is described by its
/// stderr, as kind `other`.
fn agent_failure(output: &RemoteOutput) -> Failure {
    let reported = output
        .stdout
        .split(|b| *b == b'\n')
        .rev()
        .find_map(|line| serde_json::from_slice::<Failure>(line).ok());
    if let Some(failure) = reported {
        return failure;
    }
    let lines: Vec<&str> = output
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    Failure {
        kind: FailureKind::Other,
        message: if lines.is_empty() {
            format!("the agent failed ({})", output.status())
        } else {
            lines.join("; ")
        },
        path: None,
        unit: None,
        cause: None,
    }
}

fn agent_ok(host: &dyn Host, argv: &[String], input: Input<'_>) -> Result<RemoteOutput, AgentCall> {
    let output = host.run(argv, input).map_err(AgentCall::Transport)?;
    match output.code {
        Some(0) => Ok(output),
        Some(127) => Err(AgentCall::Missing),
        _ => Err(AgentCall::Failed(output)),
    }
}

fn agent_json<T: serde::de::DeserializeOwned>(
    host: &dyn Host,
    argv: &[String],
    input: Input<'_>,
) -> Result<T, AgentCall> {
    let output = agent_ok(host, argv, input)?;
    serde_json::from_slice(&output.stdout).map_err(|e| AgentCall::BadOutput(e.to_string()))
}

/// The newest agent on a machine (a link to the last one installed), for commands outside a
/// deploy; the data-mesher unit runs it too.
pub const LATEST_AGENT: &str = "/var/lib/clan/bin/clan";

/// Runs `clan agent <words>` with the machine's newest agent and parses its JSON answer.
pub fn run_agent<T: serde::de::DeserializeOwned>(
    host: &dyn Host,
    words: &[&str],
) -> Result<T, Error> {
    let mut argv = vec![LATEST_AGENT.to_owned(), "agent".to_owned()];
    argv.extend(words.iter().map(|w| w.to_string()));
    let command = format!("clan agent {}", words.first().copied().unwrap_or(""));
    agent_json(host, &argv, Input::None).map_err(|e| match e {
        AgentCall::Missing => Error::Protocol {
            machine: host.machine().to_owned(),
            command,
            reason: "there is no clan agent on the machine: it was never deployed with `clan machines update`".into(),
        },
        other => other.into_error(host.machine(), &command),
    })
}

