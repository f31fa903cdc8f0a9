//! `select`: clan-core's query grammar over the evaluated clan. This module owns the
//! document queried: `meta`, `machines` (each with its evaluated config and settings),
//! `instances`, `services` and `exports`.

use std::path::Path;

use serde_json::{json, Value};

use crate::Error;

/// The document `select` queries.
pub fn root(dir: &Path) -> Result<Value, Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    let mut machines = serde_json::Map::new();
    for machine in fleet.machines()? {
        let value = serde_json::to_value(&machine).map_err(|source| Error::Json {
            what: "the evaluated machine",
            source,
        })?;
        machines.insert(machine.summary.name.to_string(), value);
    }
    let services: serde_json::Map<String, Value> = crate::services::list(dir)?
        .iter()
        .map(|(name, service)| (name.clone(), crate::services::describe(service)))
        .collect();
    Ok(json!({
        "meta": fleet.summary.meta,
        "machines": machines,
        "instances": fleet.summary.instances,
        "services": services,
        "exports": fleet.summary.exports,
    }))
}

/// Parses a select query (e.g. `machines.*.tags`); a bad one is an error pointing at the
/// offending character.
pub fn parse(query: &str) -> Result<clan_select::Query, Error> {
    clan_select::parse(query).map_err(|source| Error::SelectQuery {
        caret: source.caret(),
        source,
    })
}

/// Applies `query` to the evaluated clan in `dir`.
pub fn select(dir: &Path, query: &clan_select::Query) -> Result<Value, Error> {
    Ok(query.apply(&root(dir)?)?)
}
