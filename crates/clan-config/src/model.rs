//! The MachineConfig types. Keys are camelCase, as in clan-core, so services read alike.
//! Names and modes are typed ([`crate::names`]): deserialising checks them and says where a
//! bad one is (`file `/etc/app.conf` mode: `0688` is not an octal file mode`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::names::{
    AbsolutePath, AccountName, CalendarEvent, FileMode, HostName, PackageName, StateName, UnitName,
};

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
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "at::files"
    )]
    pub files: BTreeMap<AbsolutePath, File>,
    /// Unit name (`hello.service`) → unit.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "at::units"
    )]
    pub units: BTreeMap<UnitName, Unit>,
    /// Distribution family (`debian`, `fedora`, `arch`) → package names.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "at::packages"
    )]
    pub packages: BTreeMap<String, BTreeSet<PackageName>>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "at::users"
    )]
    pub users: BTreeMap<AccountName, User>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "at::groups"
    )]
    pub groups: BTreeMap<AccountName, Group>,
    /// Vars generators this machine needs, by generator name.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "at::generators"
    )]
    pub generators: BTreeMap<String, Generator>,
    /// Service state to back up, by state name.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "at::state"
    )]
    pub state: BTreeMap<StateName, State>,
    /// The backup providers that back this machine's state up (`clan backups`).
    #[serde(default, skip_serializing_if = "Backups::is_empty")]
    pub backups: Backups,
    #[serde(default, skip_serializing_if = "Firewall::is_empty")]
    pub firewall: Firewall,
    /// `/etc/hosts` entries: address → names. The agent keeps them in a block of its own
    /// there, so other lines stay; fragments' names for one address are joined.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "at::hosts"
    )]
    pub hosts: BTreeMap<IpAddr, BTreeSet<HostName>>,
    /// Who may read clan secrets set for this machine (`clan secrets set NAME --machine m`),
    /// by secret name; those without an entry are root's alone.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "at::secrets"
    )]
    pub secrets: BTreeMap<String, SecretAccess>,
    /// Free-form NixOS options, for `nixos` machines.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub nixos: Value,
}

impl MachineConfig {
    /// Parses a fragment a service returned (`null`: an empty one).
    pub fn from_json(value: Value) -> Result<MachineConfig, BadFragment> {
        if value.is_null() {
            return Ok(MachineConfig::default());
        }
        serde_json::from_value(value).map_err(|error| BadFragment(error.to_string()))
    }
}

/// A fragment that is not a MachineConfig: a bad name or mode (saying where it is), an
/// unknown key, a value of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadFragment(String);

impl clan_error::Hint for BadFragment {
    fn hint(&self) -> Option<String> {
        Some(crate::names::FIX_IN_SERVICE.into())
    }

    fn exit(&self) -> clan_error::Exit {
        clan_error::Exit::Failed
    }
}

clan_error::register!(BadFragment);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct File {
    pub content: String,
    /// Whether `content` holds secret placeholders to fill in on the machine.
    #[serde(default, skip_serializing_if = "is_false")]
    pub template: bool,
    #[serde(default = "AccountName::root", deserialize_with = "at::owner")]
    pub owner: AccountName,
    #[serde(default = "AccountName::root", deserialize_with = "at::group")]
    pub group: AccountName,
    /// Permission bits, written in octal (`"0644"`).
    #[serde(default = "file_mode")]
    pub mode: FileMode,
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
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "at::triggers"
    )]
    pub restart_triggers: Vec<AbsolutePath>,
    /// Files whose change reloads the unit (`systemctl reload-or-restart`) instead.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "at::triggers"
    )]
    pub reload_triggers: Vec<AbsolutePath>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "at::user_group"
    )]
    pub group: Option<AccountName>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "at::user_groups"
    )]
    pub groups: Vec<AccountName>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "at::home_or_shell"
    )]
    pub home: Option<AbsolutePath>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "at::home_or_shell"
    )]
    pub shell: Option<AbsolutePath>,
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
    #[serde(default, deserialize_with = "at::generator_files")]
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
    #[serde(default = "AccountName::root", deserialize_with = "at::owner")]
    pub owner: AccountName,
    #[serde(default = "AccountName::root", deserialize_with = "at::group")]
    pub group: AccountName,
    #[serde(default = "secret_mode")]
    pub mode: FileMode,
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
    #[serde(default, deserialize_with = "at::folders")]
    pub folders: Vec<AbsolutePath>,
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
    #[serde(default, deserialize_with = "at::providers")]
    pub providers: BTreeMap<StateName, BackupProvider>,
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "at::schedule"
    )]
    pub start_at: Option<CalendarEvent>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "at::schedule"
    )]
    pub check_at: Option<CalendarEvent>,
}

/// Owner, group and mode of a clan secret on the machine (`/run/secrets/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretAccess {
    #[serde(default = "AccountName::root", deserialize_with = "at::owner")]
    pub owner: AccountName,
    #[serde(default = "AccountName::root", deserialize_with = "at::group")]
    pub group: AccountName,
    /// Permission bits, written in octal.
    #[serde(default = "secret_mode")]
    pub mode: FileMode,
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
fn file_mode() -> FileMode {
    FileMode::FILE
}
fn secret_mode() -> FileMode {
    FileMode::SECRET
}
fn services() -> String {
    "services".to_owned()
}
fn line() -> PromptType {
    PromptType::Line
}

/// Deserialisers that say where a bad value is: the entry (`file `/etc/x``) and the field
/// (`owner`) before the value and the rule it broke. Each name's rule stays in its type.
mod at {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt;
    use std::marker::PhantomData;
    use std::net::IpAddr;

    use serde::de::{Deserialize, Deserializer, Error, MapAccess, Visitor};

    use super::{
        BackupProvider, File, Generator, GeneratorFile, Group, SecretAccess, State, Unit, User,
    };
    use crate::names::{
        AbsolutePath, AccountName, CalendarEvent, ConfigName, HostName, InvalidName, PackageName,
        StateName, UnitName,
    };

    /// A map whose keys parse with `key` and whose value errors name the `entry`.
    fn entries<'de, D, K, V>(
        deserializer: D,
        entry: &'static str,
        key: fn(&str) -> Result<K, InvalidName>,
    ) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Ord + fmt::Display,
        V: Deserialize<'de>,
    {
        struct Entries<K, V> {
            entry: &'static str,
            key: fn(&str) -> Result<K, InvalidName>,
            value: PhantomData<V>,
        }
        impl<'de, K: Ord + fmt::Display, V: Deserialize<'de>> Visitor<'de> for Entries<K, V> {
            type Value = BTreeMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a map of {}s", self.entry)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some(text) = map.next_key::<String>()? {
                    let key = (self.key)(&text).map_err(A::Error::custom)?;
                    let value = map.next_value::<V>().map_err(|error| {
                        A::Error::custom(format_args!("{} `{key}` {error}", self.entry))
                    })?;
                    entries.insert(key, value);
                }
                Ok(entries)
            }
        }
        deserializer.deserialize_map(Entries {
            entry,
            key,
            value: PhantomData,
        })
    }

    fn named<'de, D: Deserializer<'de>, T: ConfigName>(
        deserializer: D,
        subject: &str,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(deserializer)?;
        T::parse(&text, subject).map_err(D::Error::custom)
    }

    fn all_named<'de, D: Deserializer<'de>, T: ConfigName>(
        deserializer: D,
        subject: &str,
    ) -> Result<Vec<T>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        let parse = |text: &String| T::parse(text, subject).map_err(D::Error::custom);
        texts.iter().map(parse).collect()
    }

    fn maybe_named<'de, D: Deserializer<'de>, T: ConfigName>(
        deserializer: D,
        subject: &str,
    ) -> Result<Option<T>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        let parse = |text: String| T::parse(&text, subject).map_err(D::Error::custom);
        text.map(parse).transpose()
    }

    fn plain(text: &str) -> Result<String, InvalidName> {
        Ok(text.to_owned())
    }

    pub fn files<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<AbsolutePath, File>, D::Error> {
        entries(d, "file", |text| AbsolutePath::parse(text, "file path"))
    }
    pub fn units<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<UnitName, Unit>, D::Error> {
        entries(d, "unit", |text| UnitName::parse(text, "unit name"))
    }
    pub fn users<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<AccountName, User>, D::Error> {
        entries(d, "user", |text| AccountName::parse(text, "user name"))
    }
    pub fn groups<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<AccountName, Group>, D::Error> {
        entries(d, "group", |text| AccountName::parse(text, "group name"))
    }
    pub fn packages<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, BTreeSet<PackageName>>, D::Error> {
        entries(d, "distribution", plain)
    }
    pub fn generators<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Generator>, D::Error> {
        entries(d, "generator", plain)
    }
    pub fn generator_files<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, GeneratorFile>, D::Error> {
        entries(d, "file", plain)
    }
    pub fn secrets<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, SecretAccess>, D::Error> {
        entries(d, "secret", plain)
    }
    pub fn owner<'de, D: Deserializer<'de>>(d: D) -> Result<AccountName, D::Error> {
        named(d, "owner")
    }
    pub fn group<'de, D: Deserializer<'de>>(d: D) -> Result<AccountName, D::Error> {
        named(d, "group")
    }
    pub fn user_group<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AccountName>, D::Error> {
        maybe_named(d, "group")
    }
    pub fn user_groups<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AccountName>, D::Error> {
        all_named(d, "group")
    }
    pub fn home_or_shell<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<AbsolutePath>, D::Error> {
        maybe_named(d, "home or shell")
    }
    pub fn triggers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AbsolutePath>, D::Error> {
        all_named(d, "trigger")
    }
    pub fn hosts<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<IpAddr, BTreeSet<HostName>>, D::Error> {
        entries(d, "hosts address", |text| {
            text.parse().map_err(|_| InvalidName {
                subject: "hosts address".into(),
                value: text.into(),
                rule: "not an IP address",
            })
        })
    }
    pub fn state<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<StateName, State>, D::Error> {
        entries(d, "state", |text| StateName::parse(text, "state name"))
    }
    pub fn folders<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AbsolutePath>, D::Error> {
        all_named(d, "state folder")
    }
    pub fn providers<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<StateName, BackupProvider>, D::Error> {
        entries(d, "backup provider", |text| {
            StateName::parse(text, "backup provider name")
        })
    }
    pub fn schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CalendarEvent>, D::Error> {
        maybe_named(d, "backup schedule")
    }
}
