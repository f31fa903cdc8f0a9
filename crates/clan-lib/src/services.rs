//! Services: the built-in and clan-local services instances can use, their roles and each
//! role's settings schema.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::Error;

/// Every service the clan in `dir` can use, by name.
pub fn list(dir: &Path) -> Result<clan_eval::Services, Error> {
    Ok(clan_eval::load_services(dir)?)
}

/// Service `name`; an unknown name is an error suggesting the closest one.
pub fn get(dir: &Path, name: &str) -> Result<Arc<clan_service::Service>, Error> {
    let mut services = list(dir)?;
    services
        .shift_remove(name)
        .ok_or_else(|| Error::UnknownService {
            name: name.to_owned(),
            hint: clan_inventory::did_you_mean(name, services.keys().map(String::as_str))
                .or_else(|| Some("`clan services list` shows the services".to_owned())),
        })
}

/// A service as listings show it (also the `services` root of `select`): its manifest,
/// origin and roles with their settings schemas.
pub fn describe(service: &clan_service::Service) -> Value {
    json!({
        "manifest": service.manifest,
        "origin": service.origin,
        "roles": service.roles,
    })
}
