//! The inventory's data model, in clan-core's vocabulary and nesting so that clan-core's
//! `inventory.json` maps onto it 1:1.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::names::{InstanceName, MachineName, RoleName, ServiceName, TagName};

/// Everything `clan.toml` (merged with `inventory.json`) declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "clan.toml",
    description = "A clan's inventory: its machines and the service instances that span them."
)]
pub struct Inventory {
    pub meta: Meta,
    #[serde(default)]
    pub machines: IndexMap<MachineName, Machine>,
    #[serde(default)]
    pub instances: IndexMap<InstanceName, Instance>,
}

/// The clan's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// The clan's name.
    pub name: String,
    /// The domain machines are reachable under: `<machine>.<domain>`.
    #[serde(default = "default_domain")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_domain() -> String {
    "clan".to_owned()
}

pub use clan_config::MachineClass;

/// One machine of the fleet.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Machine {
    /// Tags select machines into service roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagName>,
    #[serde(default)]
    pub machine_class: MachineClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// clan-core's GUI icon; kept for compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// clan-core repeats the machine's name inside it; kept for compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Deploy::is_empty")]
    pub deploy: Deploy,
}

/// Where and how a machine is deployed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Deploy {
    /// `[user@]host[:port]` to deploy to; without it the best network or `root@<m>.<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_host: Option<String>,
    /// Where the machine is built (kept for clan-core compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_host: Option<String>,
}

impl Deploy {
    fn is_empty(&self) -> bool {
        self.target_host.is_none() && self.build_host.is_none()
    }
}

/// A service instance: one use of a service, with machines in its roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub module: ModuleRef,
    #[serde(default)]
    pub roles: IndexMap<RoleName, Role>,
}

/// Which service an instance uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleRef {
    /// A built-in service or a directory under `services/`.
    pub name: ServiceName,
    /// clan-core's flake input (`clan-core`, `self`); accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

/// Who has a role in an instance, and with what settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Machines named directly, each with its own settings.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub machines: IndexMap<MachineName, Member>,
    /// Tags whose machines take this role: a list, or a table with settings per tag.
    #[serde(default, skip_serializing_if = "RoleTags::is_empty")]
    pub tags: RoleTags,
    /// Settings for every member of the role.
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    #[schemars(schema_with = "settings_schema")]
    pub settings: Value,
}

/// Settings attached to one machine or one tag of a role.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    #[schemars(schema_with = "settings_schema")]
    pub settings: Value,
}

/// A role's tags: `["web"]` or `{ web = { settings = … } }` (clan-core accepts both).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RoleTags {
    List(Vec<TagName>),
    Table(IndexMap<TagName, Member>),
    #[default]
    #[serde(skip)]
    None,
}

impl RoleTags {
    pub fn is_empty(&self) -> bool {
        match self {
            Self::List(tags) => tags.is_empty(),
            Self::Table(tags) => tags.is_empty(),
            Self::None => true,
        }
    }

    /// Each tag with its settings (an empty object for the list form).
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&TagName, Option<&Value>)> + '_> {
        match self {
            Self::List(tags) => Box::new(tags.iter().map(|tag| (tag, None))),
            Self::Table(tags) => Box::new(
                tags.iter()
                    .map(|(tag, member)| (tag, Some(&member.settings))),
            ),
            Self::None => Box::new(std::iter::empty()),
        }
    }
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(serde_json::Map::is_empty)
}

fn settings_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Settings validated against the role's interface in the service."
    })
}
