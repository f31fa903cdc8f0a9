//! `clan testbed up|down|status`: a fleet of local test machines (systemd-nspawn containers
//! with sshd, see the `clan-testbed` crate) for trying deploys without real hardware.
//!
//! `up` returns while the machines keep running (their containers get their own session;
//! console logs go to `<state-dir>/logs/`); `down` and `status` find them again through the
//! state directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clan_testbed::{Machine, Options, Testbed};
use clap::Subcommand;

use super::output::{print_json, print_line, printer};
use super::Context;
use crate::report;

/// Where a testbed's keys, `ssh_config`, logs and state live unless `--state-dir` says otherwise.
const DEFAULT_STATE_DIR: &str = "/run/clan-testbed";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TestbedCommand,
}

#[derive(Subcommand)]
enum TestbedCommand {
    /// Start test machines; they keep running after this command exits.
    #[command(after_help = "Examples:
  sudo clan testbed up -n 3
  sudo clan testbed up web01 db01 --state-dir /tmp/fleet
  sudo clan testbed up backup01 web01 --package borgbackup --package restic")]
    Up(UpArgs),
    /// Stop the test machines and remove their network.
    #[command(after_help = "Example:
  sudo clan testbed down")]
    Down(StateArgs),
    /// Show the test machines, their addresses and whether they run.
    #[command(after_help = "Example:
  clan testbed status --json")]
    Status(StatusArgs),
}

#[derive(clap::Args)]
struct StateArgs {
    /// Directory holding the testbed's keys, ssh_config, logs and state.
    #[arg(long, env = "CLAN_TESTBED_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(clap::Args)]
struct UpArgs {
    /// Machine names (each becomes the machine's hostname).
    #[arg(conflicts_with = "count")]
    names: Vec<String>,

    /// Start this many machines, named machine-1 … machine-N (default 3).
    #[arg(short = 'n', long)]
    count: Option<usize>,

    #[command(flatten)]
    state: StateArgs,

    /// Print the testbed as JSON on stdout.
    #[arg(long)]
    json: bool,

    /// Write the machines' host keys into the testbed's known_hosts (for tools that need
    /// them known up front); by default they are unknown, as a fresh server's are.
    #[arg(long)]
    trust_host_keys: bool,

    /// A Debian package added to the machines' root filesystem (repeatable; another list
    /// builds and caches another root filesystem).
    #[arg(long = "package", value_name = "NAME")]
    packages: Vec<String>,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    state: StateArgs,

    /// Print the testbed as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, _context: &Context) -> anyhow::Result<ExitCode> {
    match args.command {
        TestbedCommand::Up(args) => up(args),
        TestbedCommand::Down(args) => down(args),
        TestbedCommand::Status(args) => status(args),
    }
}

fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut options = if args.names.is_empty() {
        Options::numbered(&args.state.state_dir, args.count.unwrap_or(3))
    } else {
        Options::named(&args.state.state_dir, args.names)
    };
    options.detach = true;
    options.trust_host_keys = args.trust_host_keys;
    options.extra_packages = args.packages;
    options.progress = |message| printer().note(message);
    let testbed = Testbed::up(&options).map_err(|error| match error {
        clan_testbed::Error::Host(clan_host::Error::NotRoot) => {
            report::hinted(error.to_string(), "run `sudo clan testbed up`")
        }
        other => anyhow::Error::new(other).context("could not start the test machines"),
    })?;
    print(&testbed, args.json)?;
    if !args.json {
        printer().note(format_args!(
            "machines keep running; stop them with `clan testbed down --state-dir {}`",
            testbed.state_dir().display()
        ));
    }
    testbed.keep_running();
    Ok(ExitCode::SUCCESS)
}

fn down(args: StateArgs) -> anyhow::Result<ExitCode> {
    match Testbed::attach(&args.state_dir) {
        Ok(testbed) => {
            let count = testbed.machines().len();
            testbed.down()?;
            printer().note(format_args!("stopped {count} test machines"));
        }
        Err(clan_testbed::Error::NoTestbed { .. }) => {
            printer().note(format_args!(
                "no testbed in {}; nothing to stop",
                args.state_dir.display()
            ));
        }
        Err(error) => return Err(error.into()),
    }
    Ok(ExitCode::SUCCESS)
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    match Testbed::attach(&args.state.state_dir) {
        Ok(testbed) => {
            print(&testbed, args.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(clan_testbed::Error::NoTestbed { .. }) => {
            printer().failure(format_args!(
                "no testbed in {}",
                args.state.state_dir.display()
            ));
            Ok(ExitCode::from(report::EXIT_FAILED))
        }
        Err(error) => Err(error.into()),
    }
}

/// Prints the machines (name, address, SSH target, running) and the `ssh_config` path.
fn print(testbed: &Testbed, json: bool) -> anyhow::Result<()> {
    let rows: Vec<(&Machine, bool)> = testbed
        .machines()
        .iter()
        .map(|machine| Ok((machine, testbed.is_running(&machine.name)?)))
        .collect::<Result<_, clan_testbed::Error>>()?;
    if json {
        let machines: Vec<serde_json::Value> = rows
            .iter()
            .map(|(machine, running)| {
                serde_json::json!({
                    "name": machine.name,
                    "address": machine.address,
                    "ssh_target": machine.ssh_target(),
                    "ssh_port": machine.ssh_port,
                    "running": running,
                })
            })
            .collect();
        let document = serde_json::json!({
            "state_dir": testbed.state_dir(),
            "ssh_config": testbed.ssh_config(),
            "admin_key": testbed.admin_key(),
            "host_address": testbed.host_address(),
            "host_interface": testbed.host_interface(),
            "known_hosts": testbed.known_hosts(),
            "machines": machines,
        });
        print_json(&document)?;
        return Ok(());
    }
    let width = rows.iter().map(|(m, _)| m.name.len()).max().unwrap_or(0);
    for (machine, running) in &rows {
        let state = if *running { "running" } else { "stopped" };
        print_line(format_args!(
            "{:width$}  {:15}  {state}",
            machine.name,
            machine.address.to_string()
        ))?;
    }
    print_line(format_args!(
        "ssh config: {}",
        testbed.ssh_config().display()
    ))?;
    if let Some((first, _)) = rows.first() {
        printer().note(format_args!(
            "try: ssh -F {} {}",
            testbed.ssh_config().display(),
            first.name
        ));
    }
    Ok(())
}
