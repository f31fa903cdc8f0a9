//! `clan secrets …`: clan-core's secrets commands (key, users, machines, groups, set, get,
//! list, remove, rename) plus `audit`, over `clan_lib::secrets`. Secret values come from
//! stdin or a hidden prompt, never from arguments.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use clan_error::Hint as _;
use clan_lib::secrets::{Changed, KeyGeneration, Keyed, Secrets};
use clan_secrets::{GroupName, KeySources, MachineName, Member, Recipient, SecretName, UserName};
use clap::{Parser, Subcommand};

use super::output::print_json;
use super::{Context, Terminal};
use crate::report::EXIT_FAILED;

#[derive(Parser)]
pub struct Args {
    #[command(flatten)]
    pub clan: super::ClanArg,
    #[command(subcommand)]
    command: SecretsCommand,
}

impl Args {
    /// Whether the command reads a clan: all but `key generate` and `key show`, which read
    /// only the admin's key.
    pub fn reads_clan(&self) -> bool {
        !matches!(
            self.command,
            SecretsCommand::Key(KeyCommand::Generate { .. } | KeyCommand::Show)
        )
    }
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
    #[command(after_help = "Examples:
  clan secrets set db-password < file
  clan secrets set api-token --machine web01 < file   # lands on web01 at /run/secrets/api-token")]
    Set {
        /// The secret's name.
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
    #[command(after_help = "Example:
  clan secrets get db-password")]
    Get {
        /// The secret.
        secret: SecretName,
    },
    /// List secrets, optionally only those whose name contains PATTERN.
    #[command(after_help = "Examples:
  clan secrets list
  clan secrets list db --json")]
    List {
        /// Only secrets whose name contains this text.
        pattern: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Remove a secret.
    #[command(after_help = "Example:
  clan secrets remove db-password")]
    Remove {
        /// The secret.
        secret: SecretName,
    },
    /// Rename a secret.
    #[command(after_help = "Example:
  clan secrets rename tls tls-cert")]
    Rename {
        /// The secret.
        secret: SecretName,
        /// Its new name.
        new_name: SecretName,
    },
    /// For every secret: who can decrypt it, and where its recipients drift from its links.
    #[command(after_help = "Examples:
  clan secrets audit
  clan secrets audit --json")]
    Audit {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an age key in SOPS_AGE_KEY_FILE or ~/.config/sops/age/keys.txt unless one exists.
    #[command(after_help = "Example:
  clan secrets key generate")]
    Generate {
        /// Append a new key even if one exists.
        #[arg(long)]
        new: bool,
    },
    /// Print your public keys as JSON.
    #[command(after_help = "Example:
  clan secrets key show")]
    Show,
    /// Re-encrypt every secret to the keys its links name.
    #[command(after_help = "Example:
  clan secrets key update")]
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
    /// List the users.
    #[command(after_help = "Example:
  clan secrets users list --json")]
    List(JsonArg),
    /// Add a user with one or more public keys.
    #[command(after_help = "Examples:
  clan secrets users add alice age1...
  clan secrets users add bob ~/.config/sops/age/keys.txt")]
    Add {
        /// The user's name.
        user: UserName,
        #[command(flatten)]
        keys: KeyArgs,
        /// Replace the keys of an existing user.
        #[arg(long, short)]
        force: bool,
    },
    /// Print a user's keys as JSON.
    #[command(after_help = "Example:
  clan secrets users get alice")]
    Get {
        /// The user.
        user: UserName,
    },
    /// Remove a user from every group and secret.
    #[command(after_help = "Example:
  clan secrets users remove bob")]
    Remove {
        /// The user.
        user: UserName,
    },
    /// Add keys to a user.
    #[command(after_help = "Example:
  clan secrets users add-key alice age1...")]
    AddKey {
        /// The user.
        user: UserName,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Remove keys from a user (never the last one).
    #[command(after_help = "Example:
  clan secrets users remove-key alice age1...")]
    RemoveKey {
        /// The user.
        user: UserName,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Allow a user to decrypt a secret.
    #[command(after_help = "Example:
  clan secrets users add-secret bob db-password")]
    AddSecret {
        /// The user.
        user: UserName,
        /// The secret.
        secret: SecretName,
    },
    /// Stop a user from decrypting a secret.
    #[command(after_help = "Example:
  clan secrets users remove-secret bob db-password")]
    RemoveSecret {
        /// The user.
        user: UserName,
        /// The secret.
        secret: SecretName,
    },
}

#[derive(Subcommand)]
enum MachinesCommand {
    /// List the machines that have a key.
    #[command(after_help = "Example:
  clan secrets machines list --json")]
    List(JsonArg),
    /// Add a machine with its public key.
    #[command(after_help = "Example:
  clan secrets machines add web01 age1...")]
    Add {
        /// The machine.
        machine: MachineName,
        /// Its age public key, or a file holding it.
        key: String,
        /// Replace the key of an existing machine.
        #[arg(long, short)]
        force: bool,
    },
    /// Print a machine's public key.
    #[command(after_help = "Example:
  clan secrets machines get web01")]
    Get {
        /// The machine.
        machine: MachineName,
    },
    /// Remove a machine from every group and secret.
    #[command(after_help = "Example:
  clan secrets machines remove old01")]
    Remove {
        /// The machine.
        machine: MachineName,
    },
    /// Allow a machine to decrypt a secret.
    #[command(after_help = "Example:
  clan secrets machines add-secret web01 db-password")]
    AddSecret {
        /// The machine.
        machine: MachineName,
        /// The secret.
        secret: SecretName,
    },
    /// Stop a machine from decrypting a secret.
    #[command(after_help = "Example:
  clan secrets machines remove-secret web01 db-password")]
    RemoveSecret {
        /// The machine.
        machine: MachineName,
        /// The secret.
        secret: SecretName,
    },
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// List the groups and their members.
    #[command(after_help = "Example:
  clan secrets groups list --json")]
    List(JsonArg),
    /// Add a machine to a group (created if new); re-keys the group's secrets.
    #[command(after_help = "Example:
  clan secrets groups add-machine servers web01")]
    AddMachine {
        /// The group.
        group: GroupName,
        /// The machine.
        machine: MachineName,
    },
    /// Remove a machine from a group; re-keys the group's secrets.
    #[command(after_help = "Example:
  clan secrets groups remove-machine servers web01")]
    RemoveMachine {
        /// The group.
        group: GroupName,
        /// The machine.
        machine: MachineName,
    },
    /// Add a user to a group (created if new); re-keys the group's secrets.
    #[command(after_help = "Example:
  clan secrets groups add-user admins alice")]
    AddUser {
        /// The group.
        group: GroupName,
        /// The user.
        user: UserName,
    },
    /// Remove a user from a group; re-keys the group's secrets.
    #[command(after_help = "Example:
  clan secrets groups remove-user admins bob")]
    RemoveUser {
        /// The group.
        group: GroupName,
        /// The user.
        user: UserName,
    },
    /// Allow a group to decrypt a secret.
    #[command(after_help = "Example:
  clan secrets groups add-secret servers tls")]
    AddSecret {
        /// The group.
        group: GroupName,
        /// The secret.
        secret: SecretName,
    },
    /// Stop a group from decrypting a secret.
    #[command(after_help = "Example:
  clan secrets groups remove-secret servers tls")]
    RemoveSecret {
        /// The group.
        group: GroupName,
        /// The secret.
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
        SecretsCommand::List { pattern, json } => {
            let mut names = open(context, sources)?.store().secrets()?;
            names.retain(|n| pattern.as_deref().is_none_or(|p| n.as_str().contains(p)));
            print_names(&names, json)
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
            let identities = clan_lib::secrets::admin_identities(&sources)?;
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
        UsersCommand::List(json) => print_names(&store.users()?, json),
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
        MachinesCommand::List(json) => print_names(&store.machines()?, json),
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
        GroupsCommand::List(JsonArg { json }) => {
            let groups = secrets.store().groups()?;
            if json {
                print_json(&groups)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut out = String::new();
            for group in groups {
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
    let entries = secrets.audit()?;
    let clean = entries.iter().all(|entry| entry.is_clean());
    let mut out = String::new();
    if json {
        out = serde_json::to_string_pretty(&entries)? + "\n";
    } else {
        for entry in &entries {
            out.push_str(&format!("{}\n", entry.secret.display()));
            for holder in &entry.holders {
                let via = holder
                    .via_group
                    .as_ref()
                    .map(|g| format!(" via group {g}"))
                    .unwrap_or_default();
                out.push_str(&format!("  {} {}{via}\n", holder.kind, holder.name));
            }
            for missing in &entry.missing {
                out.push_str(&format!(
                    "  drift: not encrypted to {} of {} (run `clan secrets key update`)\n",
                    missing.key, missing.holder
                ));
            }
            for unexpected in &entry.unexpected {
                let owner = unexpected.owner.as_deref().unwrap_or("unknown key");
                out.push_str(&format!(
                    "  drift: encrypted to {} ({owner}) but no link grants it\n",
                    unexpected.key
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

/// `--json` of a listing.
#[derive(clap::Args)]
struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Names one per line, or a JSON array of them.
fn print_names<T: std::fmt::Display + serde::Serialize>(
    names: &[T],
    JsonArg { json }: JsonArg,
) -> anyhow::Result<ExitCode> {
    if json {
        print_json(&names)?;
        return Ok(ExitCode::SUCCESS);
    }
    let lines: Vec<String> = names.iter().map(ToString::to_string).collect();
    print_lines(lines.iter().map(String::as_str))
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
