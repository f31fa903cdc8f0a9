//! The SSH transport: the system's OpenSSH, so `~/.ssh/config`, the agent and known_hosts
//! work as for `ssh` itself. One ControlMaster per machine per run, its socket in a private
//! directory ([`ControlDir`]); every later command multiplexes over it. The host-key policy
//! becomes `-o` options; an extra `ssh_config` can be given (`-F`, e.g. a testbed's).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::host::{run_with_input, Host, Input, RemoteOutput};
use crate::quote::command_line;
use crate::{Error, SshFailure};
use clan_network::{Route, Target};

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
            self.connect_timeout.unwrap_or(10)
        ));
        // A cut link is noticed within ~9 s instead of TCP's minutes.
        option("ServerAliveInterval=3".into());
        option("ServerAliveCountMax=3".into());
        if let Some(port) = target.port {
            args.push("-p".to_owned());
            args.push(port.to_string());
        }
        args
    }
}

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

/// One machine reached over SSH, with its ControlMaster once connected.
#[derive(Debug)]
pub struct SshHost {
    machine: String,
    target: Target,
    /// Where the ControlMaster connects: `target`, or the same host on its fallback port when
    /// the machine did not answer on the target's (not deployed with its sshd port yet).
    master_target: Target,
    options: SshOptions,
    control_path: PathBuf,
    /// Host keys trusted besides the user's known_hosts (see [`SshHost::trust_host_key`]).
    known_hosts: Option<PathBuf>,
    /// Whether the first connection fell back to the user's policy because the machine does
    /// not present the clan host key yet (a fresh machine).
    first_contact: bool,
    master: Option<Child>,
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

impl SshHost {
    /// `slot` names the socket inside `control_dir` (unique per machine in the run).
    pub fn new(
        machine: &str,
        target: Target,
        options: SshOptions,
        control_dir: &ControlDir,
        slot: usize,
    ) -> SshHost {
        SshHost {
            machine: machine.to_owned(),
            master_target: target.clone(),
            target,
            options,
            control_path: control_dir.path().join(slot.to_string()),
            known_hosts: None,
            first_contact: false,
            master: None,
        }
    }

    /// Also accepts `key` (an OpenSSH public key line) from this host: the host key a deploy
    /// installs, so that connections after the activation (the confirmation, later runs)
    /// recognise the machine. The key goes into a run-private known-hosts file listed with
    /// the system ones; the user's own known_hosts is neither read differently nor written.
    /// A fresh machine still presenting its original key is met under the user's policy
    /// instead (see [`Host::connect`]).
    pub fn trust_host_key(&mut self, key: &str) -> Result<(), Error> {
        if self.options.host_key_check == HostKeyCheck::None {
            return Ok(());
        }
        let mut patterns = self.resolve(&self.target)?.patterns;
        if let Some(port) = self.target.fallback_port {
            patterns.extend(self.resolve(&self.target.on_port(port))?.patterns);
        }
        let path = self.control_path.with_extension("known_hosts");
        std::fs::write(&path, format!("{} {key}\n", patterns.join(","))).map_err(|source| {
            Error::Io {
                context: "writing",
                path: path.clone(),
                source,
            }
        })?;
        self.known_hosts = Some(path);
        Ok(())
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

    /// Whether any of the user's or the system's known-hosts files has an entry for the
    /// target, whatever its key.
    fn host_is_known(&self) -> Result<bool, Error> {
        let resolved = self.resolve(&self.master_target)?;
        for file in &resolved.known_hosts_files {
            if Some(file) == self.known_hosts.as_ref() || !file.is_file() {
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
    /// `trust_clan_key`, the clan host key counts as known too.
    fn ssh(&self, target: &Target, trust_clan_key: bool, extra: &[String]) -> Command {
        let mut command = Command::new("ssh");
        command.args(self.options.base_args(target));
        if let Some(known_hosts) = self.known_hosts.as_ref().filter(|_| trust_clan_key) {
            // OpenSSH accepts a host key found in any of the files it reads.
            command.arg("-o").arg(format!(
                "GlobalKnownHostsFile=/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2 {}",
                known_hosts.display()
            ));
        }
        command.args(extra).arg("--").arg(target.destination());
        command
    }

    /// A command over the ControlMaster (or starting it, with `control`).
    fn command(&self, control: &[String]) -> Command {
        self.ssh(&self.master_target, !self.first_contact, control)
    }

    /// A command over a connection of its own (no ControlMaster), to the target's own port
    /// and trusting the clan host key again: after an activation the machine presents both.
    fn fresh_command(&self) -> Command {
        let extra = ["-o", "ControlMaster=no", "-o", "ControlPath=none"].map(str::to_owned);
        self.ssh(&self.target, true, &extra)
    }

    fn control_args(&self) -> Vec<String> {
        vec![
            "-o".into(),
            "ControlMaster=no".into(),
            "-o".into(),
            format!("ControlPath={}", self.control_path.display()),
        ]
    }

    fn ssh_error(&self, stderr: &str) -> Error {
        let detail = stderr
            .lines()
            .rfind(|line| !line.trim().is_empty() && !line.starts_with("@@@"))
            .unwrap_or("ssh failed without a message")
            .to_owned();
        Error::Ssh {
            machine: self.machine.clone(),
            target: self.target.to_string(),
            failure: SshFailure::classify(stderr),
            detail,
        }
    }

    fn finish(&self, output: RemoteOutput) -> Result<RemoteOutput, Error> {
        if output.code == Some(255) {
            return Err(self.ssh_error(&output.stderr));
        }
        Ok(output)
    }

    /// A login shell, or `command` (a command line for the machine's shell, as `ssh` takes
    /// it), over the open connection with this terminal attached; `tty` requests a
    /// terminal for a command (`ssh -t`). Returns the remote exit code (255 when ssh itself
    /// failed, as ssh reports it).
    pub fn session(&self, command: Option<&str>, tty: bool) -> Result<i32, Error> {
        let mut control = self.control_args();
        if tty {
            control.push("-t".into());
        }
        let mut ssh = self.command(&control);
        if let Some(command) = command {
            ssh.arg(command);
        }
        let status = ssh.status().map_err(|source| Error::Spawn {
            program: "ssh".into(),
            source,
        })?;
        Ok(status.code().unwrap_or(255))
    }

    /// Starts the ControlMaster and waits until its socket exists. Its session reads the
    /// stdin it gets from this process until EOF: when clan ends, even by SIGKILL, the pipe
    /// closes, the session ends and the master with it (nothing is left running).
    /// Opens the ControlMaster under the current host-key policy (see [`Host::connect`]).
    fn open(&mut self) -> Result<(), Error> {
        let opened = match (self.open_master(), self.target.fallback_port) {
            (
                Err(Error::Ssh {
                    failure: SshFailure::Unreachable,
                    ..
                }),
                Some(port),
            ) => {
                self.master_target = self.target.on_port(port);
                self.open_master()
            }
            (other, _) => other,
        };
        match opened {
            Err(Error::Ssh {
                failure: SshFailure::HostKeyMismatch,
                ..
            }) if self.known_hosts.is_some() && !self.host_is_known()? => {
                self.first_contact = true;
                self.open_master()
            }
            other => other,
        }
    }

    fn open_master(&mut self) -> Result<(), Error> {
        let log = self.control_path.with_extension("log");
        let log_file = std::fs::File::create(&log).map_err(|source| Error::Io {
            context: "creating",
            path: log.clone(),
            source,
        })?;
        let mut command = self.command(&[
            "-M".into(),
            "-T".into(),
            "-o".into(),
            "ControlPersist=no".into(),
            "-o".into(),
            format!("ControlPath={}", self.control_path.display()),
        ]);
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
            + Duration::from_secs(u64::from(self.options.connect_timeout.unwrap_or(10)) + 30);
        loop {
            if self.control_path.exists() {
                self.master = Some(child);
                return Ok(());
            }
            let exited = child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() > deadline {
                if !exited {
                    let _ = child.kill();
                }
                let _ = child.wait();
                let stderr = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(self.ssh_error(if exited {
                    &stderr
                } else {
                    "connection timed out"
                }));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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

    /// Opens the ControlMaster. With a clan host key to trust, a machine that answers with
    /// another key while the user's known-hosts files know nothing of it is a fresh machine
    /// (not yet deployed): the connection is made again under the user's own first-contact
    /// policy (`ask` prompts, `tofu` records, `strict` refuses). A key that differs from one
    /// the user knows stays a mismatch.
    fn connect(&mut self) -> Result<(), Error> {
        if self.master.is_some() {
            return Ok(());
        }
        if self.options.host_key_check != HostKeyCheck::Ask {
            return self.open();
        }
        // Only a connection that may ask (a host key, a passphrase, a password) needs the
        // terminal to itself. Tried in batch mode first, the machines whose keys are known
        // (most, in most runs) connect in parallel; the others go one at a time as before.
        self.options.host_key_check = HostKeyCheck::Strict;
        let batch = self.open();
        self.options.host_key_check = HostKeyCheck::Ask;
        match batch {
            Ok(()) => return Ok(()),
            // No answer either way: asking would not change that.
            Err(
                error @ Error::Ssh {
                    failure: SshFailure::Unreachable,
                    ..
                },
            ) => return Err(error),
            Err(_) => {
                self.master_target = self.target.clone();
                self.first_contact = false;
            }
        }
        let _prompt = HOST_KEY_PROMPT.lock().unwrap_or_else(|p| p.into_inner());
        self.open()
    }

    fn run_streaming(
        &self,
        argv: &[String],
        input: Input<'_>,
        line: &mut dyn FnMut(&str),
    ) -> Result<RemoteOutput, Error> {
        let mut command = self.command(&self.control_args());
        command.arg(command_line(argv));
        self.finish(run_with_input(command, input, line)?)
    }

    /// Over a connection of its own, so that it outlives this host's ControlMaster.
    fn spawn(&self, argv: &[String]) -> Result<Child, Error> {
        let mut command = self.fresh_command();
        command.arg(command_line(argv));
        crate::host::spawn_piped(command)
    }

    fn address(&self) -> &str {
        &self.target.host
    }

    fn run_fresh(&self, argv: &[String]) -> Result<RemoteOutput, Error> {
        let mut command = self.fresh_command();
        command.arg(command_line(argv));
        self.finish(run_with_input(command, Input::None, &mut |_| {})?)
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        if let Some(mut master) = self.master.take() {
            let _ = master.kill();
            let _ = master.wait();
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
            route.target.clone(),
            ssh.clone(),
            control_dir,
            0,
        );
        if let Some(key) = &route.host_key {
            host.trust_host_key(key)?;
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
}
