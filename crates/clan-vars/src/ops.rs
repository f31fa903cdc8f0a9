//! The other `vars` operations, on one machine's vars or all of them: list, get, set, check,
//! fix, export, import, and keygen (the admin's age key and sops user).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clan_fs::Tree;

use clan_config::GeneratorFile;
use clan_secrets::{
    Admin, Changes, Identities, KeySources, MachineName, Member, MemberKind, Plaintext, Recipient,
    SopsFile, UserName,
};

use crate::graph::{FleetGenerator, GeneratorKey, Graph};
use crate::store::{Output, Recipients, Staging, VarsStore, VALIDATION_HASH};
use crate::Error;

/// One var of a machine.
#[derive(Clone, Debug)]
pub struct Var {
    pub generator: GeneratorKey,
    pub file: String,
    pub declaration: GeneratorFile,
    pub exists: bool,
}

impl Var {
    /// `<generator>/<file>`, as the commands name it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.generator.name, self.file)
    }
}

fn machine_generators<'g>(
    graph: &'g Graph,
    machine: &MachineName,
) -> impl Iterator<Item = &'g FleetGenerator> {
    graph
        .of_machine(machine)
        .iter()
        .filter_map(|key| graph.get(key))
}

/// The vars of `machine` (its generators' files, shared ones included), sorted.
pub fn list(graph: &Graph, store: &VarsStore, machine: &MachineName) -> Vec<Var> {
    let mut vars = Vec::new();
    for generator in machine_generators(graph, machine) {
        for (file, declaration) in generator.files() {
            vars.push(Var {
                generator: generator.key.clone(),
                exists: store.exists(&generator.key, &file, declaration.secret),
                file,
                declaration,
            });
        }
    }
    vars
}

/// The var `<generator>/<file>` of `machine`.
pub fn find(graph: &Graph, machine: &MachineName, id: &str) -> Result<Var, Error> {
    let (generator_name, file) = id.split_once('/').ok_or_else(|| Error::UnknownFile {
        generator: id.to_owned(),
        file: String::new(),
    })?;
    let generator = machine_generators(graph, machine)
        .find(|g| g.key.name == generator_name)
        .ok_or_else(|| Error::UnknownGenerator {
            generator: generator_name.to_owned(),
            machines: vec![format!("`{machine}`")],
        })?;
    let declaration = generator
        .files()
        .remove(file)
        .ok_or_else(|| Error::UnknownFile {
            generator: generator_name.to_owned(),
            file: file.to_owned(),
        })?;
    Ok(Var {
        generator: generator.key.clone(),
        file: file.to_owned(),
        declaration,
        exists: false,
    })
}

/// A var's value, decrypted when secret.
pub fn get(store: &VarsStore, var: &Var, identities: &Identities) -> Result<Plaintext, Error> {
    store.read(
        &var.generator,
        &var.file,
        var.declaration.secret,
        identities,
    )
}

/// Replaces a var's value (encrypted to its recipients when secret), atomically.
pub fn set(
    graph: &Graph,
    store: &VarsStore,
    var: &Var,
    value: &Plaintext,
    admin: &Admin,
) -> Result<Changes, Error> {
    let generator = graph.get(&var.generator).expect("vars come from the graph");
    let recipients = Recipients::new(store.sops(), admin.user.clone())?;
    let mut changes = Changes {
        paths: Vec::new(),
        message: format!("vars: set {} ({})", var.id(), var.generator.placement),
    };
    for machine in generator.deploy_targets(&var.declaration) {
        if let Some(created) =
            store
                .sops()
                .ensure_machine_key(machine, &recipients.groups_of(machine), admin)?
        {
            changes.paths.extend(created.paths);
        }
    }
    let access = var
        .declaration
        .secret
        .then(|| {
            recipients.access(
                generator.deploy_targets(&var.declaration),
                &generator.machines,
            )
        })
        .transpose()?;
    let staging = Staging::new(store)?;
    let staged = staging.stage_file(
        &var.generator,
        &Output {
            name: &var.file,
            file: &var.declaration,
            value,
            access: access.as_ref(),
        },
    )?;
    staging.sync()?;
    let target = var.generator.file_dir(&var.file);
    staging.swap_in(&staged, &target)?;
    changes.paths.push(target);
    Ok(changes)
}

/// Something `vars check` found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub var: String,
    pub message: String,
    /// What repairs it.
    pub remedy: Remedy,
}

/// The command that repairs a [`Problem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Remedy {
    /// `clan vars generate <machine>`: the var is missing or outdated.
    Generate,
    /// `clan vars fix <machine>`: a secret's recipients or links are off.
    Fix,
}

/// What is wrong with the vars of `machine`: missing files, outdated validation hashes,
/// secrets whose recipients differ from who should read them.
pub fn check(
    graph: &Graph,
    store: &VarsStore,
    machine: &MachineName,
    admin_user: &UserName,
) -> Result<Vec<Problem>, Error> {
    let recipients = Recipients::new(store.sops(), admin_user.clone())?;
    let mut problems = Vec::new();
    for generator in machine_generators(graph, machine) {
        let key = &generator.key;
        if !store.is_valid(generator) {
            problems.push(Problem {
                var: key.name.clone(),
                message: "validation hash is outdated: the generator must run again".into(),
                remedy: Remedy::Generate,
            });
        }
        for (file, declaration) in generator.files() {
            let id = format!("{}/{file}", key.name);
            if !store.exists(key, &file, declaration.secret) {
                problems.push(Problem {
                    var: id,
                    message: "missing".into(),
                    remedy: Remedy::Generate,
                });
                continue;
            }
            if !declaration.secret {
                continue;
            }
            let wanted =
                recipients.access(generator.deploy_targets(&declaration), &generator.machines)?;
            let path = key.file_dir(&file).join("secret");
            let bytes = store.tree()?.read(&path, clan_fs::DEFAULT_LIMIT)?;
            let sops = SopsFile::parse(&bytes).map_err(|source| clan_secrets::Error::Sops {
                action: "parse",
                path: path.clone(),
                source,
            })?;
            let actual: BTreeSet<String> = sops.recipients().into_iter().collect();
            let expected: BTreeSet<String> = wanted.keys().iter().map(|k| k.to_string()).collect();
            for missing in expected.difference(&actual) {
                problems.push(Problem {
                    var: id.clone(),
                    message: format!("not encrypted to {missing}, who should read it"),
                    remedy: Remedy::Fix,
                });
            }
            for extra in actual.difference(&expected) {
                problems.push(Problem {
                    var: id.clone(),
                    message: format!("encrypted to {extra}, who should not read it"),
                    remedy: Remedy::Fix,
                });
            }
            for (kind, name) in wanted.links() {
                let link = key.file_dir(&file).join(kind.dir()).join(name);
                if !store.entry_exists(&link) {
                    problems.push(Problem {
                        var: id.clone(),
                        message: format!("no recipient link `{}/{name}`", kind.dir()),
                        remedy: Remedy::Fix,
                    });
                }
            }
        }
    }
    Ok(problems)
}

/// Repairs the secrets of `machine`: adds the recipient links they lack and re-encrypts
/// each to exactly the keys its links name.
pub fn fix(
    graph: &Graph,
    store: &VarsStore,
    machine: &MachineName,
    admin: &Admin,
) -> Result<Changes, Error> {
    let recipients = Recipients::new(store.sops(), admin.user.clone())?;
    let mut changes = Changes {
        paths: Vec::new(),
        message: format!("vars: fix secrets of machine {machine}"),
    };
    for generator in machine_generators(graph, machine) {
        for (file, declaration) in generator.files() {
            if !declaration.secret || !store.exists(&generator.key, &file, true) {
                continue;
            }
            let dir = generator.key.file_dir(&file);
            let wanted =
                recipients.access(generator.deploy_targets(&declaration), &generator.machines)?;
            for (kind, name) in wanted.links() {
                if store.entry_exists(&dir.join(kind.dir()).join(name)) {
                    continue;
                }
                let member = match kind {
                    MemberKind::User => Member::User(name.parse()?),
                    MemberKind::Machine => {
                        let machine: MachineName =
                            name.parse().map_err(clan_secrets::Error::from)?;
                        let groups = recipients.groups_of(&machine);
                        if let Some(created) =
                            store.sops().ensure_machine_key(&machine, &groups, admin)?
                        {
                            changes.paths.extend(created.paths);
                        }
                        Member::Machine(machine)
                    }
                    MemberKind::Group => Member::Group(name.parse()?),
                };
                changes
                    .paths
                    .extend(store.sops().allow(&dir, &member, &admin.identities)?.paths);
            }
            if store.sops().rekey_dir(&dir, &admin.identities)? {
                changes.paths.push(dir.join("secret"));
            }
        }
    }
    Ok(changes)
}

/// Writes every generated var of the clan, decrypted, to the new directory `output` (mode
/// 0700, files 0600) as clan-core's export does: `per-machine/<m>/<generator>/<file>`,
/// `shared/<generator>/<file>`, with each `.validation-hash`. Returns how many were written.
pub fn export(
    graph: &Graph,
    store: &VarsStore,
    output: &Path,
    identities: &Identities,
) -> Result<usize, Error> {
    if output.symlink_metadata().is_ok() {
        return Err(Error::Exists {
            path: output.to_path_buf(),
        });
    }
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(output)
            .map_err(clan_error::io("create", output))?;
    }
    let tree = Tree::open(output)?;
    let mut count = 0;
    for generator in graph.iter() {
        let relative = generator.key.dir();
        let dir = relative
            .strip_prefix("vars")
            .expect("vars live under vars/");
        for (file, declaration) in generator.files() {
            if !store.exists(&generator.key, &file, declaration.secret) {
                continue;
            }
            let value = store.read(&generator.key, &file, declaration.secret, identities)?;
            tree.create_dir_all(dir, 0o700)?;
            tree.write_new(&dir.join(&file), value.expose(), 0o600)?;
            count += 1;
        }
        if let Some(hash) = store.stored_validation(&generator.key) {
            tree.create_dir_all(dir, 0o700)?;
            tree.write_new(&dir.join(VALIDATION_HASH), hash.as_bytes(), 0o600)?;
        }
    }
    Ok(count)
}

/// Reads a directory written by [`export`] back into the clan (each var replaced atomically,
/// secrets encrypted to their current recipients), restoring the validation hashes. A link,
/// FIFO or device anywhere in `input` is an error naming it; nothing is read through it.
pub fn import(
    graph: &Graph,
    store: &VarsStore,
    input: &Path,
    admin: &Admin,
) -> Result<Changes, Error> {
    let mut changes = Changes {
        paths: Vec::new(),
        message: format!("vars: import from {}", input.display()),
    };
    let tree = Tree::open(input)?;
    for generator in graph.iter() {
        let relative = generator.key.dir();
        let dir = relative
            .strip_prefix("vars")
            .expect("vars live under vars/");
        let mut imported = false;
        for (file, declaration) in generator.files() {
            let Some(bytes) = tree.read_optional(&dir.join(&file), clan_fs::DEFAULT_LIMIT)? else {
                continue;
            };
            let var = Var {
                generator: generator.key.clone(),
                file,
                declaration,
                exists: true,
            };
            changes
                .paths
                .extend(set(graph, store, &var, &Plaintext::new(bytes), admin)?.paths);
            imported = true;
        }
        let hash = match imported {
            true => tree.read_optional(&dir.join(VALIDATION_HASH), 4096)?,
            false => None,
        };
        if let Some(hash) = hash {
            let staging = Staging::new(store)?;
            let staged = staging.stage_bytes(&hash)?;
            staging.sync()?;
            let target = relative.join(VALIDATION_HASH);
            staging.swap_in(&staged, &target)?;
            changes.paths.push(target);
        }
    }
    Ok(changes)
}

/// What `vars keygen` did.
#[derive(Debug, Default)]
pub struct Keygen {
    /// The key created in this key file, when the admin had none.
    pub created: Option<(PathBuf, Recipient)>,
    /// The sops user added with the admin's keys, when none had them.
    pub user_added: Option<Changes>,
}

/// Creates the admin's age key (in `SOPS_AGE_KEY_FILE` or the user config file) unless one
/// is found, and the sops user `user` with its public keys unless a user already has one.
pub fn keygen(store: &VarsStore, sources: &KeySources, user: &UserName) -> Result<Keygen, Error> {
    let mut done = Keygen::default();
    let mut identities = Identities::discover_before_generating(sources)?;
    if identities.public_keys().is_empty() {
        let path =
            sources
                .key_file_for_writing()
                .ok_or_else(|| clan_secrets::Error::NoAdminKey {
                    searched: sources.describe(),
                })?;
        let recipient = clan_secrets::append_generated_identity(path)?;
        done.created = Some((path.to_path_buf(), recipient));
        identities = Identities::discover(sources)?;
    }
    match store.sops().admin(identities, &sources.describe()) {
        Ok(_) => {}
        Err(clan_secrets::Error::UnknownAdmin { keys }) => {
            let keys: Vec<Recipient> = keys.iter().filter_map(|k| k.parse().ok()).collect();
            let identities = Identities::discover(sources)?;
            let (changes, _) = store.sops().add_user(user, &keys, false, &identities)?;
            done.user_added = Some(changes);
        }
        Err(error) => return Err(error.into()),
    }
    Ok(done)
}

/// What [`forget_machine`] removed and re-keyed.
pub struct Forgotten {
    pub changes: Changes,
    /// Secrets the machine could read that were re-keyed without it (and failures).
    pub report: Option<clan_secrets::RekeyReport>,
}

/// Forgets machine `machine` entirely, as `clan machines delete` does: its per-machine vars,
/// its age key (`sops/secrets/<machine>-age.key`), its sops key and group memberships, with
/// every secret it could read (shared vars, clan secrets) re-keyed without it. A machine
/// created again under the same name starts with fresh keys. `identities` are needed only
/// when there is something to re-key or a key to remove.
pub fn forget_machine(
    store: &VarsStore,
    machine: &MachineName,
    identities: Option<&Identities>,
) -> Result<Forgotten, Error> {
    let sops = store.sops();
    let mut changes = Changes {
        paths: Vec::new(),
        message: format!("machines: forget {machine}: its vars, keys and group memberships"),
    };
    let vars = Path::new("vars/per-machine").join(machine.as_str());
    // A link there is removed as a link (and one above it refused), never followed.
    if store.tree()?.remove_all(&vars)? {
        changes.paths.push(vars);
    }
    let age_key: clan_secrets::SecretName = format!("{machine}-age.key").parse()?;
    if sops.secrets()?.contains(&age_key) {
        changes.paths.extend(sops.remove_secret(&age_key)?.paths);
    }
    let member = Member::Machine(machine.clone());
    let report = if sops.machines()?.contains(machine) {
        let identities = identities.ok_or(Error::NoAdminKeyToForget {
            machine: machine.to_string(),
        })?;
        let (removed, report) = sops.remove_member(&member, identities)?;
        changes.paths.extend(removed.paths);
        Some(report)
    } else {
        None
    };
    Ok(Forgotten { changes, report })
}
