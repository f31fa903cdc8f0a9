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
    if let Some(used) = host.route_used() {
        emit(Event::Route {
            machine: host.machine().to_owned(),
            target: used.target,
            source: used.source,
            network: used.network.map(String::from),
            elapsed_ms: used.elapsed_ms,
            routes: used.routes,
        });
    }
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
    let mut output = |line: &str| {
        emit(Event::Output {
            machine: machine.clone(),
            stage: Stage::Activate,
            line: line.to_owned(),
        })
    };
    let activation = agent_call(host, &call(&words), Input::None, &mut output)
        .and_then(|output| parse_reply::<Activation>(&output));
    let activation = activation.map_err(|e| {
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
                let paths: Vec<&str> = job
                    .generation
                    .manifest
                    .files
                    .keys()
                    .map(|p| p.as_str())
                    .collect();
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
fn existing_paths(host: &dyn Host, paths: &[&str]) -> Result<Vec<String>, Error> {
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
    agent_call(host, argv, input, &mut |_| {})
}

/// Runs an agent command, handing each line of its stderr to `line` as it comes.
fn agent_call(
    host: &dyn Host,
    argv: &[String],
    input: Input<'_>,
    line: &mut dyn FnMut(&str),
) -> Result<RemoteOutput, AgentCall> {
    let output = host
        .run_streaming(argv, input, line)
        .map_err(AgentCall::Transport)?;
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
    parse_reply(&agent_ok(host, argv, input)?)
}

fn parse_reply<T: serde::de::DeserializeOwned>(output: &RemoteOutput) -> Result<T, AgentCall> {
    serde_json::from_slice(&output.stdout).map_err(|e| AgentCall::BadOutput(e.to_string()))
}

/// The newest agent on a machine (a link to the last one installed), for commands outside a
/// deploy; the data-mesher unit runs it too.
pub const LATEST_AGENT: &str = "/var/lib/clan/bin/clan";

/// The argv of `<agent> agent <words>`, and the command's name for errors (`clan agent status`).
fn agent_argv(agent: String, words: &[&str]) -> (Vec<String>, String) {
    let mut argv = vec![agent, "agent".to_owned()];
    argv.extend(words.iter().map(|w| w.to_string()));
    let command = format!("clan agent {}", words.first().copied().unwrap_or(""));
    (argv, command)
}

/// Runs `clan agent <words>` with the machine's newest agent and parses its JSON answer.
pub fn run_agent<T: serde::de::DeserializeOwned>(
    host: &dyn Host,
    words: &[&str],
) -> Result<T, Error> {
    run_agent_if_there(host, words)?.ok_or_else(|| Error::Protocol {
        machine: host.machine().to_owned(),
        command: agent_argv(String::new(), words).1,
        reason: "there is no clan agent on the machine: it was never deployed with `clan machines update`".into(),
    })
}

/// [`run_agent`], or `None` on a machine without an agent (never deployed).
pub fn run_agent_if_there<T: serde::de::DeserializeOwned>(
    host: &dyn Host,
    words: &[&str],
) -> Result<Option<T>, Error> {
    let (argv, command) = agent_argv(LATEST_AGENT.to_owned(), words);
    match agent_json(host, &argv, Input::None) {
        Ok(answer) => Ok(Some(answer)),
        Err(AgentCall::Missing) => Ok(None),
        Err(other) => Err(other.into_error(host.machine(), &command)),
    }
}

/// Runs `clan agent <words>` with this build's agent, which is first put on the machine as a
/// deploy puts it there when the machine lacks it, and returns what it printed on stdout: for
/// commands whose answer is data rather than one of the agent's replies (`facter`).
pub fn run_own_agent(
    host: &dyn Host,
    agent: &AgentBinary,
    words: &[&str],
) -> Result<Vec<u8>, Error> {
    let (argv, command) = agent_argv(agent.remote_path(), words);
    let output = match agent_ok(host, &argv, Input::None) {
        Err(AgentCall::Missing) => {
            Relay::for_run(1).deliver(host, agent)?;
            agent_ok(host, &argv, Input::None)
        }
        other => other,
    };
    output
        .map(|output| output.stdout)
        .map_err(|e| e.into_error(host.machine(), &command))
}

#[cfg(test)]
pub(crate) mod tests {
    //! The stages over a fake [`Host`]: the machine's answers are scripted per agent command,
    //! every command is recorded. No root, no machine.

    use std::sync::Mutex;

    use super::*;
    use crate::host::RemoteOutput;
    use clan_generation::reply::EXIT_REVERTED;
    use clan_generation::SecretFile;

    type Answer = Box<dyn Fn(&str, usize) -> RemoteOutput + Send>;

    /// A machine whose answer to `agent <word>` (or `install` for the agent's installation,
    /// `sh` for any other script) is `answer(word, how many times it was asked before)`.
    pub(crate) struct Fake {
        answer: Answer,
        /// (word, input) of each command, in order; `fresh:` marks a new connection.
        calls: Mutex<Vec<(String, Vec<u8>)>>,
    }

    impl Fake {
        pub(crate) fn new(answer: impl Fn(&str, usize) -> RemoteOutput + Send + 'static) -> Fake {
            Fake {
                answer: Box::new(answer),
                calls: Mutex::new(Vec::new()),
            }
        }

        pub(crate) fn words(&self) -> Vec<String> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .map(|(word, _)| word.clone())
                .collect()
        }

        fn input_of(&self, word: &str) -> Option<Vec<u8>> {
            let calls = self.calls.lock().unwrap();
            calls
                .iter()
                .find(|(w, _)| w == word)
                .map(|(_, i)| i.clone())
        }

        fn call(&self, word: String, input: Vec<u8>) -> RemoteOutput {
            let mut calls = self.calls.lock().unwrap();
            let before = calls.iter().filter(|(w, _)| *w == word).count();
            calls.push((word.clone(), input));
            drop(calls);
            (self.answer)(&word, before)
        }
    }

    fn word_of(argv: &[String]) -> String {
        match argv {
            [_, agent, word, ..] if agent == "agent" => word.clone(),
            [sh, _, script, ..] if sh == "sh" && script == crate::relay::INSTALL => {
                "install".into()
            }
            _ => "sh".into(),
        }
    }

    impl Host for Fake {
        fn machine(&self) -> &str {
            "m"
        }
        fn connect(&mut self) -> Result<(), Error> {
            Ok(())
        }
        fn run_streaming(
            &self,
            argv: &[String],
            input: Input<'_>,
            line: &mut dyn FnMut(&str),
        ) -> Result<RemoteOutput, Error> {
            let input = match input {
                Input::None => Vec::new(),
                Input::Bytes(bytes) => bytes.to_vec(),
                Input::File(path) => std::fs::read(path).unwrap(),
            };
            let output = self.call(word_of(argv), input);
            output.stderr.lines().for_each(&mut *line);
            Ok(output)
        }
        fn run_fresh(&self, argv: &[String]) -> Result<RemoteOutput, Error> {
            Ok(self.call(format!("fresh:{}", word_of(argv)), Vec::new()))
        }
        fn spawn(&self, _: &[String]) -> Result<std::process::Child, Error> {
            Err(Error::Spawn {
                program: "a server".into(),
                source: std::io::ErrorKind::Unsupported.into(),
            })
        }
        fn address(&self) -> &str {
            "127.0.0.1"
        }
    }

    fn ok(json: serde_json::Value) -> RemoteOutput {
        RemoteOutput {
            code: Some(0),
            stdout: serde_json::to_vec(&json).unwrap(),
            stderr: String::new(),
        }
    }

    pub(crate) fn exit(code: i32, stdout: &[u8]) -> RemoteOutput {
        RemoteOutput {
            code: Some(code),
            stdout: stdout.to_vec(),
            stderr: String::new(),
        }
    }

    /// A generation with one file and, with `secret`, one secret (so a key is needed).
    pub(crate) fn job(secret: bool) -> MachineDeploy {
        let config: clan_config::MachineConfig = serde_json::from_value(serde_json::json!({
            "files": {"/etc/hello": {"content": "hi\n"}},
        }))
        .unwrap();
        let root = clan_config::AccountName::root();
        let secrets: Vec<SecretFile<'_>> = secret
            .then(|| SecretFile {
                generator: "db",
                file: "password",
                owner: &root,
                group: &root,
                mode: clan_config::FileMode::SECRET,
                needed_for: "services",
                sops: b"{}".to_vec(),
            })
            .into_iter()
            .collect();
        MachineDeploy {
            generation: Generation::build(&"m".parse().unwrap(), &config, &secrets).unwrap(),
            age_key: Some(zeroize::Zeroizing::new("AGE-SECRET-KEY-1TEST".into())),
            host_key: None,
        }
    }

    /// The agent to upload: a small file, compressed into a cache of the test's own.
    pub(crate) fn options(dry_run: bool, cache: &Path) -> DeployOptions {
        let binary = cache.join("clan-agent");
        std::fs::write(&binary, b"#!/bin/sh\n").unwrap();
        let mut agent = AgentBinary::at(&binary).unwrap();
        agent.cache = cache.to_path_buf();
        DeployOptions {
            agent,
            confirm_timeout: Some(Duration::from_secs(30)),
            lock_timeout: Duration::from_secs(1),
            dry_run,
        }
    }

    pub(crate) fn status(id: Option<&str>, has_key: bool) -> RemoteOutput {
        ok(serde_json::json!({
            "version": "0.1.0", "current": id, "stored": id.into_iter().collect::<Vec<_>>(),
            "hasKey": has_key, "pending": null,
        }))
    }

    fn activation(id: &str) -> RemoteOutput {
        ok(serde_json::json!({
            "generation": id, "previous": null, "changes": {"filesWritten": ["/etc/hello"]},
            "confirmBy": 4_000_000_000u64,
        }))
    }

    /// Runs the stages; returns the outcome and the events.
    fn run(
        host: &mut Fake,
        job: &MachineDeploy,
        dry_run: bool,
    ) -> (Result<Outcome, (Stage, Error)>, Vec<Event>) {
        let cache = tempfile::tempdir().unwrap();
        let events = Mutex::new(Vec::new());
        let result = deploy(
            host,
            job,
            &options(dry_run, cache.path()),
            &Relay::for_run(1),
            &|event| events.lock().unwrap().push(event),
        );
        (result, events.into_inner().unwrap())
    }

    #[test]
    fn a_machine_running_the_generation_is_left_alone() {
        let job = job(false);
        let id = job.generation.id.clone();
        let mut host = Fake::new(move |word, _| match word {
            "status" => status(Some(&id), true),
            other => panic!("unexpected `{other}`"),
        });
        let (result, _) = run(&mut host, &job, false);
        assert!(matches!(result, Ok(Outcome::Unchanged)));
        assert_eq!(host.words(), ["status"]);
    }

    #[test]
    fn a_first_dry_run_uploads_nothing_and_lists_everything_as_new() {
        let job = job(true);
        let mut host = Fake::new(|word, _| match word {
            // No agent at all: the shell's "command not found".
            "diff" => exit(127, b""),
            "sh" => exit(0, b"/etc/hello\0"),
            other => panic!("unexpected `{other}`"),
        });
        let (result, events) = run(&mut host, &job, true);
        assert!(matches!(result, Ok(Outcome::DryRun)));
        assert_eq!(host.words(), ["diff", "diff", "sh"]);
        let dry_run = events
            .iter()
            .find_map(|event| match event {
                Event::DryRun {
                    changes,
                    first_deploy,
                    ..
                } => Some((changes.clone(), *first_deploy)),
                _ => None,
            })
            .expect("a dry-run event");
        assert!(dry_run.1, "first deploy");
        assert_eq!(dry_run.0.files_written, ["/etc/hello"]);
        assert_eq!(dry_run.0.files_kept_aside, ["/etc/hello"]);
        assert_eq!(dry_run.0.secrets_changed, ["db/password"]);
    }

    #[test]
    fn a_missing_agent_is_uploaded_and_a_missing_key_installed() {
        let job = job(true);
        let id = job.generation.id.clone();
        let answer_id = id.clone();
        let mut host = Fake::new(move |word, before| match (word, before) {
            ("status", 0) => exit(127, b""),
            ("status", _) => status(None, false),
            ("install" | "receive" | "install-key" | "fresh:confirm", _) => exit(0, b""),
            ("activate", _) => activation(&answer_id),
            (other, _) => panic!("unexpected `{other}`"),
        });
        let (result, events) = run(&mut host, &job, false);
        assert!(matches!(result, Ok(Outcome::Activated)), "{result:?}");
        assert_eq!(
            host.words(),
            [
                "status",
                "install",
                "status",
                "receive",
                "install-key",
                "activate",
                "fresh:confirm"
            ]
        );
        assert_eq!(
            host.input_of("install-key").as_deref(),
            Some(&b"AGE-SECRET-KEY-1TEST"[..])
        );
        assert_eq!(
            host.input_of("receive"),
            Some(job.generation.bundle()),
            "the generation's bundle"
        );
        let agent_bytes: Vec<u64> = events
            .iter()
            .filter_map(|event| match event {
                Event::Upload {
                    what: "agent",
                    bytes,
                    from: None,
                    ..
                } => Some(*bytes),
                _ => None,
            })
            .collect();
        assert!(
            matches!(agent_bytes[..], [bytes] if bytes > 0),
            "{agent_bytes:?}"
        );
        assert!(events
            .iter()
            .any(|event| matches!(event, Event::Confirm { generation, .. } if *generation == id)));
    }

    #[test]
    fn a_confirmation_that_comes_too_late_is_a_failure_saying_the_machine_reverted() {
        let job = job(false);
        let id = job.generation.id.clone();
        let mut host = Fake::new(move |word, _| match word {
            "status" => status(None, false),
            "receive" => exit(0, b""),
            "activate" => activation(&id),
            "fresh:confirm" => exit(i32::from(EXIT_REVERTED), b""),
            other => panic!("unexpected `{other}`"),
        });
        let (result, events) = run(&mut host, &job, false);
        match result {
            Err((Stage::Confirm, Error::NotConfirmed { reason, .. })) => {
                assert!(reason.contains("reverted"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let said: Vec<&str> = events
            .iter()
            .filter_map(|event| match event {
                Event::Message { message, .. } => Some(message.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            said.iter().any(|m| m.contains("cut off SSH access")),
            "{said:?}"
        );
    }

    #[test]
    fn a_failed_activation_carries_the_agents_typed_failure() {
        let job = job(false);
        let failure = serde_json::json!({
            "kind": "rolled-back",
            "message": "unit `bad.service` failed to start: …; previous generation none restored",
            "cause": {"kind": "unit", "message": "unit `bad.service` failed to start: …", "unit": "bad.service"},
        });
        let mut host = Fake::new(move |word, _| match word {
            "status" => status(None, false),
            "receive" => exit(0, b""),
            "activate" => RemoteOutput {
                stderr: "Job for bad.service failed.\nerror: unit `bad.service` failed".into(),
                ..exit(2, format!("{failure}\n").as_bytes())
            },
            other => panic!("unexpected `{other}`"),
        });
        let (result, events) = run(&mut host, &job, false);
        // What the agent printed is passed on, line by line, as output of the stage.
        let said: Vec<&str> = events
            .iter()
            .filter_map(|event| match event {
                Event::Output {
                    stage: Stage::Activate,
                    line,
                    ..
                } => Some(line.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            said,
            [
                "Job for bad.service failed.",
                "error: unit `bad.service` failed"
            ]
        );
        let Err((Stage::Activate, error)) = result else {
            panic!("{result:?}")
        };
        let failure = error.agent_failure().expect("typed");
        assert_eq!(failure.kind, FailureKind::RolledBack);
        let cause = failure.cause.as_deref().expect("its cause");
        assert_eq!(
            (cause.kind, cause.unit.as_deref()),
            (FailureKind::Unit, Some("bad.service"))
        );
        assert!(error.to_string().contains("restored"), "{error}");
    }

    #[test]
    fn an_agent_that_reports_no_failure_is_described_by_its_stderr() {
        let output = RemoteOutput {
            code: Some(1),
            stdout: Vec::new(),
            stderr: "Segmentation fault\n".into(),
        };
        let failure = agent_failure(&output);
        assert_eq!(failure.kind, FailureKind::Other);
        assert_eq!(failure.message, "Segmentation fault");
    }
}
