//! `show`: the clan at a glance — its meta and the names of its machines, instances and the
//! services they use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clan_inventory::{InstanceName, MachineName};

use crate::Error;

/// What `show` reports.
#[derive(Debug, serde::Serialize)]
pub struct Overview {
    pub meta: clan_inventory::Meta,
    pub directory: PathBuf,
    pub machines: Vec<MachineName>,
    pub instances: Vec<InstanceName>,
    /// The services the instances use, sorted.
    pub services: BTreeSet<String>,
}

/// The clan in `dir` at a glance.
pub fn show(dir: &Path) -> Result<Overview, Error> {
    let summary = clan_eval::Fleet::open(dir)?.summary;
    Ok(Overview {
        services: summary
            .instances
            .values()
            .filter_map(|instance| instance["service"].as_str())
            .map(str::to_owned)
            .collect(),
        meta: summary.meta,
        directory: dir.to_path_buf(),
        machines: summary.machines.keys().cloned().collect(),
        instances: summary.instances.keys().cloned().collect(),
    })
}
