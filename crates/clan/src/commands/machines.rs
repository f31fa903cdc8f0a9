//! `clan machines create|list|show|delete`, `update|generations|rollback|status` (in `deploy`)
//! and `update-hardware-config` (in `hardware`).

use std::process::ExitCode;

use clan_inventory::{MachineClass, MachineName, TagName};
use clan_lib::machines::NewMachine;

mod deploy;
mod hardware;

pub use deploy::SshArgs;

use super::output::{print_json, print_line, print_table, printer};
use super::{clan_dir, Context, Terminal};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub clan: super::ClanArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Add a machine to clan.toml.
    #[command(after_help = "Example:
  clan machines create web01 --tags web --target-host root@203.0.113.4")]
    Create {
        /// The machine's name (a-z, 0-9 and `-`).
        name: MachineName,
        /// Tags selecting the machine into service roles (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<TagName>,
        /// How the machine is deployed.
        #[arg(long, value_enum, default_value = "linux")]
        class: ClassArg,
        /// `[user@]host[:port]` to deploy to.
        #[arg(long)]
        target_host: Option<String>,
        /// A line saying what the machine is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// List machines, optionally only those with all the given tags.
    #[command(after_help = "Examples:
  clan machines list
  clan machines list --tags web --json")]
    List {
        #[command(flatten)]
        tags: TagsArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a machine's fully evaluated configuration.
    #[command(after_help = "Examples:
  clan machines show web01
  clan machines show web01 --json")]
    Show {
        /// The machine.
        name: MachineName,
        /// Print the evaluated configuration as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a machine and its role memberships from clan.toml.
    #[command(after_help = "Example:
  clan machines delete old01")]
    Delete {
        /// The machine: its keys, vars and group links go too.
        name: MachineName,
    },
    /// Deploy machines (all when none is named): build, upload and activate their generations.
    #[command(visible_alias = "u")]
    Update(deploy::UpdateArgs),
    /// A machine's generation history; without a machine, every machine's current generation.
    Generations(deploy::GenerationsArgs),
    /// Re-activate an earlier generation of a machine (default: the previous one).
    Rollback(deploy::RollbackArgs),
    /// Where each machine stands: reached how, its generation, in sync with the clan or not,
    /// its last deploy.
    Status(deploy::StatusArgs),
    /// Fetch a machine's hardware report (nixos-facter's format) into
    /// machines/<machine>/facter.json and commit it.
    UpdateHardwareConfig(hardware::UpdateHardwareArgs),
}

/// `--tags`, the same in every command that selects machines.
#[derive(clap::Args)]
pub struct TagsArg {
    /// Only machines with all of these tags (comma-separated or repeated; `all` and the class
    /// name, e.g. `linux`, are implied tags of every machine).
    #[arg(long = "tags", value_name = "TAG", value_delimiter = ',', num_args = 1..)]
    pub tags: Vec<TagName>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ClassArg {
    Linux,
    Nixos,
    Darwin,
}

impl From<ClassArg> for MachineClass {
    fn from(class: ClassArg) -> Self {
        match class {
            ClassArg::Linux => MachineClass::Linux,
            ClassArg::Nixos => MachineClass::Nixos,
            ClassArg::Darwin => MachineClass::Darwin,
        }
    }
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let dir = clan_dir(context)?;
    match args.command {
        Command::Create {
            name,
            tags,
            class,
            target_host,
            description,
        } => {
            let machine = NewMachine {
                name,
                tags,
                class: class.into(),
                target_host,
                description,
            };
            clan_lib::machines::create(&dir, &machine, &Terminal)?;
            printer().note(format_args!("created machine `{}`", machine.name));
        }
        Command::List { tags, json } => {
            let machines = clan_lib::machines::list(&dir, &tags.tags)?;
            if json {
                print_json(&machines)?;
            } else {
                let mut rows = vec![vec![
                    "NAME".into(),
                    "CLASS".into(),
                    "TAGS".into(),
                    "TARGET".into(),
                    "SERVICES".into(),
                ]];
                for machine in machines {
                    let mut services: Vec<String> = machine
                        .roles
                        .iter()
                        .map(|m| format!("{}/{}", m.instance, m.role))
                        .collect();
                    services.dedup();
                    rows.push(vec![
                        machine.name.to_string(),
                        machine.class.to_string(),
                        machine.tags.join(","),
                        machine.target_host.clone().unwrap_or_else(|| "-".into()),
                        services.join(","),
                    ]);
                }
                print_table(&rows)?;
            }
        }
        Command::Show { name, json } => {
            let machine = clan_lib::machines::show(&dir, &name)?;
            if json {
                print_json(&machine)?;
            } else {
                print_machine(&machine)?;
            }
        }
        Command::Delete { name } => {
            let deleted = clan_lib::machines::delete(&dir, &name, &Terminal)?;
            for (path, error) in &deleted.rekey_failures {
                printer().error(
                    format_args!("could not re-key `{}`: {error}", path.display()),
                    None,
                );
            }
            printer().note(format_args!(
                "deleted machine `{name}`{}",
                if deleted.vars_and_keys.is_empty() {
                    String::new()
                } else {
                    format!(
                        " and its vars and keys ({} paths)",
                        deleted.vars_and_keys.len()
                    )
                }
            ));
        }
        Command::Update(args) => return deploy::update(args, &dir),
        Command::Generations(args) => return deploy::generations(args, &dir),
        Command::Rollback(args) => return deploy::rollback(args, &dir),
        Command::Status(args) => return deploy::status(args, &dir),
        Command::UpdateHardwareConfig(args) => return hardware::update(args, &dir),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_machine(machine: &clan_eval::EvaluatedMachine) -> anyhow::Result<()> {
    let summary = &machine.summary;
    let config = &machine.config;
    print_line(format_args!("machine  {}", summary.name))?;
    print_line(format_args!("class    {}", summary.class))?;
    print_line(format_args!(
        "tags     {}",
        if summary.tags.is_empty() {
            "-".to_owned()
        } else {
            summary.tags.join(", ")
        }
    ))?;
    print_line(format_args!(
        "target   {}",
        summary.target_host.as_deref().unwrap_or("-")
    ))?;
    for membership in &summary.roles {
        print_line(format_args!(
            "role     {} of instance {} ({})",
            membership.role, membership.instance, membership.service
        ))?;
    }
    let section = |title: &str, items: Vec<String>| -> anyhow::Result<()> {
        if !items.is_empty() {
            print_line(format_args!("{title}:"))?;
            for item in items {
                print_line(format_args!("  {item}"))?;
            }
        }
        Ok(())
    };
    section(
        "files",
        config
            .files
            .iter()
            .map(|(path, file)| format!("{path} ({} {}:{})", file.mode, file.owner, file.group))
            .collect(),
    )?;
    section(
        "units",
        config.units.keys().map(ToString::to_string).collect(),
    )?;
    section(
        "users",
        config.users.keys().map(ToString::to_string).collect(),
    )?;
    section(
        "groups",
        config.groups.keys().map(ToString::to_string).collect(),
    )?;
    section(
        "packages",
        config
            .packages
            .iter()
            .map(|(family, names)| {
                format!(
                    "{family}: {}",
                    names.iter().cloned().collect::<Vec<_>>().join(" ")
                )
            })
            .collect(),
    )?;
    section("generators", config.generators.keys().cloned().collect())?;
    section(
        "state",
        config.state.keys().map(ToString::to_string).collect(),
    )?;
    let ports: Vec<String> = config
        .firewall
        .tcp
        .iter()
        .map(|port| format!("{port}/tcp"))
        .chain(config.firewall.udp.iter().map(|port| format!("{port}/udp")))
        .collect();
    section("firewall", ports)?;
    if let Some(facts) = &machine.hardware {
        section(
            "hardware",
            hardware::facts_lines(facts)
                .into_iter()
                .map(|(label, value)| format!("{label}: {value}"))
                .collect(),
        )?;
    }
    Ok(())
}
