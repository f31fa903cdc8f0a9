//! The `sops/` tree, laid out as clan-core lays it out:
//!
//! ```text
//! sops/users/<user>/key.json           [{"publickey": "age1…", "type": "age"}, …]
//! sops/machines/<machine>/key.json     same (the old single-object form is read too)
//! sops/groups/<group>/{users,machines}/<name>  -> ../../../{users,machines}/<name>
//! sops/secrets/<secret>/secret         the sops file
//! sops/secrets/<secret>/{users,machines,groups}/<name>  -> ../../../{users,machines,groups}/<name>
//! sops/secrets/<machine>-age.key/      the machine's private age key, as a secret
//! ```
//!
//! The recipient links decide who may decrypt; the recipients inside each sops file follow
//! them (re-keying). Any directory holding `secret` plus such links is a "secret directory":
//! `vars/…/<file>/` directories are handled by the same functions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};

use crate::fsutil::ClanFiles;
use crate::keys::{generate_identity, Identities, Recipient};
use crate::names::{GroupName, MachineName, SecretName, UserName};
use crate::sops::{self, SopsError, SopsFile};
use crate::{Error, Plaintext};

/// Who a recipient link names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberKind {
    User,
    Machine,
    Group,
}

impl MemberKind {
    /// The directory name used for this kind, in `sops/` and in secret directories.
    pub fn dir(self) -> &'static str {
        match self {
            MemberKind::User => "users",
            MemberKind::Machine => "machines",
            MemberKind::Group => "groups",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            MemberKind::User => "user",
            MemberKind::Machine => "machine",
            MemberKind::Group => "group",
        }
    }
}

/// A user, machine or group that can be given access to a secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    User(UserName),
    Machine(MachineName),
    Group(GroupName),
}

impl Member {
    pub fn kind(&self) -> MemberKind {
        match self {
            Member::User(_) => MemberKind::User,
            Member::Machine(_) => MemberKind::Machine,
            Member::Group(_) => MemberKind::Group,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Member::User(name) => name.as_str(),
            Member::Machine(name) => name.as_str(),
            Member::Group(name) => name.as_str(),
        }
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.kind().noun(), self.name())
    }
}

/// What an operation changed (paths relative to the clan directory) and a commit message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub paths: Vec<PathBuf>,
    pub message: String,
}

impl Changes {
    fn new(message: impl Into<String>) -> Self {
        Changes {
            paths: Vec::new(),
            message: message.into(),
        }
    }

    fn push(&mut self, path: impl Into<PathBuf>) {
        let path = path.into();
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
    }
}

/// The person running clan: their user in `sops/users` and their identities.
#[derive(Debug)]
pub struct Admin {
    pub user: UserName,
    pub identities: Identities,
}

/// A group and its members.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Group {
    pub name: GroupName,
    pub users: Vec<String>,
    pub machines: Vec<String>,
}

/// A user or machine that can decrypt a secret, and through which group if not directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub kind: MemberKind,
    pub name: String,
    pub via_group: Option<String>,
    pub keys: Vec<Recipient>,
}

/// Something wrong with a secret's links or recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub message: String,
}

/// The audit of one secret directory.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub secret: PathBuf,
    pub holders: Vec<Holder>,
    /// Keys the links call for that the file is not encrypted to (needs re-keying).
    pub missing: Vec<(Recipient, String)>,
    /// Keys the file is encrypted to that no link calls for, with their owner if known.
    pub unexpected: Vec<(String, Option<String>)>,
    pub problems: Vec<Problem>,
}

impl AuditEntry {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.problems.is_empty()
    }
}

/// The result of re-keying many secrets: what changed, and what could not be re-keyed.
#[derive(Debug, Default)]
pub struct RekeyReport {
    pub changed: Vec<PathBuf>,
    pub failed: Vec<(PathBuf, Error)>,
}

/// The `sops/` tree of one clan directory.
#[derive(Clone, Debug)]
pub struct SopsDir {
    clan_dir: PathBuf,
}

impl SopsDir {
    pub fn new(clan_dir: impl Into<PathBuf>) -> Self {
        SopsDir {
            clan_dir: clan_dir.into(),
        }
    }

    pub fn clan_dir(&self) -> &Path {
        &self.clan_dir
    }

    /// The clan directory's files, never followed through a link.
    fn files(&self) -> ClanFiles<'_> {
        ClanFiles(&self.clan_dir)
    }

    fn member_dir(kind: MemberKind, name: &str) -> PathBuf {
        Path::new("sops").join(kind.dir()).join(name)
    }

    /// `sops/secrets/<name>`, relative to the clan directory.
    pub fn secret_dir(name: &SecretName) -> PathBuf {
        Path::new("sops/secrets").join(name.as_str())
    }

    fn exists(&self, member: &Member) -> bool {
        let dir = Self::member_dir(member.kind(), member.name());
        match member.kind() {
            MemberKind::Group => self.files().is_dir(&dir),
            _ => self.files().is_file(&dir.join("key.json")),
        }
    }

    fn require(&self, member: &Member) -> Result<(), Error> {
        if self.exists(member) {
            Ok(())
        } else {
            Err(Error::NotFound {
                kind: member.kind().noun(),
                name: member.name().to_owned(),
            })
        }
    }

    // ---- keys ---------------------------------------------------------------------------

    /// The keys in `sops/{users,machines}/<name>/key.json` (object or list form).
    pub fn keys_of(&self, kind: MemberKind, name: &str) -> Result<Vec<Recipient>, Error> {
        read_key_file(
            &self.clan_dir,
            &Self::member_dir(kind, name).join("key.json"),
        )
    }

    /// Finds which user the admin is, from the public keys of `identities`.
    pub fn admin(&self, identities: Identities, searched: &str) -> Result<Admin, Error> {
        if identities.public_keys().is_empty() {
            return Err(Error::NoAdminKey {
                searched: searched.to_owned(),
            });
        }
        for user in self.users()? {
            let keys = self.keys_of(MemberKind::User, user.as_str())?;
            if keys
                .iter()
                .any(|key| identities.has_public_key(key.as_str()))
            {
                return Ok(Admin { user, identities });
            }
        }
        Err(Error::UnknownAdmin {
            keys: identities
                .public_keys()
                .iter()
                .map(|k| k.recipient.to_string())
                .collect(),
        })
    }

    /// Who owns each known key: `user alice`, `machine web01`.
    fn key_owners(&self) -> Result<BTreeMap<String, Vec<String>>, Error> {
        let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (kind, names) in [
            (
                MemberKind::User,
                self.users()?
                    .into_iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>(),
            ),
            (
                MemberKind::Machine,
                self.machines()?
                    .into_iter()
                    .map(|n| n.to_string())
                    .collect(),
            ),
        ] {
            for name in names {
                for key in self.keys_of(kind, &name).unwrap_or_default() {
                    owners
                        .entry(key.to_string())
                        .or_default()
                        .push(format!("{} {name}", kind.noun()));
                }
            }
        }
        Ok(owners)
    }

    // ---- users and machines ---------------------------------------------------------------

    pub fn users(&self) -> Result<Vec<UserName>, Error> {
        self.list_members(MemberKind::User)
    }

    pub fn machines(&self) -> Result<Vec<MachineName>, Error> {
        self.list_members(MemberKind::Machine)
    }

    fn list_members<N: std::str::FromStr>(&self, kind: MemberKind) -> Result<Vec<N>, Error> {
        let dir = Path::new("sops").join(kind.dir());
        let mut members = Vec::new();
        for name in self.files().dir_names(&dir)? {
            if self
                .files()
                .is_file_checked(&dir.join(&name).join("key.json"))?
            {
                members.extend(name.parse().ok());
            }
        }
        Ok(members)
    }

    /// Adds a user with `keys` (or replaces its keys with `force`) and re-keys its secrets.
    pub fn add_user(
        &self,
        user: &UserName,
        keys: &[Recipient],
        force: bool,
        identities: &Identities,
    ) -> Result<(Changes, RekeyReport), Error> {
        self.add_keyed(Member::User(user.clone()), keys, force, identities)
    }

    /// Adds a machine with its public key (or replaces it with `force`) and re-keys its secrets.
    pub fn add_machine(
        &self,
        machine: &MachineName,
        key: &Recipient,
        force: bool,
        identities: &Identities,
    ) -> Result<(Changes, RekeyReport), Error> {
        self.add_keyed(
            Member::Machine(machine.clone()),
            std::slice::from_ref(key),
            force,
            identities,
        )
    }

    fn add_keyed(
        &self,
        member: Member,
        keys: &[Recipient],
        force: bool,
        identities: &Identities,
    ) -> Result<(Changes, RekeyReport), Error> {
        if self.exists(&member) && !force {
            return Err(Error::AlreadyExists {
                kind: member.kind().noun(),
                name: member.name().to_owned(),
            });
        }
        let message = format!("secrets: add {} {}", member.kind().noun(), member.name());
        self.write_keys(&member, keys, message, identities)
    }

    /// Adds keys to a user and re-keys its secrets.
    pub fn add_user_keys(
        &self,
        user: &UserName,
        keys: &[Recipient],
        identities: &Identities,
    ) -> Result<(Changes, RekeyReport), Error> {
        let member = Member::User(user.clone());
        self.require(&member)?;
        let mut all = self.keys_of(MemberKind::User, user.as_str())?;
        all.extend(keys.iter().cloned());
        let message = format!("secrets: add key(s) for user {user}");
        self.write_keys(&member, &all, message, identities)
    }

    /// Removes keys from a user (refusing to remove the last one) and re-keys its secrets.
    pub fn remove_user_keys(
        &self,
        user: &UserName,
        keys: &[Recipient],
        identities: &Identities,
    ) -> Result<(Changes, RekeyReport), Error> {
        let member = Member::User(user.clone());
        self.require(&member)?;
        let current = self.keys_of(MemberKind::User, user.as_str())?;
        let remaining: Vec<Recipient> = current
            .iter()
            .filter(|key| !keys.contains(key))
            .cloned()
            .collect();
        if let Some(absent) = keys.iter().find(|key| !current.contains(key)) {
            return Err(Error::NotFound {
                kind: "key",
                name: format!("{absent} of user {user}"),
            });
        }
        if remaining.is_empty() {
            return Err(Error::LastKey {
                user: user.to_string(),
            });
        }
        let message = format!("secrets: remove key(s) for user {user}");
        self.write_keys(&member, &remaining, message, identities)
    }

    /// Writes `member`'s key.json with `keys` and re-keys every secret it can read.
    fn write_keys(
        &self,
        member: &Member,
        keys: &[Recipient],
        message: String,
        identities: &Identities,
    ) -> Result<(Changes, RekeyReport), Error> {
        let path = Self::member_dir(member.kind(), member.name()).join("key.json");
        write_key_file(&self.clan_dir, &path, keys)?;
        let mut changes = Changes::new(message);
        changes.push(path);
        let report = self.rekey_affected(member, identities, &mut changes)?;
        Ok((changes, report))
    }

    /// Removes a user or machine: from every group, from every secret (re-keyed), and its
    /// key. Refuses when a secret would be left without recipients.
    pub fn remove_member(
        &self,
        member: &Member,
        identities: &Identities,
    ) -> Result<(Changes, RekeyReport), Error> {
        if member.kind() == MemberKind::Group {
            return self.remove_group(member, identities);
        }
        self.require(member)?;
        let affected = self.affected_secrets(member)?;
        self.refuse_orphans(&affected, |holder| {
            holder.kind == member.kind() && holder.name == member.name()
        })?;
        let mut changes = Changes::new(format!(
            "secrets: remove {} {}",
            member.kind().noun(),
            member.name()
        ));
        for group in self.groups()? {
            let link = Path::new("sops/groups")
                .join(group.name.as_str())
                .join(member.kind().dir())
                .join(member.name());
            if self.files().is_symlink(&link) {
                self.unlink(&link)?;
                changes.push(link);
            }
        }
        let dir = Self::member_dir(member.kind(), member.name());
        self.files().remove_all(&dir)?;
        changes.push(dir);
        for secret in &affected {
            let link = secret.join(member.kind().dir()).join(member.name());
            if self.files().is_symlink(&link) {
                self.unlink(&link)?;
                changes.push(link);
            }
        }
        let report = self.rekey_dirs(&affected, identities, &mut changes);
        Ok((changes, report))
    }

    // ---- groups --------------------------------------------------------------------------

    pub fn groups(&self) -> Result<Vec<Group>, Error> {
        let dir = Path::new("sops/groups");
        let mut groups = Vec::new();
        for name in self.files().dir_names(dir)? {
            let Ok(group) = name.parse::<GroupName>() else {
                continue;
            };
            if !self.files().is_dir(&dir.join(&name)) {
                continue;
            }
            groups.push(Group {
                users: self.files().entry_names(&dir.join(&name).join("users"))?,
                machines: self
                    .files()
                    .entry_names(&dir.join(&name).join("machines"))?,
                name: group,
            });
        }
        Ok(groups)
    }

    /// Adds a user or machine to a group (creating the group) and re-keys the group's secrets.
    pub fn group_add(
        &self,
        group: &GroupName,
        member: &Member,
        identities: &Identities,
    ) -> Result<(Changes, RekeyReport), Error> {
        self.require(member)?;
        let group_dir = Path::new("sops/groups").join(group.as_str());
        let link = group_dir.join(member.kind().dir()).join(member.name());
        self.files()
            .symlink_relative(&link, &Self::member_dir(member.kind(), member.name()))?;
        let mut changes = Changes::new(format!(
            "secrets: add {} {} to group {group}",
            member.kind().noun(),
            member.name()
        ));
        changes.push(link);
        let report =
            self.rekey_affected(&Member::Group(group.clone()), identities, &mut changes)?;
        Ok((changes, report))
    }

    /// Removes a user or machine from a group and re-keys the group's secrets. An emptied
    /// group is removed, as clan-core does.
    pub fn group_remove(
        &self,
        group: &GroupName,
        member: &Member,
        identities: &Identities,
    ) -> Result<(Changes, RekeyReport), Error> {
        let group_dir = Path::new("sops/groups").join(group.as_str());
        let link = group_dir.join(member.kind().dir()).join(member.name());
        if !self.files().is_symlink(&link) {
            return Err(Error::NotFound {
                kind: member.kind().noun(),
                name: format!("{} in group {group}", member.name()),
            });
        }
        let affected = self.affected_secrets(&Member::Group(group.clone()))?;
        self.refuse_orphans(&affected, |holder| {
            holder.via_group.as_deref() == Some(group.as_str())
                && holder.kind == member.kind()
                && holder.name == member.name()
        })?;
        self.unlink(&link)?;
        let mut changes = Changes::new(format!(
            "secrets: remove {} {} from group {group}",
            member.kind().noun(),
            member.name()
        ));
        changes.push(link);
        self.files().remove_empty_dirs(
            &group_dir.join(member.kind().dir()),
            Path::new("sops/groups"),
        );
        if !self.files().exists(&group_dir) {
            for secret in &affected {
                let link = secret.join("groups").join(group.as_str());
                if self.files().is_symlink(&link) {
                    self.unlink(&link)?;
                    changes.push(link);
                }
            }
        }
        let report = self.rekey_dirs(&affected, identities, &mut changes);
        Ok((changes, report))
    }

    fn remove_group(
        &self,
        member: &Member,
        identities: &Identities,
    ) -> Result<(Changes, RekeyReport), Error> {
        self.require(member)?;
        let affected = self.affected_secrets(member)?;
        self.refuse_orphans(&affected, |holder| {
            holder.via_group.as_deref() == Some(member.name())
        })?;
        let dir = Self::member_dir(MemberKind::Group, member.name());
        self.files().remove_all(&dir)?;
        let mut changes = Changes::new(format!("secrets: remove group {}", member.name()));
        changes.push(dir);
        for secret in &affected {
            let link = secret.join("groups").join(member.name());
            self.unlink(&link)?;
            changes.push(link);
        }
        let report = self.rekey_dirs(&affected, identities, &mut changes);
        Ok((changes, report))
    }

    // ---- secrets -------------------------------------------------------------------------

    /// The secrets in `sops/secrets` (directories holding a `secret` file).
    pub fn secrets(&self) -> Result<Vec<SecretName>, Error> {
        let dir = Path::new("sops/secrets");
        Ok(self
            .files()
            .dir_names(dir)?
            .into_iter()
            .filter(|name| self.files().is_file(&dir.join(name).join("secret")))
            .filter_map(|name| name.parse().ok())
            .collect())
    }

    /// Every secret directory: `sops/secrets/*` and the secret vars under `vars/`.
    pub fn all_secret_dirs(&self) -> Result<Vec<PathBuf>, Error> {
        let mut dirs: Vec<PathBuf> = self.secrets()?.iter().map(Self::secret_dir).collect();
        let shared = Path::new("vars/shared");
        let mut generator_roots = vec![shared.to_path_buf()];
        for machine in self.files().dir_names(Path::new("vars/per-machine"))? {
            generator_roots.push(Path::new("vars/per-machine").join(machine));
        }
        for root in generator_roots {
            for generator in self.files().dir_names(&root)? {
                for file in self.files().dir_names(&root.join(&generator))? {
                    let dir = root.join(&generator).join(file);
                    if self.files().is_file(&dir.join("secret")) {
                        dirs.push(dir);
                    }
                }
            }
        }
        Ok(dirs)
    }

    /// Encrypts `plaintext` as secret `name` for the admin plus `members`, with a fresh data
    /// key (existing links are kept).
    pub fn set_secret(
        &self,
        name: &SecretName,
        plaintext: &[u8],
        members: &[Member],
        admin: &Admin,
    ) -> Result<Changes, Error> {
        let mut changes =
            self.write_secret_at(&Self::secret_dir(name), plaintext, members, admin)?;
        changes.message = format!("secrets: update {name}");
        Ok(changes)
    }

    /// Writes the secret directory `dir` (relative to the clan directory; e.g. a var's
    /// `vars/per-machine/<m>/<generator>/<file>`): links `members` and the admin's user, then
    /// encrypts `plaintext` to everyone the links name.
    pub fn write_secret_at(
        &self,
        dir: &Path,
        plaintext: &[u8],
        members: &[Member],
        admin: &Admin,
    ) -> Result<Changes, Error> {
        for member in members {
            self.require(member)?;
        }
        let mut changes = Changes::new(format!("secrets: update {}", dir.display()));
        let admin_member = Member::User(admin.user.clone());
        for member in members.iter().chain(std::iter::once(&admin_member)) {
            let link = dir.join(member.kind().dir()).join(member.name());
            if !self.files().is_symlink(&link) {
                self.files()
                    .symlink_relative(&link, &Self::member_dir(member.kind(), member.name()))?;
                changes.push(link);
            }
        }
        let recipients = self.expected_recipients(dir)?;
        let path = dir.join("secret");
        let file = sops::encrypt(plaintext, &recipients).map_err(|source| Error::Sops {
            action: "encrypt",
            path: path.clone(),
            source,
        })?;
        self.files().write_atomic(&path, &file.to_bytes())?;
        changes.push(path);
        Ok(changes)
    }

    /// Decrypts secret `name`, verifying its MAC.
    pub fn get_secret(
        &self,
        name: &SecretName,
        identities: &Identities,
    ) -> Result<Plaintext, Error> {
        let dir = Self::secret_dir(name);
        if !self.files().is_file(&dir.join("secret")) {
            return Err(Error::NotFound {
                kind: "secret",
                name: name.to_string(),
            });
        }
        self.read_secret_at(&dir, identities)
    }

    /// Decrypts `<dir>/secret`, verifying its MAC. When no identity is a recipient, the
    /// error names the users and machines that can decrypt it.
    pub fn read_secret_at(&self, dir: &Path, identities: &Identities) -> Result<Plaintext, Error> {
        let path = dir.join("secret");
        let file = self.read_sops_file(&path)?;
        file.decrypt(identities)
            .map_err(|source| self.decrypt_error(&path, &file, source))
    }

    /// [`SopsDir::read_secret_at`] for many secret directories at once, on all cores; results
    /// in input order.
    pub fn read_secrets_at(
        &self,
        dirs: &[PathBuf],
        identities: &Identities,
    ) -> Vec<Result<Plaintext, Error>> {
        crate::sops::parallel_map(dirs, |dir| self.read_secret_at(dir, identities))
    }

    fn read_sops_file(&self, path: &Path) -> Result<SopsFile, Error> {
        let bytes = self.files().read(path)?;
        SopsFile::parse(&bytes).map_err(|source| Error::Sops {
            action: "parse",
            path: path.to_path_buf(),
            source,
        })
    }

    fn decrypt_error(&self, path: &Path, file: &SopsFile, source: SopsError) -> Error {
        if !matches!(source, SopsError::NotARecipient { .. }) {
            return Error::Sops {
                action: "decrypt",
                path: path.to_path_buf(),
                source,
            };
        }
        let owners = self.key_owners().unwrap_or_default();
        let holders = file
            .recipients()
            .into_iter()
            .flat_map(|key| match owners.get(&key) {
                Some(names) => names.clone(),
                None => vec![format!("unknown key {key}")],
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Error::NotARecipient {
            path: path.to_path_buf(),
            holders,
        }
    }

    pub fn remove_secret(&self, name: &SecretName) -> Result<Changes, Error> {
        let dir = Self::secret_dir(name);
        if !self.files().is_dir(&dir) {
            return Err(Error::NotFound {
                kind: "secret",
                name: name.to_string(),
            });
        }
        self.files().remove_all(&dir)?;
        Ok(Changes {
            paths: vec![dir],
            message: format!("secrets: remove {name}"),
        })
    }

    /// Renames a secret; its relative links stay valid since the depth does not change.
    pub fn rename_secret(&self, from: &SecretName, to: &SecretName) -> Result<Changes, Error> {
        let (old, new) = (Self::secret_dir(from), Self::secret_dir(to));
        if !self.files().is_dir(&old) {
            return Err(Error::NotFound {
                kind: "secret",
                name: from.to_string(),
            });
        }
        if self.files().exists(&new) {
            return Err(Error::AlreadyExists {
                kind: "secret",
                name: to.to_string(),
            });
        }
        self.files().rename(&old, &new)?;
        Ok(Changes {
            paths: vec![old, new],
            message: format!("secrets: rename {from} to {to}"),
        })
    }

    /// Gives `member` access to the secret in `dir` and re-keys it.
    pub fn allow(
        &self,
        dir: &Path,
        member: &Member,
        identities: &Identities,
    ) -> Result<Changes, Error> {
        self.require(member)?;
        if !self.files().is_file(&dir.join("secret")) {
            return Err(Error::NotFound {
                kind: "secret",
                name: dir.display().to_string(),
            });
        }
        let link = dir.join(member.kind().dir()).join(member.name());
        self.files()
            .symlink_relative(&link, &Self::member_dir(member.kind(), member.name()))?;
        self.membership_changed("add", "to", dir, member, link, identities)
    }

    /// Takes `member`'s link away from the secret in `dir` and re-keys it; refuses when
    /// nobody would be left.
    pub fn disallow(
        &self,
        dir: &Path,
        member: &Member,
        identities: &Identities,
    ) -> Result<Changes, Error> {
        let link = dir.join(member.kind().dir()).join(member.name());
        if !self.files().is_symlink(&link) {
            return Err(Error::NotFound {
                kind: member.kind().noun(),
                name: format!("{} in {}", member.name(), display_secret(dir)),
            });
        }
        self.refuse_orphans(
            std::slice::from_ref(&dir.to_path_buf()),
            |holder| match &holder.via_group {
                Some(group) => member.kind() == MemberKind::Group && group == member.name(),
                None => holder.kind == member.kind() && holder.name == member.name(),
            },
        )?;
        self.unlink(&link)?;
        self.files()
            .remove_empty_dirs(&dir.join(member.kind().dir()), dir);
        self.membership_changed("remove", "from", dir, member, link, identities)
    }

    /// Re-keys the secret in `dir` after `member`'s `link` was added or removed, and records it.
    fn membership_changed(
        &self,
        verb: &str,
        preposition: &str,
        dir: &Path,
        member: &Member,
        link: PathBuf,
        identities: &Identities,
    ) -> Result<Changes, Error> {
        let mut changes = Changes::new(format!(
            "secrets: {verb} {} {} {preposition} {}",
            member.kind().noun(),
            member.name(),
            display_secret(dir)
        ));
        changes.push(link);
        if self.rekey_dir(dir, identities)? {
            changes.push(dir.join("secret"));
        }
        Ok(changes)
    }

    // ---- machine keys --------------------------------------------------------------------

    /// Creates machine `machine`'s age key unless it has one (see
    /// [`SopsDir::write_machine_key`]). Returns `None` when the machine already has a key.
    pub fn ensure_machine_key(
        &self,
        machine: &MachineName,
        groups: &[GroupName],
        admin: &Admin,
    ) -> Result<Option<Changes>, Error> {
        if self.exists(&Member::Machine(machine.clone())) {
            return Ok(None);
        }
        let (text, public) = generate_identity();
        self.write_machine_key(machine, &text, &public, groups, admin)
            .map(Some)
    }

    /// Stores a new age key of `machine` made by [`generate_identity`]: the private key as
    /// secret `<machine>-age.key` (for the admin and `groups`), the public key in
    /// `sops/machines/<machine>/key.json`.
    pub fn write_machine_key(
        &self,
        machine: &MachineName,
        text: &SecretString,
        public: &Recipient,
        groups: &[GroupName],
        admin: &Admin,
    ) -> Result<Changes, Error> {
        let private_line = text
            .expose_secret()
            .lines()
            .find(|line| !line.starts_with('#'))
            .unwrap_or_default();
        let name: SecretName = format!("{machine}-age.key").parse()?;
        let members: Vec<Member> = groups.iter().cloned().map(Member::Group).collect();
        let mut changes = self.set_secret(&name, private_line.as_bytes(), &members, admin)?;
        let (added, _) = self.add_machine(machine, public, false, &admin.identities)?;
        changes.paths.extend(added.paths);
        changes.message = format!("secrets: create age key for machine {machine}");
        Ok(changes)
    }

    /// The machine's private key from `sops/secrets/<machine>-age.key`, as identities.
    pub fn machine_identities(
        &self,
        machine: &MachineName,
        identities: &Identities,
    ) -> Result<Identities, Error> {
        let name: SecretName = format!("{machine}-age.key").parse()?;
        let plaintext = self.get_secret(&name, identities)?;
        let text = std::str::from_utf8(plaintext.expose()).unwrap_or("");
        Identities::parse(text, &format!("secret {name}")).map_err(|reason| Error::KeyFile {
            source_name: format!("secret `{name}`"),
            reason,
        })
    }

    // ---- recipients, re-keying, audit ----------------------------------------------------

    /// Who can decrypt the secret in `dir` according to its links, with problems found.
    pub fn holders(&self, dir: &Path) -> Result<(Vec<Holder>, Vec<Problem>), Error> {
        let mut holders = Vec::new();
        let mut problems = Vec::new();
        for kind in [MemberKind::User, MemberKind::Machine] {
            self.collect_links(
                &dir.join(kind.dir()),
                kind,
                None,
                &mut holders,
                &mut problems,
            )?;
        }
        let groups_dir = dir.join("groups");
        for name in self.files().entry_names(&groups_dir)? {
            let link = groups_dir.join(&name);
            match self.resolve_link(&link, MemberKind::Group) {
                Ok(target) => {
                    for kind in [MemberKind::User, MemberKind::Machine] {
                        self.collect_links(
                            &target.join(kind.dir()),
                            kind,
                            Some(&name),
                            &mut holders,
                            &mut problems,
                        )?;
                    }
                }
                Err(message) => problems.push(Problem {
                    path: link,
                    message,
                }),
            }
        }
        Ok((holders, problems))
    }

    /// Whether `kind` `name` holds the secret in `dir`, directly or through a group, by the
    /// links alone: no key file is read (a deploy asks this of every secret).
    pub fn held_by(&self, dir: &Path, kind: MemberKind, name: &str) -> Result<bool, Error> {
        let link = |dir: &Path| dir.join(kind.dir()).join(name);
        if self.resolve_link(&link(dir), kind).is_ok() {
            return Ok(true);
        }
        let groups_dir = dir.join("groups");
        for group in self.files().entry_names(&groups_dir)? {
            let target = self.resolve_link(&groups_dir.join(&group), MemberKind::Group);
            if target.is_ok_and(|group| self.resolve_link(&link(&group), kind).is_ok()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn collect_links(
        &self,
        dir: &Path,
        kind: MemberKind,
        via_group: Option<&str>,
        holders: &mut Vec<Holder>,
        problems: &mut Vec<Problem>,
    ) -> Result<(), Error> {
        for name in self.files().entry_names(dir)? {
            let link = dir.join(&name);
            let target = match self.resolve_link(&link, kind) {
                Ok(target) => target,
                Err(message) => {
                    problems.push(Problem {
                        path: link,
                        message,
                    });
                    continue;
                }
            };
            match read_key_file(&self.clan_dir, &target.join("key.json")) {
                Ok(keys) => holders.push(Holder {
                    kind,
                    name,
                    via_group: via_group.map(str::to_owned),
                    keys,
                }),
                Err(error) => problems.push(Problem {
                    path: link,
                    message: error.to_string(),
                }),
            }
        }
        Ok(())
    }

    /// The directory a recipient link points at, relative to the clan directory.
    fn resolve_link(&self, link: &Path, kind: MemberKind) -> Result<PathBuf, String> {
        if !self.files().is_symlink(link) {
            return Err(
                "not a symlink (was the repository checked out with core.symlinks=false?)".into(),
            );
        }
        let target = self
            .files()
            .read_link(link)
            .map_err(|error| error.to_string())?;
        let resolved = normalize(&link.parent().unwrap_or(Path::new("")).join(&target))
            .ok_or_else(|| format!("points outside the clan directory ({})", target.display()))?;
        if !self.files().exists(&resolved) {
            return Err(format!("dangling link to `{}`", resolved.display()));
        }
        let parent = resolved
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str());
        if parent != Some(kind.dir()) {
            return Err(format!(
                "points at `{}`, expected a {}",
                resolved.display(),
                kind.noun()
            ));
        }
        Ok(resolved)
    }

    /// The recipients the links of `dir` call for, sorted and deduplicated.
    pub fn expected_recipients(&self, dir: &Path) -> Result<Vec<Recipient>, Error> {
        let (holders, _) = self.holders(dir)?;
        let set: BTreeSet<Recipient> = holders.into_iter().flat_map(|holder| holder.keys).collect();
        Ok(set.into_iter().collect())
    }

    /// Re-encrypts the data key of `dir/secret` to what its links call for. Returns whether
    /// the file changed.
    pub fn rekey_dir(&self, dir: &Path, identities: &Identities) -> Result<bool, Error> {
        let path = dir.join("secret");
        let recipients = self.expected_recipients(dir)?;
        if recipients.is_empty() {
            return Err(Error::NoRecipientsLeft {
                what: "a secret".into(),
                paths: vec![display_secret(dir)],
            });
        }
        let mut file = self.read_sops_file(&path)?;
        let changed =
            file.set_recipients(&recipients, identities)
                .map_err(|source| match source {
                    SopsError::NotARecipient { .. } => self.decrypt_error(&path, &file, source),
                    source => Error::Sops {
                        action: "re-key",
                        path: path.clone(),
                        source,
                    },
                })?;
        if changed {
            self.files().write_atomic(&path, &file.to_bytes())?;
        }
        Ok(changed)
    }

    /// Re-keys every secret whose recipients differ from its links (`secrets key update`).
    pub fn update_keys(&self, identities: &Identities) -> Result<RekeyReport, Error> {
        let dirs = self.all_secret_dirs()?;
        let mut changes = Changes::default();
        Ok(self.rekey_dirs(&dirs, identities, &mut changes))
    }

    fn rekey_dirs(
        &self,
        dirs: &[PathBuf],
        identities: &Identities,
        changes: &mut Changes,
    ) -> RekeyReport {
        let mut report = RekeyReport::default();
        for dir in dirs {
            if !self.files().is_file(&dir.join("secret")) {
                continue;
            }
            match self.rekey_dir(dir, identities) {
                Ok(true) => {
                    changes.push(dir.join("secret"));
                    report.changed.push(dir.join("secret"));
                }
                Ok(false) => {}
                Err(error) => report.failed.push((dir.join("secret"), error)),
            }
        }
        report
    }

    fn rekey_affected(
        &self,
        member: &Member,
        identities: &Identities,
        changes: &mut Changes,
    ) -> Result<RekeyReport, Error> {
        let affected = self.affected_secrets(member)?;
        Ok(self.rekey_dirs(&affected, identities, changes))
    }

    /// Secret directories that link `member`, directly or through a group.
    fn affected_secrets(&self, member: &Member) -> Result<Vec<PathBuf>, Error> {
        let groups: Vec<String> = match member {
            Member::Group(group) => vec![group.to_string()],
            _ => self
                .groups()?
                .into_iter()
                .filter(|group| match member.kind() {
                    MemberKind::User => group.users.iter().any(|u| u == member.name()),
                    _ => group.machines.iter().any(|m| m == member.name()),
                })
                .map(|group| group.name.to_string())
                .collect(),
        };
        let mut affected = Vec::new();
        for dir in self.all_secret_dirs()? {
            let direct = member.kind() != MemberKind::Group
                && self
                    .files()
                    .is_symlink(&dir.join(member.kind().dir()).join(member.name()));
            let via_group = groups
                .iter()
                .any(|group| self.files().is_symlink(&dir.join("groups").join(group)));
            if direct || via_group {
                affected.push(dir);
            }
        }
        Ok(affected)
    }

    /// Refuses when removing the holders matched by `leaving` would leave a secret in
    /// `dirs` without any recipient.
    fn refuse_orphans(
        &self,
        dirs: &[PathBuf],
        leaving: impl Fn(&Holder) -> bool,
    ) -> Result<(), Error> {
        let mut orphans = Vec::new();
        for dir in dirs {
            let (holders, _) = self.holders(dir)?;
            if holders
                .iter()
                .filter(|holder| !leaving(holder))
                .all(|holder| holder.keys.is_empty())
            {
                orphans.push(display_secret(dir));
            }
        }
        if orphans.is_empty() {
            Ok(())
        } else {
            Err(Error::NoRecipientsLeft {
                what: "secrets".into(),
                paths: orphans,
            })
        }
    }

    /// For every secret: who can decrypt it (per links) and where the file's recipients
    /// drift from the links.
    pub fn audit(&self) -> Result<Vec<AuditEntry>, Error> {
        let owners = self.key_owners()?;
        let mut entries = Vec::new();
        for dir in self.all_secret_dirs()? {
            let (holders, mut problems) = self.holders(&dir)?;
            let expected: BTreeMap<Recipient, String> = holders
                .iter()
                .flat_map(|holder| {
                    let who = match &holder.via_group {
                        Some(group) => {
                            format!("{} {} (group {group})", holder.kind.noun(), holder.name)
                        }
                        None => format!("{} {}", holder.kind.noun(), holder.name),
                    };
                    holder
                        .keys
                        .iter()
                        .map(move |key| (key.clone(), who.clone()))
                })
                .collect();
            let path = dir.join("secret");
            let actual = match self.read_sops_file(&path) {
                Ok(file) => file.recipients(),
                Err(error) => {
                    problems.push(Problem {
                        path: path.clone(),
                        message: error_chain(&error),
                    });
                    Vec::new()
                }
            };
            let missing = expected
                .iter()
                .filter(|(key, _)| !actual.iter().any(|a| a == key.as_str()))
                .map(|(key, who)| (key.clone(), who.clone()))
                .collect();
            let unexpected = actual
                .iter()
                .filter(|key| !expected.keys().any(|e| e.as_str() == key.as_str()))
                .map(|key| (key.clone(), owners.get(key).map(|names| names.join(", "))))
                .collect();
            entries.push(AuditEntry {
                secret: dir,
                holders,
                missing,
                unexpected,
                problems,
            });
        }
        Ok(entries)
    }

    fn unlink(&self, link: &Path) -> Result<(), Error> {
        self.files().remove_file(link)
    }
}

fn display_secret(dir: &Path) -> String {
    match dir.strip_prefix("sops/secrets") {
        Ok(name) => name.display().to_string(),
        Err(_) => dir.display().to_string(),
    }
}

fn error_chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves `.` and `..` lexically; `None` if the path climbs above its root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Reads a `key.json` (object or list form). Only age keys are supported.
fn read_key_file(clan_dir: &Path, path: &Path) -> Result<Vec<Recipient>, Error> {
    let bytes = ClanFiles(clan_dir).read(path)?;
    let bad = |reason: String| Error::KeyJson {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|error| bad(error.to_string()))?;
    let entries = match value {
        serde_json::Value::Array(entries) => entries,
        object @ serde_json::Value::Object(_) => vec![object],
        _ => return Err(bad("expected an object or a list".into())),
    };
    let mut keys = Vec::with_capacity(entries.len());
    for entry in entries {
        let key_type = entry.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let public = entry
            .get("publickey")
            .and_then(|k| k.as_str())
            .ok_or_else(|| bad("an entry lacks `publickey`".into()))?;
        if !key_type.eq_ignore_ascii_case("age") {
            return Err(bad(format!(
                "key type `{key_type}` is not supported (only age)"
            )));
        }
        keys.push(public.parse::<Recipient>().map_err(bad)?);
    }
    if keys.is_empty() {
        return Err(bad("no keys".into()));
    }
    Ok(keys)
}

/// Writes a `key.json` in clan-core's list form, sorted and deduplicated, byte-identical to
/// what clan-core's `json.dump(…, indent=2)` writes.
pub fn write_key_file(clan_dir: &Path, path: &Path, keys: &[Recipient]) -> Result<(), Error> {
    let set: BTreeSet<&Recipient> = keys.iter().collect();
    let entries: Vec<serde_json::Value> = set
        .into_iter()
        .map(|key| serde_json::json!({ "publickey": key.as_str(), "type": "age" }))
        .collect();
    let text = serde_json::to_string_pretty(&entries).expect("JSON values serialize");
    ClanFiles(clan_dir).write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(
            normalize(Path::new("sops/secrets/s/users/../../../users/a")),
            Some(PathBuf::from("sops/users/a"))
        );
        assert_eq!(normalize(Path::new("sops/../../etc")), None);
    }
}
