//! Machines: create, list (by tags), show and delete. Deleting a machine also forgets its
//! vars and keys and re-keys what it could read without it.

use std::path::{Path, PathBuf};

use clan_inventory::{Editor, MachineClass, MachineName, TagName, CLAN_TOML};

use crate::{change, Error, Progress};

/// A machine to add to clan.toml.
pub struct NewMachine {
    pub name: MachineName,
    /// Tags selecting the machine into service roles.
    pub tags: Vec<TagName>,
    pub class: MachineClass,
    /// `[user@]host[:port]` to deploy to.
    pub target_host: Option<String>,
    pub description: Option<String>,
}

/// Adds `machine` to clan.toml, in one commit.
pub fn create(dir: &Path, machine: &NewMachine, progress: &dyn Progress) -> Result<(), Error> {
    let change = change::begin(dir, &[CLAN_TOML], progress)?;
    let mut editor = Editor::open(dir)?;
    editor.add_machine(
        &machine.name,
        &machine.tags,
        machine.class,
        machine.target_host.as_deref(),
        machine.description.as_deref(),
    )?;
    editor.save()?;
    change.commit(
        &[CLAN_TOML.into()],
        &format!("machines: create {}", machine.name),
    )
}

/// The machines `names` (all when empty) that carry every tag of `tags` (`all` and the
/// class name are tags of every machine): the one selection of every command that takes
/// machines and `--tags`.
pub fn select(
    fleet: &clan_eval::Fleet,
    names: &[MachineName],
    tags: &[TagName],
) -> Result<Vec<MachineName>, Error> {
    Ok(fleet.select_machines(names, tags)?)
}

/// The machines with all of `tags`, as the evaluation summarises them.
pub fn list(dir: &Path, tags: &[TagName]) -> Result<Vec<clan_eval::MachineSummary>, Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    let selected = select(&fleet, &[], tags)?;
    Ok(selected
        .iter()
        .filter_map(|name| fleet.summary.machines.get(name).cloned())
        .collect())
}

/// Machine `name`, fully evaluated.
pub fn show(dir: &Path, name: &MachineName) -> Result<clan_eval::EvaluatedMachine, Error> {
    Ok(clan_eval::Fleet::open(dir)?.machine(name)?)
}

/// What [`delete`] did.
#[derive(Debug)]
pub struct Deleted {
    /// Paths of its vars and keys removed or re-keyed.
    pub vars_and_keys: Vec<PathBuf>,
    /// Secrets it could read that could not be re-keyed without it.
    pub rekey_failures: Vec<(PathBuf, clan_secrets::Error)>,
}

/// Removes machine `name` and its role memberships from clan.toml, and its vars and keys;
/// what it could read is re-keyed without it. One commit.
pub fn delete(dir: &Path, name: &MachineName, progress: &dyn Progress) -> Result<Deleted, Error> {
    let change = change::begin(dir, &[CLAN_TOML, "vars", "sops"], progress)?;
    let mut editor = Editor::open(dir)?;
    editor.remove_machine(name)?;
    let identities = clan_secrets::Identities::discover(&clan_secrets::KeySources::from_env()).ok();
    let store = clan_vars::VarsStore::new(dir);
    let forgotten = clan_vars::ops::forget_machine(&store, name, identities.as_ref())?;
    editor.save()?;
    let mut paths = vec![PathBuf::from(CLAN_TOML)];
    paths.extend(forgotten.changes.paths.iter().cloned());
    change.commit(&paths, &format!("machines: delete {name}"))?;
    Ok(Deleted {
        vars_and_keys: forgotten.changes.paths,
        rekey_failures: forgotten.report.map(|r| r.failed).unwrap_or_default(),
    })
}
