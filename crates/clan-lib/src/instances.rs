//! Service instances in clan.toml: create, delete, add or remove role members, set settings.
//! Every edit is evaluated before it is saved, so a setting the role's schema refuses leaves
//! clan.toml untouched; one commit per edit.

use std::path::Path;
use std::str::FromStr;

use clan_inventory::{
    Editor, InstanceName, RoleName, RoleTarget, ServiceName, SettingScope, CLAN_TOML,
};
use indexmap::IndexMap;
use serde_json::Value;

use crate::{change, Error, Progress};

/// A member of a role: `ROLE=MACHINE` or `ROLE=tag:TAG`.
#[derive(Clone, Debug)]
pub struct RoleMember {
    pub role: RoleName,
    pub target: RoleTarget,
}

/// Why a [`RoleMember`] or [`Setting`] did not parse.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("expected ROLE=MACHINE or ROLE=tag:TAG")]
    Member,
    #[error("expected ROLE[@MACHINE|@tag:TAG].KEY=VALUE, got `{0}`")]
    Setting(String),
    #[error(transparent)]
    Name(#[from] clan_inventory::NameError),
}

impl FromStr for RoleMember {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let (role, target) = text.split_once('=').ok_or(ParseError::Member)?;
        Ok(Self {
            role: role.parse()?,
            target: target.parse()?,
        })
    }
}

/// A setting: for a role, one of its tags or one machine (`ROLE[@TARGET].KEY=VALUE`; the
/// value is JSON, or else a string).
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub role: RoleName,
    pub scope: SettingScope,
    /// Dotted path below the scope's settings.
    pub key: String,
    pub value: Value,
}

impl FromStr for Setting {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let usage = || ParseError::Setting(text.to_owned());
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

/// One change to the instances.
pub enum Edit {
    Create {
        name: InstanceName,
        service: ServiceName,
        roles: Vec<RoleMember>,
        settings: Vec<Setting>,
    },
    Delete {
        name: InstanceName,
    },
    Add {
        instance: InstanceName,
        role: RoleName,
        target: RoleTarget,
    },
    Remove {
        instance: InstanceName,
        role: RoleName,
        target: RoleTarget,
    },
    Set {
        instance: InstanceName,
        settings: Vec<Setting>,
    },
}

/// The instances as evaluated: instance → {service, roles: {role: [machines]}}.
pub fn list(dir: &Path) -> Result<IndexMap<InstanceName, Value>, Error> {
    Ok(clan_eval::Fleet::open(dir)?.summary.instances)
}

/// Applies `edit` to clan.toml if the clan still evaluates with it; returns the commit
/// message, which also describes the edit.
pub fn edit(dir: &Path, edit: &Edit, progress: &dyn Progress) -> Result<String, Error> {
    let change = change::begin(dir, &[CLAN_TOML], progress)?;
    let mut editor = Editor::open(dir)?;
    let message = match edit {
        Edit::Create {
            name,
            service,
            roles,
            settings,
        } => {
            editor.add_instance(name, service)?;
            for member in roles {
                editor.add_role_member(name, &member.role, &member.target)?;
            }
            apply_settings(&mut editor, name, settings)?;
            format!("instances: create {name} ({service})")
        }
        Edit::Delete { name } => {
            editor.remove_instance(name)?;
            format!("instances: delete {name}")
        }
        Edit::Add {
            instance,
            role,
            target,
        } => {
            editor.add_role_member(instance, role, target)?;
            format!(
                "instances: add {} to {instance}/{role}",
                describe_target(target)
            )
        }
        Edit::Remove {
            instance,
            role,
            target,
        } => {
            editor.remove_role_member(instance, role, target)?;
            format!(
                "instances: remove {} from {instance}/{role}",
                describe_target(target)
            )
        }
        Edit::Set { instance, settings } => {
            apply_settings(&mut editor, instance, settings)?;
            format!("instances: set settings of {instance}")
        }
    };
    clan_eval::check_with_toml(dir, &editor.to_toml())?;
    editor.save()?;
    change.commit(&[CLAN_TOML.into()], &message)?;
    Ok(message)
}

fn apply_settings(
    editor: &mut Editor,
    instance: &InstanceName,
    settings: &[Setting],
) -> Result<(), Error> {
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
