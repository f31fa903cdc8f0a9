//! `clan vars …`: clan-core's vars commands (generate, check, fix, list, get, set, export,
//! import, keygen) over `clan_lib::vars`. Prompts are asked here, all of them before any
//! generator runs: on the terminal, or from `--prompt-values FILE` (`-` for stdin) — never
//! from arguments.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clan_lib::vars::{GenerateRequest, Vars};
use clan_secrets::{KeySources, MachineName, Plaintext, UserName};
use clan_vars::ops;
use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use super::output::{print_json, print_table};
use super::terminal::{ask_hidden_twice, print_generated};
use super::{Context, Terminal, TerminalPrompter};
use crate::report::EXIT_FAILED;

#[derive(Parser)]
pub struct Args {
    #[command(flatten)]
    pub clan: super::ClanArg,
    #[command(subcommand)]
    command: VarsCommand,
}

#[derive(Subcommand)]
enum VarsCommand {
    /// Run the generators whose vars are missing or outdated, and everything depending on them.
    #[command(after_help = "Examples:
  clan vars generate                     # every machine
  clan vars generate web01 -g openssh -r # run web01's openssh generator again")]
    Generate {
        /// Machines whose generators to run (default: all).
        machines: Vec<MachineName>,
        /// Run only this generator (even if complete), what it needs and what depends on it.
        #[arg(long, short = 'g')]
        generator: Option<String>,
        /// Run even complete generators again, and ask persisted prompts again.
        #[arg(long, short = 'r')]
        regenerate: bool,
        /// Run scripts without bubblewrap (they can then reach the network and your files).
        #[arg(long)]
        no_sandbox: bool,
        /// JSON file with prompt answers, `{"<generator>": {"<prompt>": "value"}}`; `-` reads stdin.
        #[arg(long, value_name = "FILE")]
        prompt_values: Option<PathBuf>,
        /// Scripts to run at once (default: the number of cores).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
    },
    /// Report missing or outdated vars and secrets encrypted to the wrong keys; exit 1 if any.
    #[command(after_help = "Examples:
  clan vars check           # every machine
  clan vars check web01 db01")]
    Check {
        /// Machines to check (default: all).
        machines: Vec<MachineName>,
        /// Print the problems as JSON, `{"<machine>": [{"var", "message", "remedy"}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Re-link and re-encrypt secret vars to who should read them.
    #[command(after_help = "Examples:
  clan vars fix             # every machine
  clan vars fix web01")]
    Fix {
        /// Machines whose vars to fix (default: all).
        machines: Vec<MachineName>,
    },
    /// List a machine's vars (secret values are not shown).
    #[command(after_help = "Examples:
  clan vars list web01
  clan vars list web01 --json")]
    List {
        /// The machine.
        machine: MachineName,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a var's value (`<generator>/<file>`) to stdout.
    #[command(after_help = "Example:
  clan vars get web01 openssh/ssh.id_ed25519.pub")]
    Get {
        /// The machine.
        machine: MachineName,
        /// The var: `<generator>/<file>` (`clan vars list MACHINE`).
        var: String,
    },
    /// Set a var (`<generator>/<file>`) from stdin, or a hidden prompt on a terminal.
    #[command(after_help = "Example:
  clan vars set web01 user-password-root/user-password < file")]
    Set {
        /// The machine.
        machine: MachineName,
        /// The var: `<generator>/<file>` (`clan vars list MACHINE`).
        var: String,
    },
    /// Write every var, decrypted, into a new directory (mode 0700).
    #[command(after_help = "Example:
  clan vars export /tmp/vars-backup")]
    Export {
        /// The directory to create; it must not exist.
        directory: PathBuf,
    },
    /// Read a directory written by `export` back into the clan.
    #[command(after_help = "Example:
  clan vars import /tmp/vars-backup")]
    Import {
        /// A directory `clan vars export` wrote.
        directory: PathBuf,
    },
    /// Create your age key and sops user unless they exist.
    #[command(after_help = "Examples:
  clan vars keygen
  clan vars keygen --user alice")]
    Keygen {
        /// The sops user to create (default: your login name: $USER, else your passwd entry).
        #[arg(long)]
        user: Option<UserName>,
    },
}

fn open(context: &Context) -> anyhow::Result<Vars> {
    Ok(Vars::open(
        &super::clan_dir(context)?,
        KeySources::from_env(),
    )?)
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    match args.command {
        VarsCommand::Keygen { user } => keygen(context, user),
        VarsCommand::Generate {
            machines,
            generator,
            regenerate,
            no_sandbox,
            prompt_values,
            jobs,
        } => {
            let vars = open(context)?;
            let request = GenerateRequest {
                machines,
                generator,
                regenerate,
                no_sandbox,
                jobs,
            };
            let mut prompter = TerminalPrompter::new(prompt_values);
            let generators = super::Generators::new();
            let generated = vars.generate(&request, &mut prompter, &generators);
            generators.finish();
            match generated? {
                None => {
                    super::output::printer().note("all vars are up to date");
                    Ok(ExitCode::SUCCESS)
                }
                Some(generated) => {
                    print_generated(&generated);
                    Ok(if generated.failed.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(EXIT_FAILED)
                    })
                }
            }
        }
        VarsCommand::Check { machines, json } => {
            let vars = open(context)?;
            let found = vars.check(&machines, &Terminal)?;
            if json {
                let document: std::collections::BTreeMap<&str, &Vec<ops::Problem>> = found
                    .iter()
                    .map(|(machine, problems)| (machine.as_str(), problems))
                    .collect();
                print_json(&document)?;
                return Ok(if found.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_FAILED)
                });
            }
            let printer = super::output::printer();
            if found.is_empty() {
                match machines.as_slice() {
                    [machine] => printer.note(format_args!(
                        "all vars of machine `{machine}` are present and valid"
                    )),
                    [] => printer.note("all vars of every machine are present and valid"),
                    _ => printer.note(format_args!(
                        "all vars of machines {} are present and valid",
                        names(&machines)
                    )),
                }
                return Ok(ExitCode::SUCCESS);
            }
            let mut remedies: BTreeSet<(ops::Remedy, &str)> = BTreeSet::new();
            for (machine, problems) in &found {
                for problem in problems {
                    printer.failure(format_args!("{}: {}", problem.var, problem.message));
                    remedies.insert((problem.remedy, machine.as_str()));
                }
            }
            for remedy in [ops::Remedy::Generate, ops::Remedy::Fix] {
                let machines: Vec<&str> = remedies
                    .iter()
                    .filter(|(r, _)| *r == remedy)
                    .map(|(_, m)| *m)
                    .collect();
                if machines.is_empty() {
                    continue;
                }
                let machines = machines.join(" ");
                printer.hint(format_args!(
                    "run {}",
                    match remedy {
                        ops::Remedy::Generate =>
                            format!("`clan vars generate {machines}` (missing or outdated vars)"),
                        ops::Remedy::Fix => format!(
                            "`clan vars fix {machines}` (secrets not encrypted to exactly who \
                             should read them)"
                        ),
                    }
                ));
            }
            Ok(ExitCode::from(EXIT_FAILED))
        }
        VarsCommand::Fix { machines } => {
            open(context)?.fix(&machines, &Terminal)?;
            Ok(ExitCode::SUCCESS)
        }
        VarsCommand::List { machine, json } => list(&open(context)?, &machine, json),
        VarsCommand::Get { machine, var } => {
            let value = open(context)?.get(&machine, &var)?;
            std::io::stdout().lock().write_all(value.expose())?;
            Ok(ExitCode::SUCCESS)
        }
        VarsCommand::Set { machine, var } => {
            let vars = open(context)?;
            let id = vars.find(&machine, &var)?;
            vars.admin()?;
            let value = read_value(&id)?;
            vars.set(&machine, &var, &value, &Terminal)?;
            Ok(ExitCode::SUCCESS)
        }
        VarsCommand::Export { directory } => {
            let count = open(context)?.export(&directory)?;
            super::output::printer().note(format_args!(
                "exported {count} vars to {}",
                directory.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        VarsCommand::Import { directory } => {
            open(context)?.import(&directory, &Terminal)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn names(machines: &[MachineName]) -> String {
    machines
        .iter()
        .map(MachineName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(vars: &Vars, machine: &MachineName, json: bool) -> anyhow::Result<ExitCode> {
    let entries = vars.list(machine)?;
    if json {
        print_json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec!["VAR".to_owned(), "VALUE".to_owned()]];
    for var in &entries {
        let shown = match (var.exists, var.secret) {
            (false, _) => "<not set>".to_owned(),
            (true, true) => "********".to_owned(),
            (true, false) => var
                .value
                .as_deref()
                .map(|v| v.trim_end().replace('\n', "⏎"))
                .unwrap_or_default(),
        };
        rows.push(vec![var.id.clone(), shown]);
    }
    print_table(&rows)?;
    Ok(ExitCode::SUCCESS)
}

/// A var's new value: a hidden prompt on a terminal (typed twice), else all of stdin.
fn read_value(id: &str) -> anyhow::Result<Plaintext> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let value = ask_hidden_twice(&format!("Value of var {id}"), false)?;
        return Ok(Plaintext::new(value.as_bytes().to_vec()));
    }
    let mut value = Zeroizing::new(Vec::new());
    stdin
        .lock()
        .read_to_end(&mut value)
        .context("reading the value from stdin")?;
    Ok(Plaintext::new(value))
}

fn keygen(context: &Context, user: Option<UserName>) -> anyhow::Result<ExitCode> {
    let clan_dir = super::clan_dir(context)?;
    let done = clan_lib::vars::keygen(&clan_dir, &KeySources::from_env(), user, &Terminal)?;
    let printer = super::output::printer();
    match &done.created {
        Some((path, recipient)) => printer.note(format_args!(
            "created age key {recipient} in {}",
            path.display()
        )),
        None => printer.note("using your existing age key"),
    }
    if done.user_created {
        printer.note(format_args!("added sops user `{}`", done.user));
    } else {
        printer.note(format_args!("you are sops user `{}`", done.user));
    }
    Ok(ExitCode::SUCCESS)
}
