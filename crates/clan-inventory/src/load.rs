//! Reading `clan.toml` and clan-core's `inventory.json` into one validated [`Inventory`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use crate::error::{did_you_mean, hint_for_serde_message, line_column, Error};
use crate::model::{Instance, Inventory, Machine, Meta};
use crate::names::{InstanceName, MachineName};

pub const CLAN_TOML: &str = "clan.toml";
pub const INVENTORY_JSON: &str = "inventory.json";

/// Tags every machine carries without declaring them: `all`, and its class (`linux`, …).
pub const COMPUTED_TAGS: [&str; 4] = ["all", "linux", "nixos", "darwin"];

/// An inventory together with where each part was declared.
#[derive(Debug, Clone)]
pub struct LoadedInventory {
    pub inventory: Inventory,
    /// Machines and instances declared in `inventory.json` rather than `clan.toml`.
    pub from_json: BTreeSet<String>,
    pub dir: PathBuf,
}

impl LoadedInventory {
    /// The file that declares `machines.<name>` or `instances.<name>`.
    pub fn source_of(&self, section: &str, name: &str) -> PathBuf {
        let file = if self.from_json.contains(&format!("{section}.{name}")) {
            INVENTORY_JSON
        } else {
            CLAN_TOML
        };
        self.dir.join(file)
    }
}

/// clan-core's inventory.json: the same shape, with meta optional and extra top-level
/// sections of clan-core that have no meaning here ignored.
#[derive(Deserialize)]
struct InventoryJson {
    #[serde(default)]
    machines: IndexMap<MachineName, Machine>,
    #[serde(default)]
    instances: IndexMap<InstanceName, Instance>,
    #[serde(default, rename = "meta")]
    _meta: Option<Meta>,
    #[serde(flatten)]
    _other: serde_json::Map<String, serde_json::Value>,
}

/// Parses `clan.toml` text; `path` is only used in errors.
pub fn parse_toml(path: &Path, text: &str) -> Result<Inventory, Error> {
    toml::from_str(text).map_err(|error| {
        let (line, column) = error
            .span()
            .map_or((1, 1), |span| line_column(text, span.start));
        let message = error.message().to_owned();
        Error::Syntax {
            path: path.to_owned(),
            line,
            column,
            hint: hint_for_serde_message(&message),
            message,
        }
    })
}

fn parse_json(path: &Path, text: &str) -> Result<InventoryJson, Error> {
    serde_json::from_str(text).map_err(|error| {
        let message = error.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        Error::Syntax {
            path: path.to_owned(),
            line: error.line(),
            column: error.column(),
            hint: hint_for_serde_message(&message),
            message,
        }
    })
}

/// A file of the clan directory (`clan.toml`, `inventory.json`), read as a regular file only:
/// a link there is refused, never followed.
pub(crate) fn read(path: &Path) -> Result<Option<String>, Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = Path::new(path.file_name().unwrap_or_default());
    let tree = match clan_fs::Tree::open(dir) {
        Ok(tree) => tree,
        Err(error) if error.is_not_found() => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let Some(bytes) = tree.read_optional(name, clan_fs::DEFAULT_LIMIT)? else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|error| Error::Read {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
        })
}

/// Loads and validates the inventory of the clan in `dir`.
pub fn load(dir: &Path) -> Result<LoadedInventory, Error> {
    load_with_toml(dir, &clan_toml_text(dir)?)
}

/// The text of `dir`'s clan.toml; in a clan brought from clan-core that has only
/// inventory.json, a clan.toml holding that file's meta (what an edit then writes).
pub fn clan_toml_text(dir: &Path) -> Result<String, Error> {
    match read(&dir.join(CLAN_TOML))? {
        Some(text) => Ok(text),
        None => clan_toml_from_json(dir),
    }
}

/// The clan.toml of a clan that has only clan-core's inventory.json: its meta.
pub fn clan_toml_from_json(dir: &Path) -> Result<String, Error> {
    let json_path = dir.join(INVENTORY_JSON);
    let text = read(&json_path)?.ok_or_else(|| Error::Read {
        path: dir.join(CLAN_TOML),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
    })?;
    let meta = parse_json(&json_path, &text)?
        ._meta
        .ok_or_else(|| Error::Invalid {
            path: json_path,
            key: "meta".to_owned(),
            message: "there is no clan.toml, and inventory.json has no `meta`".to_owned(),
            hint: Some(
                "add `\"meta\": {\"name\": …}` to inventory.json, or create clan.toml with \
                 `[meta]`"
                    .to_owned(),
            ),
        })?;
    #[derive(serde::Serialize)]
    struct MetaOnly {
        meta: Meta,
    }
    toml::to_string(&MetaOnly { meta }).map_err(|error| Error::Invalid {
        path: dir.join(INVENTORY_JSON),
        key: "meta".to_owned(),
        message: error.to_string(),
        hint: None,
    })
}

/// Loads and validates an inventory whose clan.toml text is given (edits check before writing).
pub fn load_with_toml(dir: &Path, text: &str) -> Result<LoadedInventory, Error> {
    let json = read(&dir.join(INVENTORY_JSON))?;
    load_from_texts(dir, text, json.as_deref())
}

/// Loads and validates an inventory from the texts of clan.toml and inventory.json (which
/// may come from anyone's repository), as if they were in `dir`.
pub fn load_from_texts(
    dir: &Path,
    clan_toml: &str,
    inventory_json: Option<&str>,
) -> Result<LoadedInventory, Error> {
    let inventory = parse_toml(&dir.join(CLAN_TOML), clan_toml)?;
    let json_path = dir.join(INVENTORY_JSON);
    let json = inventory_json
        .map(|text| parse_json(&json_path, text))
        .transpose()?;
    let loaded = merge(dir, inventory, json)?;
    validate(&loaded)?;
    Ok(loaded)
}

fn merge(
    dir: &Path,
    mut inventory: Inventory,
    json: Option<InventoryJson>,
) -> Result<LoadedInventory, Error> {
    let mut from_json = BTreeSet::new();
    if let Some(json) = json {
        let defined_twice = |key: String| Error::DefinedTwice {
            key,
            first: dir.join(CLAN_TOML),
            second: dir.join(INVENTORY_JSON),
        };
        for (name, machine) in json.machines {
            if inventory.machines.contains_key(&name) {
                return Err(defined_twice(format!("machines.{name}")));
            }
            from_json.insert(format!("machines.{name}"));
            inventory.machines.insert(name, machine);
        }
        for (name, instance) in json.instances {
            if inventory.instances.contains_key(&name) {
                return Err(defined_twice(format!("instances.{name}")));
            }
            from_json.insert(format!("instances.{name}"));
            inventory.instances.insert(name, instance);
        }
    }
    Ok(LoadedInventory {
        inventory,
        from_json,
        dir: dir.to_owned(),
    })
}

/// Checks what the types alone cannot: roles name machines and tags that exist.
fn validate(loaded: &LoadedInventory) -> Result<(), Error> {
    let inventory = &loaded.inventory;
    let known_tags: BTreeSet<&str> = inventory
        .machines
        .values()
        .flat_map(|machine| machine.tags.iter().map(|tag| tag.as_str()))
        .chain(COMPUTED_TAGS)
        .collect();
    for (instance_name, instance) in &inventory.instances {
        let path = loaded.source_of("instances", instance_name.as_str());
        for (role_name, role) in &instance.roles {
            let key = format!("instances.{instance_name}.roles.{role_name}");
            for machine in role.machines.keys() {
                if !inventory.machines.contains_key(machine) {
                    return Err(Error::Invalid {
                        path,
                        key: format!("{key}.machines.{machine}"),
                        message: format!("unknown machine `{machine}`"),
                        hint: did_you_mean(
                            machine.as_str(),
                            inventory.machines.keys().map(|m| m.as_str()),
                        )
                        .or_else(|| {
                            Some(format!("create it with `clan machines create {machine}`"))
                        }),
                    });
                }
            }
            for (tag, _) in role.tags.iter() {
                if !known_tags.contains(tag.as_str()) {
                    return Err(Error::Invalid {
                        path,
                        key: format!("{key}.tags"),
                        message: format!("no machine has the tag `{tag}`"),
                        hint: did_you_mean(tag.as_str(), known_tags.iter().copied())
                            .or_else(|| Some(format!("add `{tag}` to a machine's tags: `clan machines create <name> --tags {tag}` or edit clan.toml"))),
                    });
                }
            }
        }
    }
    Ok(())
}
