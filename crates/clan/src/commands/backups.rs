//! `clan backups create|list|restore|check|status`: service state backed up by the machine's
//! providers (clan-core's commands), through `clan_lib::backups`.

use std::process::ExitCode;

use clan_inventory::MachineName;
use clan_lib::backups::{BackupStatus, On, RestoreRequest};

use super::machines::SshArgs;
use super::output::{print_fleet_json, print_json, print_table, printer};
use super::{clan_dir, Context};
use crate::report::EXIT_FAILED;
use clan_agent::report::local_time;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub clan: super::ClanArg,
    #[command(subcommand)]
    command: Command,
}

/// A machine, optionally one of its providers, and how to reach it.
#[derive(clap::Args)]
struct ProviderArgs {
    /// The machine.
    machine: MachineName,
    /// Only this provider (default: every provider of the machine).
    #[arg(long)]
    provider: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ssh: SshArgs,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Back a machine's state up now (pre-backup scripts, each provider, post-backup scripts).
    #[command(after_help = "Examples:
  clan backups create web01                        # with every provider web01 has
  clan backups create web01 --provider borgbackup")]
    Create(ProviderArgs),
    /// A machine's archives, per provider.
    #[command(after_help = "Examples:
  clan backups list web01
  clan backups list web01 --provider borgbackup --json")]
    List(ProviderArgs),
    /// Restore an archive: per state pre-restore, the provider's restore, post-restore.
    #[command(after_help = "Examples:
  clan backups restore web01 borgbackup 'backup01::borg@backup01:.::web01-2026-12-01T01:00:00'
  clan backups restore web01 borgbackup NAME --service nextcloud
  clan backups restore web01 borgbackup NAME --to /srv/restore-test   # staging, live data untouched")]
    Restore {
        /// The machine.
        machine: MachineName,
        /// The provider that made the archive.
        provider: String,
        /// The archive's name, as `clan backups list` prints it.
        name: String,
        /// Only this state (default: every state of the machine).
        #[arg(long)]
        service: Option<String>,
        /// Restore under this directory on the machine instead of over the live folders
        /// (pre- and post-restore scripts do not run).
        #[arg(long, value_name = "DIR")]
        to: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ssh: SshArgs,
    },
    /// Verify a machine's repositories and archives (each provider's check).
    #[command(after_help = "Examples:
  clan backups check web01")]
    Check(ProviderArgs),
    /// Every machine's last backup and check per provider, asked concurrently; exit 1 when a
    /// backup is stale (the latest run failed or a scheduled one made no archive), a check
    /// failed or a machine could not be asked.
    #[command(after_help = "Examples:
  clan backups status
  clan backups status --json")]
    Status {
        /// How many machines are asked at once.
        #[arg(long, short = 'j', default_value_t = 10)]
        jobs: usize,
        /// Print an object of machines as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ssh: SshArgs,
    },
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let dir = clan_dir(context)?;
    match args.command {
        Command::Create(args) => {
            let created = with_provider(&dir, &args, clan_lib::backups::create)?;
            let machine = &args.machine;
            if args.json {
                print_json(&created)?;
            } else {
                printer().note(format_args!(
                    "[{machine}] backed up {} with {}",
                    created.states.join(", "),
                    created.providers.join(", ")
                ));
            }
        }
        Command::List(args) => {
            let lists = with_provider(&dir, &args, clan_lib::backups::list)?;
            if args.json {
                print_json(&lists)?;
            } else {
                let mut rows = vec![vec!["PROVIDER".to_owned(), "ARCHIVE".to_owned()]];
                for list in &lists {
                    for archive in &list.archives {
                        rows.push(vec![list.provider.clone(), archive.name.clone()]);
                    }
                }
                print_table(&rows)?;
            }
        }
        Command::Restore {
            machine,
            provider,
            name,
            service,
            to,
            json,
            ssh,
        } => {
            let restored = reach(&dir, &machine, &ssh, |on| {
                clan_lib::backups::restore(
                    on,
                    &RestoreRequest {
                        provider: &provider,
                        archive: &name,
                        service: service.as_deref(),
                        to: to.as_deref(),
                    },
                )
            })?;
            if json {
                print_json(&restored)?;
            } else {
                printer().note(format_args!(
                    "[{machine}] restored {} from `{}` under {}",
                    restored.states.join(", "),
                    restored.archive,
                    restored.root
                ));
            }
        }
        Command::Check(args) => {
            let status = with_provider(&dir, &args, clan_lib::backups::check)?;
            if args.json {
                print_json(&status)?;
            } else {
                print_status(&[(args.machine, Ok(status))])?;
            }
        }
        Command::Status { jobs, json, ssh } => {
            let results = clan_lib::backups::status(&dir, &ssh.options(), jobs)?;
            // Exit 1 when a machine could not be asked, a backup is stale or a check failed.
            let failed = results.iter().any(|(_, result)| match result {
                Err(_) => true,
                Ok(status) => status
                    .providers
                    .values()
                    .any(|p| p.stale || p.last_check_ok == Some(false)),
            });
            if json {
                print_fleet_json(&results)?;
            } else {
                print_status(&results)?;
            }
            if failed {
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `operation` on `machine`, reached as `ssh` says.
fn reach<T>(
    dir: &std::path::Path,
    machine: &MachineName,
    ssh: &SshArgs,
    operation: impl FnOnce(&On<'_>) -> Result<T, clan_lib::Error>,
) -> Result<T, clan_lib::Error> {
    let options = ssh.options();
    operation(&On {
        dir,
        machine,
        target_host: ssh.target_host.as_deref(),
        ssh: &options,
    })
}

/// `operation` on the machine and provider `args` name.
fn with_provider<T>(
    dir: &std::path::Path,
    args: &ProviderArgs,
    operation: impl FnOnce(&On<'_>, Option<&str>) -> Result<T, clan_lib::Error>,
) -> Result<T, clan_lib::Error> {
    reach(dir, &args.machine, &args.ssh, |on| {
        operation(on, args.provider.as_deref())
    })
}

/// One row per machine and provider: last success, last failure, last check.
fn print_status(
    results: &[(MachineName, Result<BackupStatus, clan_lib::Error>)],
) -> anyhow::Result<()> {
    let when = |time: Option<u64>| {
        time.map_or_else(
            || "-".to_owned(),
            |t| local_time(t.try_into().unwrap_or(i64::MAX)),
        )
    };
    let mut rows = vec![[
        "MACHINE",
        "PROVIDER",
        "LAST BACKUP",
        "LAST FAILURE",
        "CHECK",
    ]
    .map(str::to_owned)
    .to_vec()];
    for (machine, result) in results {
        match result {
            Ok(status) => {
                for (provider, last) in &status.providers {
                    let check = match last.last_check_ok {
                        None => "-".to_owned(),
                        Some(true) => format!("ok {}", when(last.last_check)),
                        Some(false) => format!("FAILED {}", when(last.last_check)),
                    };
                    rows.push(vec![
                        machine.to_string(),
                        provider.clone(),
                        when(last.last_success),
                        when(last.last_failure),
                        check,
                        if last.stale { "STALE" } else { "" }.to_owned(),
                    ]);
                    if let (Some(failure), Some(error)) = (last.last_failure, &last.last_error) {
                        if last.last_success.is_none_or(|success| success < failure) {
                            printer().failure(format_args!("[{machine}] {provider}: {error}"));
                        }
                    }
                }
            }
            Err(error) => {
                rows.push(vec![
                    machine.to_string(),
                    "-".into(),
                    "-".into(),
                    "FAILED".into(),
                    "-".into(),
                    "-".into(),
                ]);
                printer().failure(format_args!("[{machine}] {error}"));
            }
        }
    }
    print_table(&rows)
}
