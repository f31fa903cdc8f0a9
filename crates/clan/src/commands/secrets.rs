//! `clan secrets …`: clan-core's secrets commands (key, users, machines, groups, set, get,
//! list, remove, rename) plus `audit`, over the `clan-secrets` library. Mutations hold the
//! clan lock and are committed to git unless `CLAN_NO_COMMIT=1`. Secret values come from stdin or a hidden
//! prompt, never from arguments.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clan_error::Hint as _;
use clan_secrets::{
    Admin, Changes, GroupName, Identities, KeySources, MachineName, Member, Recipient, RekeyReport,
    SecretName, SopsDir, UserName,
};
use clap::{Parser, Subcommand};

use super::change::{self, Change};
use super::Context;

/// What a secrets command may change: the sops tree, and the secret vars it re-keys.
const SECRETS_SCOPE: &[&str] = &["sops", "vars"];
use crate::report::{hinted, EXIT_FAILED};

#[derive(Parser)]
pub struct Args {
    #[command(subcommand)]
    command: SecretsCommand,
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Your age key: generate, show, or re-encrypt all secrets to the current keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Users who can hold secrets (`sops/users/<user>/key.json`).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Machines that can hold secrets (`sops/machines/<machine>/key.json`).
    #[command(subcommand)]
    Machines(MachinesCommand),
    /// Groups of users and machines (`sops/groups/<group>`).
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Encrypt a secret read from stdin (or a hidden prompt) for you and the given members.
    Set {
        secret: SecretName,
        /// A user who may decrypt it (repeatable).
        #[arg(long = "user")]
        users: Vec<UserName>,
        /// A machine that may decrypt it (repeatable).
        #[arg(long = "machine")]
        machines: Vec<MachineName>,
        /// A group that may decrypt it (repeatable).
        #[arg(long = "group")]
        groups: Vec<GroupName>,
    },
    /// Print a secret's value to stdout.
    Get { secret: SecretName },
    /// List secrets, optionally only those whose name contains PATTERN.
    List { pattern: Option<String> },
    /// Remove a secret.
    Remove { secret: SecretName },
    /// Rename a secret.
    Rename {
        secret: SecretName,
        new_name: SecretName,
    },
    /// For every secret: who can decrypt it, and where its recipients drift from its links.
    Audit {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an age key in SOPS_AGE_KEY_FILE or ~/.config/sops/age/keys.txt unless one exists.
    Generate {
        /// Append a new key even if one exists.
        #[arg(long)]
        new: bool,
    },
    /// Print your public keys as JSON.
    Show,
    /// Re-encrypt every secret to the keys its links name.
    Update,
}

/// Public keys as arguments: `age1…`, or the path of a key file (public keys are derived).
#[derive(clap::Args)]
struct KeyArgs {
    /// An age public key, or a file holding age keys.
    key: Option<String>,
    /// More age public keys or key files (repeatable).
    #[arg(long = "age-key")]
    age_keys: Vec<String>,
}

#[derive(Subcommand)]
enum UsersCommand {
    List,
    /// Add a user with one or more public keys.
    Add {
        user: UserName,
        #[command(flatten)]
        keys: KeyArgs,
        /// Replace the keys of an existing user.
        #[arg(long, short)]
        force: bool,
    },
    /// Print a user's keys as JSON.
    Get {
        user: UserName,
    },
    /// Remove a user from every group and secret.
    Remove {
        user: UserName,
    },
    /// Add keys to a user.
    AddKey {
        user: UserName,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Remove keys from a user (never the last one).
    RemoveKey {
        user: UserName,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Allow a user to decrypt a secret.
    AddSecret {
        user: UserName,
        secret: SecretName,
    },
    /// Stop a user from decrypting a secret.
    RemoveSecret {
        user: UserName,
        secret: SecretName,
    },
}

#[derive(Subcommand)]
enum MachinesCommand {
    List,
    /// Add a machine with its public key.
    Add {
        machine: MachineName,
        key: String,
        /// Replace the key of an existing machine.
        #[arg(long, short)]
        force: bool,
    },
    /// Print a machine's public key.
    Get {
        machine: MachineName,
    },
    /// Remove a machine from every group and secret.
    Remove {
        machine: MachineName,
    },
    /// Allow a machine to decrypt a secret.
    AddSecret {
        machine: MachineName,
        secret: SecretName,
    },
    /// Stop a machine from decrypting a secret.
    RemoveSecret {
        machine: MachineName,
        secret: SecretName,
    },
}

#[derive(Subcommand)]
enum GroupsCommand {
    List,
    AddMachine {
        group: GroupName,
        machine: MachineName,
    },
    RemoveMachine {
        group: GroupName,
        machine: MachineName,
    },
    AddUser {
        group: GroupName,
        user: UserName,
    },
    RemoveUser {
        group: GroupName,
        user: UserName,
    },
    /// Allow a group to decrypt a secret.
    AddSecret {
        group: GroupName,
        secret: SecretName,
    },
    /// Stop a group from decrypting a secret.
    RemoveSecret {
        group: GroupName,
        secret: SecretName,
    },
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let sources = KeySources::from_env();
    match args.command {
        SecretsCommand::Key(command) => run_key(command, context, &sources),
        SecretsCommand::Users(command) => run_users(command, &Session::open(context, sources)?),
        SecretsCommand::Machines(command) => {
            run_machines(command, &Session::open(context, sources)?)
        }
        SecretsCommand::Groups(command) => run_groups(command, &Session::open(context, sources)?),
        SecretsCommand::Set {
            secret,
            users,
            machines,
            groups,
        } => {
            let session = Session::open(context, sources)?;
            let admin = session.admin()?;
            let value = read_value(&secret)?;
            let clan_machines: Vec<MachineName> = machines
                .iter()
                .filter(|machine| session.is_clan_machine(machine))
                .cloned()
                .collect();
            let members: Vec<Member> = users
                .into_iter()
                .map(Member::User)
                .chain(machines.into_iter().map(Member::Machine))
                .chain(groups.into_iter().map(Member::Group))
                .collect();
            session.change(|store| {
                // A machine of the clan without a sops key yet gets one, as vars do.
                let mut created = Vec::new();
                for machine in &clan_machines {
                    if let Some(changes) = store.ensure_machine_key(machine, &[], &admin)? {
                        created.extend(changes.paths);
                    }
                }
                let mut changes = store.set_secret(&secret, &value, &members, &admin)?;
                changes.paths.extend(created);
                Ok(changes)
            })
        }
        SecretsCommand::Get { secret } => {
            let session = Session::open(context, sources)?;
            let value = session.store.get_secret(&secret, &session.identities()?)?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(value.expose())?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        SecretsCommand::List { pattern } => {
            let session = Session::open(context, sources)?;
            let names = session.store.secrets()?;
            print_lines(
                names
                    .iter()
                    .map(|n| n.as_str())
                    .filter(|n| pattern.as_deref().is_none_or(|p| n.contains(p))),
            )
        }
        SecretsCommand::Remove { secret } => {
            let session = Session::open(context, sources)?;
            session.change(|store| Ok(store.remove_secret(&secret)?))
        }
        SecretsCommand::Rename { secret, new_name } => {
            let session = Session::open(context, sources)?;
            session.change(|store| Ok(store.rename_secret(&secret, &new_name)?))
        }
        SecretsCommand::Audit { json } => audit(&Session::open(context, sources)?, json),
    }
}

/// The clan's `sops/` tree and where the admin's keys are.
struct Session {
    store: SopsDir,
    sources: KeySources,
}

impl Session {
    fn open(context: &Context, sources: KeySources) -> anyhow::Result<Self> {
        Ok(Session {
            store: SopsDir::new(super::clan_dir(context)?),
            sources,
        })
    }

    fn identities(&self) -> anyhow::Result<Identities> {
        let identities = Identities::discover(&self.sources)?;
        if identities.public_keys().is_empty() {
            return Err(clan_secrets::Error::NoAdminKey {
                searched: self.sources.describe(),
            }
            .into());
        }
        Ok(identities)
    }

    fn admin(&self) -> anyhow::Result<Admin> {
        Ok(self
            .store
            .admin(self.identities()?, &self.sources.describe())?)
    }

    /// Runs `operation` under the clan lock, then [`Session::finish`]es.
    fn change(
        &self,
        operation: impl FnOnce(&SopsDir) -> anyhow::Result<Changes>,
    ) -> anyhow::Result<ExitCode> {
        let change = change::begin(self.store.clan_dir(), SECRETS_SCOPE)?;
        let changes = operation(&self.store)?;
        self.finish(&change, changes, None)
    }

    /// Runs a re-keying `operation` under the clan lock, then [`Session::finish`]es.
    fn rekey(
        &self,
        operation: impl FnOnce(&SopsDir) -> anyhow::Result<(Changes, RekeyReport)>,
    ) -> anyhow::Result<ExitCode> {
        let change = change::begin(self.store.clan_dir(), SECRETS_SCOPE)?;
        let (changes, report) = operation(&self.store)?;
        self.finish(&change, changes, Some(report))
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

    /// Commits `changes`, reports secrets that could not be re-keyed, picks the exit code.
    fn finish(
        &self,
        change: &Change,
        changes: Changes,
        report: Option<RekeyReport>,
    ) -> anyhow::Result<ExitCode> {
        for path in &changes.paths {
            crate::commands::output::printer().note(&format!("changed {}", path.display()));
        }
        let failed = report.map(|r| r.failed).unwrap_or_default();
        for (path, error) in &failed {
            eprintln!(
                "error: could not re-key `{}`: {}",
                path.display(),
                error_chain(error)
            );
            if let Some(hint) = error.hint() {
                eprintln!("hint: {hint}");
            }
        }
        change.commit(&changes.paths, &changes.message)?;
        Ok(if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILED)
        })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn run_key(
    command: KeyCommand,
    context: &Context,
    sources: &KeySources,
) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Generate { new } => {
            let identities = Identities::discover_before_generating(sources)?;
            if !identities.public_keys().is_empty() && !new {
                for key in identities.public_keys() {
                    eprintln!("age key {} is already set ({})", key.recipient, key.source);
                }
                eprintln!("pass --new to generate another one");
                return Ok(ExitCode::SUCCESS);
            }
            let path = sources.key_file_for_writing().ok_or_else(|| {
                hinted(
                    "cannot tell where to write the key",
                    "set SOPS_AGE_KEY_FILE or HOME",
                )
            })?;
            let recipient = clan_secrets::append_generated_identity(path)?;
            eprintln!("Generated new age key {recipient} in {}", path.display());
            eprintln!("Back it up somewhere safe: without it you lose access to your secrets.");
            eprintln!("Add it to the clan with: clan secrets users add <your-name> {recipient}");
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Show => {
            let identities = Identities::discover(sources)?;
            if identities.public_keys().is_empty() {
                return Err(clan_secrets::Error::NoAdminKey {
                    searched: sources.describe(),
                }
                .into());
            }
            let keys: Vec<serde_json::Value> = identities
                .public_keys()
                .iter()
                .map(|key| {
                    serde_json::json!({
                        "publickey": key.recipient.as_str(),
                        "source": key.source,
                        "type": "age",
                        "username": "",
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&keys)?);
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Update => {
            let session = Session::open(context, KeySources::from_env())?;
            let identities = session.identities()?;
            session.rekey(|store| {
                let report = store.update_keys(&identities)?;
                let changes = Changes {
                    paths: report.changed.clone(),
                    message: "secrets: update with new keys".into(),
                };
                Ok((changes, report))
            })
        }
    }
}

fn parse_keys(args: KeyArgs) -> anyhow::Result<Vec<Recipient>> {
    let mut keys = Vec::new();
    for arg in args.key.into_iter().chain(args.age_keys) {
        if arg.starts_with("AGE-SECRET-KEY-") || arg.starts_with("AGE-PLUGIN-") {
            return Err(hinted(
                "refusing a private key on the command line (other processes can read it)",
                "pass the `age1…` public key, or the path of the key file",
            ));
        }
        if let Ok(recipient) = arg.parse::<Recipient>() {
            keys.push(recipient);
            continue;
        }
        let path = Path::new(&arg);
        if path.is_file() {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading keys from {}", path.display()))?,
            );
            let identities = Identities::parse(&text, &arg)
                .map_err(|reason| anyhow::anyhow!("reading keys from {arg}: {reason}"))?;
            keys.extend(
                identities
                    .public_keys()
                    .iter()
                    .map(|key| key.recipient.clone()),
            );
            continue;
        }
        return Err(hinted(
            format!("`{arg}` is neither an age public key nor a key file"),
            "pass an `age1…` public key",
        ));
    }
    if keys.is_empty() {
        return Err(hinted(
            "no key given",
            "pass an `age1…` public key, or `--age-key age1…`",
        ));
    }
    Ok(keys)
}

fn run_users(command: UsersCommand, session: &Session) -> anyhow::Result<ExitCode> {
    let store = &session.store;
    match command {
        UsersCommand::List => print_lines(store.users()?.iter().map(UserName::as_str)),
        UsersCommand::Add { user, keys, force } => {
            let keys = parse_keys(keys)?;
            let identities = Identities::discover(&session.sources)?;
            session.rekey(|store| Ok(store.add_user(&user, &keys, force, &identities)?))
        }
        UsersCommand::Get { user } => {
            let keys = store.keys_of(clan_secrets::MemberKind::User, user.as_str())?;
            let keys: Vec<serde_json::Value> = keys
                .iter()
                .map(|key| {
                    serde_json::json!({
                        "publickey": key.as_str(),
                        "source": "key_file",
                        "type": "age",
                        "username": user.as_str(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&keys)?);
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::Remove { user } => session
            .rekey(|store| Ok(store.remove_member(&Member::User(user), &session.identities()?)?)),
        UsersCommand::AddKey { user, keys } => {
            let keys = parse_keys(keys)?;
            session.rekey(|store| Ok(store.add_user_keys(&user, &keys, &session.identities()?)?))
        }
        UsersCommand::RemoveKey { user, keys } => {
            let keys = parse_keys(keys)?;
            session
                .rekey(|store| Ok(store.remove_user_keys(&user, &keys, &session.identities()?)?))
        }
        UsersCommand::AddSecret { user, secret } => session.change(|store| {
            Ok(store.allow(
                &SopsDir::secret_dir(&secret),
                &Member::User(user),
                &session.identities()?,
            )?)
        }),
        UsersCommand::RemoveSecret { user, secret } => session.change(|store| {
            Ok(store.disallow(
                &SopsDir::secret_dir(&secret),
                &Member::User(user),
                &session.identities()?,
            )?)
        }),
    }
}

fn run_machines(command: MachinesCommand, session: &Session) -> anyhow::Result<ExitCode> {
    let store = &session.store;
    match command {
        MachinesCommand::List => print_lines(store.machines()?.iter().map(MachineName::as_str)),
        MachinesCommand::Add {
            machine,
            key,
            force,
        } => {
            let keys = parse_keys(KeyArgs {
                key: Some(key),
                age_keys: Vec::new(),
            })?;
            let [key] = keys.as_slice() else {
                return Err(hinted(
                    "a machine has exactly one key",
                    "pass one `age1…` public key",
                ));
            };
            let identities = Identities::discover(&session.sources)?;
            session.rekey(|store| Ok(store.add_machine(&machine, key, force, &identities)?))
        }
        MachinesCommand::Get { machine } => print_lines(
            store
                .keys_of(clan_secrets::MemberKind::Machine, machine.as_str())?
                .iter()
                .map(Recipient::as_str),
        ),
        MachinesCommand::Remove { machine } => session.rekey(|store| {
            Ok(store.remove_member(&Member::Machine(machine), &session.identities()?)?)
        }),
        MachinesCommand::AddSecret { machine, secret } => session.change(|store| {
            Ok(store.allow(
                &SopsDir::secret_dir(&secret),
                &Member::Machine(machine),
                &session.identities()?,
            )?)
        }),
        MachinesCommand::RemoveSecret { machine, secret } => session.change(|store| {
            Ok(store.disallow(
                &SopsDir::secret_dir(&secret),
                &Member::Machine(machine),
                &session.identities()?,
            )?)
        }),
    }
}

fn run_groups(command: GroupsCommand, session: &Session) -> anyhow::Result<ExitCode> {
    let store = &session.store;
    let membership = |group: GroupName, member: Member, add: bool| -> anyhow::Result<ExitCode> {
        let identities = session.identities()?;
        session.rekey(|store| {
            Ok(if add {
                store.group_add(&group, &member, &identities)?
            } else {
                store.group_remove(&group, &member, &identities)?
            })
        })
    };
    match command {
        GroupsCommand::List => {
            let mut out = String::new();
            for group in store.groups()? {
                out.push_str(&format!("{}\n", group.name));
                for (title, names) in [("machines", &group.machines), ("users", &group.users)] {
                    if !names.is_empty() {
                        out.push_str(&format!("{title}:\n"));
                        for name in names {
                            out.push_str(&format!("  {name}\n"));
                        }
                    }
                }
                out.push('\n');
            }
            std::io::stdout().lock().write_all(out.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        GroupsCommand::AddMachine { group, machine } => {
            membership(group, Member::Machine(machine), true)
        }
        GroupsCommand::RemoveMachine { group, machine } => {
            membership(group, Member::Machine(machine), false)
        }
        GroupsCommand::AddUser { group, user } => membership(group, Member::User(user), true),
        GroupsCommand::RemoveUser { group, user } => membership(group, Member::User(user), false),
        GroupsCommand::AddSecret { group, secret } => session.change(|store| {
            Ok(store.allow(
                &SopsDir::secret_dir(&secret),
                &Member::Group(group),
                &session.identities()?,
            )?)
        }),
        GroupsCommand::RemoveSecret { group, secret } => session.change(|store| {
            Ok(store.disallow(
                &SopsDir::secret_dir(&secret),
                &Member::Group(group),
                &session.identities()?,
            )?)
        }),
    }
}

fn audit(session: &Session, json: bool) -> anyhow::Result<ExitCode> {
    let entries = session.store.audit()?;
    let clean = entries.iter().all(|entry| entry.is_clean());
    let mut out = String::new();
    if json {
        let value: Vec<serde_json::Value> = entries
            .iter()
            .map(|entry| {
                serde_json::json!({
                    "secret": entry.secret,
                    "holders": entry.holders.iter().map(|holder| serde_json::json!({
                        "kind": holder.kind.noun(),
                        "name": holder.name,
                        "via_group": holder.via_group,
                        "keys": holder.keys.iter().map(Recipient::as_str).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "missing": entry.missing.iter().map(|(key, who)| serde_json::json!({"key": key.as_str(), "for": who})).collect::<Vec<_>>(),
                    "unexpected": entry.unexpected.iter().map(|(key, owner)| serde_json::json!({"key": key, "owner": owner})).collect::<Vec<_>>(),
                    "problems": entry.problems.iter().map(|p| serde_json::json!({"path": p.path, "message": p.message})).collect::<Vec<_>>(),
                })
            })
            .collect();
        out = serde_json::to_string_pretty(&value)? + "\n";
    } else {
        for entry in &entries {
            out.push_str(&format!("{}\n", entry.secret.display()));
            for holder in &entry.holders {
                let via = holder
                    .via_group
                    .as_ref()
                    .map(|g| format!(" via group {g}"))
                    .unwrap_or_default();
                out.push_str(&format!("  {} {}{via}\n", holder.kind.noun(), holder.name));
            }
            for (key, who) in &entry.missing {
                out.push_str(&format!(
                    "  drift: not encrypted to {key} of {who} (run `clan secrets key update`)\n"
                ));
            }
            for (key, owner) in &entry.unexpected {
                let owner = owner.as_deref().unwrap_or("unknown key");
                out.push_str(&format!(
                    "  drift: encrypted to {key} ({owner}) but no link grants it\n"
                ));
            }
            for problem in &entry.problems {
                out.push_str(&format!(
                    "  problem: {}: {}\n",
                    problem.path.display(),
                    problem.message
                ));
            }
        }
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

fn print_lines<'a>(lines: impl Iterator<Item = &'a str>) -> anyhow::Result<ExitCode> {
    let mut out = String::new();
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The secret's value: a hidden prompt on a terminal, else all of stdin.
fn read_value(secret: &SecretName) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let value = zeroize::Zeroizing::new(
            rpassword::prompt_password(format!("Value of secret {secret}: "))
                .context("reading the secret value")?,
        );
        return Ok(zeroize::Zeroizing::new(value.as_bytes().to_vec()));
    }
    let mut value = zeroize::Zeroizing::new(Vec::new());
    stdin
        .lock()
        .read_to_end(&mut value)
        .context("reading the secret value from stdin")?;
    Ok(value)
}
