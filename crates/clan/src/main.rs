//! The `clan` binary: parses arguments, calls the library crates, prints.
//!
//! Each subcommand group lives in `commands/<group>.rs` with its clap `Args` and a `run`
//! function. No domain logic lives here: operations belong to `clan-lib`, the rest to the
//! other `clan-*` library crates.
//! Exit codes follow ripgrep: 0 ok, 1 "ran but something failed", 2 usage or internal error.

mod commands;
mod report;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Evaluation allocates many small values across threads; glibc's malloc spent half the time
/// of a cold evaluation of a large clan in its own bookkeeping (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "clan",
    version,
    about = "Run your own machines as one fleet, from one git repository"
)]
#[command(propagate_version = true)]
struct Cli {
    /// The clan directory, for the commands that read one (they also take it after their
    /// name; default: $CLAN_DIR, else the nearest ancestor of the working directory holding
    /// clan.toml).
    #[arg(long, short = 'C', value_name = "DIR")]
    flake: Option<std::path::PathBuf>,

    /// Print only data, errors and questions: no notes, no progress.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    quiet: bool,

    /// Also print each step of long work (every stage of every machine of a deploy).
    #[arg(long, short = 'v', global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the main job on a throwaway demo clan: several machines and services, evaluated.
    #[cfg(feature = "testbed")]
    Demo(commands::demo::Args),
    /// Create a new clan: a directory with clan.toml, a git repository and a first commit.
    Init(commands::init::Args),
    /// Serve the clan as a local web app on 127.0.0.1 (the URL carries a one-time token).
    Gui(commands::gui::Args),
    /// The clan's name, domain, machines, instances and services.
    Show(commands::inspect::ShowArgs),
    /// Create, list, show and delete machines.
    #[command(visible_alias = "m")]
    Machines(commands::machines::Args),
    /// Log in to a machine, or run one command on it, reached as deploys reach it.
    Ssh(commands::ssh::Args),
    /// The networks machines are reached over: list them, ping a machine, an overview.
    Network(commands::network::Args),
    /// The services instances can use, and their roles and settings.
    Services(commands::services::Args),
    /// Service instances: create, delete, add or remove role members, set settings.
    Instances(commands::instances::Args),
    /// Query the evaluated clan with clan-core's select grammar; prints JSON.
    #[command(visible_alias = "se")]
    Select(commands::inspect::SelectArgs),
    /// Print JSON Schemas (`clan schema inventory` for clan.toml).
    Schema(commands::inspect::SchemaArgs),
    /// Data Mesher: run the daemon, manage its keys and certificates, publish signed files.
    Mesher(clan_agent::mesher::Args),
    /// Start, inspect and stop local test machines (containers reached over SSH).
    #[cfg(feature = "testbed")]
    Testbed(commands::testbed::Args),
    /// Manage sops secrets: keys, users, machines, groups, and the secrets themselves.
    Secrets(commands::secrets::Args),
    /// Generate, check, list, get and set vars (generator outputs, public and secret).
    #[command(visible_alias = "va")]
    Vars(commands::vars::Args),
    /// Back up and restore the state of machines' services, and check the backups.
    Backups(commands::backups::Args),
    /// Run machines of the clan in micro VMs: boot, deploy, list, stop, console.
    Vms(commands::vms::Args),
}

impl Command {
    /// `-C/--flake` of the commands that read a clan; `None` for those that read none.
    fn clan_arg(&self) -> Option<&commands::ClanArg> {
        match self {
            Command::Show(args) => Some(&args.clan),
            Command::Gui(args) => Some(&args.clan),
            Command::Machines(args) => Some(&args.clan),
            Command::Ssh(args) => Some(&args.clan),
            Command::Network(args) => Some(&args.clan),
            Command::Services(args) => Some(&args.clan),
            Command::Instances(args) => Some(&args.clan),
            Command::Select(args) => Some(&args.clan),
            // `secrets key generate|show` read the admin's key, not a clan.
            Command::Secrets(args) => args.reads_clan().then_some(&args.clan),
            Command::Vars(args) => Some(&args.clan),
            Command::Backups(args) => Some(&args.clan),
            Command::Vms(args) => Some(&args.clan),
            Command::Init(_) | Command::Schema(_) | Command::Mesher(_) => None,
            #[cfg(feature = "testbed")]
            Command::Demo(_) | Command::Testbed(_) => None,
        }
    }
}

/// The clan directory the command line names: after the command, else before it, else
/// `$CLAN_DIR`. A `-C` given to a command that reads no clan is a usage error (exit 2).
fn clan_dir(cli: &Cli, matches: &clap::ArgMatches) -> Option<std::path::PathBuf> {
    let Some(arg) = cli.command.clan_arg() else {
        // A group that reads a clan has commands that do not: those are named in full.
        let group_reads = matches!(&cli.command, Command::Secrets(_));
        let after = matches!(&cli.command, Command::Secrets(args) if args.clan.flake.is_some());
        if cli.flake.is_some() || after {
            let mut words = Vec::new();
            let mut level = matches.subcommand();
            while let Some((word, sub)) = level {
                words.push(word);
                level = sub.subcommand().filter(|_| group_reads);
            }
            let name = words.join(" ");
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("`-C/--flake` names a clan, but `clan {name}` reads none"),
                )
                .exit();
        }
        return None;
    };
    arg.flake.clone().or_else(|| cli.flake.clone()).or_else(|| {
        std::env::var_os("CLAN_DIR")
            .filter(|dir| !dir.is_empty())
            .map(std::path::PathBuf::from)
    })
}

fn main() -> ExitCode {
    clan_agent::cli::restore_sigpipe();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let clan_dir = clan_dir(&cli, &matches);
    catching_bugs(|| run(cli, clan_dir))
}

/// A panic is a bug: the hook has described it; the exit status says so (2, not Rust's 101).
fn catching_bugs(run: impl FnOnce() -> ExitCode + std::panic::UnwindSafe) -> ExitCode {
    std::panic::catch_unwind(run).unwrap_or_else(|_| report::print_bug())
}

fn run(cli: Cli, clan_dir: Option<std::path::PathBuf>) -> ExitCode {
    commands::output::init(match (cli.quiet, cli.verbose) {
        (true, _) => commands::output::Level::Quiet,
        (_, true) => commands::output::Level::Verbose,
        _ => commands::output::Level::Normal,
    });
    let context = commands::Context { clan_dir };
    let result = match cli.command {
        #[cfg(feature = "testbed")]
        Command::Demo(args) => commands::demo::run(args, &context),
        Command::Init(args) => commands::init::run(args, &context),
        Command::Gui(args) => commands::gui::run(args, &context),
        Command::Show(args) => commands::inspect::show(args, &context),
        Command::Machines(args) => commands::machines::run(args, &context),
        Command::Services(args) => commands::services::run(args, &context),
        Command::Ssh(args) => commands::ssh::run(args, &context),
        Command::Network(args) => commands::network::run(args, &context),
        Command::Instances(args) => commands::instances::run(args, &context),
        Command::Select(args) => commands::inspect::select(args, &context),
        Command::Schema(args) => commands::inspect::schema(args),
        Command::Mesher(args) => clan_agent::mesher::run(args)
            .and_then(|output| output.print(&commands::output::printer())),
        #[cfg(feature = "testbed")]
        Command::Testbed(args) => commands::testbed::run(args, &context),
        Command::Secrets(args) => commands::secrets::run(args, &context),
        Command::Vars(args) => commands::vars::run(args, &context),
        Command::Backups(args) => commands::backups::run(args, &context),
        Command::Vms(args) => commands::vms::run(args, &context),
    };
    // The Tor client a route over tor started serves the whole run, and ends with it.
    clan_network::tor::stop();
    match result {
        Ok(code) => code,
        Err(error) => report::print_error(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command says what each argument means and shows one example, in `--help`.
    #[test]
    fn every_command_has_an_example_and_every_argument_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            let leaf = !command.has_subcommands();
            let example = command
                .get_after_help()
                .is_some_and(|text| text.to_string().contains("Example"));
            if leaf && !example {
                missing.push(format!(
                    "`{path}`: no example (after_help with \"Example:\")"
                ));
            }
            for argument in command.get_arguments() {
                let builtin = ["help", "version"].contains(&argument.get_id().as_str());
                let described = argument
                    .get_help()
                    .is_some_and(|text| !text.to_string().trim().is_empty());
                if !builtin && !described {
                    missing.push(format!(
                        "`{path}`: argument `{}` has no help",
                        argument.get_id()
                    ));
                }
            }
            for sub in command
                .get_subcommands()
                .filter(|sub| sub.get_name() != "help")
            {
                walk(sub, &path, missing);
            }
        }
        let mut command = <Cli as clap::CommandFactory>::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{} gaps:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }

    /// The examples are commands clan accepts as written.
    #[test]
    fn every_example_parses() {
        fn examples(command: &clap::Command, found: &mut Vec<String>) {
            if let Some(text) = command.get_after_help() {
                // Continued lines joined; `sudo`, a pipe's left side, comments and redirections dropped.
                let text = text.to_string().replace("\\\n", " ");
                for line in text.lines().map(str::trim) {
                    let line = line.strip_prefix("sudo ").unwrap_or(line);
                    let line = line.split_once("| ").map_or(line, |(_, right)| right);
                    let line = line.split(" #").next().unwrap_or(line);
                    let line = line.split(['<', '>']).next().unwrap_or(line);
                    if line.starts_with("clan ") {
                        found.push(line.trim().to_owned());
                    }
                }
            }
            for sub in command.get_subcommands() {
                examples(sub, found);
            }
        }
        let mut found = Vec::new();
        examples(&<Cli as clap::CommandFactory>::command(), &mut found);
        assert!(found.len() > 80, "{found:?}");
        let refused: Vec<String> = found
            .iter()
            .filter_map(|example| {
                Cli::try_parse_from(shell_words(example))
                    .err()
                    .map(|error| format!("`{example}`: {error}"))
            })
            .collect();
        assert!(refused.is_empty(), "{}", refused.join("\n"));
    }

    /// Splits a command line as sh does, for the quoting the examples use.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut quote = None;
        for c in line.chars() {
            match (quote, c) {
                (None, '\'' | '"') => {
                    quote = Some(c);
                    word.get_or_insert_default();
                }
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => words.extend(word.take()),
                (_, c) => word.get_or_insert_default().push(c),
            }
        }
        words.extend(word);
        words
    }

    #[test]
    fn a_bug_exits_with_2() {
        let code = catching_bugs(|| panic!("a bug"));
        assert_eq!(code, ExitCode::from(report::EXIT_ERROR));
        assert_eq!(catching_bugs(|| ExitCode::SUCCESS), ExitCode::SUCCESS);
    }
}
