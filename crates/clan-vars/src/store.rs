//! The `vars/` tree, laid out as clan-core lays it out:
//!
//! ```text
//! vars/per-machine/<machine>/<generator>/<file>/value      a public value, as generated
//! vars/per-machine/<machine>/<generator>/<file>/secret     a sops file
//! vars/per-machine/<machine>/<generator>/<file>/{machines,users,groups}/<name>
//!                                                          -> ../../../../../../sops/…/<name>
//! vars/per-machine/<machine>/<generator>/.validation-hash  sha256 of the validation value
//! vars/shared/<generator>/…                                the same, one level up
//! ```
//!
//! Every path is resolved through [`clan_fs`]: a link (or FIFO, device) anywhere under
//! `vars/` is an error naming it, never followed, read or written through.
//!
//! Reading is direct. Writing always goes through a staging directory under
//! `vars/.staging-<random>/` (same file system): a generator's whole directory (or, for `vars
//! set`, one file's directory) is built there with its recipient links already pointing where
//! they will be valid, synced, then exchanged with the live one in one `renameat2` call. A
//! var is therefore always entirely old or entirely new, whatever interrupts the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clan_fs::{Kind, Tree};

use clan_config::GeneratorFile;
use clan_secrets::{Identities, MachineName, MemberKind, Plaintext, Recipient, SopsDir, UserName};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::graph::{FleetGenerator, GeneratorKey};
use crate::Error;

/// The file in a generator's directory holding the hash of its validation value.
pub const VALIDATION_HASH: &str = ".validation-hash";
const STAGING_PREFIX: &str = ".staging-";

/// clan-core's validation hash: sha256 of the value as Nix's `toJSON` writes it (keys
/// sorted, no spaces). `None` for a null value, which never forces regeneration.
pub fn validation_hash(value: &serde_json::Value) -> Option<String> {
    fn canonical(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<&String, serde_json::Value> =
                    map.iter().map(|(k, v)| (k, canonical(v))).collect();
                serde_json::Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(canonical).collect())
            }
            other => other.clone(),
        }
    }
    if value.is_null() {
        return None;
    }
    let text = serde_json::to_string(&canonical(value)).expect("JSON values serialize");
    Some(hex::encode(Sha256::digest(text.as_bytes())))
}

/// The vars of one clan directory (and its `sops/` tree, for secrets).
#[derive(Clone, Debug)]
pub struct VarsStore {
    clan_dir: PathBuf,
    sops: SopsDir,
}

impl VarsStore {
    pub fn new(clan_dir: impl Into<PathBuf>) -> Self {
        let clan_dir = clan_dir.into();
        VarsStore {
            sops: SopsDir::new(clan_dir.clone()),
            clan_dir,
        }
    }

    pub fn clan_dir(&self) -> &Path {
        &self.clan_dir
    }

    pub fn sops(&self) -> &SopsDir {
        &self.sops
    }

    /// The clan directory, opened anew (paths in errors relative to it).
    pub(crate) fn tree(&self) -> Result<Tree, Error> {
        Ok(Tree::open(&self.clan_dir)?.shown_as(""))
    }

    /// Whether the file's `value` (public) or `secret` is stored as a regular file (a link
    /// there is not a value).
    pub fn exists(&self, key: &GeneratorKey, file: &str, secret: bool) -> bool {
        let leaf = if secret { "secret" } else { "value" };
        self.tree()
            .and_then(|tree| Ok(tree.kind(&key.file_dir(file).join(leaf))?))
            .is_ok_and(|kind| kind == Some(Kind::File))
    }

    /// Whether `rel` (relative to the clan directory) exists, as anything, links included.
    pub(crate) fn entry_exists(&self, rel: &Path) -> bool {
        self.tree()
            .and_then(|tree| Ok(tree.kind(rel)?))
            .is_ok_and(|kind| kind.is_some())
    }

    /// The validation hash stored for a generator.
    pub fn stored_validation(&self, key: &GeneratorKey) -> Option<String> {
        let content = self
            .tree()
            .ok()?
            .read(&key.dir().join(VALIDATION_HASH), 4096)
            .ok()?;
        Some(String::from_utf8_lossy(&content).trim().to_owned())
    }

    /// Whether the stored validation hash matches the definition (both absent counts).
    pub fn is_valid(&self, generator: &FleetGenerator) -> bool {
        self.stored_validation(&generator.key) == validation_hash(&generator.definition.validation)
    }

    /// Every file stored and the validation hash current: nothing to generate.
    pub fn is_complete(&self, generator: &FleetGenerator) -> bool {
        generator
            .files()
            .iter()
            .all(|(name, file)| self.exists(&generator.key, name, file.secret))
            && self.is_valid(generator)
    }

    /// A public value.
    pub fn read_public(&self, key: &GeneratorKey, file: &str) -> Result<Vec<u8>, Error> {
        let path = key.file_dir(file).join("value");
        self.tree()?
            .read(&path, clan_fs::DEFAULT_LIMIT)
            .map_err(|error| match error {
                clan_fs::Error::NotFound { .. } => Error::Missing {
                    placement: key.placement.to_string(),
                    generator: key.name.clone(),
                    file: file.to_owned(),
                },
                error => error.into(),
            })
    }

    /// A value, decrypting it when secret.
    pub fn read(
        &self,
        key: &GeneratorKey,
        file: &str,
        secret: bool,
        identities: &Identities,
    ) -> Result<Plaintext, Error> {
        if !secret {
            return Ok(Plaintext::new(self.read_public(key, file)?));
        }
        if !self.exists(key, file, true) {
            return Err(Error::Missing {
                placement: key.placement.to_string(),
                generator: key.name.clone(),
                file: file.to_owned(),
            });
        }
        Ok(self.sops.read_secret_at(&key.file_dir(file), identities)?)
    }

    /// Removes staging directories that an interrupted run left behind. Call under the lock.
    pub fn remove_stale_staging(&self) -> Result<(), Error> {
        let tree = self.tree()?;
        for entry in tree.list(Path::new("vars"))? {
            if entry.name.to_string_lossy().starts_with(STAGING_PREFIX) {
                tree.remove_all(&Path::new("vars").join(&entry.name))?;
            }
        }
        Ok(())
    }
}

/// Who may decrypt a var: the admin user, the machines it is deployed to, and the groups
/// those machines are in. Keys are read once per run.
pub(crate) struct Recipients<'a> {
    sops: &'a SopsDir,
    admin: UserName,
    groups: Vec<clan_secrets::Group>,
    keys: Mutex<HashMap<(MemberKind, String), Vec<Recipient>>>,
}

/// The recipient links of one secret and the keys they stand for.
pub(crate) struct Access {
    links: Vec<(MemberKind, String)>,
    keys: Vec<Recipient>,
}

impl Access {
    pub(crate) fn links(&self) -> &[(MemberKind, String)] {
        &self.links
    }

    pub(crate) fn keys(&self) -> &[Recipient] {
        &self.keys
    }
}

impl<'a> Recipients<'a> {
    pub(crate) fn new(sops: &'a SopsDir, admin: UserName) -> Result<Self, Error> {
        Ok(Recipients {
            groups: sops.groups()?,
            sops,
            admin,
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// The sops groups `machine` is a member of.
    pub(crate) fn groups_of(&self, machine: &MachineName) -> Vec<clan_secrets::GroupName> {
        self.groups
            .iter()
            .filter(|group| group.machines.iter().any(|m| m == machine.as_str()))
            .map(|group| group.name.clone())
            .collect()
    }

    /// Makes `machine`'s key known before it is stored (it is being written meanwhile).
    pub(crate) fn remember_machine(&self, machine: &MachineName, key: Recipient) {
        self.keys
            .lock()
            .expect("not poisoned")
            .insert((MemberKind::Machine, machine.to_string()), vec![key]);
    }

    fn keys_of(&self, kind: MemberKind, name: &str) -> Result<Vec<Recipient>, Error> {
        let cache_key = (kind, name.to_owned());
        if let Some(keys) = self.keys.lock().expect("not poisoned").get(&cache_key) {
            return Ok(keys.clone());
        }
        let keys = self.sops.keys_of(kind, name)?;
        self.keys
            .lock()
            .expect("not poisoned")
            .insert(cache_key, keys.clone());
        Ok(keys)
    }

    /// Access for a var deployed to `targets`, declared by `machines`.
    pub(crate) fn access(
        &self,
        targets: &[MachineName],
        machines: &[MachineName],
    ) -> Result<Access, Error> {
        let mut links: BTreeSet<(MemberKind, String)> = BTreeSet::new();
        links.insert((MemberKind::User, self.admin.to_string()));
        for machine in targets {
            links.insert((MemberKind::Machine, machine.to_string()));
        }
        for machine in machines {
            for group in self.groups_of(machine) {
                links.insert((MemberKind::Group, group.to_string()));
            }
        }
        let mut keys = BTreeSet::new();
        for (kind, name) in &links {
            match kind {
                MemberKind::Group => {
                    let group = self
                        .groups
                        .iter()
                        .find(|g| g.name.as_str() == name)
                        .expect("groups come from the list");
                    for user in &group.users {
                        keys.extend(self.keys_of(MemberKind::User, user)?);
                    }
                    for machine in &group.machines {
                        keys.extend(self.keys_of(MemberKind::Machine, machine)?);
                    }
                }
                kind => keys.extend(self.keys_of(*kind, name)?),
            }
        }
        Ok(Access {
            links: links.into_iter().collect(),
            keys: keys.into_iter().collect(),
        })
    }
}

/// A value to store: its file declaration and bytes.
pub(crate) struct Output<'a> {
    pub name: &'a str,
    pub file: &'a GeneratorFile,
    pub value: &'a Plaintext,
    pub access: Option<&'a Access>,
}

/// A staging directory for one run (`vars/.staging-<random>`, 0700). Staged paths are
/// relative to the clan directory, like the targets they are swapped in at.
pub(crate) struct Staging {
    tree: Tree,
    root: PathBuf,
    next: std::sync::atomic::AtomicUsize,
}

impl Staging {
    pub(crate) fn new(store: &VarsStore) -> Result<Self, Error> {
        let tree = store.tree()?;
        let root = Path::new("vars").join(format!(
            "{STAGING_PREFIX}{:016x}",
            rand::rngs::OsRng.next_u64()
        ));
        tree.create_dir_all(Path::new("vars"), 0o755)?;
        tree.create_dir_all(&root, 0o700)?;
        Ok(Staging {
            tree,
            root,
            next: Default::default(),
        })
    }

    fn fresh(&self) -> PathBuf {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root.join(n.to_string())
    }

    /// Builds a generator's directory: its outputs and validation hash. Returns the staged
    /// directory, to [`Staging::swap_in`] at `key.dir()`.
    pub(crate) fn stage_generator(
        &self,
        key: &GeneratorKey,
        outputs: &[Output<'_>],
        validation: Option<&str>,
    ) -> Result<PathBuf, Error> {
        let staged = self.fresh();
        self.create_dir(&staged)?;
        for output in outputs {
            self.stage_file_at(
                &staged.join(output.name),
                &key.file_dir(output.name),
                output,
            )?;
        }
        if let Some(hash) = validation {
            self.tree
                .write_new(&staged.join(VALIDATION_HASH), hash.as_bytes(), 0o644)?;
        }
        Ok(staged)
    }

    /// Builds one file's directory, to [`Staging::swap_in`] at `key.file_dir(name)`.
    pub(crate) fn stage_file(
        &self,
        key: &GeneratorKey,
        output: &Output<'_>,
    ) -> Result<PathBuf, Error> {
        let staged = self.fresh();
        self.stage_file_at(&staged, &key.file_dir(output.name), output)?;
        Ok(staged)
    }

    /// A single file (such as a validation hash), to [`Staging::swap_in`] at its place.
    pub(crate) fn stage_bytes(&self, content: &[u8]) -> Result<PathBuf, Error> {
        let staged = self.fresh();
        self.tree.write_new(&staged, content, 0o644)?;
        Ok(staged)
    }

    /// Makes everything staged durable (one `syncfs` instead of one `fsync` per file).
    pub(crate) fn sync(&self) -> Result<(), Error> {
        Ok(self.tree.sync()?)
    }

    /// Replaces `target` (relative to the clan) by `staged` in one step. A link committed at
    /// `target` is exchanged like anything else and removed as a link: whatever it pointed
    /// at stays untouched.
    pub(crate) fn swap_in(&self, staged: &Path, target: &Path) -> Result<(), Error> {
        let parent = target.parent().expect("vars live in directories");
        self.tree.create_dir_all(parent, 0o755)?;
        if self.tree.kind(target)?.is_none() {
            return Ok(self.tree.rename(staged, target)?);
        }
        self.tree.exchange(staged, target)?;
        // `staged` now holds the old content.
        self.tree.remove_all(staged)?;
        Ok(())
    }

    fn create_dir(&self, rel: &Path) -> Result<(), Error> {
        self.tree.create_dir_all(rel, 0o755)?;
        Ok(())
    }

    /// One file's directory at `staged`, whose links are made valid for `live` (relative to
    /// the clan directory).
    fn stage_file_at(&self, staged: &Path, live: &Path, output: &Output<'_>) -> Result<(), Error> {
        self.create_dir(staged)?;
        let Some(access) = output.access.filter(|_| output.file.secret) else {
            self.tree
                .write_new(&staged.join("value"), output.value.expose(), 0o644)?;
            return Ok(());
        };
        for (kind, name) in &access.links {
            let link_dir = staged.join(kind.dir());
            self.create_dir(&link_dir)?;
            let target = clan_secrets::relative_path(
                &live.join(kind.dir()),
                &Path::new("sops").join(kind.dir()).join(name),
            );
            self.tree.symlink(&target, &link_dir.join(name))?;
        }
        let path = live.join("secret");
        let sops = clan_secrets::encrypt(output.value.expose(), &access.keys)
            .map_err(|source| Error::Encrypt { path, source })?;
        self.tree
            .write_new(&staged.join("secret"), &sops.to_bytes(), 0o600)?;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = self.tree.remove_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_hash_matches_nix_to_json() {
        // builtins.hashString "sha256" (builtins.toJSON { b = 1; a = "x"; })
        //   = sha256 of `{"a":"x","b":1}`
        let expected = hex::encode(Sha256::digest(br#"{"a":"x","b":1}"#));
        assert_eq!(
            validation_hash(&serde_json::json!({"b": 1, "a": "x"})),
            Some(expected)
        );
        assert_eq!(validation_hash(&serde_json::Value::Null), None);
    }

    #[test]
    fn links_point_from_the_live_location() {
        assert_eq!(
            clan_secrets::relative_path(
                Path::new("vars/per-machine/m/g/f/machines"),
                Path::new("sops/machines/m")
            ),
            Path::new("../../../../../../sops/machines/m")
        );
        assert_eq!(
            clan_secrets::relative_path(
                Path::new("vars/shared/g/f/users"),
                Path::new("sops/users/a")
            ),
            Path::new("../../../../../sops/users/a")
        );
    }

    #[test]
    fn swap_replaces_a_directory_whole() {
        use std::fs;
        let dir = tempfile::tempdir().unwrap();
        let store = VarsStore::new(dir.path());
        let staging = Staging::new(&store).unwrap();
        let target = Path::new("vars/shared/g");
        for round in ["old", "new"] {
            let staged = staging.fresh();
            staging.create_dir(&staged).unwrap();
            staging
                .tree
                .write_new(&staged.join(round), b"x", 0o644)
                .unwrap();
            staging.swap_in(&staged, target).unwrap();
            assert!(!dir.path().join(&staged).exists());
        }
        let names: Vec<_> = fs::read_dir(dir.path().join(target))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["new"]);
        drop(staging);
        assert_eq!(fs::read_dir(dir.path().join("vars")).unwrap().count(), 1);
    }

    #[test]
    fn a_committed_link_is_swapped_out_not_followed() {
        use std::fs;
        let dir = tempfile::tempdir().unwrap();
        let clan = dir.path().join("clan");
        let outside = dir.path().join("outside");
        fs::create_dir_all(clan.join("vars/per-machine")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep"), "precious").unwrap();
        std::os::unix::fs::symlink(&outside, clan.join("vars/per-machine/m")).unwrap();
        let store = VarsStore::new(&clan);
        let staging = Staging::new(&store).unwrap();
        let staged = staging.stage_bytes(b"x").unwrap();
        // Through the link: refused, naming it.
        let error = staging
            .swap_in(&staged, Path::new("vars/per-machine/m/g"))
            .unwrap_err();
        assert!(error.to_string().contains("vars/per-machine/m"), "{error}");
        // At the link: the link goes, its target stays.
        let staged = staging.stage_bytes(b"x").unwrap();
        staging
            .swap_in(&staged, Path::new("vars/per-machine/m"))
            .unwrap();
        assert!(clan.join("vars/per-machine/m").is_file());
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"precious");
    }
}
