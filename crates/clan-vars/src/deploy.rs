//! What the deploy code needs from vars: the secret files to place on a machine (still
//! encrypted to the machine's key, with owner, group, mode and phase), and the machine's age
//! private key to upload so that the machine can decrypt them. Nothing here writes.

use std::path::{Path, PathBuf};

use clan_config::{AccountName, FileMode, MachineConfig};
use clan_secrets::{Identities, MachineName, Plaintext, SecretName, SopsDir};

use crate::graph::{stored_files, GeneratorKey};
use crate::store::VarsStore;
use crate::Error;

/// One secret var to deploy to a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployableSecret {
    pub generator: String,
    pub file: String,
    /// Stored under `vars/shared/` rather than `vars/per-machine/<machine>/`.
    pub shared: bool,
    /// The sops file (absolute path), encrypted to the machine's key among others.
    pub sops_path: PathBuf,
    pub owner: AccountName,
    pub group: AccountName,
    pub mode: FileMode,
    /// `partitioning`, `activation`, `users` or `services`.
    pub needed_for: String,
}

/// The secret vars `config` (the machine's evaluated config) deploys to `machine`, sorted by
/// generator and file. Errors with [`Error::Missing`] when one is not generated yet.
pub fn deployable_secrets(
    clan_dir: &Path,
    machine: &MachineName,
    config: &MachineConfig,
) -> Result<Vec<DeployableSecret>, Error> {
    let store = VarsStore::new(clan_dir);
    let mut secrets = Vec::new();
    for (name, definition) in &config.generators {
        let key = GeneratorKey::declared(machine, name, definition);
        for (file_name, file) in stored_files(definition) {
            if !(file.secret && file.deploy) {
                continue;
            }
            if !store.exists(&key, &file_name, true) {
                return Err(Error::Missing {
                    placement: key.placement.to_string(),
                    generator: name.clone(),
                    file: file_name,
                });
            }
            secrets.push(DeployableSecret {
                generator: name.clone(),
                shared: definition.share,
                sops_path: clan_dir.join(key.file_dir(&file_name)).join("secret"),
                file: file_name,
                owner: file.owner,
                group: file.group,
                mode: file.mode,
                needed_for: file.needed_for,
            });
        }
    }
    Ok(secrets)
}

/// Where the deploy puts clan secrets (`sops/secrets/<name>`) on a machine: the generator
/// part of their [`DeployableSecret`], which no vars generator can be named.
pub use clan_config::CLAN_SECRETS;

/// The clan secrets `machine` can decrypt, directly or through a group (set with `clan secrets
/// set NAME --machine m`), as secrets to deploy to `/run/secrets/<name>` with the owner,
/// group and mode `config.secrets` gives them (root-only by default).
pub fn machine_clan_secrets(
    clan_dir: &Path,
    machine: &MachineName,
    config: &MachineConfig,
) -> Result<Vec<DeployableSecret>, Error> {
    let sops = SopsDir::new(clan_dir);
    let mut secrets = Vec::new();
    for name in sops.secrets()? {
        let dir = SopsDir::secret_dir(&name);
        let (holders, _) = sops.holders(&dir)?;
        let holds = holders.iter().any(|holder| {
            holder.kind == clan_secrets::MemberKind::Machine && holder.name == machine.as_str()
        });
        if !holds {
            continue;
        }
        let access = config.secrets.get(name.as_str());
        secrets.push(DeployableSecret {
            generator: CLAN_SECRETS.to_owned(),
            file: name.to_string(),
            shared: true,
            sops_path: clan_dir.join(&dir).join("secret"),
            owner: access.map_or_else(AccountName::root, |a| a.owner.clone()),
            group: access.map_or_else(AccountName::root, |a| a.group.clone()),
            mode: access.map_or(FileMode::SECRET, |a| a.mode),
            needed_for: "services".to_owned(),
        });
    }
    Ok(secrets)
}

/// The machine's age private key (`AGE-SECRET-KEY-…`), decrypted from
/// `sops/secrets/<machine>-age.key` with the admin's `identities`, for upload.
pub fn machine_age_key(
    clan_dir: &Path,
    machine: &MachineName,
    identities: &Identities,
) -> Result<Plaintext, Error> {
    let name: SecretName = format!("{machine}-age.key").parse()?;
    Ok(SopsDir::new(clan_dir).get_secret(&name, identities)?)
}

/// The generator and file holding a machine's SSH host public key: the built-in sshd
/// service's, named as clan-core names it.
const SSH_HOST_KEY: (&str, &str) = ("openssh", "ssh.id_ed25519.pub");

/// The SSH host public key (`ssh-ed25519 AAAA…`) the machine presents once `config` is
/// deployed, when the config declares the sshd host-key generator and it has been generated.
pub fn ssh_host_key(
    clan_dir: &Path,
    machine: &MachineName,
    config: &MachineConfig,
) -> Option<String> {
    let (generator, file) = SSH_HOST_KEY;
    let definition = config.generators.get(generator)?;
    let key = GeneratorKey::declared(machine, generator, definition);
    let value = VarsStore::new(clan_dir).read_public(&key, file).ok()?;
    let value = String::from_utf8(value).ok()?;
    let value = value.trim();
    (value.starts_with("ssh-") && !value.contains('\n')).then(|| value.to_owned())
}
