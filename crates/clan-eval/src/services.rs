//! The services a clan can use: the built-ins, and the clan's own `services/<name>/service.star`
//! (which may replace a built-in of the same name).

use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

use clan_service::{Service, BUILTIN_SERVICES};

use crate::error::Error;

pub const SERVICES_DIR: &str = "services";

/// Loaded services by name.
pub type Services = IndexMap<String, Arc<Service>>;

/// Loads every built-in and clan-local service.
pub fn load_services(dir: &Path) -> Result<Services, Error> {
    let mut services = Services::new();
    for (name, source) in BUILTIN_SERVICES {
        services.insert(
            (*name).to_owned(),
            Arc::new(Service::load(
                name,
                &format!("built-in:{name}.star"),
                source,
            )?),
        );
    }
    for (name, path) in local_service_files(dir)? {
        let source = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let origin = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        services.insert(
            name.clone(),
            Arc::new(Service::load(&name, &origin, &source)?),
        );
    }
    Ok(services)
}

/// `(name, path)` of each `services/<name>/service.star`, sorted by name.
pub fn local_service_files(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, Error> {
    let services_dir = dir.join(SERVICES_DIR);
    let entries = match std::fs::read_dir(&services_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: services_dir,
                source,
            })
        }
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path().join("service.star"),
            )
        })
        .filter(|(_, path)| path.is_file())
        .collect();
    files.sort();
    Ok(files)
}
