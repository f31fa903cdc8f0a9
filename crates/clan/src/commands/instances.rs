//! `clan instances list|show|create|delete|add|remove|set`: service instances, their role
//! members and settings in clan.toml (`clan_lib::instances`).

use std::process::ExitCode;

use clan_inventory::{InstanceName, RoleName, RoleTarget, ServiceName};
use clan_lib::instances::{Edit, RoleMember, Setting};

use super::output::{print_json, print_table};
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
    /// Instances with their service and the machines in each role.
    #[command(after_help = "Examples:
  clan instances list
  clan instances list --json")]
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an instance of a service.
    #[command(after_help = "Example:
  clan instances create ssh --service sshd --role server=tag:all \\
      --setting 'server.authorizedKeys=[\"ssh-ed25519 AAAA...\"]'")]
    Create {
        /// The instance's name.
        name: InstanceName,
        /// The service (`clan services list`).
        #[arg(long)]
        service: ServiceName,
        /// ROLE=MACHINE or ROLE=tag:TAG; repeatable.
        #[arg(long = "role", value_name = "ROLE=TARGET")]
        roles: Vec<RoleMember>,
        /// ROLE[@TARGET].KEY=VALUE (VALUE is JSON, or else a string); repeatable.
        #[arg(long = "setting", value_name = "ROLE.KEY=VALUE")]
        settings: Vec<Setting>,
    },
    /// Delete an instance.
    #[command(after_help = "Example:
  clan instances delete ssh")]
    Delete {
        /// The instance.
        name: InstanceName,
    },
    /// Add a machine or `tag:TAG` to a role.
    #[command(after_help = "Examples:
  clan instances add ssh server web01
  clan instances add ssh server tag:web")]
    Add {
        /// The instance.
        instance: InstanceName,
        /// One of its service's roles.
        role: RoleName,
        /// A machine, or `tag:TAG` for every machine with that tag.
        target: RoleTarget,
    },
    /// Remove a machine or `tag:TAG` from a role.
    #[command(after_help = "Example:
  clan instances remove ssh server web01")]
    Remove {
        /// The instance.
        instance: InstanceName,
        /// The role.
        role: RoleName,
        /// The machine, or `tag:TAG`, to remove.
        target: RoleTarget,
    },
    /// Set settings: ROLE[@TARGET].KEY=VALUE, for the role, one of its tags or one machine.
    #[command(after_help = "Examples:
  clan instances set ssh server.port=2222           # the whole role
  clan instances set ssh 'server@web01.port=2222'   # one machine (role < tag < machine)")]
    Set {
        /// The instance.
        instance: InstanceName,
        /// ROLE[@TARGET].KEY=VALUE (VALUE is JSON, or else a string); TARGET is a machine or
        /// `tag:TAG`.
        #[arg(required = true, value_name = "ROLE.KEY=VALUE")]
        settings: Vec<Setting>,
    },
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let dir = clan_dir(context)?;
    let edit = match args.command {
        Command::List { json } => {
            let instances = clan_lib::instances::list(&dir)?;
            if json {
                print_json(&instances)?;
            } else {
                let mut rows = vec![vec!["INSTANCE".into(), "SERVICE".into(), "ROLES".into()]];
                for (name, instance) in &instances {
                    let roles = instance["roles"].as_object().map(|roles| {
                        roles
                            .iter()
                            .map(|(role, machines)| {
                                format!("{role}: {}", machines.as_array().map_or(0, Vec::len))
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    });
                    rows.push(vec![
                        name.to_string(),
                        instance["service"].as_str().unwrap_or("").to_owned(),
                        roles.unwrap_or_default(),
                    ]);
                }
                print_table(&rows)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Create {
            name,
            service,
            roles,
            settings,
        } => Edit::Create {
            name,
            service,
            roles,
            settings,
        },
        Command::Delete { name } => Edit::Delete { name },
        Command::Add {
            instance,
            role,
            target,
        } => Edit::Add {
            instance,
            role,
            target,
        },
        Command::Remove {
            instance,
            role,
            target,
        } => Edit::Remove {
            instance,
            role,
            target,
        },
        Command::Set { instance, settings } => Edit::Set { instance, settings },
    };
    let message = clan_lib::instances::edit(&dir, &edit, &Terminal)?;
    super::output::printer().note(message);
    Ok(ExitCode::SUCCESS)
}
