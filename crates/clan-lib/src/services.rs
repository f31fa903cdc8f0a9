//! Services: the built-in and clan-local services instances can use, their roles and each
//! role's settings schema.

use std::path::Path;
use std::sync::Arc;

use clan_inventory::RoleName;
use indexmap::IndexMap;
use serde::Serialize;

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
#[derive(Debug, Clone, Serialize)]
pub struct Description<'a> {
    pub manifest: &'a clan_service::Manifest,
    pub origin: &'a str,
    pub roles: &'a IndexMap<RoleName, clan_service::RoleDef>,
}

/// How listings show `service`.
pub fn describe(service: &clan_service::Service) -> Description<'_> {
    Description {
        manifest: &service.manifest,
        origin: &service.origin,
        roles: &service.roles,
    }
}

/// How listings show each of `services`, by name.
pub fn describe_all(services: &clan_eval::Services) -> IndexMap<&str, Description<'_>> {
    services
        .iter()
        .map(|(name, service)| (name.as_str(), describe(service)))
        .collect()
}
