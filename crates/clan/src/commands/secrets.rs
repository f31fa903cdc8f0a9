//! `clan secrets …`: clan-core's secrets commands (key, users, machines, groups, set, get,
//! list, remove, rename) plus `audit`, over `clan_lib::secrets`. Secret values come from
//! stdin or a hidden prompt, never from arguments.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use clan_error::Hint as _;
use clan_lib::secrets::{Changed, KeyGeneration, Keyed, Secrets};
use clan_secrets::{
    GroupName, Identities, KeySources, MachineName, Member, Recipient, SecretName, UserName,
};
use clap::{Parser, Subcommand};

use super::{Context, Terminal};
use crate::report::EXIT_FAILED;

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

fn open(context: &Context, sources: KeySources) -> anyhow::Result<Secrets> {
    Ok(Secrets::open(&super::clan_dir(context)?, sources))
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let sources = KeySources::from_env();
    match args.command {
        SecretsCommand::Key(command) => run_key(command, context, sources),
        SecretsCommand::Users(command) => run_users(command, &open(context, sources)?),
        SecretsCommand::Machines(command) => run_machines(command, &open(context, sources)?),
        SecretsCommand::Groups(command) => run_groups(command, &open(context, sources)?),
        SecretsCommand::Set {
            secret,
            users,
            machines,
            groups,
        } => {
            let secrets = open(context, sources)?;
            secrets.admin()?;
            let value = read_value(&secret)?;
            let members: Vec<Member> = users
                .into_iter()
                .map(Member::User)
                .chain(machines.into_iter().map(Member::Machine))
                .chain(groups.into_iter().map(Member::Group))
                .collect();
            finish(secrets.set(&secret, &value, &members, &Terminal)?)
        }
        SecretsCommand::Get { secret } => {
            let value = open(context, sources)?.get(&secret)?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(value.expose())?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        SecretsCommand::List { pattern } => {
            let names = open(context, sources)?.store().secrets()?;
            print_lines(
                names
                    .iter()
                    .map(|n| n.as_str())
                    .filter(|n| pattern.as_deref().is_none_or(|p| n.contains(p))),
            )
        }
        SecretsCommand::Remove { secret } => {
            finish(open(context, sources)?.remove(&secret, &Terminal)?)
        }
        SecretsCommand::Rename { secret, new_name } => {
            finish(open(context, sources)?.rename(&secret, &new_name, &Terminal)?)
        }
        SecretsCommand::Audit { json } => audit(&open(context, sources)?, json),
    }
}

/// Reports what a change did and secrets that could not be re-keyed; exit 1 for those.
fn finish(changed: Changed) -> anyhow::Result<ExitCode> {
    let printer = super::output::printer();
    for path in &changed.paths {
        printer.note(format_args!("changed {}", path.display()));
    }
    for (path, error) in &changed.rekey_failures {
        printer.error(
            format_args!(
                "could not re-key `{}`: {}",
                path.display(),
                error_chain(error)
            ),
            error.hint().as_deref(),
        );
    }
    Ok(if changed.rekey_failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
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
    sources: KeySources,
) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Generate { new } => {
            let printer = super::output::printer();
            match clan_lib::secrets::generate_key(&sources, new)? {
                KeyGeneration::Existing(keys) => {
                    for (recipient, source) in keys {
                        printer.note(format_args!(
                            "age key {recipient} is already set ({source})"
                        ));
                    }
                    printer.note("pass --new to generate another one");
                }
                KeyGeneration::Created { path, recipient } => {
                    printer.note(format_args!(
                        "Generated new age key {recipient} in {}",
                        path.display()
                    ));
                    printer.note(
                        "Back it up somewhere safe: without it you lose access to your secrets.",
                    );
                    printer.note(format_args!(
                        "Add it to the clan with: clan secrets users add <your-name> {recipient}"
                    ));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Show => {
            let identities = Identities::discover(&sources)?;
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
            super::output::print_json(&keys)?;
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Update => finish(open(context, sources)?.update_keys(&Terminal)?),
    }
}

fn parse_keys(args: KeyArgs) -> anyhow::Result<Vec<Recipient>> {
    let all: Vec<String> = args.key.into_iter().chain(args.age_keys).collect();
    Ok(clan_lib::secrets::parse_recipients(&all)?)
}

fn run_users(command: UsersCommand, secrets: &Secrets) -> anyhow::Result<ExitCode> {
    let store = secrets.store();
    match command {
        UsersCommand::List => print_lines(store.users()?.iter().map(UserName::as_str)),
        UsersCommand::Add { user, keys, force } => {
            let keys = parse_keys(keys)?;
            finish(secrets.add(Keyed::User(&user, &keys), force, &Terminal)?)
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
            super::output::print_json(&keys)?;
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::Remove { user } => {
            finish(secrets.remove_member(Member::User(user), &Terminal)?)
        }
        UsersCommand::AddKey { user, keys } => {
            let keys = parse_keys(keys)?;
            finish(secrets.user_keys(&user, &keys, true, &Terminal)?)
        }
        UsersCommand::RemoveKey { user, keys } => {
            let keys = parse_keys(keys)?;
            finish(secrets.user_keys(&user, &keys, false, &Terminal)?)
        }
        UsersCommand::AddSecret { user, secret } => {
            finish(secrets.grant(&secret, &Member::User(user), true, &Terminal)?)
        }
        UsersCommand::RemoveSecret { user, secret } => {
            finish(secrets.grant(&secret, &Member::User(user), false, &Terminal)?)
        }
    }
}

fn run_machines(command: MachinesCommand, secrets: &Secrets) -> anyhow::Result<ExitCode> {
    let store = secrets.store();
    match command {
        MachinesCommand::List => print_lines(store.machines()?.iter().map(MachineName::as_str)),
        MachinesCommand::Add {
            machine,
            key,
            force,
        } => {
            let keys = clan_lib::secrets::parse_recipients(&[key])?;
            let [key] = keys.as_slice() else {
                return Err(clan_lib::Error::OneMachineKey.into());
            };
            finish(secrets.add(Keyed::Machine(&machine, key), force, &Terminal)?)
        }
        MachinesCommand::Get { machine } => print_lines(
            store
                .keys_of(clan_secrets::MemberKind::Machine, machine.as_str())?
                .iter()
                .map(Recipient::as_str),
        ),
        MachinesCommand::Remove { machine } => {
            finish(secrets.remove_member(Member::Machine(machine), &Terminal)?)
        }
        MachinesCommand::AddSecret { machine, secret } => {
            finish(secrets.grant(&secret, &Member::Machine(machine), true, &Terminal)?)
        }
        MachinesCommand::RemoveSecret { machine, secret } => {
            finish(secrets.grant(&secret, &Member::Machine(machine), false, &Terminal)?)
        }
    }
}

fn run_groups(command: GroupsCommand, secrets: &Secrets) -> anyhow::Result<ExitCode> {
    let membership = |group: GroupName, member: Member, add: bool| -> anyhow::Result<ExitCode> {
        finish(secrets.group_membership(&group, &member, add, &Terminal)?)
    };
    match command {
        GroupsCommand::List => {
            let mut out = String::new();
            for group in secrets.store().groups()? {
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
        GroupsCommand::AddSecret { group, secret } => {
            finish(secrets.grant(&secret, &Member::Group(group), true, &Terminal)?)
        }
        GroupsCommand::RemoveSecret { group, secret } => {
            finish(secrets.grant(&secret, &Member::Group(group), false, &Terminal)?)
        }
    }
}

fn audit(secrets: &Secrets, json: bool) -> anyhow::Result<ExitCode> {
    let entries = secrets.store().audit()?;
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
