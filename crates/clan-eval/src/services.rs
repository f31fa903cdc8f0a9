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
    let tree = crate::files::open(dir)?;
    for (name, path) in local_service_files(dir)? {
        let source = crate::files::read_text(&tree, &path)?.unwrap_or_default();
        let origin = path.display().to_string();
        services.insert(
            name.clone(),
            Arc::new(Service::load(&name, &origin, &source)?),
        );
    }
    Ok(services)
}

/// `(name, path)` of each `services/<name>/service.star`, sorted by name; paths relative to
/// the clan directory. A link among them is an error.
pub fn local_service_files(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, Error> {
    let tree = crate::files::open(dir)?;
    crate::files::files_in_subdirs(&tree, Path::new(SERVICES_DIR), "service.star")
}
