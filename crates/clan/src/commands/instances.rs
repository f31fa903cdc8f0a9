//! `clan instances list|show|create|delete|add|remove|set`: service instances, their role
//! members and settings in clan.toml.

use std::process::ExitCode;
use std::str::FromStr;

use anyhow::anyhow;
use clan_inventory::{
    Editor, InstanceName, RoleName, RoleTarget, ServiceName, SettingScope, CLAN_TOML,
};
use serde_json::Value;

use super::change::Change;
use super::output::{print_json, print_table};
use super::{clan_dir, Context};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Instances with their service and the machines in each role.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create an instance of a service.
    Create {
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
    Delete { name: InstanceName },
    /// Add a machine or `tag:TAG` to a role.
    Add {
        instance: InstanceName,
        role: RoleName,
        target: RoleTarget,
    },
    /// Remove a machine or `tag:TAG` from a role.
    Remove {
        instance: InstanceName,
        role: RoleName,
        target: RoleTarget,
    },
    /// Set settings: ROLE[@TARGET].KEY=VALUE, for the role, one of its tags or one machine.
    Set {
        instance: InstanceName,
        #[arg(required = true, value_name = "ROLE.KEY=VALUE")]
        settings: Vec<Setting>,
    },
}

/// `ROLE=TARGET`.
#[derive(Clone)]
struct RoleMember {
    role: RoleName,
    target: RoleTarget,
}

impl FromStr for RoleMember {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (role, target) = text
            .split_once('=')
            .ok_or_else(|| anyhow!("expected ROLE=MACHINE or ROLE=tag:TAG"))?;
        Ok(Self {
            role: role.parse()?,
            target: target.parse()?,
        })
    }
}

/// `ROLE[@TARGET].KEY=VALUE`.
#[derive(Clone, Debug, PartialEq)]
struct Setting {
    role: RoleName,
    scope: SettingScope,
    key: String,
    value: Value,
}

impl FromStr for Setting {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let usage = || anyhow!("expected ROLE[@MACHINE|@tag:TAG].KEY=VALUE, got `{text}`");
        let (path, value) = text.split_once('=').ok_or_else(usage)?;
        let (role_part, key) = path.split_once('.').ok_or_else(usage)?;
        let (role, scope) = match role_part.split_once('@') {
            Some((role, target)) => (role, SettingScope::Member(target.parse()?)),
            None => (role_part, SettingScope::Role),
        };
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(usage());
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        Ok(Self {
            role: role.parse()?,
            scope,
            key: key.to_owned(),
            value,
        })
    }
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let dir = clan_dir(context)?;
    let (message, (change, editor)) = match args.command {
        Command::List { json } => {
            let fleet = clan_eval::Fleet::open(&dir)?;
            if json {
                print_json(&fleet.summary.instances)?;
            } else {
                let mut rows = vec![vec!["INSTANCE".into(), "SERVICE".into(), "ROLES".into()]];
                for (name, instance) in &fleet.summary.instances {
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
                        name.clone(),
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
        } => {
            let (change, mut editor) = edit(&dir)?;
            editor.add_instance(&name, &service)?;
            for member in &roles {
                editor.add_role_member(&name, &member.role, &member.target)?;
            }
            apply_settings(&mut editor, &name, &settings)?;
            (
                format!("instances: create {name} ({service})"),
                (change, editor),
            )
        }
        Command::Delete { name } => {
            let (change, mut editor) = edit(&dir)?;
            editor.remove_instance(&name)?;
            (format!("instances: delete {name}"), (change, editor))
        }
        Command::Add {
            instance,
            role,
            target,
        } => {
            let (change, mut editor) = edit(&dir)?;
            editor.add_role_member(&instance, &role, &target)?;
            (
                format!(
                    "instances: add {} to {instance}/{role}",
                    describe_target(&target)
                ),
                (change, editor),
            )
        }
        Command::Remove {
            instance,
            role,
            target,
        } => {
            let (change, mut editor) = edit(&dir)?;
            editor.remove_role_member(&instance, &role, &target)?;
            (
                format!(
                    "instances: remove {} from {instance}/{role}",
                    describe_target(&target)
                ),
                (change, editor),
            )
        }
        Command::Set { instance, settings } => {
            let (change, mut editor) = edit(&dir)?;
            apply_settings(&mut editor, &instance, &settings)?;
            (
                format!("instances: set settings of {instance}"),
                (change, editor),
            )
        }
    };
    // Evaluate before saving so a setting the role's schema refuses leaves clan.toml untouched.
    clan_eval::check_with_toml(&dir, &editor.to_toml())?;
    editor.save()?;
    change.commit(&[CLAN_TOML.into()], &message)?;
    eprintln!("{message}");
    Ok(ExitCode::SUCCESS)
}

/// Takes the clan lock, then reads clan.toml for editing.
fn edit(dir: &std::path::Path) -> anyhow::Result<(Change, Editor)> {
    let change = super::change::begin(dir, &[CLAN_TOML])?;
    Ok((change, Editor::open(dir)?))
}

fn apply_settings(
    editor: &mut Editor,
    instance: &InstanceName,
    settings: &[Setting],
) -> anyhow::Result<()> {
    for setting in settings {
        editor.set_setting(
            instance,
            &setting.role,
            &setting.scope,
            &setting.key,
            &setting.value,
        )?;
    }
    Ok(())
}

fn describe_target(target: &RoleTarget) -> String {
    match target {
        RoleTarget::Machine(machine) => format!("machine {machine}"),
        RoleTarget::Tag(tag) => format!("tag {tag}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_parse_role_scope_key_and_json_or_string_values() {
        let setting: Setting = "server.authorizedKeys=[\"ssh-ed25519 AAAA\"]"
            .parse()
            .unwrap();
        assert_eq!(setting.role.as_str(), "server");
        assert_eq!(setting.scope, SettingScope::Role);
        assert_eq!(setting.value, json!(["ssh-ed25519 AAAA"]));
        let setting: Setting = "default@laptop.greeting=Hello laptop".parse().unwrap();
        assert_eq!(
            setting.scope,
            SettingScope::Member(RoleTarget::Machine("laptop".parse().unwrap()))
        );
        assert_eq!(setting.value, json!("Hello laptop"));
        let setting: Setting = "default@tag:web.tls.port=443".parse().unwrap();
        assert_eq!(setting.key, "tls.port");
        assert_eq!(setting.value, json!(443));
        assert!("server=1".parse::<Setting>().is_err());
        assert!("server..x=1".parse::<Setting>().is_err());
    }
}
