//! The generation format, shared by the deployer and the machine-side agent: everything a
//! machine should be, as a manifest (JSON) plus content-addressed blobs (file contents, unit
//! files, sops-encrypted secrets). The generation id is the hash of the manifest, which names
//! every blob by its hash, so an unchanged machine yields the same id and a re-deploy can stop
//! after one status query.
//!
//! The upload form ([`Generation::bundle`]) is a small framed stream: a header line, the
//! manifest, each blob with its hash and length, and an end marker; [`read_bundle`] verifies
//! every hash and the id, so a truncated or corrupted upload is refused as a whole.
//! [`Generation::build`] makes one from a machine's evaluated configuration (with
//! [`firewall`]'s rule set when its firewall is on); [`reply`] holds what the agent answers.
//!
//! This crate is linked into the agent that runs on every machine: it must stay small (no
//! evaluator, no Starlark, no networking), do no I/O of its own and never panic on input.

pub mod firewall;
pub mod reply;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use clan_config::{
    AbsolutePath, AccountName, FileMode, InvalidName, MachineConfig, MachineName, PackageName,
    UnitName, CLAN_SECRETS, SECRET_PLACEHOLDER_PREFIX,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the manifest format; an agent refuses formats it does not know.
pub const FORMAT: u32 = 1;
const BUNDLE_HEADER: &str = "clan-generation 1";
/// Upper bound for one blob or the manifest, so a corrupt length cannot exhaust memory.
const MAX_BLOB: u64 = 256 * 1024 * 1024;

/// Where the agent keeps a machine's `hosts` entries (in a block of clan's own).
pub const HOSTS_PATH: &str = "/etc/hosts";

/// The declared state of one machine, as the agent applies it. Its names are typed, so a
/// manifest the agent parses has passed the rules the evaluation applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub machine: MachineName,
    /// Absolute path → file.
    pub files: BTreeMap<AbsolutePath, FileEntry>,
    /// Unit name → unit file.
    pub units: BTreeMap<UnitName, UnitEntry>,
    pub users: BTreeMap<AccountName, clan_config::User>,
    pub groups: BTreeMap<AccountName, clan_config::Group>,
    /// Distribution family → package names.
    pub packages: BTreeMap<String, BTreeSet<PackageName>>,
    /// `<generator>/<file>` → secret, still encrypted (sops) to the machine's age key.
    pub secrets: BTreeMap<String, SecretEntry>,
    /// Service state and the providers that back it up, which `clan-agent agent backups …`
    /// reads from the current generation (absent when there is none, so a machine without
    /// state keeps its generation id).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub state: BTreeMap<clan_config::StateName, clan_config::State>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backup_providers: BTreeMap<clan_config::StateName, clan_config::BackupProvider>,
    /// The machine's `/etc/hosts` entries of clan's own block: address → names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<std::net::IpAddr, BTreeSet<clan_config::HostName>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    /// sha256 of the content (of the template, for templates).
    pub blob: String,
    pub owner: AccountName,
    pub group: AccountName,
    pub mode: u32,
    /// Holds `@clan-secret:<generator>/<file>@` placeholders filled in on the machine.
    pub template: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnitEntry {
    pub blob: String,
    pub enabled: bool,
    pub restart_on_change: bool,
    /// Paths whose change restarts the unit (see `clan_config::Unit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_triggers: Vec<AbsolutePath>,
    /// Paths whose change reloads it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload_triggers: Vec<AbsolutePath>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretEntry {
    /// sha256 of the sops file.
    pub blob: String,
    pub owner: AccountName,
    pub group: AccountName,
    pub mode: u32,
    pub needed_for: String,
}

/// A secret to deploy (a var from `clan_vars::deployable_secrets`, or a clan secret) with its
/// sops file's bytes.
pub struct SecretFile<'a> {
    pub generator: &'a str,
    pub file: &'a str,
    pub owner: &'a AccountName,
    pub group: &'a AccountName,
    pub mode: FileMode,
    pub needed_for: &'a str,
    pub sops: Vec<u8>,
}

/// Why a machine's configuration cannot become a generation.
#[derive(Debug, thiserror::Error)]
#[error("{subject}: {reason}")]
pub struct InvalidConfig {
    pub subject: String,
    pub reason: String,
}

/// The deploying side parses a manifest's names as the evaluation checked them.
impl From<InvalidName> for InvalidConfig {
    fn from(invalid: InvalidName) -> Self {
        InvalidConfig {
            subject: invalid.subject,
            reason: format!("`{}` is {}", invalid.value, invalid.rule),
        }
    }
}

fn invalid(subject: impl Into<String>, reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        subject: subject.into(),
        reason: reason.into(),
    }
}

/// A built generation: its id, manifest and blobs.
#[derive(Debug, Clone)]
pub struct Generation {
    pub id: String,
    pub manifest: Manifest,
    manifest_bytes: Vec<u8>,
    blobs: BTreeMap<String, Vec<u8>>,
}

/// sha256 in hex.
pub fn hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `config` with each user's `authorizedKeys` as the managed file
/// `<home>/.ssh/authorized_keys` (the user's, 0600; root's home is `/root`), which every sshd
/// reads by default.
fn with_authorized_keys(config: &MachineConfig) -> Result<MachineConfig, InvalidConfig> {
    let mut config = config.clone();
    for (name, user) in &config.users.clone() {
        if user.authorized_keys.is_empty() {
            continue;
        }
        let subject = || format!("user `{name}` authorizedKeys");
        if let Some(key) = user
            .authorized_keys
            .iter()
            .find(|k| k.contains(['\n', '\r']))
        {
            return Err(invalid(subject(), format!("`{key}` is more than one line")));
        }
        let home = match (&user.home, name.as_str()) {
            (Some(home), _) => home.to_string(),
            (None, "root") => "/root".to_owned(),
            (None, _) => return Err(invalid(subject(), "the user has no `home`")),
        };
        let path = AbsolutePath::parse(&format!("{home}/.ssh/authorized_keys"), subject())?;
        if config.files.contains_key(&path) {
            return Err(invalid(
                format!("file `{path}`"),
                format!("user `{name}`'s authorizedKeys write it"),
            ));
        }
        let file = clan_config::File {
            content: user.authorized_keys.join("\n") + "\n",
            template: false,
            owner: name.clone(),
            group: user.group.clone().unwrap_or_else(|| name.clone()),
            mode: FileMode::parse("0600", subject())?,
        };
        config.files.insert(path, file);
    }
    Ok(config)
}

/// The id of a manifest: the first 128 bits of its hash.
fn id_of(manifest_bytes: &[u8]) -> String {
    hash(manifest_bytes)[..32].to_owned()
}

impl Generation {
    /// Builds the generation of `machine` from its evaluated configuration and its secrets.
    pub fn build(
        machine: &MachineName,
        config: &MachineConfig,
        secrets: &[SecretFile<'_>],
    ) -> Result<Generation, InvalidConfig> {
        let config = &crate::firewall::with_firewall(config)?;
        let config = &with_authorized_keys(&crate::schedule::with_backup_timers(config)?)?;
        if !config.hosts.is_empty() && config.files.keys().any(|p| p.as_str() == HOSTS_PATH) {
            return Err(invalid(
                format!("file `{HOSTS_PATH}`"),
                "clan keeps the `hosts` entries there; declare addresses in `hosts` instead",
            ));
        }
        // `@…` names clan secrets among the machine's secrets (see [`CLAN_SECRETS`]).
        if let Some(name) = config.generators.keys().find(|name| name.starts_with('@')) {
            return Err(invalid(
                format!("generator `{name}`"),
                "generator names cannot start with `@`",
            ));
        }
        let mut blobs = BTreeMap::new();
        let mut add_blob = |content: &[u8]| {
            let key = hash(content);
            blobs.entry(key.clone()).or_insert_with(|| content.to_vec());
            key
        };
        let mut manifest = Manifest {
            users: config.users.clone(),
            groups: config.groups.clone(),
            packages: config.packages.clone(),
            state: config.state.clone(),
            backup_providers: config.backups.providers.clone(),
            hosts: config.hosts.clone(),
            ..Manifest::nothing(machine.clone())
        };
        for secret in secrets {
            let name = format!("{}/{}", secret.generator, secret.file);
            manifest.secrets.insert(
                name,
                SecretEntry {
                    blob: add_blob(&secret.sops),
                    owner: secret.owner.clone(),
                    group: secret.group.clone(),
                    mode: secret.mode.bits(),
                    needed_for: secret.needed_for.to_owned(),
                },
            );
        }
        for (path, file) in &config.files {
            manifest.files.insert(
                path.clone(),
                FileEntry {
                    blob: add_blob(file.content.as_bytes()),
                    owner: file.owner.clone(),
                    group: file.group.clone(),
                    mode: file.mode.bits(),
                    template: file.template,
                },
            );
        }
        for (name, unit) in &config.units {
            manifest.units.insert(
                name.clone(),
                UnitEntry {
                    blob: add_blob(unit.content.as_bytes()),
                    enabled: unit.enabled,
                    restart_on_change: unit.restart_on_change,
                    restart_triggers: unit.restart_triggers.clone(),
                    reload_triggers: unit.reload_triggers.clone(),
                },
            );
        }
        let generation = Generation::from_parts(manifest, blobs);
        generation.manifest.validate(&generation.blobs)?;
        Ok(generation)
    }

    fn from_parts(manifest: Manifest, blobs: BTreeMap<String, Vec<u8>>) -> Generation {
        let manifest_bytes =
            serde_json::to_vec(&manifest).expect("a manifest always serialises to JSON");
        Generation {
            id: id_of(&manifest_bytes),
            manifest,
            manifest_bytes,
            blobs,
        }
    }

    /// The upload stream.
    pub fn bundle(&self) -> Vec<u8> {
        let size: usize = self.blobs.values().map(Vec::len).sum();
        let mut out = Vec::with_capacity(size + self.manifest_bytes.len() + 1024);
        out.extend_from_slice(format!("{BUNDLE_HEADER}\n").as_bytes());
        out.extend_from_slice(format!("manifest {}\n", self.manifest_bytes.len()).as_bytes());
        out.extend_from_slice(&self.manifest_bytes);
        for (key, blob) in &self.blobs {
            out.extend_from_slice(format!("\nblob {key} {}\n", blob.len()).as_bytes());
            out.extend_from_slice(blob);
        }
        out.extend_from_slice(b"\nend\n");
        out
    }
}

impl Manifest {
    /// A manifest that manages nothing on `machine`: what it had before its first generation.
    pub fn nothing(machine: MachineName) -> Manifest {
        Manifest {
            format: FORMAT,
            machine,
            files: BTreeMap::new(),
            units: BTreeMap::new(),
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            packages: BTreeMap::new(),
            secrets: BTreeMap::new(),
            state: BTreeMap::new(),
            backup_providers: BTreeMap::new(),
            hosts: BTreeMap::new(),
        }
    }

    /// Checks what the agent relies on beyond its typed names (absolute normal paths, unit
    /// and user names that cannot escape their directory or be read as options): modes in
    /// range, blobs present, and every secret a template, unit or user refers to deployed
    /// with it.
    pub fn validate(&self, blobs: &BTreeMap<String, Vec<u8>>) -> Result<(), InvalidConfig> {
        if self.format != FORMAT {
            return Err(invalid(
                "generation",
                format!("format {} is not {FORMAT}; update the agent", self.format),
            ));
        }
        let has_blob = |blob: &str| blobs.contains_key(blob);
        for (path, file) in &self.files {
            let subject = format!("file `{path}`");
            if file.mode > 0o7777 {
                return Err(invalid(subject, "mode out of range"));
            }
            if !has_blob(&file.blob) {
                return Err(invalid(subject, "content missing from the generation"));
            }
            if file.template {
                for name in placeholders(&blobs[&file.blob]) {
                    if !self.secrets.contains_key(&name) {
                        return Err(invalid(
                            subject,
                            format!("template uses secret `{name}`, which has no deployable value; run `clan vars generate {}`", self.machine),
                        ));
                    }
                }
            }
        }
        for (name, unit) in &self.units {
            if !has_blob(&unit.blob) {
                return Err(invalid(format!("unit `{name}`"), "content missing"));
            }
            for trigger in unit.restart_triggers.iter().chain(&unit.reload_triggers) {
                let is_secret = self
                    .secrets
                    .keys()
                    .any(|secret| secret_machine_path(secret).1 == Path::new(&**trigger));
                if !self.files.contains_key(trigger) && !is_secret {
                    return Err(invalid(
                        format!("unit `{name}`"),
                        format!(
                            "its trigger `{trigger}` is neither a file nor a secret (under \
                             {SECRETS_DIR} or {CLAN_SECRETS_DIR}) of this machine's \
                             configuration"
                        ),
                    ));
                }
            }
        }
        for (name, user) in &self.users {
            let subject = format!("user `{name}`");
            if let Some(hash) = &user.password_hash {
                let secret = format!("{}/{}", hash.generator, hash.file);
                if !self.secrets.contains_key(&secret) {
                    return Err(invalid(subject, format!("its password hash `{secret}` has no deployable value; run `clan vars generate {}`", self.machine)));
                }
            }
        }
        for (name, secret) in &self.secrets {
            let subject = format!("secret `{name}`");
            let (generator, file) = name
                .split_once('/')
                .ok_or_else(|| invalid(&subject, "not <generator>/<file>"))?;
            for part in [generator, file] {
                if part.is_empty() || part.starts_with('.') || part.contains(['/', '\0']) {
                    return Err(invalid(&subject, "not a valid generator or file name"));
                }
            }
            if secret.mode > 0o7777 {
                return Err(invalid(subject, "mode out of range"));
            }
            if !has_blob(&secret.blob) {
                return Err(invalid(subject, "sops file missing"));
            }
        }
        Ok(())
    }

    /// Every blob the manifest refers to.
    pub fn blob_keys(&self) -> BTreeSet<&str> {
        self.files
            .values()
            .map(|f| f.blob.as_str())
            .chain(self.units.values().map(|u| u.blob.as_str()))
            .chain(self.secrets.values().map(|s| s.blob.as_str()))
            .collect()
    }
}

/// The secrets (`<generator>/<file>`) a template refers to.
pub fn placeholders(template: &[u8]) -> BTreeSet<String> {
    let text = String::from_utf8_lossy(template);
    let mut names = BTreeSet::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(SECRET_PLACEHOLDER_PREFIX) {
        let after = &rest[start + SECRET_PLACEHOLDER_PREFIX.len()..];
        match after.find('@') {
            Some(end) => {
                names.insert(after[..end].to_owned());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

/// Replaces each placeholder with `value(name)`.
pub fn fill_template(
    template: &[u8],
    mut value: impl FnMut(&str) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let prefix = SECRET_PLACEHOLDER_PREFIX.as_bytes();
    let mut out = Vec::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.windows(prefix.len()).position(|w| w == prefix) {
        out.extend_from_slice(&rest[..start]);
        let after = &rest[start + prefix.len()..];
        let Some(end) = after.iter().position(|b| *b == b'@') else {
            out.extend_from_slice(&rest[start..]);
            return Ok(out);
        };
        let name = String::from_utf8_lossy(&after[..end]).into_owned();
        let secret = value(&name).ok_or_else(|| format!("secret `{name}` is not available"))?;
        out.extend_from_slice(&secret);
        rest = &after[end + 1..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

/// Where the agent keeps its state on a machine.
pub const STATE_DIR: &str = "/var/lib/clan";

/// Where the agent decrypts secret vars, `<generator>/<file>` below it.
pub const SECRETS_DIR: &str = "/run/clan/secrets";
/// Where clan secrets (`clan secrets set NAME --machine m`) go, `<name>` below it.
pub const CLAN_SECRETS_DIR: &str = "/run/secrets";

/// The directory and the path on the machine of secret `name` of a manifest: clan secrets
/// (`@secrets/<name>`, see [`CLAN_SECRETS`]) at `/run/secrets/<name>`, secret
/// vars at `/run/clan/secrets/<generator>/<file>`. The one place that maps them.
pub fn secret_machine_path(name: &str) -> (PathBuf, PathBuf) {
    let clan_secret = name
        .strip_prefix(CLAN_SECRETS)
        .and_then(|rest| rest.strip_prefix('/'));
    let (root, relative) = match clan_secret {
        Some(secret) => (Path::new(CLAN_SECRETS_DIR), secret),
        None => (Path::new(SECRETS_DIR), name),
    };
    (root.to_path_buf(), root.join(relative))
}

/// Why an uploaded bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("reading the upload: {0}")]
    Io(#[from] std::io::Error),
    #[error("the upload is malformed: {0}")]
    Malformed(String),
    #[error("the manifest is invalid: {0}")]
    Invalid(#[from] InvalidConfig),
}

/// A generation as received: id (checked), manifest (validated) and blobs (hashes checked).
pub struct Received {
    pub id: String,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub blobs: BTreeMap<String, Vec<u8>>,
}

/// Reads a bundle, verifying its framing, every blob's hash and that its id is `expected_id`.
pub fn read_bundle(mut reader: impl BufRead, expected_id: &str) -> Result<Received, BundleError> {
    let malformed = |what: &str| BundleError::Malformed(what.to_owned());
    let mut line = String::new();
    let mut next_line = |reader: &mut dyn BufRead| -> Result<String, BundleError> {
        line.clear();
        let n = Read::take(&mut *reader, 200).read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            return Err(malformed("truncated"));
        }
        Ok(line.trim_end_matches('\n').to_owned())
    };
    if next_line(&mut reader)? != BUNDLE_HEADER {
        return Err(malformed("not a clan generation"));
    }
    let read_sized = |reader: &mut dyn BufRead, len: &str| -> Result<Vec<u8>, BundleError> {
        let len: u64 = len.parse().map_err(|_| malformed("bad length"))?;
        if len > MAX_BLOB {
            return Err(malformed("blob too large"));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        Read::take(&mut *reader, len).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != len {
            return Err(malformed("truncated"));
        }
        Ok(bytes)
    };
    let header = next_line(&mut reader)?;
    let len = header
        .strip_prefix("manifest ")
        .ok_or_else(|| malformed("manifest expected"))?;
    let manifest_bytes = read_sized(&mut reader, len)?;
    if id_of(&manifest_bytes) != expected_id {
        return Err(malformed("manifest does not match the generation id"));
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| BundleError::Malformed(format!("manifest: {e}")))?;
    let mut blobs = BTreeMap::new();
    loop {
        if !next_line(&mut reader)?.is_empty() {
            return Err(malformed("separator expected"));
        }
        let header = next_line(&mut reader)?;
        if header == "end" {
            break;
        }
        let mut words = header.split(' ');
        let (Some("blob"), Some(key), Some(len), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(malformed("blob header expected"));
        };
        let blob = read_sized(&mut reader, len)?;
        if hash(&blob) != key {
            return Err(malformed("blob does not match its hash"));
        }
        blobs.insert(key.to_owned(), blob);
    }
    manifest.validate(&blobs)?;
    Ok(Received {
        id: expected_id.to_owned(),
        manifest,
        manifest_bytes,
        blobs,
    })
}

impl clan_error::Hint for BundleError {}

/// A configuration that cannot be deployed fails its validation.
impl clan_error::Hint for InvalidConfig {
    fn exit(&self) -> clan_error::Exit {
        clan_error::Exit::Failed
    }
}

clan_error::register!(BundleError, InvalidConfig);

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MachineConfig {
        serde_json::from_value(serde_json::json!({
            "files": {"/etc/hello": {"content": "hi\n"}},
            "units": {"hello.service": {
                "content": "[Service]\nExecStart=/bin/true\n",
                "restartTriggers": ["/etc/hello"],
            }},
        }))
        .unwrap()
    }

    fn web() -> MachineName {
        "web".parse().unwrap()
    }

    #[test]
    fn same_config_same_id_and_bundle_round_trips() {
        let a = Generation::build(&web(), &config(), &[]).unwrap();
        let b = Generation::build(&web(), &config(), &[]).unwrap();
        assert_eq!(a.id, b.id);
        let mut changed = config();
        changed.files.get_mut("/etc/hello").unwrap().content = "ho\n".into();
        assert_ne!(Generation::build(&web(), &changed, &[]).unwrap().id, a.id);

        let bundle = a.bundle();
        let received = read_bundle(&bundle[..], &a.id).unwrap();
        assert_eq!(received.manifest, a.manifest);
        assert_eq!(received.blobs, a.blobs);
        // Any truncation is refused.
        for cut in [0, 10, bundle.len() / 2, bundle.len() - 1] {
            assert!(read_bundle(&bundle[..cut], &a.id).is_err(), "cut at {cut}");
        }
        assert!(read_bundle(&bundle[..], &"0".repeat(32)).is_err());
    }

    #[test]
    fn corrupted_blob_is_refused() {
        let a = Generation::build(&web(), &config(), &[]).unwrap();
        let mut bundle = a.bundle();
        let at = bundle.len() - 8;
        bundle[at] ^= 1;
        assert!(read_bundle(&bundle[..], &a.id).is_err());
    }

    #[test]
    fn bad_paths_units_and_missing_secrets_are_refused() {
        // The agent parses what it receives: names that could escape are refused there.
        let manifest =
            serde_json::to_value(&Generation::build(&web(), &config(), &[]).unwrap().manifest)
                .unwrap();
        for (map, bad) in [
            ("files", "etc/x"),
            ("files", "/etc/../x"),
            ("units", "../evil.service"),
        ] {
            let mut edited = manifest.clone();
            let entry = edited[map]
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap()
                .clone();
            edited[map][bad] = entry;
            let error = serde_json::from_value::<Manifest>(edited).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
        let mut edited = manifest.clone();
        edited["machine"] = "Web_01".into();
        assert!(serde_json::from_value::<Manifest>(edited).is_err());
        let mut template = config();
        let file = template.files.get_mut("/etc/hello").unwrap();
        file.template = true;
        file.content = "pw=@clan-secret:db/password@\n".into();
        let error = Generation::build(&web(), &template, &[]).unwrap_err();
        assert!(error.to_string().contains("db/password"), "{error}");
        let mut trigger = config();
        let unit = trigger.units.get_mut("hello.service").unwrap();
        unit.reload_triggers = vec!["/etc/unmanaged".parse().unwrap()];
        let error = Generation::build(&web(), &trigger, &[]).unwrap_err();
        assert!(error.to_string().contains("/etc/unmanaged"), "{error}");
    }

    #[test]
    fn templates_are_filled() {
        let filled = fill_template(b"a=@clan-secret:g/f@;b=@clan-secret:g/h@!", |name| {
            Some(format!("<{name}>").into_bytes())
        })
        .unwrap();
        assert_eq!(filled, b"a=<g/f>;b=<g/h>!");
        assert!(fill_template(b"@clan-secret:x/y@", |_| None).is_err());
        assert_eq!(
            placeholders(b"@clan-secret:g/f@ @clan-secret:g/f@"),
            BTreeSet::from(["g/f".to_owned()])
        );
    }

    #[test]
    fn authorized_keys_become_the_users_own_file() {
        let config: MachineConfig = serde_json::from_value(serde_json::json!({
            "users": {
                "alice": {"home": "/home/alice", "authorizedKeys": ["ssh-ed25519 AAAA a", "ssh-ed25519 BBBB b"]},
                "root": {"authorizedKeys": ["ssh-ed25519 CCCC c"]},
            },
        }))
        .unwrap();
        let generation = Generation::build(&web(), &config, &[]).unwrap();
        let file = &generation.manifest.files["/home/alice/.ssh/authorized_keys"];
        assert_eq!(
            (file.owner.as_str(), file.group.as_str(), file.mode),
            ("alice", "alice", 0o600)
        );
        assert_eq!(
            generation.blobs[&file.blob],
            b"ssh-ed25519 AAAA a\nssh-ed25519 BBBB b\n"
        );
        assert!(generation
            .manifest
            .files
            .contains_key("/root/.ssh/authorized_keys"));

        let homeless: MachineConfig = serde_json::from_value(serde_json::json!({
            "users": {"bob": {"authorizedKeys": ["ssh-ed25519 AAAA"]}},
        }))
        .unwrap();
        let error = Generation::build(&web(), &homeless, &[]).unwrap_err();
        assert!(
            error.to_string().contains("user `bob` authorizedKeys"),
            "{error}"
        );
    }
}
