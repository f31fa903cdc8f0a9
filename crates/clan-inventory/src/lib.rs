//! The clan inventory: what `clan.toml` (and clan-core's `inventory.json`, merged in) declares
//! about a clan's machines and service instances.
//!
//! This crate owns parsing, validation (names, classes, tags, references, with errors that
//! name the file and key), the JSON Schema of clan.toml, and comment-preserving edits written
//! atomically. It never evaluates services: that is `clan-eval`'s job.

mod edit;
mod error;
mod load;
mod model;
mod names;

pub use edit::{new_clan_toml, write_atomically, Editor, RoleTarget, SettingScope};
pub use error::{did_you_mean, Error};
pub use load::{
    clan_toml_from_json, clan_toml_text, load, load_from_texts, load_with_toml, parse_toml,
    LoadedInventory, CLAN_TOML, COMPUTED_TAGS, INVENTORY_JSON,
};
pub use model::{
    Deploy, Instance, Inventory, Machine, MachineClass, Member, Meta, ModuleRef, Role, RoleTags,
};
pub use names::{InstanceName, MachineName, NameError, RoleName, ServiceName, TagName};

/// The JSON Schema of clan.toml, for editors.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Inventory)).expect("a schema is plain JSON")
}
