//! The errors of this crate. Each names its subject — machine, generator, file, path relative
//! to the clan directory — and keeps the cause as `source`; their `clan_error::Hint` says what the
//! user can do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation that failed, naming the action and the path.
    #[error(transparent)]
    Io(#[from] clan_error::IoError),

    #[error(transparent)]
    Secrets(#[from] clan_secrets::Error),

    /// A path of the clan, an import directory or scratch space that is a link, FIFO, device
    /// or too large, or I/O on it.
    #[error(transparent)]
    Fs(#[from] clan_fs::Error),

    #[error(
        "generator `{generator}` ({placement}) wrote `{file}`, which clan does not read: {reason}"
    )]
    BadOutput {
        placement: String,
        generator: String,
        file: String,
        reason: Box<clan_fs::Error>,
    },

    #[error(
        "generator `{generator}` ({placement}) did not finish within {seconds} s and was killed"
    )]
    TimedOut {
        placement: String,
        generator: String,
        seconds: u64,
    },

    #[error("failed to encrypt `{}`", path.display())]
    Encrypt {
        path: PathBuf,
        source: clan_secrets::SopsError,
    },

    #[error("invalid {kind} name `{name}` in generator `{generator}`: names must be non-empty, not start with `.`, and contain no `/`")]
    InvalidName {
        kind: &'static str,
        name: String,
        generator: String,
    },

    #[error("machines `{first}` and `{second}` define shared generator `{generator}` differently (they differ in: {})", differences.join(", "))]
    SharedConflict {
        generator: String,
        first: String,
        second: String,
        differences: Vec<String>,
    },

    #[error("generator `{generator}` of machine `{machine}` depends on `{dependency}`, which is neither a generator of that machine nor a shared generator")]
    UnknownDependency {
        machine: String,
        generator: String,
        dependency: String,
    },

    #[error("shared generator `{generator}` depends on `{dependency}`, which is not shared (machine `{machine}`)")]
    SharedDependsOnMachine {
        machine: String,
        generator: String,
        dependency: String,
    },

    #[error("dependency cycle between generators: {}", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },

    #[error("unknown machine `{machine}`")]
    UnknownMachine { machine: String },

    #[error("forgetting machine `{machine}` re-keys the secrets it could read, which needs your admin key")]
    NoAdminKeyToForget { machine: String },

    #[error("no generator `{generator}` on {}", machines.join(", "))]
    UnknownGenerator {
        generator: String,
        machines: Vec<String>,
    },

    #[error("generator `{generator}` has no file `{file}`")]
    UnknownFile { generator: String, file: String },

    #[error("var `{generator}/{file}` of {placement} is not generated yet")]
    Missing {
        placement: String,
        generator: String,
        file: String,
    },

    #[error("generator `{generator}` ({placement}) needs `{tool}`, which is not on PATH")]
    MissingTool {
        placement: String,
        generator: String,
        tool: String,
    },

    #[error("cannot run generators in a sandbox: bubblewrap (`bwrap`) {reason}")]
    NoSandbox { reason: String },

    #[error(
        "generator `{generator}` ({placement}) failed ({status}){}",
        stderr_block(stderr)
    )]
    ScriptFailed {
        placement: String,
        generator: String,
        status: String,
        stderr: String,
    },

    #[error(
        "generator `{generator}` ({placement}) did not write declared file `{file}` to $out{}",
        produced_block(produced)
    )]
    FileNotProduced {
        placement: String,
        generator: String,
        file: String,
        produced: Vec<String>,
    },

    #[error("generator `{generator}` ({placement}) was not run because its dependency `{dependency}` failed")]
    DependencyFailed {
        placement: String,
        generator: String,
        dependency: String,
    },

    #[error("no value for prompt `{prompt}` of generator `{generator}` ({placement})")]
    PromptMissing {
        placement: String,
        generator: String,
        prompt: String,
    },

    #[error("malformed prompt values from {source_name}: {reason}")]
    PromptValues { source_name: String, reason: String },

    #[error("interrupted; nothing of the unfinished generators was stored")]
    Interrupted,

    #[error("`{}` already exists", path.display())]
    Exists { path: PathBuf },

    #[error("scratch directory `{}` is not private to this user (owned by another, or readable by others)", path.display())]
    UnsafeScratch { path: PathBuf },
}

fn stderr_block(stderr: &str) -> String {
    let trimmed = stderr.trim_end();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(":\n{trimmed}")
    }
}

fn produced_block(produced: &[String]) -> String {
    if produced.is_empty() {
        " (it wrote no files)".to_owned()
    } else {
        format!(" (it wrote: {})", produced.join(", "))
    }
}

impl clan_error::Hint for Error {
    /// What the user can do about this error, when there is something.
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Secrets(error) => return error.hint(),
            Error::SharedConflict { generator, .. } => format!(
                "make every machine declare `{generator}` identically, or stop sharing it (`share = false`)"
            ),
            Error::UnknownDependency { dependency, .. } => format!(
                "declare generator `{dependency}` on that machine (or as a shared generator), or fix the name in `dependencies`"
            ),
            Error::SharedDependsOnMachine { dependency, .. } => {
                format!("share `{dependency}` as well, or stop sharing the dependent generator")
            }
            Error::Cycle { .. } => "remove one of the dependencies in the cycle".to_owned(),
            Error::UnknownMachine { .. } => "`clan machines list` shows the machines".to_owned(),
            Error::NoAdminKeyToForget { .. } => {
                "set SOPS_AGE_KEY_FILE to your age key (`clan vars keygen` makes one)".to_owned()
            }
            Error::UnknownGenerator { .. } | Error::UnknownFile { .. } => {
                "`clan vars list <machine>` shows the generators and their files".to_owned()
            }
            Error::Missing { .. } => "run `clan vars generate`".to_owned(),
            Error::MissingTool { tool, .. } => {
                format!("install the package that provides `{tool}`")
            }
            Error::NoSandbox { .. } => "install bubblewrap (Debian package `bubblewrap`), or pass `--no-sandbox` to run generator scripts unconfined".to_owned(),
            Error::Fs(_) => "the clan directory must hold regular files and directories only: remove the link or special file named above (and check who committed it)".to_owned(),
            Error::BadOutput { .. } => "make the script write plain files to `$out`; nothing was stored for it".to_owned(),
            Error::TimedOut { generator, .. } => format!(
                "raise the generator's `timeout` (seconds) if `{generator}` needs longer, or fix its script"
            ),
            Error::ScriptFailed { .. } | Error::FileNotProduced { .. } => {
                "fix the generator's script; nothing was stored for it".to_owned()
            }
            Error::PromptMissing { generator, prompt, .. } => format!(
                "run on a terminal, or pass `--prompt-values FILE` holding {{\"{generator}\": {{\"{prompt}\": \"…\"}}}}"
            ),
            Error::Interrupted => "run `clan vars generate` again".to_owned(),
            Error::Exists { .. } => "pick a path that does not exist yet".to_owned(),
            Error::UnsafeScratch { path } => format!(
                "remove `{}` (someone may have planted it) or set XDG_RUNTIME_DIR to your own 0700 directory",
                path.display()
            ),
            _ => return None,
        })
    }

    /// Generators that fail, disagree or form a cycle fail the command; a machine, generator
    /// or file that does not exist, a missing key or tool, or I/O, mean it could not run.
    fn exit(&self) -> clan_error::Exit {
        match self {
            Error::Secrets(error) => error.exit(),
            Error::BadOutput { .. }
            | Error::SharedConflict { .. }
            | Error::UnknownDependency { .. }
            | Error::SharedDependsOnMachine { .. }
            | Error::Cycle { .. }
            | Error::InvalidName { .. }
            | Error::TimedOut { .. }
            | Error::ScriptFailed { .. }
            | Error::FileNotProduced { .. }
            | Error::DependencyFailed { .. } => clan_error::Exit::Failed,
            _ => clan_error::Exit::Error,
        }
    }
}

clan_error::register!(Error);
