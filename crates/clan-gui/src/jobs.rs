//! Deploy jobs: each runs in the server, keeps the `clan-lib` events it reports (as their
//! JSON, so new kinds of event need nothing here), broadcasts them to the pages watching, and
//! is kept on disk, private (0700 directory, 0600 files, atomic writes), under the state
//! directory, one directory per clan, so a reload, a second browser or the next `clan gui`
//! sees past runs. A job still running when the server stopped is shown as interrupted.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use clan_lib::{Event, Progress};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::broadcast;

use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    /// The server stopped while it ran.
    Interrupted,
}

/// One job as kept on disk and shown in the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// `deploy` or `dry-run`.
    pub kind: String,
    /// The machines asked for (empty: all).
    pub machines: Vec<String>,
    /// Unix milliseconds.
    pub started: u64,
    pub finished: Option<u64>,
    pub status: Status,
    /// Why the job as a whole failed (`{error, hint}`), when it did.
    pub error: Option<Value>,
    pub events: Vec<Value>,
}

/// An event as it is broadcast: when it was reported (Unix milliseconds) and its JSON.
pub type Stamped = (u64, Value);

struct Job {
    record: Mutex<Record>,
    sender: broadcast::Sender<Stamped>,
    path: PathBuf,
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The jobs of the clan the server works on.
pub struct Jobs {
    state_dir: PathBuf,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Creates `dir` and its missing parents, 0700.
fn private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::State {
            context: "create",
            path: dir.to_path_buf(),
            source,
        })
}

fn save(path: &Path, record: &Record) -> Result<(), Error> {
    let json = serde_json::to_vec(record).expect("a record serialises");
    clan_fs::write_file(path, &json, clan_fs::WriteOptions::new(0o600)).map_err(|source| {
        Error::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

impl Jobs {
    pub fn new(state_dir: PathBuf) -> Jobs {
        Jobs {
            state_dir,
            jobs: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Job>>> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where the jobs of the clan in `clan_dir` are kept.
    pub fn dir_of(&self, clan_dir: &Path) -> PathBuf {
        let canonical = clan_dir
            .canonicalize()
            .unwrap_or_else(|_| clan_dir.to_path_buf());
        let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        self.state_dir
            .join(hex::encode(&digest[..8]))
            .join("deploys")
    }

    /// Reads the jobs kept for the clan in `clan_dir` (replacing those of another clan); a
    /// job left running is marked interrupted. Unreadable files are left out.
    pub fn load(&self, clan_dir: &Path) -> Result<(), Error> {
        let dir = self.dir_of(clan_dir);
        private_dir(&dir)?;
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::State {
            context: "read",
            path: dir.clone(),
            source,
        })?;
        let mut jobs = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(mut record) = serde_json::from_slice::<Record>(&bytes) else {
                continue;
            };
            if record.status == Status::Running {
                record.status = Status::Interrupted;
                save(&path, &record)?;
            }
            let (sender, _) = broadcast::channel(1);
            jobs.insert(
                record.id.clone(),
                Arc::new(Job {
                    record: Mutex::new(record),
                    sender,
                    path,
                }),
            );
        }
        *self.lock() = jobs;
        Ok(())
    }

    /// Every job without its events, newest first.
    pub fn history(&self) -> Vec<Value> {
        let mut records: Vec<Value> = self
            .lock()
            .values()
            .map(|job| {
                let record = job.lock();
                json!({
                    "id": record.id, "kind": record.kind, "machines": record.machines,
                    "started": record.started, "finished": record.finished,
                    "status": record.status, "error": record.error,
                })
            })
            .collect();
        records.sort_by_key(|record| std::cmp::Reverse(record["started"].as_u64()));
        records
    }

    pub fn get(&self, id: &str) -> Option<Record> {
        self.lock().get(id).map(|job| job.lock().clone())
    }

    /// The events so far and, while the job runs, a receiver of the ones to come (taken
    /// together, so none is missed or seen twice).
    pub fn watch(&self, id: &str) -> Option<(Vec<Value>, Option<broadcast::Receiver<Stamped>>)> {
        let job = self.lock().get(id).cloned()?;
        let record = job.lock();
        let receiver = (record.status == Status::Running).then(|| job.sender.subscribe());
        Some((record.events.clone(), receiver))
    }

    /// Starts recording a job of `kind` for `machines` of the clan in `clan_dir`.
    pub fn start(
        &self,
        clan_dir: &Path,
        kind: &str,
        machines: Vec<String>,
    ) -> Result<Recorder, Error> {
        let dir = self.dir_of(clan_dir);
        private_dir(&dir)?;
        let started = now_ms();
        let id = format!("{started}-{:08x}", rand::rngs::OsRng.next_u32());
        let record = Record {
            id: id.clone(),
            kind: kind.to_owned(),
            machines,
            started,
            finished: None,
            status: Status::Running,
            error: None,
            events: Vec::new(),
        };
        let path = dir.join(format!("{id}.json"));
        save(&path, &record)?;
        let (sender, _) = broadcast::channel(4096);
        let job = Arc::new(Job {
            record: Mutex::new(record),
            sender,
            path,
        });
        self.lock().insert(id, job.clone());
        Ok(Recorder { job })
    }
}

/// The [`Progress`] sink of one running job.
pub struct Recorder {
    job: Arc<Job>,
}

impl Recorder {
    pub fn id(&self) -> String {
        self.job.lock().id.clone()
    }

    fn push(&self, event: Value) {
        let mut record = self.job.lock();
        // Remote output can be long: the file is rewritten for every other event and at the
        // end, not for each output line.
        let keep = event["event"] != "output";
        record.events.push(event.clone());
        let _ = self.job.sender.send((now_ms(), event));
        if keep {
            let _ = save(&self.job.path, &record);
        }
    }

    /// Ends the job with `status` (and `error` when it failed as a whole).
    pub fn finish(&self, status: Status, error: Option<Value>) -> Result<(), Error> {
        let event = json!({"kind": "job-finished", "status": status, "error": error});
        let mut record = self.job.lock();
        record.status = status;
        record.error = error;
        record.finished = Some(now_ms());
        record.events.push(event.clone());
        let _ = self.job.sender.send((now_ms(), event));
        save(&self.job.path, &record)
    }
}

impl Progress for Recorder {
    fn event(&self, event: Event) {
        match serde_json::to_value(&event) {
            Ok(value) => self.push(value),
            Err(error) => self.push(json!({"kind": "unreadable", "error": error.to_string()})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn jobs_are_kept_private_and_a_running_one_reloads_as_interrupted() {
        let state = tempfile::tempdir().unwrap();
        let clan = tempfile::tempdir().unwrap();
        let jobs = Jobs::new(state.path().to_path_buf());
        let done = jobs
            .start(clan.path(), "deploy", vec!["web".into()])
            .unwrap();
        done.event(Event::Recovered { what: "x".into() });
        done.finish(Status::Succeeded, None).unwrap();
        let running = jobs.start(clan.path(), "dry-run", Vec::new()).unwrap();
        let dir = jobs.dir_of(clan.path());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let again = Jobs::new(state.path().to_path_buf());
        again.load(clan.path()).unwrap();
        let history = again.history();
        assert_eq!(history.len(), 2);
        let record = again.get(&done.id()).unwrap();
        assert_eq!(record.status, Status::Succeeded);
        assert_eq!(record.events[0]["kind"], "recovered");
        assert_eq!(record.events[1]["kind"], "job-finished");
        assert_eq!(
            again.get(&running.id()).unwrap().status,
            Status::Interrupted
        );
    }
}
