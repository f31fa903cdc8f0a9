//! The on-disk evaluation cache. Evaluation is a pure function of the clan's files, so its
//! result is stored under a hash of them: a second run with no change reads JSON and does no
//! Starlark work. Each entry holds `summary.json`, every machine's document in `machines.json`
//! and their offsets in `index.json`, so
//! `machines show` reads one small file. Each file is written atomically
//! (`clan_fs::write_file`), the summary last: an entry exists once its summary does, so one
//! interrupted halfway is only written again. Only the newest few are kept.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use clan_fs::WriteOptions;
use rayon::prelude::*;

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::evaluate::{EvaluatedMachine, FleetSummary};

const KEPT_ENTRIES: usize = 8;
const SUMMARY: &str = "summary.json";
const MACHINES: &str = "machines.json";
const INDEX: &str = "index.json";

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

/// Whether the cache at `root` may be read and written: created private if missing, it must
/// be changeable by this user only ([`clan_fs::only_mine`]). Without `HOME` the cache lands
/// in the shared temporary directory, where another user could have planted an evaluation
/// for root to deploy; there, and wherever else that holds, clan evaluates without a cache.
pub fn usable(root: &Path) -> bool {
    use std::os::unix::fs::DirBuilderExt as _;
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root);
    clan_fs::only_mine(root)
}

/// Hashes the evaluation's inputs: the program version, the prelude and built-in services, then each input
/// file as `(name, content)`.
pub struct InputHash(Sha256);

impl InputHash {
    pub fn new() -> Self {
        let mut hasher = Sha256::new();
        hasher.update(env!("CARGO_PKG_VERSION"));
        hasher.update(clan_service::PRELUDE.as_bytes());
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
        self.dir.join(SUMMARY).is_file()
    }

    pub fn summary(&self) -> Result<FleetSummary, Error> {
        read_json(&self.dir.join(SUMMARY))
    }

    pub fn machine(&self, name: &str) -> Result<Option<EvaluatedMachine>, Error> {
        let index: BTreeMap<String, (u64, usize)> = read_json(&self.dir.join(INDEX))?;
        let Some(&(offset, length)) = index.get(name) else {
            return Ok(None);
        };
        let path = self.dir.join(MACHINES);
        let read = || -> std::io::Result<Vec<u8>> {
            let mut file = std::fs::File::open(&path)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut bytes = vec![0; length];
            file.read_exact(&mut bytes)?;
            Ok(bytes)
        };
        let bytes = read().map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        parse_json(&path, &bytes).map(Some)
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
        std::fs::create_dir_all(&self.dir).map_err(cache_error)?;
        let documents: Vec<Vec<u8>> = machines
            .par_iter()
            .map(|machine| serde_json::to_vec(machine).expect("plain data"))
            .collect();
        let mut index = BTreeMap::new();
        let mut offset = 0u64;
        for (machine, document) in machines.iter().zip(&documents) {
            index.insert(machine.summary.name.as_str(), (offset, document.len()));
            offset += document.len() as u64;
        }
        // A concurrent writer of the same entry writes the same bytes: either rename wins.
        let write = |name: &str, content: &[u8]| {
            clan_fs::write_file(&self.dir.join(name), content, WriteOptions::new(0o600))
                .map_err(|source| cache_error(std::io::Error::other(source)))
        };
        write(MACHINES, &documents.concat())?;
        write(INDEX, &serde_json::to_vec(&index).expect("plain data"))?;
        write(SUMMARY, &serde_json::to_vec(summary).expect("plain data"))?;
        prune(root);
        Ok(())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_json(path, &bytes)
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|error| Error::Read {
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
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    for (_, path) in entries.into_iter().skip(KEPT_ENTRIES) {
        let _ = std::fs::remove_dir_all(path);
    }
}
