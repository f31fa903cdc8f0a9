//! [`Testbed`]: a running fleet of test machines, and everything done to it as a whole —
//! bringing it up, attaching to it from another process, stopping one machine, pulling its
//! link, and tearing it all down.

use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::error::{Error, Result};
use crate::limits;
use crate::machine;
use crate::net::Network;
use crate::options::Options;
use crate::process::{self, IP, NSPAWN, SETSID, SSH, SSH_KEYGEN};

use crate::ssh;
use crate::state::{MachineState, State};
use crate::Machine;

/// How long a container gets to power off cleanly after SIGTERM before it is killed.
const HALT_TIMEOUT: Duration = Duration::from_secs(15);

/// A running set of test machines. Dropping a testbed started by [`Testbed::up`] tears it
/// down; one found by [`Testbed::attach`] is left running unless [`Testbed::down`] is called.
#[derive(Debug)]
pub struct Testbed {
    state_dir: PathBuf,
    state: State,
    machines: Vec<Machine>,
    /// Containers started by this process, so they can be reaped.
    children: HashMap<String, Child>,
    /// Whether dropping this handle tears the testbed down.
    owned: bool,
}

/// Fails with the reason this host cannot run a testbed (not root, a tool missing), so tests
/// can skip with that reason. The root filesystem builder (`debootstrap`) is only checked
/// when a build is needed.
pub fn check_host() -> Result<()> {
    if !process::is_root() {
        return Err(clan_host::Error::NotRoot.into());
    }
    Ok([IP, NSPAWN, SSH_KEYGEN, SSH, SETSID]
        .into_iter()
        .try_for_each(process::require)?)
}

impl Testbed {
    /// Builds (or reuses) the root filesystem, creates the network and starts every machine,
    /// returning once each machine's sshd answers. On failure nothing is left behind.
    pub fn up(options: &Options) -> Result<Testbed> {
        options.validate()?;
        check_host()?;
        let state_dir = prepare_state_dir(&options.state_dir)?;
        match Testbed::attach(&state_dir) {
            Ok(previous) if previous.any_running() => {
                return Err(Error::AlreadyRunning { state_dir })
            }
            Ok(previous) => previous.down()?,
            Err(Error::NoTestbed { .. }) => {}
            Err(error) => return Err(error),
        }
        let suite = options
            .suite
            .clone()
            .map_or_else(clan_host::rootfs::host_suite, Ok)?;
        let rootfs = clan_host::rootfs::ensure(
            &options.cache_dir(),
            &suite,
            &options.extra_packages,
            options.progress,
        )?;
        for old in ["machines", "logs"] {
            remove_dir_if_present(&state_dir.join(old))?;
        }
        limits::ensure_inotify_instances(options.machines.len(), options.progress)?;
        let admin_key = state_dir.join("id_ed25519");
        ssh::generate_key(&admin_key, "clan-testbed-admin")?;
        let admin_public_key = ssh::public_key(&admin_key)?;

        let network = Network::create()?;
        let mut testbed = Testbed {
            state: State {
                binds: options.binds.clone(),
                ..State::new(network.index, rootfs, options.detach)
            },
            state_dir,
            machines: Vec::new(),
            children: HashMap::new(),
            owned: true,
        };
        // From here on, an early return drops `testbed`, which tears down what exists.
        testbed.state.save(&testbed.state_dir)?;
        testbed.create_machines(
            network,
            &options.machines,
            &admin_public_key,
            options.trust_host_keys,
        )?;
        let names: Vec<String> = options.machines.clone();
        for name in &names {
            testbed.spawn(name)?;
        }
        testbed.state.save(&testbed.state_dir)?;
        testbed.wait_ready(&names, options.boot_timeout())?;
        Ok(testbed)
    }

    /// Finds the testbed recorded in `state_dir` (started by this or another process). The
    /// handle does not own it: dropping it leaves the machines running.
    pub fn attach(state_dir: &Path) -> Result<Testbed> {
        let state = State::load(state_dir)?;
        let network = Network { index: state.index };
        let machines = state
            .machines
            .iter()
            .map(|m| Machine {
                name: m.name.clone(),
                address: network.machine_address(m.slot),
                ssh_port: 22,
            })
            .collect();
        Ok(Testbed {
            state_dir: state_dir.to_path_buf(),
            state,
            machines,
            children: HashMap::new(),
            owned: false,
        })
    }

    /// Stops every machine and removes the network, the overlays and the state file.
    /// Everything is attempted; what could not be removed is reported together.
    pub fn down(mut self) -> Result<()> {
        self.owned = false;
        self.teardown()
    }

    /// Lets the machines outlive this handle (and this process, if started with `detach`);
    /// a later [`Testbed::attach`] + [`Testbed::down`] stops them.
    pub fn keep_running(mut self) {
        self.owned = false;
    }

    /// The machines, in the order they were requested.
    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// The machine called `name`.
    pub fn machine(&self, name: &str) -> Result<&Machine> {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::UnknownMachine {
                name: name.to_owned(),
            })
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The `ssh_config` for `ssh -F <it> <machine>` (also matches the machines' addresses).
    pub fn ssh_config(&self) -> PathBuf {
        self.state_dir.join("ssh_config")
    }

    /// The admin private key (0600) authorized for root on every machine; `.pub` beside it.
    pub fn admin_key(&self) -> PathBuf {
        self.state_dir.join("id_ed25519")
    }

    /// The host's address on the testbed network (machines know it as `testbed-host`).
    pub fn host_address(&self) -> Ipv4Addr {
        self.network().host_address()
    }

    /// The host's interface into the testbed network.
    pub fn host_interface(&self) -> String {
        self.network().host_interface()
    }

    /// The network namespaces of this testbed: one per machine, then the bridge's.
    pub fn network_namespaces(&self) -> Vec<String> {
        let network = self.network();
        let mut names: Vec<String> = self
            .state
            .machines
            .iter()
            .map(|m| network.machine_netns(m.slot))
            .collect();
        names.push(network.bridge_netns());
        names
    }

    /// The console log of machine `name` (systemd's boot output).
    pub fn console_log(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.log"))
    }

    /// The `known_hosts` that `ssh_config` names: the deployer's, empty at first unless the
    /// testbed was started with [`Options::trust_host_keys`].
    pub fn known_hosts(&self) -> PathBuf {
        self.state_dir.join("known_hosts")
    }

    /// The harness's own way into machine `name` (`ssh -F <ssh_config> <name>` without
    /// host-key checking), ready for the remote command as further arguments. It is how tests
    /// observe a machine, not how a deployer reaches it: it keeps working while deploys change
    /// host keys, and it never writes the deployer's known_hosts.
    pub fn ssh_command(&self, name: &str) -> Result<Command> {
        self.machine(name)?;
        let mut command = process::command(SSH);
        command.arg("-F").arg(self.ssh_config());
        for option in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "GlobalKnownHostsFile=/dev/null",
            "BatchMode=yes",
        ] {
            command.arg("-o").arg(option);
        }
        command.arg("--").arg(name);
        Ok(command)
    }

    /// The PID of machine `name`'s container while it runs.
    pub fn pid(&self, name: &str) -> Result<Option<u32>> {
        let state = self.machine_state(name)?;
        Ok(state
            .pid
            .filter(|&pid| process::is_alive(pid, &machine::process_markers(name))))
    }

    /// Whether machine `name`'s container runs.
    pub fn is_running(&self, name: &str) -> Result<bool> {
        Ok(self.pid(name)?.is_some())
    }

    /// Takes machine `name`'s network link down: connections to it hang and new ones time out,
    /// while the machine itself keeps running.
    pub fn link_down(&self, name: &str) -> Result<()> {
        let slot = self.machine_state(name)?.slot;
        self.network().set_link(slot, false)
    }

    /// Restores machine `name`'s network link.
    pub fn link_up(&self, name: &str) -> Result<()> {
        let slot = self.machine_state(name)?.slot;
        self.network().set_link(slot, true)
    }

    /// Powers machine `name` off cleanly (killing it if it does not halt in time). Its files
    /// stay in its overlay, so [`Testbed::start`] is like booting it again.
    pub fn stop(&mut self, name: &str) -> Result<()> {
        self.machine_state(name)?;
        let left = self.stop_containers(&[name.to_owned()]);
        self.state.save(&self.state_dir)?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown { problems: left })
        }
    }

    /// Boots machine `name` again (nothing happens if it runs) and waits for its sshd.
    pub fn start(&mut self, name: &str) -> Result<()> {
        if self.is_running(name)? {
            return Ok(());
        }
        self.spawn(name)?;
        self.state.save(&self.state_dir)?;
        self.wait_ready(&[name.to_owned()], Duration::from_secs(60))
    }

    fn network(&self) -> Network {
        Network {
            index: self.state.index,
        }
    }

    fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    fn upper_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join("machines").join(name).join("upper")
    }

    fn machine_state(&self, name: &str) -> Result<&MachineState> {
        self.state
            .machines
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::UnknownMachine {
                name: name.to_owned(),
            })
    }

    fn any_running(&self) -> bool {
        self.state
            .machines
            .iter()
            .any(|m| self.is_running(&m.name).unwrap_or(false))
    }

    /// Creates each machine's namespace and seeds its overlay, then writes the SSH files.
    fn create_machines(
        &mut self,
        network: Network,
        names: &[String],
        admin_public_key: &str,
        trust_host_keys: bool,
    ) -> Result<()> {
        let planned: Vec<Machine> = (0u8..)
            .zip(names)
            .map(|(slot, name)| Machine {
                name: name.clone(),
                address: network.machine_address(slot),
                ssh_port: 22,
            })
            .collect();
        let hosts = machine::render_hosts(&planned, network.host_address());
        fs::create_dir_all(self.log_dir()).map_err(clan_error::io("create", self.log_dir()))?;
        let mut host_keys = Vec::new();
        for (slot, machine) in (0u8..).zip(&planned) {
            // Recorded before creating, so a failure half way is still cleaned up.
            self.state.machines.push(MachineState {
                name: machine.name.clone(),
                slot,
                pid: None,
            });
            self.machines.push(machine.clone());
            network.add_machine(slot)?;
            let upper = self.upper_dir(&machine.name);
            host_keys.push(machine::seed_upper(
                &upper,
                &machine.name,
                admin_public_key,
                &hosts,
            )?);
        }
        // The deployer's known_hosts: empty, as for a server never contacted, unless asked.
        let known_hosts = self.known_hosts();
        let entries: Vec<(&Machine, String)> = planned.iter().zip(host_keys).collect();
        let text = if trust_host_keys {
            ssh::render_known_hosts(&entries)
        } else {
            String::new()
        };
        let options = clan_fs::WriteOptions::new(0o644);
        clan_fs::write_file(&known_hosts, text.as_bytes(), options)?;
        let config = self.ssh_config();
        let text = ssh::render_config(&planned, &self.admin_key(), &known_hosts);
        clan_fs::write_file(&config, text.as_bytes(), options)?;
        self.state.save(&self.state_dir)
    }

    /// Starts machine `name`'s container and records its PID.
    fn spawn(&mut self, name: &str) -> Result<()> {
        let slot = self.machine_state(name)?.slot;
        let command = machine::nspawn_command(
            &self.state.rootfs,
            &self.upper_dir(name),
            &self.network().machine_netns(slot),
            name,
            self.state.detach,
            &self.state.binds,
        );
        let child = machine::spawn(command, &self.console_log(name))?;
        let pid = child.id();
        self.children.insert(name.to_owned(), child);
        if let Some(state) = self.state.machines.iter_mut().find(|m| m.name == name) {
            state.pid = Some(pid);
        }
        Ok(())
    }

    fn wait_ready(&mut self, names: &[String], timeout: Duration) -> Result<()> {
        let machines: Vec<Machine> = self
            .machines
            .iter()
            .filter(|m| names.contains(&m.name))
            .cloned()
            .collect();
        let refs: Vec<&Machine> = machines.iter().collect();
        let log_dir = self.log_dir();
        let started = Instant::now();
        machine::wait_for_sshd(&refs, timeout, &log_dir, |name| self.exit_status(name))?;
        self.wait_booted(names, timeout.saturating_sub(started.elapsed()))
    }

    /// Waits until every named machine has finished booting. sshd answers before systemd is
    /// done, and until `systemd-user-sessions` has run pam_nologin refuses every user but root
    /// ("System is booting up"), so a service account's first login would fail on a loaded
    /// host. A real server is long booted when it is deployed to; so is a testbed machine.
    fn wait_booted(&self, names: &[String], timeout: Duration) -> Result<()> {
        let seconds = timeout.as_secs().max(5);
        let mut waits = Vec::new();
        for name in names {
            let mut command = self.ssh_command(name)?;
            command
                .arg(format!(
                    "timeout {seconds} systemctl is-system-running --wait"
                ))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let child = command.spawn().map_err(|source| clan_host::Error::Spawn {
                command: process::describe(&command),
                source,
            })?;
            waits.push((name.clone(), child));
        }
        let mut late = Vec::new();
        for (name, mut child) in waits {
            // `is-system-running` exits non-zero for a degraded system, which is booted; only
            // ssh's own failure (255) or timeout's (124) means the boot did not finish.
            match child.wait().ok().and_then(|status| status.code()) {
                Some(124 | 255) | None => late.push(name),
                Some(_) => {}
            }
        }
        if late.is_empty() {
            Ok(())
        } else {
            Err(Error::BootTimeout {
                machines: late,
                seconds,
                log_dir: self.log_dir(),
            })
        }
    }

    /// How machine `name`'s container ended, if it did.
    fn exit_status(&mut self, name: &str) -> Option<String> {
        if let Some(child) = self.children.get_mut(name) {
            return match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(error) => Some(error.to_string()),
            };
        }
        (!self.is_running(name).unwrap_or(false)).then(|| "not running".to_owned())
    }

    /// SIGTERM to the named containers at once (a clean poweroff), SIGKILL to those still
    /// running after [`HALT_TIMEOUT`]. Returns descriptions of containers that survived.
    fn stop_containers(&mut self, names: &[String]) -> Vec<String> {
        let mut running: Vec<(String, u32)> = names
            .iter()
            .filter_map(|name| Some((name.clone(), self.pid(name).ok()??)))
            .collect();
        for signal in [Signal::TERM, Signal::KILL] {
            for (_, pid) in &running {
                process::signal(*pid, signal);
            }
            let deadline = Instant::now()
                + if signal == Signal::TERM {
                    HALT_TIMEOUT
                } else {
                    Duration::from_secs(5)
                };
            while !running.is_empty() && Instant::now() < deadline {
                running
                    .retain(|(name, pid)| process::is_alive(*pid, &machine::process_markers(name)));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for name in names {
            if let Some(mut child) = self.children.remove(name) {
                if running.iter().any(|(n, _)| n == name) {
                    self.children.insert(name.clone(), child);
                } else {
                    let _ = child.wait();
                }
            }
            if let Some(state) = self.state.machines.iter_mut().find(|m| &m.name == name) {
                if !running.iter().any(|(n, _)| n == name) {
                    state.pid = None;
                }
            }
        }
        running
            .iter()
            .map(|(name, pid)| format!("machine {name} (pid {pid}) still runs"))
            .collect()
    }

    fn teardown(&mut self) -> Result<()> {
        let names: Vec<String> = self.state.machines.iter().map(|m| m.name.clone()).collect();
        let mut problems = self.stop_containers(&names);
        let network = self.network();
        for machine in &self.state.machines {
            if let Err(error) = network.remove_machine(machine.slot) {
                problems.push(error.to_string());
            }
        }
        network.remove();
        problems.extend(network.leftovers(self.state.machines.iter().map(|m| m.slot)));
        if let Err(error) = remove_dir_if_present(&self.state_dir.join("machines")) {
            problems.push(error.to_string());
        }
        if problems.is_empty() {
            State::remove(&self.state_dir)
        } else {
            // Keep the state file, so `down` can be retried.
            let _ = self.state.save(&self.state_dir);
            Err(Error::Teardown { problems })
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.owned {
            if let Err(error) = self.teardown() {
                eprintln!("clan-testbed: {error}");
            }
        }
    }
}

/// Creates the state directory (0700: it holds the admin key) and returns its absolute path.
fn prepare_state_dir(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(clan_error::io("create the state directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(clan_error::io("set the mode of", dir))?;
    Ok(fs::canonicalize(dir).map_err(clan_error::io("resolve", dir))?)
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(clan_error::io("remove", dir)(error).into())
        }
        _ => Ok(()),
    }
}
