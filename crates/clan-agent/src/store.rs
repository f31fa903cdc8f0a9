//! The agent's own state on a machine, under `/var/lib/clan`: stored generations, the history
//! (`state.json`), the pending confirmation of a magic rollback (`pending.json`), the
//! per-machine lock and the machine's age key. Every write is a temp file renamed into place,
//! through [`clan_fs::system`] (no link a non-root user controls is followed).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use clan_fs::system::System;
use clan_fs::WriteOptions;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clan_generation::reply::HistoryEntry;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::AgentError;

/// Where everything lives; `root` is `/` except for image directories (`--root`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn new(root: &Path) -> Paths {
        Paths {
            root: root.to_path_buf(),
        }
    }

    /// The machine's file system, walked with the agent's link policy.
    pub fn system(&self) -> Result<System, AgentError> {
        Ok(System::open(&self.root)?)
    }

    /// Whether this is the running system (daemons, users and packages may be touched).
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `path` (absolute on the machine) under the root.
    pub fn on_machine(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.on_machine(clan_generation::STATE_DIR)
    }

    pub fn generations(&self) -> PathBuf {
        self.state_dir().join("generations")
    }

    pub fn generation(&self, id: &str) -> PathBuf {
        self.generations().join(id)
    }

    pub fn key_file(&self) -> PathBuf {
        self.state_dir().join("age.key")
    }

    pub fn unit_path(&self, unit: &str) -> String {
        format!("/etc/systemd/system/{unit}")
    }

    fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    fn pending_file(&self) -> PathBuf {
        self.state_dir().join("pending.json")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub current: Option<String>,
    pub history: Vec<HistoryEntry>,
}

impl State {
    pub fn load(paths: &Paths) -> Result<State, AgentError> {
        Ok(read_json(&paths.state_file())?.unwrap_or_default())
    }

    pub fn save(&self, paths: &Paths) -> Result<(), AgentError> {
        write_json(&paths.state_file(), self)
    }

    /// Records an activation; `current` moves unless the action failed.
    pub fn record(&mut self, generation: &str, action: &str, detail: Option<String>) {
        let number = self.history.last().map_or(1, |last| last.number + 1);
        self.history.push(HistoryEntry {
            number,
            generation: generation.to_owned(),
            time: now(),
            action: action.to_owned(),
            detail,
        });
        if action != "failed" {
            self.current = Some(generation.to_owned());
        }
    }

    /// The generation active before the current one (skipping failures and repeats).
    pub fn previous(&self) -> Option<&str> {
        let current = self.current.as_deref()?;
        self.history
            .iter()
            .rev()
            .filter(|entry| entry.action != "failed")
            .map(|entry| entry.generation.as_str())
            .find(|generation| *generation != current)
    }
}

/// A generation activated but not confirmed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    pub generation: String,
    pub previous: Option<String>,
    /// Unix seconds after which the machine reverts.
    pub deadline: u64,
}

impl Pending {
    pub fn load(paths: &Paths) -> Result<Option<Pending>, AgentError> {
        read_json(&paths.pending_file())
    }

    pub fn save(&self, paths: &Paths) -> Result<(), AgentError> {
        write_json(&paths.pending_file(), self)
    }

    pub fn clear(paths: &Paths) -> Result<(), AgentError> {
        remove_if_present(&paths.pending_file())
    }
}

/// The per-machine lock: held while a generation is activated or rolled back, so two deploys
/// never interleave. Released when dropped (or when the process dies).
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Waits up to `timeout` for the lock; `on_wait` is told once that someone else holds it,
    /// and who. The holder writes its command, PID and start time into the lock file.
    pub fn acquire(
        paths: &Paths,
        timeout: Duration,
        on_wait: impl FnOnce(&str),
    ) -> Result<Lock, AgentError> {
        Lock::acquire_for(paths, "lock", "deploy or rollback", timeout, on_wait)
    }

    /// The lock in file `name` of the state directory, held by `what` (`backup`): backups
    /// and restores wait for each other, not for deploys.
    pub fn acquire_for(
        paths: &Paths,
        name: &str,
        what: &str,
        timeout: Duration,
        on_wait: impl FnOnce(&str),
    ) -> Result<Lock, AgentError> {
        let dir = paths.state_dir();
        create_dir(&dir, 0o700)?;
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(AgentError::io("opening", &path))?;
        let deadline = Instant::now() + timeout;
        let mut on_wait = Some(on_wait);
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    record_holder(&mut file);
                    return Ok(Lock { _file: file });
                }
                Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                    if let Some(notify) = on_wait.take() {
                        notify(&holder(&path));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(AgentError::Busy(format!(
                        "another {what} of this machine is running ({}); waited {} s",
                        holder(&path),
                        timeout.as_secs()
                    )))
                }
                Err(error) => {
                    return Err(AgentError::io("locking", &path)(error.into()));
                }
            }
        }
    }
}

/// Writes `<pid> <unix time> <command>` into the held lock file, for whoever waits.
fn record_holder(file: &mut File) {
    use std::io::{Seek as _, Write as _};
    let command: Vec<String> = std::env::args().skip(1).take(3).collect();
    let line = format!("{} {} {}\n", std::process::id(), now(), command.join(" "));
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = file.write_all(line.as_bytes());
}

/// Who holds the lock at `path` and for how long, from what it recorded.
fn holder(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut words = text.split_whitespace();
    match (
        words.next(),
        words.next().and_then(|t| t.parse::<u64>().ok()),
    ) {
        (Some(pid), Some(since)) => {
            let command: Vec<&str> = words.collect();
            format!(
                "`clan {}`, pid {pid}, for {} s",
                command.join(" "),
                now().saturating_sub(since)
            )
        }
        _ => "holder unknown".to_owned(),
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The host's file system, for the agent's own state (host paths, image root included).
fn host() -> Result<System, AgentError> {
    Ok(System::open(Path::new("/"))?)
}

pub fn create_dir(path: &Path, mode: u32) -> Result<(), AgentError> {
    host()?.dir(path, Some(mode))?;
    Ok(())
}

pub fn remove_if_present(path: &Path) -> Result<(), AgentError> {
    match host()?.parent(path, None) {
        Ok((dir, name)) => {
            dir.remove_file(Path::new(&name))?;
            Ok(())
        }
        Err(error) if error.is_not_found() => Ok(()),
        Err(error) => Err(error.into()),
    }
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, AgentError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AgentError::Corrupt(format!("{}: {e}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(AgentError::io("reading", path)(error)),
    }
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), AgentError> {
    let bytes = serde_json::to_vec_pretty(value).expect("state serialises");
    write_private(path, &bytes)
}

/// Writes `bytes` to `path` atomically, created 0600 before any byte is written.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let (dir, name) = host()?.parent(path, Some(0o700))?;
    dir.write(Path::new(&name), bytes, WriteOptions::new(0o600))?;
    Ok(())
}
