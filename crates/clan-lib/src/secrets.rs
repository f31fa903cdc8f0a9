//! Secrets operations over `clan-secrets` (clan-core's `clan secrets`): the admin's key,
//! users, machines and groups with their keys, who may decrypt which secret, and the secrets
//! themselves. Every change holds the clan lock, re-keys what it must, and is one commit
//! (unless `CLAN_NO_COMMIT=1`); secrets that could not be re-keyed are reported, not fatal.

use std::path::{Path, PathBuf};

use clan_secrets::{
    Admin, Changes, GroupName, Identities, KeySources, MachineName, Member, Plaintext, Recipient,
    RekeyReport, SecretName, SopsDir, UserName,
};
use zeroize::Zeroizing;

use crate::change;
use crate::{Error, Progress};

/// What a secrets change may touch: the sops tree, and the secret vars it re-keys.
const SECRETS_SCOPE: &[&str] = &["sops", "vars"];

/// What a change did.
#[derive(Debug, Default)]
pub struct Changed {
    /// Paths changed, relative to the clan directory (committed).
    pub paths: Vec<PathBuf>,
    /// Secrets that could not be re-keyed, with why.
    pub rekey_failures: Vec<(PathBuf, clan_secrets::Error)>,
}

/// A member with its public keys: a user has one or more, a machine exactly one.
pub enum Keyed<'a> {
    User(&'a UserName, &'a [Recipient]),
    Machine(&'a MachineName, &'a Recipient),
}

/// Who can decrypt one secret, and where its encryption drifted from its links: one entry
/// of `clan secrets audit --json`. It names keys and holders, never a value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Audit {
    pub secret: PathBuf,
    pub holders: Vec<AuditHolder>,
    /// Keys the links call for that the file is not encrypted to (`clan secrets key update`).
    pub missing: Vec<MissingKey>,
    /// Keys the file is encrypted to that no link calls for.
    pub unexpected: Vec<UnexpectedKey>,
    pub problems: Vec<AuditProblem>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditHolder {
    /// `user`, `machine`.
    pub kind: &'static str,
    pub name: String,
    pub via_group: Option<String>,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MissingKey {
    pub key: String,
    /// Whose key it is.
    #[serde(rename = "for")]
    pub holder: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UnexpectedKey {
    pub key: String,
    /// Its owner, when the clan knows the key.
    pub owner: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditProblem {
    pub path: PathBuf,
    pub message: String,
}

impl Audit {
    /// Nothing drifted and nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.problems.is_empty()
    }
}

/// The clan's `sops/` tree and where the admin's keys are.
pub struct Secrets {
    store: SopsDir,
    sources: KeySources,
}

/// The admin's age identities from `sources`: the one place that finds the admin's key
/// (secrets, vars and deploys all ask here); none is [`clan_secrets::Error::NoAdminKey`].
pub fn admin_identities(sources: &KeySources) -> Result<Identities, clan_secrets::Error> {
    let identities = Identities::discover(sources)?;
    if identities.public_keys().is_empty() {
        return Err(clan_secrets::Error::NoAdminKey {
            searched: sources.describe(),
        });
    }
    Ok(identities)
}

impl Secrets {
    pub fn open(clan_dir: &Path, sources: KeySources) -> Secrets {
        Secrets {
            store: SopsDir::new(clan_dir),
            sources,
        }
    }

    /// The tree, for listings (users, machines, groups, secrets, keys, audit).
    pub fn store(&self) -> &SopsDir {
        &self.store
    }

    /// The admin's identities; none is an error.
    pub fn identities(&self) -> Result<Identities, Error> {
        Ok(admin_identities(&self.sources)?)
    }

    pub fn admin(&self) -> Result<Admin, Error> {
        Ok(self
            .store
            .admin(self.identities()?, &self.sources.describe())?)
    }

    /// Runs `operation` under the clan lock and commits what it changed.
    fn change(
        &self,
        progress: &dyn Progress,
        operation: impl FnOnce(&SopsDir) -> Result<Changes, Error>,
    ) -> Result<Changed, Error> {
        self.rekey(progress, |store| {
            Ok((operation(store)?, RekeyReport::default()))
        })
    }

    /// Runs a re-keying `operation` under the clan lock and commits what it changed.
    fn rekey(
        &self,
        progress: &dyn Progress,
        operation: impl FnOnce(&SopsDir) -> Result<(Changes, RekeyReport), Error>,
    ) -> Result<Changed, Error> {
        let change = change::begin(self.store.clan_dir(), SECRETS_SCOPE, progress)?;
        let (changes, report) = operation(&self.store)?;
        change.commit(&changes.paths, &changes.message)?;
        Ok(Changed {
            paths: changes.paths,
            rekey_failures: report.failed,
        })
    }

    /// Whether `machine` is declared in the clan's inventory.
    fn is_clan_machine(&self, machine: &MachineName) -> bool {
        clan_inventory::load(self.store.clan_dir()).is_ok_and(|loaded| {
            loaded
                .inventory
                .machines
                .keys()
                .any(|name| name.as_str() == machine.as_str())
        })
    }

    /// Every secret's holders and drift (no key needed: it reads links and recipients).
    pub fn audit(&self) -> Result<Vec<Audit>, Error> {
        let entries = self.store.audit()?;
        Ok(entries
            .into_iter()
            .map(|entry| Audit {
                secret: entry.secret,
                holders: entry
                    .holders
                    .into_iter()
                    .map(|holder| AuditHolder {
                        kind: holder.kind.noun(),
                        name: holder.name,
                        via_group: holder.via_group,
                        keys: holder.keys.iter().map(|k| k.as_str().to_owned()).collect(),
                    })
                    .collect(),
                missing: entry
                    .missing
                    .into_iter()
                    .map(|(key, holder)| MissingKey {
                        key: key.as_str().to_owned(),
                        holder,
                    })
                    .collect(),
                unexpected: entry
                    .unexpected
                    .into_iter()
                    .map(|(key, owner)| UnexpectedKey { key, owner })
                    .collect(),
                problems: entry
                    .problems
                    .into_iter()
                    .map(|p| AuditProblem {
                        path: p.path,
                        message: p.message,
                    })
                    .collect(),
            })
            .collect())
    }

    /// The value of `secret`.
    pub fn get(&self, secret: &SecretName) -> Result<Plaintext, Error> {
        Ok(self.store.get_secret(secret, &self.identities()?)?)
    }

    /// Encrypts `value` as `secret` for the admin and `members`. A machine of the clan
    /// without a sops key yet gets one, as vars do.
    pub fn set(
        &self,
        secret: &SecretName,
        value: &[u8],
        members: &[Member],
        progress: &dyn Progress,
    ) -> Result<Changed, Error> {
        let admin = self.admin()?;
        self.change(progress, |store| {
            let mut created = Vec::new();
            for member in members {
                if let Member::Machine(machine) = member {
                    if !self.is_clan_machine(machine) {
                        continue;
                    }
                    if let Some(changes) = store.ensure_machine_key(machine, &[], &admin)? {
                        created.extend(changes.paths);
                    }
                }
            }
            let mut changes = store.set_secret(secret, value, members, &admin)?;
            changes.paths.extend(created);
            Ok(changes)
        })
    }

    pub fn remove(&self, secret: &SecretName, progress: &dyn Progress) -> Result<Changed, Error> {
        self.change(progress, |store| Ok(store.remove_secret(secret)?))
    }

    pub fn rename(
        &self,
        secret: &SecretName,
        new_name: &SecretName,
        progress: &dyn Progress,
    ) -> Result<Changed, Error> {
        self.change(progress, |store| Ok(store.rename_secret(secret, new_name)?))
    }

    /// Adds a user or a machine with its keys (or replaces them with `force`), re-keying what
    /// it may read.
    pub fn add(
        &self,
        keyed: Keyed,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Changed, Error> {
        let identities = Identities::discover(&self.sources)?;
        self.rekey(progress, |store| {
            Ok(match keyed {
                Keyed::User(user, keys) => store.add_user(user, keys, force, &identities)?,
                Keyed::Machine(machine, key) => {
                    store.add_machine(machine, key, force, &identities)?
                }
            })
        })
    }

    /// Adds `keys` to user `user` (`add`), or removes them (never its last one).
    pub fn user_keys(
        &self,
        user: &UserName,
        keys: &[Recipient],
        add: bool,
        progress: &dyn Progress,
    ) -> Result<Changed, Error> {
        self.rekey(progress, |store| {
            let identities = self.identities()?;
            Ok(if add {
                store.add_user_keys(user, keys, &identities)?
            } else {
                store.remove_user_keys(user, keys, &identities)?
            })
        })
    }

    /// Removes a user or machine from every group and secret.
    pub fn remove_member(&self, member: Member, progress: &dyn Progress) -> Result<Changed, Error> {
        self.rekey(progress, |store| {
            Ok(store.remove_member(&member, &self.identities()?)?)
        })
    }

    /// Allows (`allow`) or stops `member` from decrypting `secret`.
    pub fn grant(
        &self,
        secret: &SecretName,
        member: &Member,
        allow: bool,
        progress: &dyn Progress,
    ) -> Result<Changed, Error> {
        self.change(progress, |store| {
            let dir = SopsDir::secret_dir(secret);
            let identities = self.identities()?;
            Ok(if allow {
                store.allow(&dir, member, &identities)?
            } else {
                store.disallow(&dir, member, &identities)?
            })
        })
    }

    /// Adds `member` to `group` (`add`), or removes it.
    pub fn group_membership(
        &self,
        group: &GroupName,
        member: &Member,
        add: bool,
        progress: &dyn Progress,
    ) -> Result<Changed, Error> {
        let identities = self.identities()?;
        self.rekey(progress, |store| {
            Ok(if add {
                store.group_add(group, member, &identities)?
            } else {
                store.group_remove(group, member, &identities)?
            })
        })
    }

    /// Re-encrypts every secret to the keys its links name.
    pub fn update_keys(&self, progress: &dyn Progress) -> Result<Changed, Error> {
        let identities = self.identities()?;
        self.rekey(progress, |store| {
            let report = store.update_keys(&identities)?;
            let changes = Changes {
                paths: report.changed.clone(),
                message: "secrets: update with new keys".into(),
            };
            Ok((changes, report))
        })
    }
}

/// What [`generate_key`] found or made.
#[derive(Debug)]
pub enum KeyGeneration {
    /// The admin has keys already: each public key and where it is.
    Existing(Vec<(Recipient, String)>),
    Created {
        path: PathBuf,
        recipient: Recipient,
    },
}

/// Creates an age key in `SOPS_AGE_KEY_FILE` or the user's key file unless one exists
/// (`new`: append another one anyway).
pub fn generate_key(sources: &KeySources, new: bool) -> Result<KeyGeneration, Error> {
    let identities = Identities::discover_before_generating(sources)?;
    if !identities.public_keys().is_empty() && !new {
        return Ok(KeyGeneration::Existing(
            identities
                .public_keys()
                .iter()
                .map(|key| (key.recipient.clone(), key.source.to_string()))
                .collect(),
        ));
    }
    let path = sources.key_file_for_writing().ok_or(Error::NoKeyFilePath)?;
    let recipient = clan_secrets::append_generated_identity(path)?;
    Ok(KeyGeneration::Created {
        path: path.to_path_buf(),
        recipient,
    })
}

/// Public keys given as text: `age1…` keys, or paths of key files whose public keys are
/// derived. A private key is refused: on a command line other processes can read it.
pub fn parse_recipients(args: &[String]) -> Result<Vec<Recipient>, Error> {
    let mut keys = Vec::new();
    for arg in args {
        if arg.starts_with("AGE-SECRET-KEY-") || arg.starts_with("AGE-PLUGIN-") {
            return Err(Error::PrivateKeyGiven);
        }
        if let Ok(recipient) = arg.parse::<Recipient>() {
            keys.push(recipient);
            continue;
        }
        let path = Path::new(arg);
        if path.is_file() {
            let text =
                Zeroizing::new(std::fs::read_to_string(path).map_err(|source| Error::Io {
                    context: "reading keys from",
                    path: path.to_path_buf(),
                    source,
                })?);
            let identities = Identities::parse(&text, arg).map_err(|reason| Error::BadKeyFile {
                path: path.to_path_buf(),
                reason: reason.to_string(),
            })?;
            keys.extend(
                identities
                    .public_keys()
                    .iter()
                    .map(|key| key.recipient.clone()),
            );
            continue;
        }
        return Err(Error::NotAKey { arg: arg.clone() });
    }
    if keys.is_empty() {
        return Err(Error::NoKeyGiven);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_come_from_public_keys_or_key_files_never_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.txt");
        let identity = age::x25519::Identity::generate();
        let public = identity.to_public().to_string();
        {
            use age::secrecy::ExposeSecret as _;
            std::fs::write(&file, format!("{}\n", identity.to_string().expose_secret())).unwrap();
        }
        let from_file = parse_recipients(&[file.display().to_string()]).unwrap();
        assert_eq!(from_file.len(), 1);
        assert_eq!(from_file[0].as_str(), public);
        let given = parse_recipients(std::slice::from_ref(&public)).unwrap();
        assert_eq!(given[0].as_str(), public);
        assert!(matches!(
            parse_recipients(&["AGE-SECRET-KEY-1XYZ".into()]),
            Err(Error::PrivateKeyGiven)
        ));
        assert!(matches!(
            parse_recipients(&["neither".into()]),
            Err(Error::NotAKey { .. })
        ));
        assert!(matches!(parse_recipients(&[]), Err(Error::NoKeyGiven)));
    }
}
