//! The MachineConfig types. Keys are camelCase, as in clan-core, so services read alike.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A file template writes `@clan-secret:<generator>/<file>@` where the target fills in the
/// secret's value; the admin side never sees it in plain text.
pub const SECRET_PLACEHOLDER_PREFIX: &str = "@clan-secret:";

/// The generator name under which clan secrets (`clan secrets set NAME --machine m`) travel
/// among a machine's secrets, to `/run/secrets/<name>`: no vars generator can be named so.
pub const CLAN_SECRETS: &str = "@secrets";

/// The whole declared state of one machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineConfig {
    /// Absolute path → file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, File>,
    /// Unit name (`hello.service`) → unit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<String, Unit>,
    /// Distribution family (`debian`, `fedora`, `arch`) → package names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, User>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Group>,
    /// Vars generators this machine needs, by generator name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generators: BTreeMap<String, Generator>,
    /// Service state to back up, by state name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub state: BTreeMap<String, State>,
    /// The backup providers that back this machine's state up (`clan backups`).
    #[serde(default, skip_serializing_if = "Backups::is_empty")]
    pub backups: Backups,
    #[serde(default, skip_serializing_if = "Firewall::is_empty")]
    pub firewall: Firewall,
    /// Who may read clan secrets set for this machine (`clan secrets set NAME --machine m`),
    /// by secret name; those without an entry are root's alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretAccess>,
    /// Free-form NixOS options, for `nixos` machines.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub nixos: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct File {
    pub content: String,
    /// Whether `content` holds secret placeholders to fill in on the machine.
    #[serde(default, skip_serializing_if = "is_false")]
    pub template: bool,
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
    /// Octal permission bits, e.g. `"0644"`.
    #[serde(default = "file_mode")]
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Unit {
    pub content: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Restart the unit when its content, or a file in `restart_triggers`, changes.
    #[serde(default = "yes")]
    pub restart_on_change: bool,
    /// Files (managed paths, or secrets under `/run/clan/secrets/`) the unit reads: a change
    /// to one restarts it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_triggers: Vec<String>,
    /// Files whose change reloads the unit (`systemctl reload-or-restart`) instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload_triggers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub system: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The var holding the user's password hash (crypt format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<VarRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Group {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub system: bool,
}

/// A file of a vars generator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarRef {
    pub generator: String,
    pub file: String,
}

/// A vars generator, as clan-core declares them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Generator {
    #[serde(default)]
    pub files: BTreeMap<String, GeneratorFile>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prompts: BTreeMap<String, Prompt>,
    /// Generators whose files this one reads as `$in/<dependency>/<file>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// One copy for every machine that declares it (`vars/shared/`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub share: bool,
    /// A change of this value forces regeneration.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub validation: Value,
    /// Bash script; writes each file to `$out/<file>`.
    #[serde(default)]
    pub script: String,
    /// Commands the script needs on PATH.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_inputs: Vec<String>,
    /// Seconds the script may run before it is killed ([`Generator::DEFAULT_TIMEOUT`] when
    /// unset); not a clan-core setting, which has no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

impl Generator {
    /// Ten minutes: generous for key generation, short of hanging a fleet's run for good.
    pub const DEFAULT_TIMEOUT: u64 = 600;

    /// The script's time limit in seconds.
    pub fn timeout_seconds(&self) -> u64 {
        self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GeneratorFile {
    #[serde(default = "yes")]
    pub secret: bool,
    /// Whether the machine receives it (secrets only).
    #[serde(default = "yes")]
    pub deploy: bool,
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
    #[serde(default = "secret_mode")]
    pub mode: String,
    /// `partitioning`, `activation`, `users` or `services` (clan-core's phases).
    #[serde(default = "services")]
    pub needed_for: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptType {
    Line,
    Multiline,
    Hidden,
    MultilineHidden,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Prompt {
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type", default = "line")]
    pub kind: PromptType,
    /// Store the answer as a var file of the same name.
    #[serde(default, skip_serializing_if = "is_false")]
    pub persist: bool,
    /// Display hints for the GUI: label, group, required, helperText.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub display: Value,
}

/// State of a service to back up and restore, as clan-core's `clan.core.state.<name>`: its
/// folders, and shell scripts run (as root, by `/bin/sh -c`) around a backup or a restore. A
/// pre-backup script makes the folders consistent (a database dump); a failing one fails the
/// backup. `check` is this project's addition: a command that exits 0 when restored data is
/// usable (`clan backups drill` runs it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct State {
    #[serde(default)]
    pub folders: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "preBackupCommand"
    )]
    pub pre_backup_script: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "postBackupCommand"
    )]
    pub post_backup_script: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "preRestoreCommand"
    )]
    pub pre_restore_script: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "postRestoreCommand"
    )]
    pub post_restore_script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// clan-core's `clan.core.backups`: the providers a machine backs its state up with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backups {
    #[serde(default)]
    pub providers: BTreeMap<String, BackupProvider>,
}

impl Backups {
    fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

/// One provider, with clan-core's contract: each field is a shell command run as root on the
/// machine. `create` backs up the folders in `FOLDERS` (`:`-separated); `list` prints a JSON
/// array of `{"name": …}`, newest last or first; `restore` restores archive `NAME`'s folders
/// `FOLDERS` under the directory `RESTORE_ROOT` (`/` unless `clan backups restore --to`).
/// `check`, this project's addition, verifies the repository and its archives; `startAt` and
/// `checkAt` (systemd calendar events) schedule `clan backups create` and `check` on the
/// machine with timers clan writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupProvider {
    pub create: String,
    pub list: String,
    pub restore: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_at: Option<String>,
}

/// Owner, group and mode of a clan secret on the machine (`/run/secrets/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretAccess {
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
    /// Octal permission bits.
    #[serde(default = "secret_mode")]
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    /// Turn the machine's firewall on: new inbound connections are dropped except to these
    /// ports and SSH (see `clan_generation::firewall`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable: bool,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tcp: BTreeSet<u16>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub udp: BTreeSet<u16>,
}

impl Firewall {
    fn is_empty(&self) -> bool {
        !self.enable && self.tcp.is_empty() && self.udp.is_empty()
    }
}

fn is_false(value: &bool) -> bool {
    !value
}
fn yes() -> bool {
    true
}
fn root() -> String {
    "root".to_owned()
}
fn file_mode() -> String {
    "0644".to_owned()
}
fn secret_mode() -> String {
    "0400".to_owned()
}
fn services() -> String {
    "services".to_owned()
}
fn line() -> PromptType {
    PromptType::Line
}
