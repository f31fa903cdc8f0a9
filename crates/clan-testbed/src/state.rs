//! The state file (`state.json` in the state directory): everything a later process needs to
//! find, inspect and tear down a testbed it did not start — the subnet index, the root
//! filesystem, and each machine's slot and container PID.
//!
//! Written atomically (temporary file + rename) after every change.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name of the state file inside the state directory.
pub(crate) const FILE_NAME: &str = "state.json";

/// Format version; a different version is refused rather than misread.
const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    /// The testbed's subnet index (see `net`).
    pub index: u8,
    pub rootfs: PathBuf,
    /// Whether containers run in their own session (started by a process that exits).
    pub detach: bool,
    /// Host files bound read-only into every machine (see `Options::binds`).
    #[serde(default)]
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub machines: Vec<MachineState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MachineState {
    pub name: String,
    pub slot: u8,
    /// The container's PID while it runs.
    pub pid: Option<u32>,
}

impl State {
    pub fn new(index: u8, rootfs: PathBuf, detach: bool) -> State {
        State {
            version: VERSION,
            index,
            rootfs,
            detach,
            binds: Vec::new(),
            machines: Vec::new(),
        }
    }

    pub fn load(state_dir: &Path) -> Result<State> {
        let path = state_dir.join(FILE_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoTestbed {
                    state_dir: state_dir.to_path_buf(),
                })
            }
            Err(error) => return Err(clan_error::io("read", &path)(error).into()),
        };
        let state: State = serde_json::from_str(&text).map_err(|source| Error::StateFile {
            path: path.clone(),
            source,
        })?;
        if state.version != VERSION {
            return Err(Error::InvalidOptions(format!(
                "`{}` has format version {}, this clan understands {VERSION}",
                path.display(),
                state.version
            )));
        }
        Ok(state)
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = state_dir.join(FILE_NAME);
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::StateFile {
            path: path.clone(),
            source,
        })?;
        let options = clan_fs::WriteOptions::new(0o644);
        Ok(clan_fs::write_file(
            &path,
            (text + "\n").as_bytes(),
            options,
        )?)
    }

    pub fn remove(state_dir: &Path) -> Result<()> {
        let path = state_dir.join(FILE_NAME);
        match fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(clan_error::io("remove", &path)(error).into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            State::load(dir.path()),
            Err(Error::NoTestbed { .. })
        ));
        let mut state = State::new(3, "/cache/root".into(), true);
        state.machines.push(MachineState {
            name: "web".into(),
            slot: 0,
            pid: Some(42),
        });
        state.save(dir.path()).unwrap();
        let loaded = State::load(dir.path()).unwrap();
        assert_eq!(loaded.index, 3);
        assert_eq!(loaded.machines[0].pid, Some(42));
        State::remove(dir.path()).unwrap();
        State::remove(dir.path()).unwrap();
    }

    #[test]
    fn garbage_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "{").unwrap();
        let error = State::load(dir.path()).unwrap_err();
        assert!(error.to_string().contains("state.json"), "{error}");
    }
}
