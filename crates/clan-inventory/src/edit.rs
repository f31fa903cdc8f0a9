//! Edits of `clan.toml` that keep its comments and layout (toml_edit). An edit is validated
//! as a whole inventory before anything is written, and written atomically, so a failing
//! command leaves clan.toml as it was.

use std::path::{Path, PathBuf};

use serde_json::Value;
use toml_edit::{Array, DocumentMut, Item, Table};

use crate::error::Error;
use crate::load::{load_with_toml, LoadedInventory, CLAN_TOML};
use crate::model::MachineClass;
use crate::names::{InstanceName, MachineName, RoleName, ServiceName, TagName};

/// The clan.toml of a new clan.
pub fn new_clan_toml(name: &str, domain: &str) -> String {
    let mut doc = DocumentMut::new();
    let mut meta = Table::new();
    meta["name"] = toml_edit::value(name);
    meta["domain"] = toml_edit::value(domain);
    doc["meta"] = Item::Table(meta);
    format!(
        "# The clan's inventory: machines and the service instances that span them.\n\
         # Edit by hand or with `clan machines …` / `clan instances …`; `clan schema inventory`\n\
         # prints a JSON Schema for editors.\n{doc}"
    )
}

/// Who a role member is: a machine, or every machine with a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleTarget {
    Machine(MachineName),
    Tag(TagName),
}

impl std::str::FromStr for RoleTarget {
    type Err = crate::names::NameError;
    /// `tag:web` or a machine name.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.strip_prefix("tag:") {
            Some(tag) => Ok(Self::Tag(tag.parse()?)),
            None => Ok(Self::Machine(text.parse()?)),
        }
    }
}

/// Where a setting is attached: the whole role, one tag of it, or one machine of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingScope {
    Role,
    Member(RoleTarget),
}

/// A pending set of edits to clan.toml.
pub struct Editor {
    dir: PathBuf,
    doc: DocumentMut,
    loaded: LoadedInventory,
}

impl Editor {
    /// Opens the clan in `dir` for editing; the current inventory must be valid.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(CLAN_TOML);
        let text = crate::load::clan_toml_text(dir)?;
        let loaded = load_with_toml(dir, &text)?;
        let doc = text.parse::<DocumentMut>().map_err(|error| Error::Syntax {
            path,
            line: 1,
            column: 1,
            message: error.to_string(),
            hint: None,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            doc,
            loaded,
        })
    }

    /// The inventory as it was when opened.
    pub fn inventory(&self) -> &LoadedInventory {
        &self.loaded
    }

    fn invalid(&self, key: String, message: String, hint: Option<String>) -> Error {
        Error::Invalid {
            path: self.dir.join(CLAN_TOML),
            key,
            message,
            hint,
        }
    }

    fn editable(&self, section: &str, name: &str) -> Result<(), Error> {
        if self.loaded.from_json.contains(&format!("{section}.{name}")) {
            return Err(Error::NotEditable {
                key: format!("{section}.{name}"),
                path: self.loaded.source_of(section, name),
            });
        }
        Ok(())
    }

    pub fn add_machine(
        &mut self,
        name: &MachineName,
        tags: &[TagName],
        class: MachineClass,
        target_host: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), Error> {
        self.require_absent("machines", "machine", name.as_str())?;
        let mut machine = Table::new();
        if !tags.is_empty() {
            machine["tags"] = toml_edit::value(tags.iter().map(|t| t.as_str()).collect::<Array>());
        }
        if class != MachineClass::default() {
            machine["machineClass"] = toml_edit::value(class.as_str());
        }
        if let Some(description) = description {
            machine["description"] = toml_edit::value(description);
        }
        if let Some(target_host) = target_host {
            dotted_table(&mut machine, "deploy")["targetHost"] = toml_edit::value(target_host);
        }
        implicit_table(self.doc.as_table_mut(), "machines")
            .insert(name.as_str(), Item::Table(machine));
        Ok(())
    }

    /// Removes a machine and every role membership naming it.
    pub fn remove_machine(&mut self, name: &MachineName) -> Result<(), Error> {
        self.require_machine(name)?;
        self.editable("machines", name.as_str())?;
        implicit_table(self.doc.as_table_mut(), "machines").remove(name.as_str());
        let instances: Vec<(InstanceName, Vec<RoleName>)> = self
            .loaded
            .inventory
            .instances
            .iter()
            .map(|(instance, body)| (instance.clone(), body.roles.keys().cloned().collect()))
            .collect();
        for (instance, roles) in instances {
            if self.editable("instances", instance.as_str()).is_err() {
                continue;
            }
            for role in roles {
                if let Some(machines) = self
                    .role_table(&instance, &role)
                    .get_mut("machines")
                    .and_then(Item::as_table_like_mut)
                {
                    machines.remove(name.as_str());
                }
            }
        }
        Ok(())
    }

    pub fn add_instance(
        &mut self,
        name: &InstanceName,
        service: &ServiceName,
    ) -> Result<(), Error> {
        self.require_absent("instances", "instance", name.as_str())?;
        let mut instance = Table::new();
        dotted_table(&mut instance, "module")["name"] = toml_edit::value(service.as_str());
        implicit_table(self.doc.as_table_mut(), "instances")
            .insert(name.as_str(), Item::Table(instance));
        Ok(())
    }

    pub fn remove_instance(&mut self, name: &InstanceName) -> Result<(), Error> {
        self.require_instance(name)?;
        self.editable("instances", name.as_str())?;
        implicit_table(self.doc.as_table_mut(), "instances").remove(name.as_str());
        Ok(())
    }

    /// Adds a machine or tag to a role of an instance (creating the role).
    pub fn add_role_member(
        &mut self,
        instance: &InstanceName,
        role: &RoleName,
        target: &RoleTarget,
    ) -> Result<(), Error> {
        self.require_instance(instance)?;
        self.editable("instances", instance.as_str())?;
        let role_table = self.role_table(instance, role);
        match target {
            RoleTarget::Machine(machine) => {
                let machines = dotted_table(role_table, "machines");
                if !machines.contains_key(machine.as_str()) {
                    machines.insert(machine.as_str(), empty_inline_table());
                }
            }
            RoleTarget::Tag(tag) => match role_table.get_mut("tags") {
                Some(Item::Value(toml_edit::Value::Array(tags))) => {
                    if !tags.iter().any(|t| t.as_str() == Some(tag.as_str())) {
                        tags.push(tag.as_str());
                    }
                }
                Some(item) if item.is_table_like() => {
                    let tags = item.as_table_like_mut().expect("checked table-like");
                    if !tags.contains_key(tag.as_str()) {
                        tags.insert(tag.as_str(), empty_inline_table());
                    }
                }
                _ => role_table["tags"] = toml_edit::value(Array::from_iter([tag.as_str()])),
            },
        }
        Ok(())
    }

    /// Removes a machine or tag from a role; the role's settings stay.
    pub fn remove_role_member(
        &mut self,
        instance: &InstanceName,
        role: &RoleName,
        target: &RoleTarget,
    ) -> Result<(), Error> {
        self.require_instance(instance)?;
        self.editable("instances", instance.as_str())?;
        let role_table = self.role_table(instance, role);
        let removed = match target {
            RoleTarget::Machine(machine) => role_table
                .get_mut("machines")
                .and_then(Item::as_table_like_mut)
                .and_then(|machines| machines.remove(machine.as_str()))
                .is_some(),
            RoleTarget::Tag(tag) => match role_table.get_mut("tags") {
                Some(Item::Value(toml_edit::Value::Array(tags))) => {
                    let before = tags.len();
                    tags.retain(|t| t.as_str() != Some(tag.as_str()));
                    tags.len() != before
                }
                Some(item) => item
                    .as_table_like_mut()
                    .and_then(|tags| tags.remove(tag.as_str()))
                    .is_some(),
                None => false,
            },
        };
        if !removed {
            let who = match target {
                RoleTarget::Machine(machine) => format!("machine `{machine}`"),
                RoleTarget::Tag(tag) => format!("tag `{tag}`"),
            };
            return Err(self.invalid(
                format!("instances.{instance}.roles.{role}"),
                format!("{who} is not in role `{role}` of instance `{instance}`"),
                Some(format!(
                    "`clan instances show {instance}` lists the role's members"
                )),
            ));
        }
        Ok(())
    }

    /// Sets `key` (dotted path inside the settings) to `value` in the given scope.
    pub fn set_setting(
        &mut self,
        instance: &InstanceName,
        role: &RoleName,
        scope: &SettingScope,
        key: &str,
        value: &Value,
    ) -> Result<(), Error> {
        self.require_instance(instance)?;
        self.editable("instances", instance.as_str())?;
        let item = json_to_toml(value).ok_or_else(|| {
            self.invalid(
                format!("instances.{instance}.roles.{role}.settings.{key}"),
                "null cannot be stored in TOML".to_owned(),
                Some("leave the setting out to get its default".to_owned()),
            )
        })?;
        let role_table = self.role_table(instance, role);
        let mut table = match scope {
            SettingScope::Role => role_table,
            SettingScope::Member(RoleTarget::Machine(machine)) => {
                dotted_table(dotted_table(role_table, "machines"), machine.as_str())
            }
            SettingScope::Member(RoleTarget::Tag(tag)) => {
                if let Some(Item::Value(toml_edit::Value::Array(tags))) = role_table.get("tags") {
                    // Per-tag settings need the table form of `tags`.
                    let names: Vec<String> = tags
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect();
                    let mut table = dotted(Table::new());
                    for name in names {
                        table.insert(&name, empty_inline_table());
                    }
                    role_table.insert("tags", Item::Table(table));
                }
                dotted_table(dotted_table(role_table, "tags"), tag.as_str())
            }
        };
        table = dotted_table(table, "settings");
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap_or(key);
        for part in parts {
            table = dotted_table(table, part);
        }
        table.insert(last, item);
        Ok(())
    }

    /// The edited clan.toml text.
    pub fn to_toml(&self) -> String {
        self.doc.to_string()
    }

    /// Validates the edited inventory and writes clan.toml atomically; returns the new inventory.
    pub fn save(self) -> Result<LoadedInventory, Error> {
        let text = self.doc.to_string();
        let loaded = load_with_toml(&self.dir, &text)?;
        write_atomically(&self.dir.join(CLAN_TOML), text.as_bytes())?;
        Ok(loaded)
    }

    /// Whether `section.name` exists, counting edits made so far.
    fn has(&self, section: &str, name: &str) -> bool {
        self.loaded.from_json.contains(&format!("{section}.{name}"))
            || self
                .doc
                .get(section)
                .and_then(|table| table.get(name))
                .is_some()
    }

    fn require_absent(&self, section: &str, kind: &str, name: &str) -> Result<(), Error> {
        if !self.has(section, name) {
            return Ok(());
        }
        Err(self.invalid(
            format!("{section}.{name}"),
            format!("{kind} `{name}` already exists"),
            Some(format!(
                "pick another name, or `clan {section} delete {name}` first"
            )),
        ))
    }

    fn require_machine(&self, name: &MachineName) -> Result<(), Error> {
        let known = self.loaded.inventory.machines.keys().map(|m| m.as_str());
        self.require_present("machines", "machine", name.as_str(), known)
    }

    fn require_instance(&self, name: &InstanceName) -> Result<(), Error> {
        let known = self.loaded.inventory.instances.keys().map(|i| i.as_str());
        self.require_present("instances", "instance", name.as_str(), known)
    }

    fn require_present<'a>(
        &self,
        section: &str,
        kind: &str,
        name: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Error> {
        if self.has(section, name) {
            return Ok(());
        }
        Err(self.invalid(
            format!("{section}.{name}"),
            format!("unknown {kind} `{name}`"),
            crate::error::did_you_mean(name, known)
                .or_else(|| Some(format!("`clan {section} list` shows the {section}"))),
        ))
    }

    fn role_table(&mut self, instance: &InstanceName, role: &RoleName) -> &mut Table {
        let instances = implicit_table(self.doc.as_table_mut(), "instances");
        let instance = dotted_table(instances, instance.as_str());
        dotted_table(dotted_table(instance, "roles"), role.as_str())
    }
}

/// `{}`: an empty dotted table would not be written at all.
fn empty_inline_table() -> Item {
    Item::Value(toml_edit::Value::InlineTable(toml_edit::InlineTable::new()))
}

fn dotted(mut table: Table) -> Table {
    table.set_dotted(true);
    table
}

/// The sub-table `key` of `table`, created as a dotted key (`a.b = …`) when missing.
fn dotted_table<'a>(table: &'a mut Table, key: &str) -> &'a mut Table {
    let item = table
        .entry(key)
        .or_insert_with(|| Item::Table(dotted(Table::new())));
    if let Item::Value(toml_edit::Value::InlineTable(inline)) = item {
        *item = Item::Table(std::mem::take(inline).into_table());
    }
    if !item.is_table() {
        *item = Item::Table(dotted(Table::new()));
    }
    item.as_table_mut().expect("made a table above")
}

/// The top-level section `key` (`[machines]`), implicit so only its children get headers.
fn implicit_table<'a>(table: &'a mut Table, key: &str) -> &'a mut Table {
    let item = table.entry(key).or_insert_with(|| {
        let mut section = Table::new();
        section.set_implicit(true);
        Item::Table(section)
    });
    if !item.is_table() {
        *item = Item::Table(Table::new());
    }
    item.as_table_mut().expect("made a table above")
}

fn json_to_value(value: &Value) -> Option<toml_edit::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => items
            .iter()
            .map(json_to_value)
            .collect::<Option<Array>>()?
            .into(),
        Value::Object(map) => {
            let mut inline = toml_edit::InlineTable::new();
            for (key, value) in map {
                inline.insert(key, json_to_value(value)?);
            }
            inline.into()
        }
    })
}

fn json_to_toml(value: &Value) -> Option<Item> {
    json_to_value(value).map(Item::Value)
}

/// Writes `bytes` to `path` atomically (mode 0644) through [`clan_fs`]: a link at `path` is
/// replaced, never written through.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = Path::new(path.file_name().unwrap_or_default());
    clan_fs::Tree::open(dir)?.write(name, bytes, clan_fs::WriteOptions::new(0o644))?;
    Ok(())
}
