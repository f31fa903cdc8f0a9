//! Applying a generation over the previous one, in order: groups, users, packages, secrets
//! (decrypted into `/run/clan/secrets`), files, clan's block of `/etc/hosts`, systemd units. The same code computes a dry
//! run, so what `--dry-run` reports is what activation would do.
//!
//! Files are tracked per generation: a path the previous generation managed and the new one
//! does not is removed; a pre-existing file the clan starts managing is moved aside to
//! `<path>.clan-orig` (and put back when the clan stops managing the path). Every write is a
//! temp file in the same directory, owner and mode set on it (`fchown`, never by path), then
//! renamed over the target inside the directory's descriptor. Paths are walked with
//! [`clan_fs::system`]'s policy: a link a non-root user controls (`~/.app` → `/etc/cron.d`)
//! anywhere in a managed path is refused, never followed.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use clan_fs::system::System;
use clan_fs::{Kind, Tree, WriteOptions};

use clan_config::{AbsolutePath, AccountName};
use clan_generation::reply::Changes;
use clan_generation::{fill_template, secret_machine_path, Manifest, HOSTS_PATH};
use zeroize::Zeroizing;

use crate::hosts;
use crate::store::Paths;
use crate::system::{self, Accounts};
use crate::AgentError;

/// A generation stored on the machine (or, for a dry run, held in memory only).
pub struct Stored {
    pub id: String,
    pub manifest: Manifest,
    blobs: Blobs,
}

/// Where a generation's blobs are.
enum Blobs {
    Dir(PathBuf),
    Memory(BTreeMap<String, Vec<u8>>),
}

impl Stored {
    pub fn load(paths: &Paths, id: &str) -> Result<Stored, AgentError> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AgentError::UnknownGeneration(id.to_owned()));
        }
        let dir = paths.generation(id);
        let path = dir.join("manifest.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AgentError::UnknownGeneration(id.to_owned()))
            }
            Err(e) => return Err(AgentError::io("reading", &path)(e)),
        };
        let manifest = serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::Corrupt(format!("{}: {e}", path.display())))?;
        Ok(Stored {
            id: id.to_owned(),
            manifest,
            blobs: Blobs::Dir(dir.join("blobs")),
        })
    }

    /// A received bundle kept in memory: what a dry run compares without storing anything.
    pub fn in_memory(received: clan_generation::Received) -> Stored {
        Stored {
            id: received.id,
            manifest: received.manifest,
            blobs: Blobs::Memory(received.blobs),
        }
    }

    /// The state before any generation: nothing managed on `machine`.
    pub fn empty(machine: &clan_config::MachineName) -> Stored {
        Stored {
            id: String::new(),
            manifest: Manifest::nothing(machine.clone()),
            blobs: Blobs::Memory(BTreeMap::new()),
        }
    }

    fn blob(&self, key: &str) -> Result<Vec<u8>, AgentError> {
        match &self.blobs {
            Blobs::Dir(dir) => {
                let path = dir.join(key);
                fs::read(&path).map_err(AgentError::io("reading", &path))
            }
            Blobs::Memory(blobs) => blobs
                .get(key)
                .cloned()
                .ok_or_else(|| AgentError::Corrupt(format!("the generation has no blob `{key}`"))),
        }
    }
}

/// What activation does with one unit.
struct UnitPlan {
    content: Vec<u8>,
    enabled: bool,
    restart_on_change: bool,
    restart_triggers: Vec<String>,
    reload_triggers: Vec<String>,
}

/// Unit name → plan.
type Units = BTreeMap<String, UnitPlan>;

/// Decrypted secrets of a generation, by `<generator>/<file>`.
type Secrets = BTreeMap<String, clan_secrets::Plaintext>;

/// The boot-time unit that decrypts the current generation's secrets again (tmpfs is empty
/// after a reboot) and restarts the waiter of a generation still awaiting confirmation.
pub const SECRETS_UNIT: &str = "clan-secrets.service";

fn secrets_unit(agent: &Path) -> String {
    format!(
        "# Written by clan: decrypts the current generation's secrets into /run/clan/secrets\n\
         # and resumes a confirmation a reboot interrupted.\n\
         [Unit]\nDescription=clan secrets\nDefaultDependencies=no\n\
         After=local-fs.target\nBefore=sysinit.target\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=\"{}\" agent decrypt-secrets\n\n\
         [Install]\nWantedBy=sysinit.target\n",
        agent.display()
    )
}

/// Decrypts every secret of `generation` with the machine's age key.
pub fn decrypt_secrets(paths: &Paths, generation: &Stored) -> Result<Secrets, AgentError> {
    let mut secrets = Secrets::new();
    if generation.manifest.secrets.is_empty() {
        return Ok(secrets);
    }
    let key_path = paths.key_file();
    let key = Zeroizing::new(fs::read_to_string(&key_path).map_err(|e| {
        AgentError::Secret(format!(
            "the machine's age key `{}` cannot be read ({e}); a deploy uploads it",
            key_path.display()
        ))
    })?);
    let identities = clan_secrets::Identities::parse(&key, &key_path.display().to_string())
        .map_err(AgentError::Secret)?;
    for (name, secret) in &generation.manifest.secrets {
        let sops = generation.blob(&secret.blob)?;
        let plaintext = clan_secrets::decrypt(&sops, &identities)
            .map_err(|e| AgentError::Secret(format!("decrypting `{name}`: {e}")))?;
        secrets.insert(name.clone(), plaintext);
    }
    Ok(secrets)
}

/// Writes `secrets` into `/run/clan/secrets/<generator>/<file>` and removes the others.
pub fn install_secrets(
    paths: &Paths,
    generation: &Stored,
    secrets: &Secrets,
    accounts: &Accounts,
    changes: Option<&mut Changes>,
    old: &Stored,
    dry_run: bool,
) -> Result<(), AgentError> {
    let system = paths.system()?;
    let mut changed = Vec::new();
    for (name, entry) in &generation.manifest.secrets {
        let (root, path) = secret_machine_path(name);
        let (uid, gid) = owner_ids(
            accounts,
            &entry.owner,
            &entry.group,
            &format!("secret `{name}`"),
        )?;
        // Decrypted from the same manifest, but a missing one must not panic the agent.
        let value = secrets
            .get(name)
            .ok_or_else(|| AgentError::Secret(format!("secret `{name}` was not decrypted")))?;
        let differs = old.manifest.secrets.get(name).map(|e| &e.blob) != Some(&entry.blob)
            || !matches_on_disk(&system, &path, value.expose(), uid, gid, entry.mode);
        if differs {
            changed.push(name.clone());
            if !dry_run {
                system.dir(&root, Some(0o751))?;
                let (dir, file) = system.parent(&path, Some(0o751))?;
                let options = WriteOptions::new(entry.mode).owner(uid, gid);
                dir.write(Path::new(&file), value.expose(), options)?;
            }
        }
    }
    for name in old.manifest.secrets.keys() {
        if !generation.manifest.secrets.contains_key(name) {
            changed.push(name.clone());
            if !dry_run {
                match system.parent(&secret_machine_path(name).1, None) {
                    Ok((dir, file)) => {
                        dir.remove_file(Path::new(&file))?;
                    }
                    Err(error) if error.is_not_found() => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
    }
    if let Some(changes) = changes {
        changes.secrets_changed = changed;
    }
    Ok(())
}

fn owner_ids(
    accounts: &Accounts,
    owner: &str,
    group: &str,
    subject: &str,
) -> Result<(Option<u32>, Option<u32>), AgentError> {
    let uid = accounts.uid(owner);
    let gid = accounts.gid(group);
    if uid.is_none() || gid.is_none() {
        return Err(AgentError::Step(format!(
            "{subject}: owner `{owner}:{group}` does not exist on the machine"
        )));
    }
    Ok((uid, gid))
}

/// Applies `new` over `old` (what is managed now). With `dry_run` nothing is changed and
/// the result says what would be.
pub fn apply(
    paths: &Paths,
    new: &Stored,
    old: &Stored,
    agent: &Path,
    dry_run: bool,
) -> Result<Changes, AgentError> {
    let mut changes = Changes::default();
    let manifest = &new.manifest;
    let live = paths.is_live();
    if !live && (!manifest.users.is_empty() || !manifest.groups.is_empty()) {
        return Err(AgentError::Step(
            "users and groups can only be applied to the running system".into(),
        ));
    }
    let secrets = decrypt_secrets(paths, new)?;

    // Packages first: they may bring the groups and shells the users below need.
    // Only the list for this machine's distribution family applies.
    let family = system::distro_family(paths);
    if let Some(wanted) = manifest.packages.get(&family).filter(|w| !w.is_empty()) {
        if family != "debian" || !live {
            return Err(AgentError::Step(format!(
                "installing packages on `{family}` is not supported yet (only Debian and its derivatives)"
            )));
        }
        let missing: Vec<&str> = wanted
            .iter()
            .map(|p| p.as_str())
            .filter(|p| !system::dpkg_installed(p))
            .collect();
        if !missing.is_empty() {
            changes.packages_installed = missing.iter().map(|p| p.to_string()).collect();
            if !dry_run {
                let mut argv = vec!["apt-get", "install", "-y", "--no-install-recommends"];
                argv.extend(&missing);
                system::run(&argv, None)?;
            }
        }
    }

    // Groups and users.
    let accounts = Accounts::read(paths);
    // Checked before any account changes (in a dry run the packages are not there yet):
    // useradd would take a shell that is not there, and a missing group would stop it
    // halfway.
    for (name, user) in manifest.users.iter().filter(|_| !dry_run) {
        if let Some(group) = user.groups.iter().find(|g| {
            !accounts.groups.contains_key(g.as_str()) && !manifest.groups.contains_key(*g)
        }) {
            return Err(AgentError::Step(format!(
                "user `{name}`: group `{group}` does not exist on the machine"
            )));
        }
        if let Some(shell) = user
            .shell
            .as_ref()
            .filter(|shell| !paths.on_machine(shell).is_file())
        {
            return Err(AgentError::Step(format!(
                "user `{name}`: shell `{shell}` does not exist on the machine (install its package)"
            )));
        }
    }
    for (name, group) in &manifest.groups {
        if !accounts.groups.contains_key(name.as_str()) {
            changes.groups_created.push(name.to_string());
            if !dry_run {
                let gid = group.gid.map(|g| g.to_string());
                let mut argv = vec!["groupadd"];
                if let Some(gid) = &gid {
                    argv.extend(["-g", gid.as_str()]);
                }
                if group.system {
                    argv.push("-r");
                }
                argv.push(name);
                system::run(&argv, None)?;
            }
        }
    }
    for (name, user) in &manifest.users {
        let groups = user.groups.join(",");
        let uid = user.uid.map(|u| u.to_string());
        match accounts.users.get(name.as_str()) {
            None => {
                changes.users_created.push(name.to_string());
                if !dry_run {
                    let mut argv = vec!["useradd"];
                    if let Some(uid) = &uid {
                        argv.extend(["-u", uid.as_str()]);
                    }
                    if let Some(group) = &user.group {
                        argv.extend(["-g", group.as_str()]);
                    }
                    if !groups.is_empty() {
                        argv.extend(["-G", groups.as_str()]);
                    }
                    if let Some(home) = &user.home {
                        argv.extend(["-d", home.as_str(), "-m"]);
                    }
                    if let Some(shell) = &user.shell {
                        argv.extend(["-s", shell.as_str()]);
                    }
                    if let Some(description) = &user.description {
                        argv.extend(["-c", description.as_str()]);
                    }
                    if user.system {
                        argv.push("-r");
                    }
                    argv.extend(["--", name.as_str()]);
                    system::run(&argv, None)?;
                }
            }
            Some(account) => {
                let shell_differs = user.shell.as_ref().is_some_and(|s| *s != account.shell);
                let member_of = |group: &AccountName| {
                    accounts
                        .groups
                        .get(group.as_str())
                        .is_some_and(|(_, members)| members.iter().any(|m| m == name.as_str()))
                };
                let missing_groups = user.groups.iter().any(|g| !member_of(g));
                // Groups an earlier generation gave the user and this one no longer lists;
                // groups joined by other means stay.
                let left: Vec<&AccountName> = old
                    .manifest
                    .users
                    .get(name)
                    .into_iter()
                    .flat_map(|previous| &previous.groups)
                    .filter(|g| !user.groups.contains(g) && member_of(g))
                    .collect();
                if shell_differs || missing_groups || !left.is_empty() {
                    changes.users_modified.push(name.to_string());
                    if !dry_run && (shell_differs || missing_groups) {
                        let mut argv = vec!["usermod"];
                        if let Some(shell) = &user.shell {
                            argv.extend(["-s", shell.as_str()]);
                        }
                        if !groups.is_empty() {
                            argv.extend(["-a", "-G", groups.as_str()]);
                        }
                        argv.extend(["--", name.as_str()]);
                        system::run(&argv, None)?;
                    }
                    for group in left.into_iter().filter(|_| !dry_run) {
                        system::run(&["gpasswd", "-d", name, "--", group], None)?;
                    }
                }
            }
        }
        if let Some(reference) = &user.password_hash {
            let hash = &secrets[&format!("{}/{}", reference.generator, reference.file)];
            let hash = String::from_utf8_lossy(hash.expose()).trim().to_owned();
            if system::shadow_hash(paths, name).as_deref() != Some(hash.as_str()) {
                let listed = |names: &[String]| names.iter().any(|n| n == name.as_str());
                if !listed(&changes.users_created) && !listed(&changes.users_modified) {
                    changes.users_modified.push(name.to_string());
                }
                if !dry_run {
                    let line = Zeroizing::new(format!("{name}:{hash}\n"));
                    system::run(&["chpasswd", "-e"], Some(line.as_bytes()))?;
                }
            }
        }
    }

    let accounts = if dry_run {
        accounts
    } else {
        Accounts::read(paths)
    };
    install_secrets(
        paths,
        new,
        &secrets,
        &accounts,
        Some(&mut changes),
        old,
        dry_run,
    )?;

    // Files.
    for (path, file) in &manifest.files {
        let subject = format!("file `{path}`");
        let (uid, gid) = match owner_ids(&accounts, &file.owner, &file.group, &subject) {
            Ok(ids) => ids,
            // The owner may come from this very generation's users.
            Err(_) if dry_run => (None, None),
            Err(error) => return Err(error),
        };
        let template = new.blob(&file.blob)?;
        let content = if file.template {
            Zeroizing::new(
                fill_template(&template, |name| {
                    secrets.get(name).map(|s| s.expose().to_vec())
                })
                .map_err(|reason| AgentError::Step(format!("{subject}: {reason}")))?,
            )
        } else {
            Zeroizing::new(template)
        };
        let managed = old.manifest.files.contains_key(path);
        ensure_file(
            paths,
            path,
            &content,
            uid,
            gid,
            file.mode,
            managed,
            &mut changes,
            dry_run,
        )?;
    }
    for path in old.manifest.files.keys() {
        if !manifest.files.contains_key(path) {
            remove_managed(paths, path, &mut changes, dry_run)?;
        }
    }
    // A machine whose generations never had `hosts` keeps its /etc/hosts byte for byte.
    if !manifest.hosts.is_empty() || !old.manifest.hosts.is_empty() {
        let current = read_file(paths, HOSTS_PATH)?.unwrap_or_default();
        let wanted = hosts::with_block(&String::from_utf8_lossy(&current), &manifest.hosts);
        let root = Some(0);
        ensure_file(
            paths,
            HOSTS_PATH,
            wanted.as_bytes(),
            root,
            root,
            0o644,
            true,
            &mut changes,
            dry_run,
        )?;
    }

    // Units.
    let units = |generation: &Stored| -> Result<Units, AgentError> {
        let mut units = BTreeMap::new();
        for (name, unit) in &generation.manifest.units {
            let paths = |paths: &[AbsolutePath]| paths.iter().map(|p| p.to_string()).collect();
            units.insert(
                name.to_string(),
                UnitPlan {
                    content: generation.blob(&unit.blob)?,
                    enabled: unit.enabled,
                    restart_on_change: unit.restart_on_change,
                    restart_triggers: paths(&unit.restart_triggers),
                    reload_triggers: paths(&unit.reload_triggers),
                },
            );
        }
        // Every live generation has it: besides secrets, it resumes a confirmation that a
        // reboot interrupted.
        if live && !generation.id.is_empty() {
            units.insert(
                SECRETS_UNIT.to_owned(),
                UnitPlan {
                    content: secrets_unit(agent).into_bytes(),
                    enabled: true,
                    restart_on_change: false,
                    restart_triggers: Vec::new(),
                    reload_triggers: Vec::new(),
                },
            );
        }
        Ok(units)
    };
    let (new_units, old_units) = (units(new)?, units(old)?);
    let removed: Vec<&str> = old_units
        .keys()
        .filter(|name| !new_units.contains_key(*name))
        .map(String::as_str)
        .collect();
    for name in &removed {
        changes.units_stopped.push(name.to_string());
        if !dry_run && live {
            // A unit already gone or stopped is fine.
            let _ = system::systemctl("stop", &[name]);
            let _ = system::systemctl("disable", &[name]);
        }
        remove_managed(
            paths,
            &paths.unit_path(name),
            &mut Changes::default(),
            dry_run,
        )?;
    }
    let mut written = Vec::new();
    for (
        name,
        UnitPlan {
            content,
            enabled,
            restart_on_change,
            ..
        },
    ) in &new_units
    {
        let managed = old_units.contains_key(name);
        let mut unit_changes = Changes::default();
        let root = Some(0);
        if ensure_file(
            paths,
            &paths.unit_path(name),
            content,
            root,
            root,
            0o644,
            managed,
            &mut unit_changes,
            dry_run,
        )? {
            written.push((name.as_str(), *enabled, *restart_on_change));
        }
        changes
            .files_kept_aside
            .extend(unit_changes.files_kept_aside);
    }
    let reload = !dry_run && live && !(written.is_empty() && removed.is_empty());
    // Collected first, then one systemctl call per verb, with one reload of systemd's units
    // for all (`enable` would reload them once more by itself): each call costs a D-Bus round
    // trip and each reload a parse of every unit, most of a first activation's time otherwise.
    let (mut enable, mut start, mut restart) = (Vec::new(), Vec::new(), Vec::new());
    for (name, enabled, restart_on_change) in written {
        let is_new = !old_units.contains_key(name);
        if !enabled || name == SECRETS_UNIT {
            if enabled {
                enable.push(name);
            }
            continue;
        }
        if is_new {
            changes.units_started.push(name.to_owned());
            start.push(name);
        } else if restart_on_change {
            changes.units_restarted.push(name.to_owned());
            restart.push(name);
        } else {
            continue;
        }
        enable.push(name);
    }
    if !enable.is_empty() && !dry_run && live {
        enable.insert(0, "--no-reload");
        system::systemctl("enable", &enable)?;
    }
    if reload {
        system::systemctl("daemon-reload", &[])?;
    }
    if !dry_run && live {
        systemctl_units("start", &start)?;
        systemctl_units("restart", &restart)?;
    }
    // Units whose own file did not change but whose inputs did.
    let touched: std::collections::BTreeSet<String> = changes
        .files_written
        .iter()
        .cloned()
        .chain(
            changes
                .secrets_changed
                .iter()
                .map(|secret| secret_machine_path(secret).1.display().to_string()),
        )
        .collect();
    let (mut restart, mut reload) = (Vec::new(), Vec::new());
    for (name, plan) in &new_units {
        let already =
            changes.units_started.contains(name) || changes.units_restarted.contains(name);
        if already || !plan.enabled || !old_units.contains_key(name) {
            continue;
        }
        let hit = |triggers: &[String]| triggers.iter().any(|t| touched.contains(t));
        if hit(&plan.restart_triggers) {
            changes.units_restarted.push(name.to_owned());
            restart.push(name.as_str());
        } else if hit(&plan.reload_triggers) {
            changes.units_reloaded.push(name.to_owned());
            reload.push(name.as_str());
        }
    }
    if !dry_run && live {
        systemctl_units("restart", &restart)?;
        systemctl_units("reload-or-restart", &reload)?;
    }
    Ok(changes)
}

/// `systemctl <verb>` of `units` in one call (their jobs run together); when that fails,
/// each unit again on its own, so that the error names the unit that failed.
fn systemctl_units(verb: &str, units: &[&str]) -> Result<(), AgentError> {
    if units.is_empty() {
        return Ok(());
    }
    let Err(together) = system::systemctl(verb, units) else {
        return Ok(());
    };
    let failed = |unit: &str, error: AgentError| AgentError::Unit {
        unit: unit.to_owned(),
        verb: verb.to_owned(),
        detail: error.to_string(),
    };
    if let [unit] = units {
        return Err(failed(unit, together));
    }
    for unit in units {
        system::systemctl(verb, &[unit]).map_err(|error| failed(unit, error))?;
    }
    // Each one on its own went through: report the joint failure.
    Err(failed(&units.join(" "), together))
}

/// The largest `/etc/hosts` the agent rewrites; beyond it the file is not one a person keeps.
const MAX_HOSTS_FILE: u64 = 16 << 20;

/// The content of the file at `path` on the machine (a regular file, reached without following
/// links), `None` when there is none.
fn read_file(paths: &Paths, path: &str) -> Result<Option<Vec<u8>>, AgentError> {
    let system = paths.system()?;
    let (dir, name) = match system.parent(Path::new(path), None) {
        Ok(found) => found,
        Err(error) if error.is_not_found() => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    Ok(dir.read_optional(Path::new(&name), MAX_HOSTS_FILE)?)
}

/// Whether `path` (on the machine) holds exactly `content` with this owner and mode; a link
/// there, or a refused link above it, does not.
fn matches_on_disk(
    system: &System,
    path: &Path,
    content: &[u8],
    uid: Option<u32>,
    gid: Option<u32>,
    mode: u32,
) -> bool {
    let Ok((dir, name)) = system.parent(path, None) else {
        return false;
    };
    let Ok(file) = dir.open_file(Path::new(&name)) else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let mut on_disk = Vec::new();
    meta.mode() & 0o7777 == mode
        && uid.is_none_or(|uid| meta.uid() == uid)
        && gid.is_none_or(|gid| meta.gid() == gid)
        && meta.len() == content.len() as u64
        && (&file)
            .take(meta.len() + 1)
            .read_to_end(&mut on_disk)
            .is_ok()
        && on_disk == content
}

/// Makes the file at `path` (on the machine) hold `content`; returns whether it changed.
#[allow(clippy::too_many_arguments)]
fn ensure_file(
    paths: &Paths,
    path: &str,
    content: &[u8],
    uid: Option<u32>,
    gid: Option<u32>,
    mode: u32,
    managed: bool,
    changes: &mut Changes,
    dry_run: bool,
) -> Result<bool, AgentError> {
    let system = paths.system()?;
    let target = Path::new(path);
    if matches_on_disk(&system, target, content, uid, gid, mode) {
        return Ok(false);
    }
    changes.files_written.push(path.to_owned());
    let found = match system.parent(target, (!dry_run).then_some(0o755)) {
        Ok(found) => Some(found),
        // A dry run creates no directories: nothing to keep aside in a missing one.
        Err(error) if dry_run && error.is_not_found() => None,
        Err(error) => return Err(error.into()),
    };
    let Some((dir, name)) = found else {
        return Ok(true);
    };
    match dir.kind(Path::new(&name))? {
        Some(Kind::Directory) => {
            return Err(AgentError::File {
                path: path.to_owned(),
                reason: "a directory is in the way".into(),
            })
        }
        Some(_) if !managed => {
            changes.files_kept_aside.push(path.to_owned());
            if !dry_run {
                let aside = free_aside_name(&dir, &name)?;
                dir.rename(Path::new(&name), Path::new(&aside))?;
            }
        }
        _ => {}
    }
    if !dry_run {
        let options = WriteOptions::new(mode).owner(uid, gid);
        dir.write(Path::new(&name), content, options)?;
    }
    Ok(true)
}

/// `<name>.clan-orig`, or `.clan-orig.1`, … when that is taken: an original is never lost.
fn free_aside_name(dir: &Tree, name: &OsStr) -> Result<OsString, AgentError> {
    let base = aside_name(name);
    for n in 0.. {
        let mut candidate = base.clone();
        if n > 0 {
            candidate.push(format!(".{n}"));
        }
        if dir.kind(Path::new(&candidate))?.is_none() {
            return Ok(candidate);
        }
    }
    unreachable!("some name is free")
}

fn aside_name(name: &OsStr) -> OsString {
    let mut aside = name.to_owned();
    aside.push(".clan-orig");
    aside
}

/// Removes a path the clan no longer manages, putting back the original kept aside.
fn remove_managed(
    paths: &Paths,
    path: &str,
    changes: &mut Changes,
    dry_run: bool,
) -> Result<(), AgentError> {
    let (dir, name) = match paths.system()?.parent(Path::new(path), None) {
        Ok(found) => found,
        Err(error) if error.is_not_found() => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let aside = aside_name(&name);
    let exists = dir.kind(Path::new(&name))?.is_some();
    let has_original = dir.kind(Path::new(&aside))?.is_some();
    if exists || has_original {
        changes.files_removed.push(path.to_owned());
    }
    if dry_run {
        return Ok(());
    }
    if exists {
        dir.remove_file(Path::new(&name))?;
    }
    if has_original {
        dir.rename(Path::new(&aside), Path::new(&name))?;
    }
    Ok(())
}
