//! What the agent prints on stdout and the deployer reads: one definition for both sides.
//! Every agent command that answers prints one of these as JSON; one that fails prints a
//! [`Failure`].

use serde::{Deserialize, Serialize};

use crate::Manifest;

/// The exit code of `clan agent confirm` when the generation was already reverted.
pub const EXIT_REVERTED: u8 = 3;

/// What `clan agent status` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub version: String,
    pub current: Option<String>,
    /// Generations stored on the machine.
    pub stored: Vec<String>,
    /// Whether the machine's age key is installed.
    pub has_key: bool,
    /// A generation awaiting confirmation.
    pub pending: Option<String>,
}

/// What `clan agent activate` and `rollback` report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activation {
    pub generation: String,
    pub previous: Option<String>,
    pub changes: Changes,
    /// Unix time by which `clan agent confirm` must come, with magic rollback.
    pub confirm_by: Option<u64>,
}

/// What an activation changed (or, in a dry run, would change).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Changes {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups_created: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users_created: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users_modified: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packages_installed: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets_changed: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_written: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_removed: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_kept_aside: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub units_started: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub units_restarted: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub units_reloaded: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub units_stopped: Vec<String>,
}

impl Changes {
    /// Everything `manifest` manages, as new: what a first deploy does to a machine that has
    /// never had a generation (files already there are only found on the machine itself).
    pub fn first_deploy(manifest: &Manifest) -> Changes {
        let packages: std::collections::BTreeSet<&str> = manifest
            .packages
            .values()
            .flatten()
            .map(|p| p.as_str())
            .collect();
        fn names<T: ToString>(names: impl Iterator<Item = T>) -> Vec<String> {
            names.map(|name| name.to_string()).collect()
        }
        Changes {
            groups_created: names(manifest.groups.keys()),
            users_created: names(manifest.users.keys()),
            packages_installed: names(packages.into_iter()),
            secrets_changed: manifest.secrets.keys().cloned().collect(),
            files_written: names(manifest.files.keys()),
            units_started: names(manifest.units.keys()),
            ..Changes::default()
        }
    }

    /// One line: `2 files written, 1 unit restarted`, or `no changes`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            (self.groups_created.len(), "group created"),
            (self.users_created.len(), "user created"),
            (self.users_modified.len(), "user modified"),
            (self.packages_installed.len(), "package installed"),
            (self.secrets_changed.len(), "secret changed"),
            (self.files_written.len(), "file written"),
            (self.files_removed.len(), "file removed"),
            (self.files_kept_aside.len(), "file kept aside"),
            (self.units_started.len(), "unit started"),
            (self.units_restarted.len(), "unit restarted"),
            (self.units_reloaded.len(), "unit reloaded"),
            (self.units_stopped.len(), "unit stopped"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| {
            let (noun, verb) = what.split_once(' ').unwrap_or((what, ""));
            format!("{n} {noun}{} {verb}", if n == 1 { "" } else { "s" })
        })
        .collect();
        if parts.is_empty() {
            "no changes".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// One activation in the machine's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub number: u64,
    pub generation: String,
    /// Unix seconds.
    pub time: u64,
    /// `deploy`, `rollback`, `magic-rollback`, `failed`, `restore`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What `clan agent generations` reports: the current generation and the history, oldest
/// first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Generations {
    pub current: Option<String>,
    pub history: Vec<HistoryEntry>,
}

impl Generations {
    /// The index in `history` of the entry that made the current generation current.
    pub fn current_entry(&self) -> Option<usize> {
        self.history.iter().rposition(|entry| {
            Some(&entry.generation) == self.current.as_ref() && entry.action != "failed"
        })
    }
}

/// The first 12 characters of a generation id, for people. Ids also come from machines'
/// answers, so any text is cut on a character boundary.
pub fn short(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(end, _)| &id[..end])
}

/// What a failed agent command prints on stdout instead of its answer (its exit code is not
/// 0): the failure as the deployer reports it, typed, rather than read from stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub kind: FailureKind,
    /// The whole message, for people.
    pub message: String,
    /// The file or directory it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The systemd unit it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// What went wrong first, when this failure is the agent's answer to it (an activation
    /// that failed and was rolled back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Box<Failure>>,
}

/// The kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// Reading or writing a file or directory.
    Io,
    /// A path the machine's policy refuses (a link a non-root user controls, not a file).
    Path,
    /// A program the agent runs (`useradd`, `apt-get`, …) failed.
    Command,
    /// A systemd unit failed to start, restart or reload.
    Unit,
    /// A step of the activation could not be done.
    Step,
    /// Decrypting or installing secrets.
    Secret,
    /// Another deploy holds the machine.
    Busy,
    /// The generation named is not on the machine.
    UnknownGeneration,
    /// The agent's own state is damaged.
    Corrupt,
    /// The uploaded generation was refused.
    Upload,
    /// Activation failed and the previous generation was put back (see `cause`).
    RolledBack,
    /// The generation was not confirmed in time and was reverted.
    Reverted,
    /// Anything else, or an agent that did not say (it was killed, or is too old).
    Other,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// What `clan agent backups create` reports: the providers that made an archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupCreated {
    pub providers: Vec<String>,
    /// The states backed up.
    pub states: Vec<String>,
    /// Unix time the backup finished.
    pub time: u64,
}

/// One archive, as a provider's `list` command prints it (clan-core's contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Archive {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "job_name")]
    pub job_name: Option<String>,
}

/// What `clan agent backups list` reports, per provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderArchives {
    pub provider: String,
    pub archives: Vec<Archive>,
}

/// What `clan agent backups restore` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub provider: String,
    pub archive: String,
    pub states: Vec<String>,
    /// Where the folders went: `/` (over live data) or a staging directory.
    pub root: String,
}

/// What `clan agent backups status` and `check` report: the machine's last results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackupStatus {
    /// The states the current generation declares.
    pub states: Vec<String>,
    pub providers: std::collections::BTreeMap<String, ProviderStatus>,
}

/// One provider's last backup and check on a machine (unix times).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderStatus {
    /// The last run that made an archive.
    pub last_success: Option<u64>,
    pub last_failure: Option<u64>,
    pub last_error: Option<String>,
    pub last_check: Option<u64>,
    pub last_check_ok: Option<bool>,
    pub last_check_error: Option<String>,
    /// When the provider's timer last started a backup.
    pub last_scheduled: Option<u64>,
    /// The latest backup failed, or the timer's latest run made no archive: the newest
    /// archive is older than the schedule allows.
    pub stale: bool,
}
