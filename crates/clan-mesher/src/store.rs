//! Persistent state of one network on one node.
//!
//! Layout under the state directory: `files/<network>/<name>` holds each current file's content
//! for consumers to read or watch, `records/<network>/<name>.record` its signed record (the
//! commit point, written after the content), `records/<network>/<name>.expired` the last record
//! of an expired file (so an older version cannot come back), and `tmp/` the temporary files
//! every write goes through, so no partial file is ever visible under `files/`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::index::Index;
use crate::keys::NetworkId;
use crate::name::FileName;
use crate::record::{Kind, Record};

/// The state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] clan_error::IoError),
    #[error(transparent)]
    Fs(#[from] clan_fs::Error),
    #[error("file `{name}` conflicts with an existing file or directory at `{}`", path.display())]
    PathConflict { name: FileName, path: PathBuf },
}

use clan_error::io as io_error;

/// Records and contents of one network, with the index kept in memory.
pub struct Store {
    files_dir: PathBuf,
    records_dir: PathBuf,
    tmp_dir: PathBuf,
    index: Index,
    /// Signing times of expired files: records for these names must be newer.
    expired: HashMap<FileName, u64>,
}

impl Store {
    /// Opens (creating if needed) the state of `network`, dropping records whose content is
    /// missing or does not match, so they are fetched again.
    pub fn open(state_dir: &Path, network: &NetworkId) -> Result<Self, StoreError> {
        let network_dir = network.to_string();
        let mut store = Self {
            files_dir: state_dir.join("files").join(&network_dir),
            records_dir: state_dir.join("records").join(&network_dir),
            tmp_dir: state_dir.join("tmp"),
            index: Index::default(),
            expired: HashMap::new(),
        };
        for dir in [&store.files_dir, &store.records_dir, &store.tmp_dir] {
            fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        }
        for entry in fs::read_dir(&store.tmp_dir)
            .map_err(io_error("read", &store.tmp_dir))?
            .flatten()
        {
            let _ = fs::remove_file(entry.path());
        }
        let mut record_files = Vec::new();
        collect_files(&store.records_dir, &mut record_files)
            .map_err(io_error("read", &store.records_dir))?;
        for path in record_files {
            store.load_record_file(&path, network);
        }
        Ok(store)
    }

    fn load_record_file(&mut self, path: &Path, network: &NetworkId) {
        let expired = path.extension().is_some_and(|ext| ext == "expired");
        let record = fs::read(path)
            .ok()
            .and_then(|raw| Record::from_bytes(&raw).ok());
        let Some(record) =
            record.filter(|r| r.network == *network && self.record_path(&r.name, expired) == path)
        else {
            tracing::warn!(path = %path.display(), "removing unreadable record");
            let _ = fs::remove_file(path);
            return;
        };
        if expired {
            self.expired.insert(record.name.clone(), record.signed_at);
            return;
        }
        if record.kind == Kind::Update {
            let content = fs::read(self.content_path(&record.name)).unwrap_or_default();
            if !record.matches_content(&content) {
                tracing::warn!(name = %record.name, "content does not match its record; will fetch again");
                let _ = fs::remove_file(path);
                return;
            }
        }
        self.index.insert(record);
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn current(&self, name: &FileName) -> Option<&Record> {
        self.index.get(name)
    }

    /// Whether `record` would replace what this node holds (or has seen expire) for its name.
    pub fn is_newer(&self, record: &Record) -> bool {
        if self
            .expired
            .get(&record.name)
            .is_some_and(|&at| record.signed_at <= at)
        {
            return false;
        }
        self.index
            .get(&record.name)
            .is_none_or(|current| record.supersedes(current))
    }

    /// Writes atomically through `tmp/` (emptied on open): any name in the files and records
    /// directories is read as data, so no temporary file may appear there.
    fn write(&self, path: &Path, content: &[u8]) -> Result<(), StoreError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error("create", parent))?;
        }
        let options = clan_fs::WriteOptions::new(0o644);
        Ok(clan_fs::write_file_staged(
            path,
            &self.tmp_dir,
            content,
            options,
        )?)
    }

    pub fn content_path(&self, name: &FileName) -> PathBuf {
        self.files_dir.join(name.as_str())
    }

    fn record_path(&self, name: &FileName, expired: bool) -> PathBuf {
        let extension = if expired { "expired" } else { "record" };
        self.records_dir
            .join(format!("{}.{extension}", name.as_str()))
    }

    /// Makes `record` current; `content` must match it (checked by the caller) for updates.
    pub fn commit(&mut self, record: Record, content: &[u8]) -> Result<(), StoreError> {
        let content_path = self.content_path(&record.name);
        match record.kind {
            Kind::Update => {
                self.check_conflict(&record.name, &content_path)?;
                self.write(&content_path, content)?;
            }
            Kind::Tombstone => remove_if_present(&content_path)?,
        }
        let record_path = self.record_path(&record.name, false);
        self.write(&record_path, &record.to_bytes())?;
        remove_if_present(&self.record_path(&record.name, true))?;
        self.expired.remove(&record.name);
        self.index.insert(record);
        Ok(())
    }

    /// A file cannot live where a directory of another file is, nor below another file.
    fn check_conflict(&self, name: &FileName, path: &Path) -> Result<(), StoreError> {
        let conflict = path.is_dir()
            || path
                .ancestors()
                .skip(1)
                .take_while(|p| *p != self.files_dir)
                .any(|p| p.is_file());
        if conflict {
            return Err(StoreError::PathConflict {
                name: name.clone(),
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    /// The content of the current version of `name`, if it still matches its record.
    pub fn read_content(&self, name: &FileName) -> Option<(Record, Vec<u8>)> {
        let record = self.index.get(name)?;
        let content = fs::read(self.content_path(name)).ok()?;
        record
            .matches_content(&content)
            .then(|| (record.clone(), content))
    }

    /// Removes every file whose validity ended by `now`; returns their names.
    pub fn expire(&mut self, now: u64) -> Result<Vec<FileName>, StoreError> {
        let due: Vec<Record> = self
            .index
            .records()
            .filter(|r| r.is_expired(now))
            .cloned()
            .collect();
        let mut names = Vec::with_capacity(due.len());
        for record in due {
            remove_if_present(&self.content_path(&record.name))?;
            let from = self.record_path(&record.name, false);
            let to = self.record_path(&record.name, true);
            fs::rename(&from, &to).map_err(io_error("rename", &from))?;
            self.index.remove(&record.name);
            self.expired.insert(record.name.clone(), record.signed_at);
            names.push(record.name);
        }
        Ok(names)
    }
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(io_error("remove", path)(error).into())
        }
        _ => Ok(()),
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_files(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

impl clan_error::Hint for StoreError {}
clan_error::register!(StoreError);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn name(text: &str) -> FileName {
        FileName::parse(text).unwrap()
    }

    #[test]
    fn committed_files_survive_reopen_and_tampered_content_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let network = key.public();
        let mut store = Store::open(dir.path(), &network).unwrap();
        for (file, content) in [("a", b"1".as_slice()), ("dns/zone", b"zone")] {
            store
                .commit(
                    Record::sign_update(&key, network, name(file), content, 1, None),
                    content,
                )
                .unwrap();
        }
        assert_eq!(
            fs::read(store.content_path(&name("dns/zone"))).unwrap(),
            b"zone"
        );
        fs::write(store.content_path(&name("a")), b"tampered").unwrap();
        let reopened = Store::open(dir.path(), &network).unwrap();
        assert_eq!(reopened.index().len(), 1);
        assert!(reopened.current(&name("dns/zone")).is_some());
    }

    #[test]
    fn tombstone_removes_the_file_and_expiry_blocks_older_versions() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let network = key.public();
        let mut store = Store::open(dir.path(), &network).unwrap();
        store
            .commit(
                Record::sign_update(&key, network, name("a"), b"1", 1, None),
                b"1",
            )
            .unwrap();
        store
            .commit(Record::sign_tombstone(&key, network, name("a"), 2), b"")
            .unwrap();
        assert!(!store.content_path(&name("a")).exists());
        let stale = Record::sign_update(&key, network, name("a"), b"1", 1, None);
        assert!(!store.is_newer(&stale));

        store
            .commit(
                Record::sign_update(&key, network, name("b"), b"1", 5, Some(10)),
                b"1",
            )
            .unwrap();
        assert_eq!(store.expire(10).unwrap(), vec![name("b")]);
        assert!(!store.content_path(&name("b")).exists());
        let reopened = Store::open(dir.path(), &network).unwrap();
        let older = Record::sign_update(&key, network, name("b"), b"0", 4, Some(100));
        assert!(!reopened.is_newer(&older));
        let newer = Record::sign_update(&key, network, name("b"), b"2", 6, None);
        assert!(reopened.is_newer(&newer));
    }

    #[test]
    fn file_below_another_file_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let network = key.public();
        let mut store = Store::open(dir.path(), &network).unwrap();
        store
            .commit(
                Record::sign_update(&key, network, name("a"), b"1", 1, None),
                b"1",
            )
            .unwrap();
        let below = Record::sign_update(&key, network, name("a/b"), b"2", 1, None);
        assert!(matches!(
            store.commit(below, b"2"),
            Err(StoreError::PathConflict { .. })
        ));
    }
}
