//! The errors of the operations: the library errors they pass on, and their own, each
//! naming its subject. Their `clan_error::Hint` says what to do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Inventory(#[from] clan_inventory::Error),
    #[error(transparent)]
    Eval(#[from] clan_eval::Error),
    #[error(transparent)]
    Vars(#[from] clan_vars::Error),
    #[error(transparent)]
    Secrets(#[from] clan_secrets::Error),
    #[error(transparent)]
    Deploy(#[from] clan_deploy::Error),
    #[error(transparent)]
    Git(#[from] clan_git::Error),
    #[error(transparent)]
    Vm(#[from] clan_vm::Error),
    #[error("recording the change about to be made")]
    Journal { source: clan_git::Error },
    #[error("committing the change to git")]
    Commit { source: clan_git::Error },
    #[error("recovering from an interrupted command")]
    Recover { source: clan_git::Error },
    #[error("no clan.toml or inventory.json in {} or any parent directory", .searched.display())]
    NoClan { searched: PathBuf },
    #[error("`{}` already exists", .path.display())]
    ClanExists { path: PathBuf },
    #[error("invalid clan name `{name}`: {reason}")]
    InvalidClanName { name: String, reason: &'static str },
    #[error("{context} `{}`", .path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed in `{}`", .dir.display())]
    GitCommand { command: &'static str, dir: PathBuf },
    #[error("unknown service `{name}`")]
    UnknownService { name: String, hint: Option<String> },
    #[error("bad select query: {source}\n  {caret}")]
    SelectQuery {
        caret: String,
        source: clan_select::ParseError,
    },
    #[error(transparent)]
    Select(#[from] clan_select::SelectError),
    #[error("secret vars need your age key")]
    NoAdminKey { source: clan_secrets::Error },
    #[error("cannot tell your user name: $USER is unset and user id {uid} has no passwd entry")]
    NoUserName { uid: u32 },
    #[error("your user name `{name}` is not a valid sops user name")]
    BadUserName {
        name: String,
        source: clan_secrets::Error,
    },
    #[error("--target-host is one machine's address, but {count} machines are selected")]
    TargetHostForMany { count: usize },
    #[error("asking for `{prompt}` of generator `{generator}`")]
    Prompt {
        generator: String,
        prompt: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("internal error while {what}")]
    Panicked { what: &'static str },
    #[error("serializing {what}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("refusing a private key on the command line (other processes can read it)")]
    PrivateKeyGiven,
    #[error("`{arg}` is neither an age public key nor a key file")]
    NotAKey { arg: String },
    #[error("reading keys from {}: {reason}", .path.display())]
    BadKeyFile { path: PathBuf, reason: String },
    #[error("no key given")]
    NoKeyGiven,
    #[error("a machine has exactly one key")]
    OneMachineKey,
    #[error("cannot tell where to write the key")]
    NoKeyFilePath,
    #[error("reading the prompt values")]
    PromptValues {
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Mesher(#[from] crate::mesher::Error),
    #[error("machine `{machine}` has no backup provider{}", .provider.as_ref().map(|p| format!(" `{p}`")).unwrap_or_default())]
    NoBackupProvider {
        machine: String,
        provider: Option<String>,
    },
    #[error("machine `{machine}` declares no state{}", .service.as_ref().map(|s| format!(" `{s}`")).unwrap_or_default())]
    NoState {
        machine: String,
        service: Option<String>,
    },
    /// What the machine's agent printed is not a hardware report; the old one is kept.
    #[error("machine `{machine}`: its hardware report cannot be read")]
    BadHardwareReport {
        machine: String,
        source: clan_facter::ParseError,
    },
}

impl clan_error::Hint for Error {
    /// What the user should do next, when that is known.
    fn hint(&self) -> Option<String> {
        match self {
            Error::Inventory(error) => error.hint(),
            Error::Eval(error) => error.hint(),
            Error::Vars(error) => error.hint(),
            Error::Secrets(error) => error.hint(),
            Error::Deploy(error) => error.hint(),
            Error::Vm(error) => error.hint(),
            Error::Git(error)
            | Error::Journal { source: error }
            | Error::Commit { source: error }
            | Error::Recover { source: error } => error.hint(),
            Error::NoClan { .. } => {
                Some("run `clan init <dir>` to create a clan, or pass `--flake <dir>`".to_owned())
            }
            Error::ClanExists { .. } => {
                Some("pick another directory; `clan show` describes the existing clan".to_owned())
            }
            Error::InvalidClanName { .. } => Some(
                "pass `--name` with letters, digits, `-` and `_` only (e.g. `my-clan`)".to_owned(),
            ),
            Error::Io { .. }
            | Error::Prompt { .. }
            | Error::PromptValues { .. }
            | Error::Json { .. }
            | Error::Panicked { .. } => None,
            Error::GitCommand { .. } => Some("is git installed and working?".to_owned()),
            Error::UnknownService { hint, .. } => hint.clone(),
            Error::SelectQuery { .. } => Some("see docs/select.md for the grammar".to_owned()),
            Error::Select(_) => Some("`clan select '*'` lists the roots".to_owned()),
            Error::NoAdminKey { .. } => {
                Some("run `clan vars keygen` to create your key and sops user".to_owned())
            }
            Error::NoUserName { .. } | Error::BadUserName { .. } => {
                Some("pass `--user <name>`".to_owned())
            }
            Error::TargetHostForMany { .. } => Some(
                "name exactly one machine, e.g. `clan machines update web01 --target-host \
                 root@203.0.113.4`"
                    .to_owned(),
            ),
            Error::Mesher(error) => error.hint(),
            Error::PrivateKeyGiven => {
                Some("pass the `age1…` public key, or the path of the key file".to_owned())
            }
            Error::NotAKey { .. } | Error::OneMachineKey => {
                Some("pass an `age1…` public key".to_owned())
            }
            Error::BadKeyFile { .. } => None,
            Error::NoKeyGiven => {
                Some("pass an `age1…` public key, or `--age-key age1…`".to_owned())
            }
            Error::NoKeyFilePath => Some("set SOPS_AGE_KEY_FILE or HOME".to_owned()),
            Error::NoBackupProvider { machine, .. } => Some(format!(
                "add `{machine}` to the client role of a borgbackup, restic or localbackup \
                 instance (`clan services list`); `clan machines show {machine}` shows its \
                 `backups`"
            )),
            Error::BadHardwareReport { machine, .. } => Some(format!(
                "`clan ssh {machine} -- /var/lib/clan/bin/clan agent facter` shows what the \
                 machine's agent prints; machines/{machine}/facter.json was left as it was"
            )),
            Error::NoState { machine, .. } => Some(format!(
                "`clan machines show {machine}` lists its `state`; services declare what \
                 they keep (docs/services.md)"
            )),
        }
    }

    /// The libraries' errors keep their meaning; the operations' own are usage errors.
    fn exit(&self) -> clan_error::Exit {
        match self {
            Error::Inventory(error) => error.exit(),
            Error::Eval(error) => error.exit(),
            Error::Vars(error) => error.exit(),
            Error::Secrets(error) => error.exit(),
            Error::Deploy(error) => error.exit(),
            Error::Vm(error) => error.exit(),
            Error::Git(error)
            | Error::Journal { source: error }
            | Error::Commit { source: error }
            | Error::Recover { source: error } => error.exit(),
            Error::Mesher(error) => error.exit(),
            Error::BadHardwareReport { .. } => clan_error::Exit::Failed,
            _ => clan_error::Exit::Error,
        }
    }
}

clan_error::register!(Error);
