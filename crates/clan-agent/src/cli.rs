//! The command line of the machine binary `clan-agent`: `agent …`, the machine side of
//! deploys, run over SSH by `clan machines update` from `/var/lib/clan/bin/` (JSON on stdout
//! for the deployer), and `mesher …` ([`crate::mesher`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clan_generation::reply::{Failure, FailureKind, EXIT_REVERTED};
use clap::{Parser, Subcommand};

use crate::report::print_json;
use crate::{ActivateOptions, Agent, AgentError};

#[derive(Parser)]
#[command(
    name = "clan-agent",
    version,
    about = "The machine side of clan: applies the generations `clan machines update` uploads"
)]
#[command(propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: TopCommand,
}

#[derive(Subcommand)]
enum TopCommand {
    /// The machine side of deploys (run over SSH by `clan machines update`).
    Agent(Args),
    /// Data Mesher: run the daemon, manage its keys and certificates, publish signed files.
    Mesher(crate::mesher::Args),
}

/// A closed stdout (`clan … | head`, in either binary) ends the program quietly, as for any Unix tool, instead of
/// making every `println!` panic. Rust ignores SIGPIPE by default; this restores the default.
#[allow(unsafe_code)]
pub fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The machine binary's `main`.
pub fn main() -> ExitCode {
    restore_sigpipe();
    let result = match Cli::parse().command {
        TopCommand::Agent(args) => run(args).inspect_err(|error| print_failure(&failure(error))),
        TopCommand::Mesher(args) => {
            crate::mesher::run(args).and_then(|output| output.print(&crate::report::Plain))
        }
    };
    result.unwrap_or_else(|error| crate::report::print_error(&error))
}

/// What the deployer gets of a failed `agent` command: the agent's typed failure, or any
/// other error as kind `other`.
fn failure(error: &anyhow::Error) -> Failure {
    match error.downcast_ref::<AgentError>() {
        Some(error) => error.failure(),
        None => Failure {
            kind: FailureKind::Other,
            message: crate::message_with_causes(error.as_ref()),
            path: None,
            unit: None,
            cause: None,
        },
    }
}

/// Prints `failure` on stdout, one line of JSON, for the deployer (people read stderr).
fn print_failure(failure: &Failure) {
    use std::io::Write as _;
    if let Ok(line) = serde_json::to_string(failure) {
        // The deployer may be gone (a command that outlives its session): nothing to tell.
        let _ = writeln!(std::io::stdout(), "{line}");
    }
}

#[derive(clap::Args)]
struct Args {
    /// Apply to an image directory instead of the running system (files and unit files only).
    #[arg(long, default_value = "/", global = true, hide = true)]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The agent's version, current generation, stored generations, key and pending confirmation.
    Status,
    /// Store the generation read from stdin (as uploaded by a deploy).
    Receive { generation: String },
    /// Install the machine's age key read from stdin.
    InstallKey,
    /// What activating a stored generation would change (with --stdin: of the generation
    /// read from stdin, which is not stored).
    Diff {
        generation: String,
        #[arg(long)]
        stdin: bool,
    },
    /// Activate a stored generation.
    Activate {
        generation: String,
        /// Seconds to wait for `clan agent confirm` before reverting by itself.
        #[arg(long, default_value_t = 30)]
        confirm_timeout: u64,
        /// Keep the generation without waiting for a confirmation.
        #[arg(long)]
        no_magic_rollback: bool,
        /// Seconds to wait for another deploy of this machine to finish.
        #[arg(long, default_value_t = 60)]
        lock_timeout: u64,
    },
    /// Confirm an activated generation (sent over a new connection by the deployer).
    Confirm { generation: String },
    /// Wait for the confirmation of a generation; revert when it does not come in time.
    #[command(hide = true)]
    AwaitConfirm { generation: String },
    /// Re-activate an earlier generation (default: the one before the current).
    Rollback {
        /// Generation id (or its first characters) or history number.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 60)]
        lock_timeout: u64,
    },
    /// The generation history, as JSON.
    Generations,
    /// Serve a file (the compressed agent) to the other machines of a deploy, until the
    /// session ends; prints `listening <port>` first.
    #[command(hide = true)]
    ServeFile { path: PathBuf },
    /// Decrypt the current generation's secrets into /run/clan/secrets (run at boot).
    DecryptSecrets,
    /// Back up, list, restore and check the state of this machine's services (run by
    /// `clan backups …` and by the providers' timers).
    #[command(subcommand)]
    Backups(BackupsCommand),
    /// This machine's hardware report in nixos-facter's format (JSON on stdout; run by
    /// `clan machines update-hardware-config`).
    Facter {
        /// Also serial numbers, UUID-bearing device names and MAC addresses (the report is
        /// meant to be committed: leave them out unless you need them).
        #[arg(long)]
        with_serials: bool,
    },
}

#[derive(clap::Subcommand)]
enum BackupsCommand {
    /// Back every state up now: pre-backup scripts, each provider, post-backup scripts.
    Create {
        #[arg(long)]
        provider: Option<String>,
    },
    /// Archives per provider, as JSON.
    List {
        #[arg(long)]
        provider: Option<String>,
    },
    /// Restore an archive's folders (all states, or one), over live data or under `--to`.
    Restore {
        #[arg(long)]
        provider: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// Verify the repositories (each provider's check command) and record the result.
    Check {
        #[arg(long)]
        provider: Option<String>,
    },
    /// The last backup and check per provider, as JSON.
    Status,
}

fn backups(paths: &crate::Paths, command: BackupsCommand) -> anyhow::Result<()> {
    use crate::backups;
    match command {
        BackupsCommand::Create { provider } => {
            print_json(&backups::create(paths, provider.as_deref())?)?
        }
        BackupsCommand::List { provider } => {
            print_json(&backups::list(paths, provider.as_deref())?)?
        }
        BackupsCommand::Restore {
            provider,
            name,
            service,
            to,
        } => print_json(&backups::restore(
            paths,
            &backups::RestoreRequest {
                provider: &provider,
                archive: &name,
                service: service.as_deref(),
                to: to.as_deref(),
            },
        )?)?,
        BackupsCommand::Check { provider } => {
            print_json(&backups::check(paths, provider.as_deref())?)?
        }
        BackupsCommand::Status => print_json(&backups::status(paths)?)?,
    }
    Ok(())
}

/// Keeps a command that changes the machine running when the deployer's SSH session goes
/// away (Ctrl-C on the admin side, a cut link): SIGHUP and SIGPIPE only set a flag, so an
/// activation or rollback always runs to its end (and, unconfirmed, reverts by itself).
fn outlive_the_session() -> anyhow::Result<()> {
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGHUP, signal_hook::consts::SIGPIPE] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&ignored))?;
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let agent = Agent::new(&args.root);
    if matches!(
        args.command,
        Command::Activate { .. }
            | Command::Rollback { .. }
            | Command::Receive { .. }
            | Command::Confirm { .. }
            | Command::Backups(BackupsCommand::Create { .. } | BackupsCommand::Restore { .. })
    ) {
        outlive_the_session()?;
    }
    match args.command {
        Command::Status => print_json(&agent.status()?)?,
        Command::Receive { generation } => agent.receive(&generation, std::io::stdin().lock())?,
        Command::InstallKey => agent.install_key(std::io::stdin().lock())?,
        Command::Diff { generation, stdin } => {
            let changes = if stdin {
                agent.diff_bundle(&generation, std::io::stdin().lock())?
            } else {
                agent.diff(&generation)?
            };
            print_json(&changes)?
        }
        Command::Activate {
            generation,
            confirm_timeout,
            no_magic_rollback,
            lock_timeout,
        } => {
            let options = ActivateOptions {
                confirm_timeout: (!no_magic_rollback).then(|| Duration::from_secs(confirm_timeout)),
                lock_timeout: Duration::from_secs(lock_timeout),
            };
            let activation = agent.activate(&generation, &options, |holder| {
                eprintln!("waiting for another deploy of this machine to finish ({holder})");
            })?;
            print_json(&activation)?;
        }
        Command::Confirm { generation } => match agent.confirm(&generation) {
            Err(error @ AgentError::Reverted(_)) => {
                print_failure(&error.failure());
                eprintln!("error: {error}");
                return Ok(ExitCode::from(EXIT_REVERTED));
            }
            other => other?,
        },
        Command::AwaitConfirm { generation } => agent.await_confirm(&generation)?,
        Command::Rollback { to, lock_timeout } => {
            print_json(&agent.rollback(to.as_deref(), Duration::from_secs(lock_timeout))?)?;
        }
        Command::ServeFile { path } => {
            crate::serve::serve_file(&path, std::io::stdin(), std::io::stdout().lock())?
        }
        Command::Generations => {
            print_json(&agent.generations()?)?;
        }
        Command::DecryptSecrets => {
            let count = agent.decrypt_current_secrets()?;
            eprintln!("{count} secrets decrypted");
        }
        Command::Backups(command) => backups(&agent.paths, command)?,
        Command::Facter { with_serials } => {
            let options = crate::facter::Options { with_serials };
            print_json(&crate::facter::collect(&args.root, options))?
        }
    }
    Ok(ExitCode::SUCCESS)
}
