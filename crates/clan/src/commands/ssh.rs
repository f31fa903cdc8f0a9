//! `clan ssh <machine> [-- command…]`: a login or one command on a machine, reached exactly
//! as deploys reach it (the same routes raced, the same host-key trust), saying which route.

use std::path::Path;
use std::process::ExitCode;

use clan_inventory::MachineName;

use super::machines::SshArgs;
use super::output::print_json;
use super::{clan_dir, Context};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  clan ssh web01                                   # a login shell
  clan ssh web01 -- systemctl is-active sshd       # one command; its exit code is clan's
  clan ssh web01 -t -- htop                        # a command that needs a terminal
  clan ssh web01 --json                            # where web01 is reached, without connecting
  clan ssh web01 --vm                              # into web01's micro VM (`clan vms run web01`)")]
pub struct Args {
    #[command(flatten)]
    pub clan: super::ClanArg,
    /// The machine to reach.
    machine: MachineName,
    /// The command to run instead of a login shell. As with ssh, its words are joined with
    /// spaces and run by the machine's shell.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
    /// Give the command a terminal (as `ssh -t`).
    #[arg(short = 't', long)]
    tty: bool,
    /// Print the machine's routes (in the order they are raced, where each came from) and the
    /// trusted clan host key as JSON instead of connecting.
    #[arg(long)]
    json: bool,
    /// Reach the machine's micro VM (started by `clan vms run`) instead of the machine.
    #[arg(long, conflicts_with = "target_host")]
    vm: bool,
    #[command(flatten)]
    ssh: SshArgs,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let dir = clan_dir(context)?;
    if args.json {
        let target_host = match args.vm {
            true => Some(clan_lib::vms::ssh_route(&dir, &args.machine)?.0),
            false => args.ssh.target_host.clone(),
        };
        let route = clan_lib::deploy::route(&dir, &args.machine, target_host.as_deref())?;
        print_json(&route)?;
        return Ok(ExitCode::SUCCESS);
    }
    session(&dir, &args)
}

fn session(dir: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let (target_host, options) = if args.vm {
        let (target, options) = clan_lib::vms::ssh_route(dir, &args.machine)?;
        (Some(target), options)
    } else {
        (args.ssh.target_host.clone(), args.ssh.options())
    };
    let (_control_dir, host) =
        clan_lib::deploy::connect(dir, &args.machine, target_host.as_deref(), &options)?;
    if let Some(used) = host.route_used() {
        super::output::printer().note(format_args!(
            "reached {} at {} ({}) in {} ms",
            args.machine, used.target, used.source, used.elapsed_ms
        ));
    }
    let command = (!args.command.is_empty()).then(|| args.command.join(" "));
    let code = host.session(command.as_deref(), args.tty)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}
