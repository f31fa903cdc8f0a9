//! The SSH transport: the system's OpenSSH, so `~/.ssh/config`, the agent and known_hosts
//! work as for `ssh` itself. A machine's routes (`clan_network`) are raced: each starts a
//! ControlMaster after its head start, the first to finish its handshake becomes the run's
//! one ControlMaster for that machine (no second probe) and the others are stopped. Its
//! socket is in a private directory ([`ControlDir`]); every later command multiplexes over it. The host-key policy
//! becomes `-o` options; an extra `ssh_config` can be given (`-F`, e.g. a testbed's).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::host::{run_with_input, Host, Input, RemoteOutput};
use crate::quote::command_line;
use crate::{Error, RouteAttempt, SshFailure};
use clan_network::{Candidate, Route, Target};

/// How unknown or changed host keys are treated (clan-core's `--host-key-check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyCheck {
    /// Only known keys (`StrictHostKeyChecking=yes`).
    Strict,
    /// Ask on a terminal for unknown keys (OpenSSH's default).
    #[default]
    Ask,
    /// Trust and record a key seen for the first time; refuse changed ones.
    Tofu,
    /// No checking at all (throwaway test machines only).
    None,
}

/// Settings shared by every connection of a run.
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    /// An `ssh_config` file used instead of `~/.ssh/config` (`-F`).
    pub config: Option<PathBuf>,
    pub host_key_check: HostKeyCheck,
    /// Seconds to wait for a connection.
    pub connect_timeout: Option<u32>,
}

impl SshOptions {
    /// Options every ssh invocation gets, before the destination.
    pub fn base_args(&self, target: &Target) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(config) = &self.config {
            args.push("-F".to_owned());
            args.push(config.display().to_string());
        }
        let mut option = |value: String| {
            args.push("-o".to_owned());
            args.push(value);
        };
        match self.host_key_check {
            HostKeyCheck::Strict => option("StrictHostKeyChecking=yes".into()),
            HostKeyCheck::Ask => option("StrictHostKeyChecking=ask".into()),
            HostKeyCheck::Tofu => option("StrictHostKeyChecking=accept-new".into()),
            HostKeyCheck::None => {
                option("StrictHostKeyChecking=no".into());
                option("UserKnownHostsFile=/dev/null".into());
            }
        }
        if self.host_key_check != HostKeyCheck::Ask {
            option("BatchMode=yes".into());
        }
        option(format!(
            "ConnectTimeout={}",
            self.connect_timeout_for(target)
        ));
        // A cut link is noticed within ~9 s instead of TCP's minutes.
        option("ServerAliveInterval=3".into());
        option("ServerAliveCountMax=3".into());
        if let Some(port) = target.port {
            args.push("-p".to_owned());
            args.push(port.to_string());
        }
        if let Some(jump) = target.proxy_jump() {
            args.push("-J".to_owned());
            args.push(jump);
        }
        if let (Some(socks), Some(host_file)) = (target.socks, &target.host_file) {
            args.push("-o".to_owned());
            args.push(format!(
                "ProxyCommand={}",
                clan_network::tor::proxy_command(socks, host_file)
            ));
        }
        args
    }

    /// Seconds to wait for `target` to answer: at least [`TOR_CONNECT_TIMEOUT`] through Tor,
    /// where the first connection to an onion service builds several circuits.
    pub fn connect_timeout_for(&self, target: &Target) -> u32 {
        let timeout = self.connect_timeout.unwrap_or(10);
        if target.socks.is_some() {
            timeout.max(TOR_CONNECT_TIMEOUT)
        } else {
            timeout
        }
    }
}

/// The least time a connection through Tor gets to answer, in seconds.
pub const TOR_CONNECT_TIMEOUT: u32 = 60;

/// The private directory (0700) holding the run's ControlMaster sockets; removed on drop.
#[derive(Debug)]
pub struct ControlDir {
    dir: tempfile::TempDir,
}

impl ControlDir {
    /// A new directory `/tmp/clan-ssh-<pid>-…`; those of earlier runs that died without
    /// removing theirs (a SIGKILL) go first.
    pub fn new() -> Result<ControlDir, Error> {
        remove_stale_control_dirs();
        // Short paths: a unix socket path must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix(&format!("clan-ssh-{}-", std::process::id()))
            .tempdir_in("/tmp")
            .map_err(|source| Error::Io {
                context: "creating a private directory in",
                path: PathBuf::from("/tmp"),
                source,
            })?;
        Ok(ControlDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes this user's `/tmp/clan-ssh-<pid>-…` directories whose process is gone.
fn remove_stale_control_dirs() {
    use std::os::unix::fs::MetadataExt as _;
    let uid = rustix::process::getuid().as_raw();
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("clan-ssh-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // `DirEntry::metadata` does not follow a link: a link is never `is_dir`.
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        let alive = rustix::process::Pid::from_raw(pid)
            .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
        if ours && !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// One machine reached over SSH, with its ControlMaster once connected: its routes are raced
/// (see [`SshHost::connect`]) and the first to finish its handshake carries the whole run.
#[derive(Debug)]
pub struct SshHost {
    machine: String,
    routes: Vec<Candidate>,
    options: SshOptions,
    /// The socket paths of this host's racers start with it (unique per machine in the run).
    control_base: PathBuf,
    /// The host key the deploy installs, trusted besides the user's known_hosts (see
    /// [`SshHost::trust_host_key`]).
    host_key: Option<String>,
    link: Option<Link>,
}

/// The connection that won the race.
#[derive(Debug)]
struct Link {
    /// Which of the routes, and where it went (its own port: where fresh connections go).
    route: usize,
    target: Target,
    /// Where the ControlMaster connected: `target`, or the same host on its fallback port
    /// when the machine did not answer on the target's (not deployed with its sshd port yet).
    master_target: Target,
    control_path: PathBuf,
    /// The run-private known-hosts file holding the clan host key under this route's names.
    known_hosts: Option<PathBuf>,
    /// Whether the connection fell back to the user's policy because the machine does not
    /// present the clan host key yet (a fresh machine).
    first_contact: bool,
    master: Child,
    elapsed: Duration,
}

/// The route a connection took, for events and `clan ssh`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteUsed {
    /// `user@host[:port]`.
    pub target: String,
    /// `targetHost`, `network <instance>`, …
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<clan_config::InstanceName>,
    /// From the start of the race to the finished handshake.
    pub elapsed_ms: u64,
    /// How many routes the machine has.
    pub routes: usize,
}

/// Held while a connection may ask the user about an unknown host key, so that prompts of a
/// fleet run come one machine at a time.
static HOST_KEY_PROMPT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What `ssh -G` says about a destination: the settings host keys are looked up by.
struct Resolved {
    /// The names ssh looks the host key up under (`host`, `[host]:port`).
    patterns: Vec<String>,
    /// The known-hosts files ssh reads, user ones first.
    known_hosts_files: Vec<PathBuf>,
}

/// One racer: a route on one port, started after its head start.
struct Racer {
    route: usize,
    target: Target,
    master_target: Target,
    known_hosts: Option<PathBuf>,
    control_path: PathBuf,
}

/// How one racer ended.
enum Finish {
    Won,
    /// Another racer won first.
    Lost,
    Failed(Error),
}

impl SshHost {
    /// `slot` names the sockets inside `control_dir` (unique per machine in the run).
    pub fn new(
        machine: &str,
        routes: Vec<Candidate>,
        options: SshOptions,
        control_dir: &ControlDir,
        slot: usize,
    ) -> SshHost {
        SshHost {
            machine: machine.to_owned(),
            routes,
            options,
            control_base: control_dir.path().join(slot.to_string()),
            host_key: None,
            link: None,
        }
    }

    /// Also accepts `key` (an OpenSSH public key line) from this host: the host key a deploy
    /// installs, so that connections after the activation (the confirmation, later runs)
    /// recognise the machine. The key goes into a run-private known-hosts file per route,
    /// listed with the system ones; the user's own known_hosts is neither read differently
    /// nor written. A fresh machine still presenting its original key is met under the
    /// user's policy instead (see [`Host::connect`]).
    pub fn trust_host_key(&mut self, key: &str) {
        if self.options.host_key_check != HostKeyCheck::None {
            self.host_key = Some(key.to_owned());
        }
    }

    /// The route the connection took, once connected.
    pub fn route_used(&self) -> Option<RouteUsed> {
        let link = self.link.as_ref()?;
        let route = &self.routes[link.route];
        Some(RouteUsed {
            target: link.master_target.to_string(),
            source: route.source.clone(),
            network: route.network.clone(),
            elapsed_ms: u64::try_from(link.elapsed.as_millis()).unwrap_or(u64::MAX),
            routes: self.routes.len(),
        })
    }

    /// Asks `ssh -G` how it would connect to `target`.
    fn resolve(&self, target: &Target) -> Result<Resolved, Error> {
        let output = Command::new("ssh")
            .args(self.options.base_args(target))
            .args(["-G", "--"])
            .arg(target.destination())
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: "ssh".into(),
                source,
            })?;
        let settings = String::from_utf8_lossy(&output.stdout);
        Ok(resolved_settings(&settings, target))
    }

    /// Writes the clan host key under the names ssh looks `target` up by (on its fallback
    /// port too) into `path`.
    fn write_known_hosts(&self, key: &str, target: &Target, path: &Path) -> Result<(), Error> {
        let mut patterns = self.resolve(target)?.patterns;
        if let Some(port) = target.fallback_port {
            patterns.extend(self.resolve(&target.on_port(port))?.patterns);
        }
        std::fs::write(path, format!("{} {key}\n", patterns.join(","))).map_err(|source| {
            Error::Io {
                context: "writing",
                path: path.to_owned(),
                source,
            }
        })
    }

    /// Whether any of the user's or the system's known-hosts files has an entry for
    /// `target`, whatever its key (`ours` is the run's own file, not counted).
    fn host_is_known(&self, target: &Target, ours: Option<&Path>) -> Result<bool, Error> {
        let resolved = self.resolve(target)?;
        for file in &resolved.known_hosts_files {
            if Some(file.as_path()) == ours || !file.is_file() {
                continue;
            }
            for pattern in &resolved.patterns {
                let found = Command::new("ssh-keygen")
                    .arg("-F")
                    .arg(pattern)
                    .arg("-f")
                    .arg(file)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map_err(|source| Error::Spawn {
                        program: "ssh-keygen".into(),
                        source,
                    })?;
                if found.success() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// `ssh` to `target` with the run's options and `extra` before the destination; with
    /// `known_hosts`, the clan host key counts as known too.
    fn ssh(&self, target: &Target, known_hosts: Option<&Path>, extra: &[String]) -> Command {
        let mut command = Command::new("ssh");
        command.args(self.options.base_args(target));
        if let Some(known_hosts) = known_hosts {
            // OpenSSH accepts a host key found in any of the files it reads.
            command.arg("-o").arg(format!(
                "GlobalKnownHostsFile=/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2 {}",
                known_hosts.display()
            ));
        }
        command.args(extra).arg("--").arg(target.destination());
        command
    }

    fn connected(&self) -> Result<&Link, Error> {
        self.link.as_ref().ok_or_else(|| Error::Ssh {
            machine: self.machine.clone(),
            target: self
                .routes
                .first()
                .map(Candidate::describe)
                .unwrap_or_default(),
            failure: SshFailure::Other,
            detail: "not connected".to_owned(),
        })
    }

    /// A command over the ControlMaster, with `extra` options.
    fn command(&self, extra: &[&str]) -> Result<Command, Error> {
        let link = self.connected()?;
        let trust = link.known_hosts.as_deref().filter(|_| !link.first_contact);
        let mut options = vec![
            "-o".to_owned(),
            "ControlMaster=no".to_owned(),
            "-o".to_owned(),
            format!("ControlPath={}", link.control_path.display()),
        ];
        options.extend(extra.iter().map(|o| o.to_string()));
        Ok(self.ssh(&link.master_target, trust, &options))
    }

    /// A command over a connection of its own (no ControlMaster), over the route that won,
    /// to its own port and trusting the clan host key again: after an activation the machine
    /// presents both.
    fn fresh_command(&self) -> Result<Command, Error> {
        let link = self.connected()?;
        let extra = ["-o", "ControlMaster=no", "-o", "ControlPath=none"].map(str::to_owned);
        Ok(self.ssh(&link.target, link.known_hosts.as_deref(), &extra))
    }

    /// `output` of a command over the open connection, or over a `fresh` one of its own;
    /// ssh's 255 is a lost connection on the one, no connection on the other.
    fn finish(&self, output: RemoteOutput, fresh: bool) -> Result<RemoteOutput, Error> {
        if output.code == Some(255) {
            let target = self
                .link
                .as_ref()
                .map(|l| l.master_target.to_string())
                .unwrap_or_default();
            if fresh {
                return Err(ssh_error(&self.machine, &target, &output.stderr));
            }
            return Err(Error::ConnectionLost {
                machine: self.machine.clone(),
                target,
                ssh_said: ssh_message(&output.stderr),
            });
        }
        Ok(output)
    }

    /// A login shell, or `command` (a command line for the machine's shell, as `ssh` takes
    /// it), over the open connection with this terminal attached; `tty` requests a
    /// terminal for a command (`ssh -t`). Returns the remote exit code (255 when ssh itself
    /// failed, as ssh reports it).
    pub fn session(&self, command: Option<&str>, tty: bool) -> Result<i32, Error> {
        let mut ssh = self.command(if tty { &["-t"] } else { &[] })?;
        if let Some(command) = command {
            ssh.arg(command);
        }
        let status = ssh.status().map_err(|source| Error::Spawn {
            program: "ssh".into(),
            source,
        })?;
        Ok(status.code().unwrap_or(255))
    }

    /// Races every route under `policy`: each starts after its head start (a var host is
    /// read first), the first whose ControlMaster finishes its handshake wins and becomes
    /// this host's connection; the others are stopped. Every route failing is an error
    /// naming each (a single route's own error when there is one).
    fn race(
        &mut self,
        policy: HostKeyCheck,
        only: Option<usize>,
    ) -> Result<(), Vec<(usize, Error)>> {
        let saved = self.options.host_key_check;
        self.options.host_key_check = policy;
        let starts = clan_network::head_starts(&self.routes);
        let start = Instant::now();
        let done = AtomicBool::new(false);
        let winner: Mutex<Option<Link>> = Mutex::new(None);
        let failures: Mutex<Vec<(usize, Error)>> = Mutex::new(Vec::new());
        let this = &*self;
        std::thread::scope(|scope| {
            for (index, route) in this.routes.iter().enumerate() {
                if only.is_some_and(|only| only != index) {
                    continue;
                }
                let (done, winner) = (&done, &winner);
                let failures = &failures;
                let fail = move |index: usize, error: Error| {
                    failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((index, error));
                };
                let delay = if only.is_some() {
                    Duration::ZERO
                } else {
                    starts[index]
                };
                scope.spawn(move || {
                    let target = match route
                        .target()
                        .map_err(Error::from)
                        .and_then(|target| this.prepare_tor_target(route, index, target))
                    {
                        Ok(target) => target,
                        Err(error) => return fail(index, error),
                    };
                    let known_hosts = match &this.host_key {
                        Some(key) => {
                            let path = this
                                .control_base
                                .with_extension(format!("{index}.known_hosts"));
                            if let Err(error) = this.write_known_hosts(key, &target, &path) {
                                return fail(index, error);
                            }
                            Some(path)
                        }
                        None => None,
                    };
                    let mut ports = vec![(target.clone(), delay)];
                    if let Some(port) = target.fallback_port {
                        // The machine's own sshd port first: 22 answers only until it is deployed.
                        ports.push((target.on_port(port), delay + clan_network::HEAD_START / 2));
                    }
                    std::thread::scope(|scope| {
                        for (port_index, (master_target, delay)) in ports.into_iter().enumerate() {
                            let racer = Racer {
                                route: index,
                                target: target.clone(),
                                master_target,
                                known_hosts: known_hosts.clone(),
                                control_path: this
                                    .control_base
                                    .with_extension(format!("{index}.{port_index}")),
                            };
                            scope.spawn(move || {
                                if !sleep_unless(done, start + delay) {
                                    return;
                                }
                                let finish = match this.through_tor(racer, route, done) {
                                    Ok(Some(racer)) => this.run_racer(racer, start, done, winner),
                                    Ok(None) => Finish::Lost,
                                    Err(error) => Finish::Failed(error),
                                };
                                if let Finish::Failed(error) = finish {
                                    fail(index, error);
                                }
                            });
                        }
                    });
                });
            }
        });
        self.options.host_key_check = saved;
        match winner.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(link) => {
                self.link = Some(link);
                Ok(())
            }
            None => {
                let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
                // One failure per route: its own port's (the first port tried) when both failed
                // the same way, else the more telling one.
                failures.sort_by_key(|(index, error)| (*index, is_unreachable(error)));
                failures.dedup_by_key(|(index, _)| *index);
                Err(failures)
            }
        }
    }

    /// `target` for ssh when `route` is over tor: its host goes into a file of the run's
    /// private directory, which the SOCKS connector reads — ssh's `%h` never reaches the
    /// ProxyCommand's shell, whatever a service exported. A secret host (an onion hostname, by
    /// default) is known to ssh as `<machine>.<network>.onion`, so that it is on no command
    /// line, in no event and no message.
    fn prepare_tor_target(
        &self,
        route: &Candidate,
        index: usize,
        mut target: Target,
    ) -> Result<Target, Error> {
        if !route.is_tor() {
            return Ok(target);
        }
        let file = self.control_base.with_extension(format!("{index}.host"));
        clan_fs::write_file(
            &file,
            target.host.as_bytes(),
            clan_fs::WriteOptions::new(0o600),
        )
        .map_err(|source| Error::Cache {
            path: file.clone(),
            source,
        })?;
        if route.host_is_secret() {
            let network = route.network.as_deref().unwrap_or("tor");
            target.host = format!("{}.{network}.onion", self.machine);
        }
        target.host_file = Some(file);
        Ok(target)
    }

    /// `racer` through the run's Tor client when its route is over tor (the client started
    /// and bootstrapped first); `None` when another racer won meanwhile.
    fn through_tor(
        &self,
        mut racer: Racer,
        route: &Candidate,
        done: &AtomicBool,
    ) -> Result<Option<Racer>, Error> {
        if !route.is_tor() {
            return Ok(Some(racer));
        }
        let network = route.network.as_deref().unwrap_or_default();
        let socks = clan_network::tor::socks_proxy(network, done).map_err(|source| {
            clan_network::Error::Tor {
                machine: self.machine.clone(),
                source,
            }
        })?;
        Ok(socks.map(|socks| {
            racer.target.socks = Some(socks);
            racer.master_target.socks = Some(socks);
            racer
        }))
    }

    /// One racer: opens its ControlMaster (again under the user's first-contact policy when
    /// the machine does not present the clan key and the user knows nothing of it) and
    /// claims the win if no other racer did.
    fn run_racer(
        &self,
        racer: Racer,
        start: Instant,
        done: &AtomicBool,
        winner: &Mutex<Option<Link>>,
    ) -> Finish {
        let mut first_contact = false;
        let mut opened = self.open_master(&racer, racer.known_hosts.as_deref(), done);
        if let Err(Error::Ssh {
            failure: SshFailure::HostKeyMismatch,
            ..
        }) = &opened
        {
            if racer.known_hosts.is_some() {
                match self.host_is_known(&racer.master_target, racer.known_hosts.as_deref()) {
                    Ok(false) => {
                        first_contact = true;
                        opened = self.open_master(&racer, None, done);
                    }
                    Ok(true) => {}
                    Err(error) => opened = Err(error),
                }
            }
        }
        let mut master = match opened {
            Ok(Some(master)) => master,
            Ok(None) => return Finish::Lost,
            Err(error) => return Finish::Failed(error),
        };
        let mut winner = winner.lock().unwrap_or_else(|p| p.into_inner());
        if winner.is_some() {
            let _ = master.kill();
            let _ = master.wait();
            return Finish::Lost;
        }
        done.store(true, Ordering::SeqCst);
        *winner = Some(Link {
            route: racer.route,
            target: racer.target,
            master_target: racer.master_target,
            control_path: racer.control_path,
            known_hosts: racer.known_hosts,
            first_contact,
            master,
            elapsed: start.elapsed(),
        });
        Finish::Won
    }

    /// Starts a ControlMaster for `racer` and waits until its socket exists (`Some`), it
    /// fails, or another racer wins (`None`, the attempt stopped). Its session reads the
    /// stdin it gets from this process until EOF: when clan ends, even by SIGKILL, the pipe
    /// closes, the session ends and the master with it (nothing is left running).
    fn open_master(
        &self,
        racer: &Racer,
        known_hosts: Option<&Path>,
        done: &AtomicBool,
    ) -> Result<Option<Child>, Error> {
        let log = racer.control_path.with_extension("log");
        let log_file = std::fs::File::create(&log).map_err(|source| Error::Io {
            context: "creating",
            path: log.clone(),
            source,
        })?;
        let mut command = self.ssh(
            &racer.master_target,
            known_hosts,
            &[
                "-M".into(),
                "-T".into(),
                "-o".into(),
                "ControlPersist=no".into(),
                "-o".into(),
                format!("ControlPath={}", racer.control_path.display()),
            ],
        );
        command
            .arg("exec cat > /dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            program: "ssh".into(),
            source,
        })?;
        let deadline = Instant::now()
            + Duration::from_secs(
                u64::from(self.options.connect_timeout_for(&racer.master_target)) + 30,
            );
        loop {
            if racer.control_path.exists() {
                return Ok(Some(child));
            }
            let exited = child.try_wait().ok().flatten().is_some();
            let lost = done.load(Ordering::SeqCst);
            if exited || lost || Instant::now() > deadline {
                if !exited {
                    let _ = child.kill();
                }
                let _ = child.wait();
                if lost && !exited {
                    return Ok(None);
                }
                let stderr = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(ssh_error(
                    &self.machine,
                    &racer.master_target.to_string(),
                    if exited {
                        &stderr
                    } else {
                        "connection timed out"
                    },
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The error for a race every route lost: a single route's own, else one naming each.
    fn no_route(&self, mut failures: Vec<(usize, Error)>) -> Error {
        if failures.len() == 1 && self.routes.len() == 1 {
            return failures.remove(0).1;
        }
        use clan_error::Hint as _;
        Error::NoRoute {
            machine: self.machine.clone(),
            attempts: failures
                .into_iter()
                .map(|(index, error)| RouteAttempt {
                    route: self.routes[index].describe(),
                    hint: error.hint(),
                    reason: match &error {
                        Error::Ssh { detail, .. } => detail.clone(),
                        other => other.to_string(),
                    },
                })
                .collect(),
        }
    }
}

fn is_unreachable(error: &Error) -> bool {
    matches!(
        error,
        Error::Ssh {
            failure: SshFailure::Unreachable,
            ..
        }
    )
}

/// Sleeps until `until` unless `done` is set first; whether to go on.
fn sleep_unless(done: &AtomicBool, until: Instant) -> bool {
    loop {
        if done.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(5)));
    }
}

/// The last line of `stderr` that ssh itself wrote (rather than the remote command): how a
/// connection that was open broke.
fn ssh_message(stderr: &str) -> Option<String> {
    const SSH_SAYS: [&str; 6] = [
        "Timeout, server",
        "Connection to ",
        "Connection closed",
        "client_loop:",
        "mux_client",
        "Control socket",
    ];
    stderr
        .lines()
        .rfind(|line| SSH_SAYS.iter().any(|said| line.starts_with(said)))
        .map(|line| line.trim().to_owned())
}

fn ssh_error(machine: &str, target: &str, stderr: &str) -> Error {
    // The SOCKS connector's reason, when it gave one, says more than ssh's "connection closed".
    let detail = stderr
        .lines()
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .find(|line| line.starts_with(clan_network::tor::SOCKS_FAILURE))
        .or_else(|| {
            stderr
                .lines()
                .rfind(|line| !line.trim().is_empty() && !line.starts_with("@@@"))
        })
        .unwrap_or("ssh failed without a message")
        .to_owned();
    Error::Ssh {
        machine: machine.to_owned(),
        target: target.to_owned(),
        failure: SshFailure::classify(stderr),
        detail,
    }
}

/// Reads `ssh -G` output: the host-key lookup names and the known-hosts files.
fn resolved_settings(settings: &str, target: &Target) -> Resolved {
    let setting = |name: &str| {
        settings
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map(str::to_owned)
    };
    let port: u16 = setting("port")
        .and_then(|port| port.parse().ok())
        .or(target.port)
        .unwrap_or(22);
    let mut hosts = vec![target.host.clone()];
    for name in [setting("hostname"), setting("hostkeyalias")]
        .into_iter()
        .flatten()
    {
        if !hosts.contains(&name) {
            hosts.push(name);
        }
    }
    let patterns = hosts
        .iter()
        .map(|host| match port {
            22 => host.clone(),
            port => format!("[{host}]:{port}"),
        })
        .collect();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let known_hosts_files = ["userknownhostsfile", "globalknownhostsfile"]
        .into_iter()
        .filter_map(setting)
        .flat_map(|files| {
            files
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|file| match (file.strip_prefix("~/"), &home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(file),
        })
        .collect();
    Resolved {
        patterns,
        known_hosts_files,
    }
}

impl Host for SshHost {
    fn machine(&self) -> &str {
        &self.machine
    }

    /// Races the routes (see [`SshHost::race`]). With a clan host key to trust, a machine
    /// that answers with another key while the user's known-hosts files know nothing of it
    /// is a fresh machine (not yet deployed): the connection is made again under the user's
    /// own first-contact policy (`ask` prompts, `tofu` records, `strict` refuses). A key that
    /// differs from one the user knows stays a mismatch.
    fn connect(&mut self) -> Result<(), Error> {
        if self.link.is_some() {
            return Ok(());
        }
        if self.options.host_key_check != HostKeyCheck::Ask {
            let policy = self.options.host_key_check;
            return self.race(policy, None).map_err(|f| self.no_route(f));
        }
        // Only a connection that may ask (a host key, a passphrase, a password) needs the
        // terminal to itself. Raced in batch mode first, the machines whose keys are known
        // (most, in most runs) connect in parallel; then the best route that answered at all
        // is asked about, one machine at a time.
        let failures = match self.race(HostKeyCheck::Strict, None) {
            Ok(()) => return Ok(()),
            Err(failures) => failures,
        };
        let Some(index) = failures
            .iter()
            .filter(|(_, error)| matches!(error, Error::Ssh { .. }) && !is_unreachable(error))
            .map(|(index, _)| *index)
            .min()
        else {
            return Err(self.no_route(failures));
        };
        let _prompt = HOST_KEY_PROMPT.lock().unwrap_or_else(|p| p.into_inner());
        self.race(HostKeyCheck::Ask, Some(index))
            .map_err(|f| self.no_route(f))
    }

    fn run_streaming(
        &self,
        argv: &[String],
        input: Input<'_>,
        line: &mut dyn FnMut(&str),
    ) -> Result<RemoteOutput, Error> {
        let mut command = self.command(&[])?;
        command.arg(command_line(argv));
        self.finish(run_with_input(command, input, line)?, false)
    }

    /// Over a connection of its own, so that it outlives this host's ControlMaster.
    fn spawn(&self, argv: &[String]) -> Result<Child, Error> {
        let mut command = self.fresh_command()?;
        command.arg(command_line(argv));
        crate::host::spawn_piped(command)
    }

    fn address(&self) -> &str {
        self.link.as_ref().map_or("", |link| &link.target.host)
    }

    fn run_fresh(&self, argv: &[String]) -> Result<RemoteOutput, Error> {
        let mut command = self.fresh_command()?;
        command.arg(command_line(argv));
        self.finish(run_with_input(command, Input::None, &mut |_| {})?, true)
    }

    fn route_used(&self) -> Option<RouteUsed> {
        SshHost::route_used(self)
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        if let Some(mut link) = self.link.take() {
            let _ = link.master.kill();
            let _ = link.master.wait();
        }
    }
}

impl SshHost {
    /// A connected SSH host for `route`, for commands outside a fleet run (`clan ssh`,
    /// `machines generations`, `machines rollback`).
    pub fn connect_route(
        route: &Route,
        ssh: &SshOptions,
        control_dir: &ControlDir,
    ) -> Result<SshHost, Error> {
        let mut host = SshHost::new(
            &route.machine,
            route.routes.clone(),
            ssh.clone(),
            control_dir,
            0,
        );
        if let Some(key) = &route.host_key {
            host.trust_host_key(key);
        }
        host.connect()?;
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(port: Option<u16>) -> Target {
        Target {
            user: Some("root".into()),
            host: "10.0.0.1".into(),
            port,
            source: "test".into(),
            fallback_port: None,
            jump: Vec::new(),
            socks: None,
            host_file: None,
        }
    }

    #[test]
    fn host_key_policies_become_options() {
        let options = |check| SshOptions {
            config: Some("/t/ssh_config".into()),
            host_key_check: check,
            connect_timeout: None,
        };
        let strict = options(HostKeyCheck::Strict).base_args(&target(Some(2222)));
        assert_eq!(&strict[..2], ["-F", "/t/ssh_config"]);
        assert!(strict.contains(&"StrictHostKeyChecking=yes".to_owned()));
        assert!(strict.contains(&"BatchMode=yes".to_owned()));
        assert_eq!(&strict[strict.len() - 2..], ["-p", "2222"]);
        let ask = options(HostKeyCheck::Ask).base_args(&target(None));
        assert!(ask.contains(&"StrictHostKeyChecking=ask".to_owned()));
        assert!(!ask.contains(&"BatchMode=yes".to_owned()));
        let none = options(HostKeyCheck::None).base_args(&target(None));
        assert!(none.contains(&"UserKnownHostsFile=/dev/null".to_owned()));
        let tofu = options(HostKeyCheck::Tofu).base_args(&target(None));
        assert!(tofu.contains(&"StrictHostKeyChecking=accept-new".to_owned()));
    }

    #[test]
    fn ssh_messages_are_classified() {
        use SshFailure::*;
        for (text, want) in [
            ("@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.", HostKeyMismatch),
            ("No ED25519 host key is known for x and you have requested strict checking.\nHost key verification failed.", HostKeyUnknown),
            ("root@10.0.0.1: Permission denied (publickey).", PermissionDenied),
            ("ssh: connect to host 10.0.0.1 port 22: Connection timed out", Unreachable),
            ("ssh: Could not resolve hostname web.clan: Name or service not known", Unreachable),
            ("something else", Other),
        ] {
            assert_eq!(SshFailure::classify(text), want, "{text}");
        }
    }

    #[test]
    fn a_lost_connection_is_told_by_sshs_own_line_not_the_commands() {
        let stderr = "Created symlink /etc/systemd/system/x.service.\nTimeout, server 10.0.0.1 not responding.\n";
        assert_eq!(
            ssh_message(stderr).as_deref(),
            Some("Timeout, server 10.0.0.1 not responding.")
        );
        assert_eq!(ssh_message("Created symlink /etc/x.\n"), None);
    }
}
