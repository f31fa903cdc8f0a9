//! `clan vms run|list|stop|console`: machines of the clan in micro VMs (QEMU, see the
//! `clan-vm` crate), booted and deployed by `clan_lib::vms`. `run` returns while the VM keeps
//! running; `clan ssh <machine> --vm` logs in to it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clan_deploy::deploy::{AgentBinary, DeployOptions};
use clan_inventory::MachineName;
use clap::Subcommand;
use serde::Serialize;

use super::output::{print_json, print_line, print_table, printer};
use super::{clan_dir, Context, Terminal, TerminalPrompter};
use crate::report::EXIT_FAILED;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub clan: super::ClanArg,
    #[command(subcommand)]
    command: VmsCommand,
}

#[derive(Subcommand)]
enum VmsCommand {
    /// Boot a machine in a micro VM and deploy its configuration into it; the VM keeps
    /// running after this command exits.
    #[command(after_help = "Examples:
  clan vms run web01
  clan vms run web01 --publish 8080:80 --memory 1024 --cpus 2
  clan vms run web01 --no-deploy          # plain Debian, to deploy by hand")]
    Run(RunArgs),
    /// The clan's VMs and whether they run.
    #[command(after_help = "Example:
  clan vms list --json")]
    List(JsonArg),
    /// Shut a machine's VM down (ACPI power button, then QEMU's quit).
    #[command(after_help = "Example:
  clan vms stop web01")]
    Stop(StopArgs),
    /// Print the serial console log of a machine's VM (its last boot).
    #[command(after_help = "Example:
  clan vms console web01 | tail")]
    Console(MachineArg),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The machine to boot.
    machine: MachineName,
    /// Forward a host port to a guest port: `[ADDRESS:]HOST_PORT:GUEST_PORT` (TCP; the
    /// address is 127.0.0.1 unless given). Repeatable.
    #[arg(long, value_name = "[ADDR:]HOST:GUEST")]
    publish: Vec<clan_vm::Publish>,
    /// Memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Seconds to wait for sshd in the VM before giving up (TCG boots take 10-30 s).
    #[arg(long, default_value_t = 300)]
    boot_timeout: u64,
    /// Boot only; do not deploy the machine's configuration.
    #[arg(long)]
    no_deploy: bool,
    /// Seconds the deploy waits for the confirmation of magic rollback.
    #[arg(long, default_value_t = 30)]
    confirm_timeout: u64,
    /// Answers for vars prompts, as for `clan machines update`.
    #[arg(long, value_name = "FILE")]
    prompt_values: Option<std::path::PathBuf>,
    /// Run vars generator scripts without bubblewrap.
    #[arg(long)]
    no_sandbox: bool,
    /// Print the running VM as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct JsonArg {
    /// Print the VMs as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct StopArgs {
    /// The machine whose VM to stop.
    machine: MachineName,
    /// Seconds the guest gets to power off before QEMU is ended.
    #[arg(long, default_value_t = 60)]
    grace: u64,
    /// Print the stopped VM as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct MachineArg {
    /// The machine whose console log to print.
    machine: MachineName,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let dir = clan_dir(context)?;
    match args.command {
        VmsCommand::Run(args) => run_vm(&dir, args),
        VmsCommand::List(args) => list(&dir, args.json),
        VmsCommand::Stop(args) => stop(&dir, &args),
        VmsCommand::Console(args) => {
            let log = clan_lib::vms::console_log(&dir, &args.machine)?;
            let text = std::fs::read(&log)?;
            print_line(String::from_utf8_lossy(&text).trim_end())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `vms run --json`: the running VM and the deploy's outcome.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunJson<'a> {
    #[serde(flatten)]
    running: &'a clan_vm::Running,
    times: &'a clan_vm::BootTimes,
    new_disk: bool,
    deployed: Option<bool>,
    generation: Option<&'a str>,
}

fn run_vm(dir: &Path, args: RunArgs) -> anyhow::Result<ExitCode> {
    let request = clan_lib::vms::RunRequest {
        machine: args.machine.clone(),
        memory_mib: args.memory,
        cpus: args.cpus,
        publish: args.publish,
        boot_timeout: Duration::from_secs(args.boot_timeout),
        deploy: !args.no_deploy,
        no_sandbox: args.no_sandbox,
        options: DeployOptions {
            agent: AgentBinary::current()?,
            confirm_timeout: Some(Duration::from_secs(args.confirm_timeout)),
            lock_timeout: Duration::from_secs(60),
            dry_run: false,
        },
        note: |message| printer().note(message),
    };
    let mut prompter = TerminalPrompter::new(args.prompt_values);
    let outcome = clan_lib::vms::run(dir, &request, &mut prompter, &Terminal)?;
    let running = &outcome.booted.running;
    let deployed = outcome.deploy.as_ref().map(|d| d.result.is_ok());
    if args.json {
        print_json(&RunJson {
            running,
            times: &outcome.booted.times,
            new_disk: outcome.booted.new_disk,
            deployed,
            generation: outcome
                .deploy
                .as_ref()
                .and_then(|d| d.generation.as_deref()),
        })?;
    } else {
        let machine = &args.machine;
        let printer = printer();
        match &outcome.deploy {
            Some(result) => match &result.result {
                Ok(_) => printer.note(format_args!("{machine} is deployed in its VM")),
                Err((stage, error)) => printer.failure(format_args!(
                    "the deploy of {machine} into its VM failed ({stage}): {error}; the VM keeps running"
                )),
            },
            None => printer.note(format_args!("{machine}'s VM runs (not deployed)")),
        }
        print_line(format_args!(
            "ssh:      clan ssh {machine} --vm   (root@127.0.0.1 port {})",
            running.ssh_port
        ))?;
        for publish in &running.publish {
            print_line(format_args!("publish:  {publish}"))?;
        }
        print_line(format_args!(
            "console:  clan vms console {machine}   ({})",
            running.console_log.display()
        ))?;
        print_line(format_args!("stop:     clan vms stop {machine}"))?;
    }
    Ok(if deployed == Some(false) {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

fn list(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let vms = clan_lib::vms::list(dir)?;
    if json {
        print_json(&vms)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["MACHINE", "STATE", "PID", "SSH", "ACCEL", "PUBLISH"]
        .map(str::to_owned)
        .to_vec()];
    for vm in &vms {
        rows.push(match &vm.running {
            Some(running) => vec![
                vm.machine.clone(),
                "running".to_owned(),
                running.pid.to_string(),
                format!("127.0.0.1:{}", running.ssh_port),
                running.accel.mode.as_str().to_owned(),
                running
                    .publish
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ],
            None => vec![
                vm.machine.clone(),
                "stopped".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                String::new(),
            ],
        });
    }
    print_table(&rows)?;
    Ok(ExitCode::SUCCESS)
}

fn stop(dir: &Path, args: &StopArgs) -> anyhow::Result<ExitCode> {
    let running = clan_lib::vms::stop(dir, &args.machine, Duration::from_secs(args.grace))?;
    if args.json {
        print_json(&running)?;
    } else {
        printer().note(format_args!(
            "stopped {}'s VM (QEMU pid {})",
            args.machine, running.pid
        ));
    }
    Ok(ExitCode::SUCCESS)
}
