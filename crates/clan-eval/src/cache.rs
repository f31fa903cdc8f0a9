//! The on-disk evaluation cache. Evaluation is a pure function of the clan's files, so its
//! result is stored under a hash of them: a second run with no change reads JSON and does no
//! Starlark work. Each entry holds `summary.json` and one `machines/<m>.json` per machine, so
//! `machines show` reads one small file. Entries are written to a temporary directory and
//! renamed into place; only the newest few are kept.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::evaluate::{EvaluatedMachine, FleetSummary};

const KEPT_ENTRIES: usize = 8;

/// Where cache entries live: `$CLAN_CACHE_DIR`, else `$XDG_CACHE_HOME/clan/eval`, else
/// `~/.cache/clan/eval`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLAN_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("clan").join("eval")
}

/// Hashes the evaluation's inputs: the program version and built-in services, then each input
/// file as `(name, content)`.
pub struct InputHash(Sha256);

impl InputHash {
    pub fn new() -> Self {
        let mut hasher = Sha256::new();
        hasher.update(env!("CARGO_PKG_VERSION"));
        for (name, source) in clan_service::BUILTIN_SERVICES {
            hasher.update(name.as_bytes());
            hasher.update(source.as_bytes());
        }
        Self(hasher)
    }

    pub fn add(&mut self, name: &str, content: &[u8]) {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name);
        self.0.update((content.len() as u64).to_le_bytes());
        self.0.update(content);
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// A cache entry for one input hash.
pub struct Entry {
    dir: PathBuf,
}

impl Entry {
    pub fn new(root: &Path, hash: &str) -> Self {
        Self {
            dir: root.join(hash),
        }
    }

    pub fn exists(&self) -> bool {
        self.dir.join("summary.json").is_file()
    }

    pub fn summary(&self) -> Result<FleetSummary, Error> {
        read_json(&self.dir.join("summary.json"))
    }

    pub fn machine(&self, name: &str) -> Result<Option<EvaluatedMachine>, Error> {
        let path = self.dir.join("machines").join(format!("{name}.json"));
        if !path.is_file() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Stores a complete evaluation; a concurrent writer of the same entry is harmless.
    pub fn store(
        &self,
        summary: &FleetSummary,
        machines: &[EvaluatedMachine],
    ) -> Result<(), Error> {
        let root = self
            .dir
            .parent()
            .expect("entries live under the cache root");
        let cache_error = |source| Error::Cache {
            path: root.to_owned(),
            source,
        };
        std::fs::create_dir_all(root).map_err(cache_error)?;
        let staging = tempfile::tempdir_in(root).map_err(cache_error)?;
        let machines_dir = staging.path().join("machines");
        std::fs::create_dir(&machines_dir).map_err(cache_error)?;
        let write =
            |path: PathBuf, bytes: Vec<u8>| std::fs::write(path, bytes).map_err(cache_error);
        for machine in machines {
            write(
                machines_dir.join(format!("{}.json", machine.summary.name)),
                serde_json::to_vec(machine).expect("plain data"),
            )?;
        }
        write(
            staging.path().join("summary.json"),
            serde_json::to_vec(summary).expect("plain data"),
        )?;
        let staged = staging.keep();
        if std::fs::rename(&staged, &self.dir).is_err() {
            // Another process stored the same entry first; its content is identical.
            let _ = std::fs::remove_dir_all(&staged);
        }
        prune(root);
        Ok(())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|error| Error::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
    })
}

/// Keeps the newest entries; failures only mean a little more disk is used.
fn prune(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut entries: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .collect();
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, path) in entries.into_iter().skip(KEPT_ENTRIES) {
        let _ = std::fs::remove_dir_all(path);
    }
}
