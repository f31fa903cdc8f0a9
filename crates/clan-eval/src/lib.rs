//! Evaluation of a clan: from the inventory and the services to every machine's
//! MachineConfig and the fleet's exports.
//!
//! This crate owns role membership (listed machines and tags, with the computed tags `all`
//! and the class name), the settings merge (role < tag < machine) and its validation against
//! each role's schema, running services in two phases (each call sees its machine's hardware
//! facts from `machines/<m>/facter.json`), merging fragments per machine, and the
//! on-disk cache keyed by a hash of every input. Evaluation is pure: it reads the clan
//! directory and never writes to it, never touches a machine, never decrypts anything.

mod cache;
mod error;
mod evaluate;
mod files;
mod services;
mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use cache::{cache_root, usable as cache_usable};
pub use error::Error;
pub use evaluate::{
    known_tags, read_public_vars, EvaluatedMachine, FleetSummary, InstanceSummary, MachineSummary,
    Membership,
};
pub use services::{load_services, local_service_files, Services, SERVICES_DIR};

use clan_facter::FACTER_JSON;
use clan_inventory::{LoadedInventory, MachineName, TagName, CLAN_TOML, INVENTORY_JSON};
use clan_service::Service;

/// An evaluated clan: the summary in memory, machines read from the cache on demand.
pub struct Fleet {
    pub summary: FleetSummary,
    /// Whether this came from the cache (no Starlark ran).
    pub from_cache: bool,
    entry: cache::Entry,
    evaluated: Option<Vec<EvaluatedMachine>>,
}

impl Fleet {
    /// Evaluates the clan in `dir`, or reads the cached result when nothing changed.
    pub fn open(dir: &Path) -> Result<Fleet, Error> {
        Self::open_with_cache(dir, &cache_root())
    }

    pub fn open_with_cache(dir: &Path, cache_root: &Path) -> Result<Fleet, Error> {
        let inputs = Inputs::read(dir)?;
        let entry = cache::Entry::new(cache_root, &inputs.hash);
        let cache_usable = cache::usable(cache_root);
        if cache_usable && entry.exists() {
            if let Ok(summary) = entry.summary() {
                return Ok(Fleet {
                    summary,
                    from_cache: true,
                    entry,
                    evaluated: None,
                });
            }
        }
        let (summary, machines) = evaluate_dir(dir, &inputs.clan_toml, &inputs.vars, None)?;
        if cache_usable {
            entry.store(&summary, &machines)?;
        }
        Ok(Fleet {
            summary,
            from_cache: false,
            entry,
            evaluated: Some(machines),
        })
    }

    /// One machine, fully evaluated.
    /// The machines a command is about: `names` (all machines when empty), narrowed to those
    /// carrying every tag in `tags` (computed tags included). Every name must exist; tags
    /// that select nothing are an error.
    pub fn select_machines(
        &self,
        names: &[MachineName],
        tags: &[TagName],
    ) -> Result<Vec<MachineName>, Error> {
        let machines = &self.summary.machines;
        for name in names {
            if !machines.contains_key(name) {
                return Err(self.unknown_machine(name));
            }
        }
        let candidates: Vec<&MachineName> = if names.is_empty() {
            machines.keys().collect()
        } else {
            names.iter().collect()
        };
        let selected: Vec<MachineName> = candidates
            .into_iter()
            .filter(|name| {
                machines
                    .get(name.as_str())
                    .is_some_and(|machine| tags.iter().all(|tag| machine.has_tag(tag)))
            })
            .cloned()
            .collect();
        if selected.is_empty() && !tags.is_empty() {
            return Err(Error::NoMachineWithTags {
                tags: tags.to_vec(),
            });
        }
        Ok(selected)
    }

    fn unknown_machine(&self, name: &str) -> Error {
        Error::UnknownMachine {
            name: name.to_owned(),
            hint: clan_inventory::did_you_mean(
                name,
                self.summary.machines.keys().map(MachineName::as_str),
            )
            .or_else(|| Some("`clan machines list` shows the machines".to_owned())),
        }
    }

    pub fn machine(&self, name: &str) -> Result<EvaluatedMachine, Error> {
        let unknown = || self.unknown_machine(name);
        if let Some(machines) = &self.evaluated {
            return machines
                .iter()
                .find(|m| m.summary.name == name)
                .cloned()
                .ok_or_else(unknown);
        }
        if !self.summary.machines.contains_key(name) {
            return Err(unknown());
        }
        self.entry.machine(name)?.ok_or_else(unknown)
    }

    /// Every machine, fully evaluated, in inventory order.
    pub fn machines(&self) -> Result<Vec<EvaluatedMachine>, Error> {
        match &self.evaluated {
            Some(machines) => Ok(machines.clone()),
            None => self
                .summary
                .machines
                .keys()
                .map(|name| self.machine(name))
                .collect(),
        }
    }
}

/// Evaluates the clan in `dir` as if its clan.toml held `clan_toml`, without the cache: an
/// edit checks itself with this before clan.toml is written.
pub fn check_with_toml(dir: &Path, clan_toml: &str) -> Result<(), Error> {
    evaluate_dir(dir, clan_toml, &read_public_vars(dir)?, None).map(drop)
}

/// Evaluates the clan in `dir` as if machine `machine`'s hardware report held `report`,
/// without the cache: a new report checks itself with this before it replaces the old one.
pub fn check_with_hardware(dir: &Path, machine: &MachineName, report: &str) -> Result<(), Error> {
    let inputs = Inputs::read(dir)?;
    evaluate_dir(
        dir,
        &inputs.clan_toml,
        &inputs.vars,
        Some((machine, report)),
    )
    .map(drop)
}

/// A report standing in for a machine's `facter.json`.
type ReplacedReport<'a> = Option<(&'a MachineName, &'a str)>;

fn evaluate_dir(
    dir: &Path,
    clan_toml: &str,
    vars: &serde_json::Value,
    replaced: ReplacedReport<'_>,
) -> Result<(FleetSummary, Vec<EvaluatedMachine>), Error> {
    let loaded = clan_inventory::load_with_toml(dir, clan_toml)?;
    let services = load_services(dir)?;
    let machine_modules = load_machine_modules(dir, &loaded)?;
    let hardware = load_hardware(dir, &loaded, replaced)?;
    evaluate::evaluate(&loaded, &services, &machine_modules, &hardware, vars)
}

/// The files evaluation depends on, read once, and their hash.
struct Inputs {
    clan_toml: String,
    vars: serde_json::Value,
    hash: String,
}

impl Inputs {
    fn read(dir: &Path) -> Result<Inputs, Error> {
        let mut hash = cache::InputHash::new();
        let tree = files::open(dir)?;
        // A clan brought from clan-core may have only inventory.json: its meta stands in.
        let clan_toml = match files::read_text(&tree, Path::new(CLAN_TOML))? {
            Some(text) => text,
            None => clan_inventory::clan_toml_from_json(dir)?,
        };
        hash.add(CLAN_TOML, clan_toml.as_bytes());
        let mut optional = vec![(INVENTORY_JSON.to_owned(), PathBuf::from(INVENTORY_JSON))];
        for (name, path) in local_service_files(dir)? {
            optional.push((format!("services/{name}"), path));
        }
        for (name, path) in machine_module_files(&tree)? {
            optional.push((format!("machines/{name}"), path));
        }
        for (name, path) in hardware_files(&tree)? {
            optional.push((format!("machines/{name}/{FACTER_JSON}"), path));
        }
        for (name, path) in optional {
            if let Some(content) = files::read_text(&tree, &path)? {
                hash.add(&name, content.as_bytes());
            }
        }
        let vars = read_public_vars(dir)?;
        hash.add("vars", vars.to_string().as_bytes());
        Ok(Inputs {
            clan_toml,
            vars,
            hash: hash.finish(),
        })
    }
}

/// `(machine, path)` of each `machines/<m>/config.star`, relative to the clan directory.
fn machine_module_files(tree: &clan_fs::Tree) -> Result<Vec<(String, PathBuf)>, Error> {
    files::files_in_subdirs(tree, Path::new("machines"), "config.star")
}

/// `(machine, path)` of each `machines/<m>/facter.json`.
fn hardware_files(tree: &clan_fs::Tree) -> Result<Vec<(String, PathBuf)>, Error> {
    files::files_in_subdirs(tree, Path::new("machines"), FACTER_JSON)
}

/// The facts of every machine of the inventory that has a hardware report (`replaced`
/// standing in for its machine's file). A report of a machine not in the inventory is left
/// alone: it may be kept for one not yet created again.
fn load_hardware(
    dir: &Path,
    loaded: &LoadedInventory,
    replaced: ReplacedReport<'_>,
) -> Result<BTreeMap<String, clan_facter::Facts>, Error> {
    let tree = files::open(dir)?;
    let mut texts: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
    for (machine, path) in hardware_files(&tree)? {
        if let Some(text) = files::read_text(&tree, &path)? {
            texts.insert(machine, (path, text));
        }
    }
    if let Some((machine, report)) = replaced {
        let path = Path::new("machines")
            .join(machine.as_str())
            .join(FACTER_JSON);
        texts.insert(machine.to_string(), (path, report.to_owned()));
    }
    let mut hardware = BTreeMap::new();
    for (machine, (path, text)) in texts {
        if !loaded.inventory.machines.contains_key(machine.as_str()) {
            continue;
        }
        let report = clan_facter::Report::parse(&path.display().to_string(), &text)?;
        hardware.insert(machine, report.facts());
    }
    Ok(hardware)
}

fn load_machine_modules(
    dir: &Path,
    loaded: &LoadedInventory,
) -> Result<BTreeMap<String, Service>, Error> {
    let mut modules = BTreeMap::new();
    let tree = files::open(dir)?;
    for (machine, path) in machine_module_files(&tree)? {
        if !loaded.inventory.machines.contains_key(machine.as_str()) {
            return Err(Error::Invalid {
                path: path.clone(),
                key: format!("machines.{machine}"),
                message: format!(
                    "`{}` configures machine `{machine}`, which is not in the inventory",
                    path.display()
                ),
                hint: Some(format!(
                    "`clan machines create {machine}`, or remove the file"
                )),
            });
        }
        let source = files::read_text(&tree, &path)?.unwrap_or_default();
        let origin = format!("machines/{machine}/config.star");
        modules.insert(
            machine.clone(),
            Service::load_machine_module(&machine, &origin, &source)?,
        );
    }
    Ok(modules)
}
