//! Machines of the clan in micro VMs (`clan vms`): boot one with `clan-vm`, then deploy its
//! configuration into it by the normal deploy path (vars first, the agent uploaded over SSH,
//! host keys checked, magic rollback), so its secrets arrive as on a real machine. Also
//! listing, stopping, the console log and the route `clan ssh --vm` takes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clan_deploy::deploy::DeployOptions;
use clan_deploy::fleet::MachineResult;
use clan_deploy::ssh::{HostKeyCheck, SshOptions};
use clan_inventory::MachineName;
use serde::Serialize;

use crate::vars::Prompter;
use crate::{Error, Event, Progress};

/// What the runner reports while a VM starts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum VmEvent {
    /// How QEMU will run the guest, and why.
    Accel {
        machine: String,
        accel: clan_vm::Accel,
    },
    /// sshd answers in the VM.
    Booted {
        machine: String,
        ssh_port: u16,
        times: clan_vm::BootTimes,
        new_disk: bool,
    },
}

/// `clan vms run`.
pub struct RunRequest {
    pub machine: MachineName,
    pub memory_mib: u32,
    pub cpus: u32,
    pub publish: Vec<clan_vm::Publish>,
    pub boot_timeout: Duration,
    /// Deploy the machine's configuration once booted (`false`: a plain Debian VM).
    pub deploy: bool,
    /// Run vars generator scripts without bubblewrap.
    pub no_sandbox: bool,
    pub options: DeployOptions,
    /// Notes about the one-time image build (the root filesystem builder takes a plain fn).
    pub note: fn(&str),
}

/// A VM that runs, and how its deploy went.
pub struct RunOutcome {
    pub booted: clan_vm::Booted,
    /// `None` when not deployed.
    pub deploy: Option<MachineResult>,
}

/// One machine's VM as `clan vms list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmStatus {
    pub machine: String,
    pub running: Option<clan_vm::Running>,
}

/// Where the clan's VMs live (outside the clan directory).
pub fn vms_dir(dir: &Path) -> PathBuf {
    clan_vm::vms_dir(dir)
}

/// The machine `machine` of the clan at `dir`, or the error naming the machines it has.
fn check_machine(dir: &Path, machine: &MachineName) -> Result<(), Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    crate::machines::select(&fleet, std::slice::from_ref(machine), &[])?;
    Ok(())
}

/// Boots `request.machine` in a VM and deploys it. A failed deploy leaves the VM running
/// (to look into it) and is a result, not an error.
pub fn run(
    dir: &Path,
    request: &RunRequest,
    prompter: &mut dyn Prompter,
    progress: &dyn Progress,
) -> Result<RunOutcome, Error> {
    check_machine(dir, &request.machine)?;
    let accel = clan_vm::detect_accel();
    progress.event(Event::Vm(VmEvent::Accel {
        machine: request.machine.to_string(),
        accel: accel.clone(),
    }));
    let options = clan_vm::RunOptions {
        machine: request.machine.to_string(),
        vms_dir: vms_dir(dir),
        cache_dir: clan_host::default_cache_dir(),
        memory_mib: request.memory_mib,
        cpus: request.cpus,
        publish: request.publish.clone(),
        lan: None,
        boot_timeout: request.boot_timeout,
        progress: request.note,
    };
    let booted = clan_vm::run(&options, &accel)?;
    progress.event(Event::Vm(VmEvent::Booted {
        machine: request.machine.to_string(),
        ssh_port: booted.running.ssh_port,
        times: booted.times.clone(),
        new_disk: booted.new_disk,
    }));
    if !request.deploy {
        return Ok(RunOutcome {
            booted,
            deploy: None,
        });
    }
    let update = crate::deploy::UpdateRequest {
        machines: vec![request.machine.clone()],
        tags: Vec::new(),
        target_host: Some(booted.running.target_host()),
        no_sandbox: request.no_sandbox,
        jobs: 1,
        // A fresh server's first contact: the VM's first host key is the one the runner made
        // and wrote into the VM's known_hosts; the deploy then installs the clan's own.
        ssh: ssh_options(&booted.running, HostKeyCheck::Tofu),
        options: request.options.clone(),
    };
    let mut results = crate::deploy::update(dir, &update, prompter, progress)?;
    Ok(RunOutcome {
        booted,
        deploy: results.pop(),
    })
}

fn ssh_options(running: &clan_vm::Running, host_key_check: HostKeyCheck) -> SshOptions {
    SshOptions {
        config: Some(running.ssh_config.clone()),
        host_key_check,
        connect_timeout: None,
    }
}

/// The running VM of `machine`, or the error saying it does not run.
pub fn running(dir: &Path, machine: &MachineName) -> Result<clan_vm::Running, Error> {
    clan_vm::VmDir::new(&vms_dir(dir), machine.as_str())
        .running()?
        .ok_or_else(|| {
            Error::Vm(clan_vm::Error::NotRunning {
                machine: machine.to_string(),
            })
        })
}

/// How `clan ssh <machine> --vm` reaches the VM: its loopback target and SSH options (its
/// own `ssh_config` and known hosts, checked strictly).
pub fn ssh_route(dir: &Path, machine: &MachineName) -> Result<(String, SshOptions), Error> {
    let running = running(dir, machine)?;
    Ok((
        running.target_host(),
        ssh_options(&running, HostKeyCheck::Strict),
    ))
}

/// Shuts `machine`'s VM down (ACPI power button, then QMP `quit` after `grace`).
pub fn stop(dir: &Path, machine: &MachineName, grace: Duration) -> Result<clan_vm::Running, Error> {
    check_machine(dir, machine)?;
    Ok(clan_vm::stop(&vms_dir(dir), machine.as_str(), grace)?)
}

/// Every machine of the clan that has had a VM, and whether it runs.
pub fn list(dir: &Path) -> Result<Vec<VmStatus>, Error> {
    Ok(clan_vm::list(&vms_dir(dir))?
        .into_iter()
        .map(|(machine, running)| VmStatus { machine, running })
        .collect())
}

/// The console log of `machine`'s VM (the last boot's).
pub fn console_log(dir: &Path, machine: &MachineName) -> Result<PathBuf, Error> {
    check_machine(dir, machine)?;
    let vm = clan_vm::VmDir::new(&vms_dir(dir), machine.as_str());
    let log = vm.console_log();
    if log.is_file() {
        Ok(log)
    } else {
        Err(Error::Vm(clan_vm::Error::NoConsoleLog {
            machine: machine.to_string(),
        }))
    }
}
