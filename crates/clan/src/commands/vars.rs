//! `clan vars …`: clan-core's vars commands (generate, check, fix, list, get, set, export,
//! import, keygen) over the `clan-vars` library. Prompts are asked here, all of them before
//! any generator runs: on the terminal, or from `--prompt-values FILE` (`-` for stdin) —
//! never from arguments. Mutations hold the clan lock and are committed to git (one commit
//! per command) unless `CLAN_NO_COMMIT=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clan_error::Hint as _;
use clan_secrets::{Admin, Identities, KeySources, MachineName, Plaintext, SopsDir, UserName};
use clan_vars::{
    ops, Answers, Confinement, Graph, Plan, PromptRequest, RunOptions, Selection, VarsStore,
};
use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use super::change::{self, Change};
use super::output::{print_json, print_table};
use super::Context;
use crate::report::{hinted, EXIT_FAILED};

#[derive(Parser)]
pub struct Args {
    #[command(subcommand)]
    command: VarsCommand,
}

#[derive(Subcommand)]
enum VarsCommand {
    /// Run the generators whose vars are missing or outdated, and everything depending on them.
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
    Check { machine: MachineName },
    /// Re-link and re-encrypt a machine's secret vars to who should read them.
    Fix { machine: MachineName },
    /// List a machine's vars (secret values are not shown).
    List {
        machine: MachineName,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a var's value (`<generator>/<file>`) to stdout.
    Get { machine: MachineName, var: String },
    /// Set a var (`<generator>/<file>`) from stdin, or a hidden prompt on a terminal.
    Set { machine: MachineName, var: String },
    /// Write every var, decrypted, into a new directory (mode 0700).
    Export { directory: PathBuf },
    /// Read a directory written by `export` back into the clan.
    Import { directory: PathBuf },
    /// Create your age key and sops user unless they exist.
    Keygen {
        /// The sops user to create (default: $USER).
        #[arg(long)]
        user: Option<UserName>,
    },
}

/// The clan, its generators, and where the admin's keys are.
struct Session {
    store: VarsStore,
    graph: Graph,
    sources: KeySources,
}

impl Session {
    fn open(context: &Context) -> anyhow::Result<Session> {
        let clan_dir = super::clan_dir(context)?;
        let fleet = clan_eval::Fleet::open(&clan_dir)?;
        Session::of(clan_dir, &fleet)
    }

    /// The vars of `fleet`, the clan evaluated from `clan_dir`.
    fn of(clan_dir: PathBuf, fleet: &clan_eval::Fleet) -> anyhow::Result<Session> {
        let machines = fleet.machines()?;
        let mut generators = Vec::new();
        for machine in &machines {
            let name: MachineName = machine
                .summary
                .name
                .parse()
                .with_context(|| format!("machine name `{}`", machine.summary.name))?;
            generators.push((name, &machine.config.generators));
        }
        let graph = Graph::build(generators.iter().map(|(name, g)| (name.clone(), *g)))?;
        Ok(Session {
            store: VarsStore::new(clan_dir),
            graph,
            sources: KeySources::from_env(),
        })
    }

    fn machine(&self, machine: &MachineName) -> anyhow::Result<()> {
        if self.graph.machines().any(|m| m == machine) {
            return Ok(());
        }
        Err(clan_vars::Error::UnknownMachine {
            machine: machine.to_string(),
        }
        .into())
    }

    fn identities(&self) -> anyhow::Result<Identities> {
        let identities = Identities::discover(&self.sources)?;
        if identities.public_keys().is_empty() {
            return Err(clan_secrets::Error::NoAdminKey {
                searched: self.sources.describe(),
            })
            .context("secret vars need your age key")
            .map_err(|error| {
                hinted(
                    format!("{error:#}"),
                    "run `clan vars keygen` to create your key and sops user",
                )
            });
        }
        Ok(identities)
    }

    fn admin(&self) -> anyhow::Result<Admin> {
        Ok(self
            .store
            .sops()
            .admin(self.identities()?, &self.sources.describe())?)
    }

    /// Takes the clan lock for a change of vars (and the sops keys they need).
    fn lock(&self) -> anyhow::Result<Change> {
        change::begin(self.store.clan_dir(), VARS_SCOPE)
    }
}

/// What a vars command may change.
const VARS_SCOPE: &[&str] = &["vars", "sops"];

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
            let session = Session::open(context)?;
            for machine in &machines {
                session.machine(machine)?;
            }
            let selection = Selection {
                machines,
                generator,
                regenerate,
            };
            let options = RunOptions {
                confinement: Confinement::detect(!no_sandbox)?,
                jobs: jobs.unwrap_or_else(cores),
            };
            let ran = generate(&session, &selection, prompt_values.as_deref(), &options)?;
            Ok(ran.unwrap_or_else(|| {
                eprintln!("all vars are up to date");
                ExitCode::SUCCESS
            }))
        }
        VarsCommand::Check { machine } => {
            let session = Session::open(context)?;
            session.machine(&machine)?;
            change::recover_if_interrupted(session.store.clan_dir())?;
            let admin = session.admin()?;
            let problems = ops::check(&session.graph, &session.store, &machine, &admin.user)?;
            if problems.is_empty() {
                eprintln!("all vars of machine `{machine}` are present and valid");
                return Ok(ExitCode::SUCCESS);
            }
            for problem in &problems {
                eprintln!("{}: {}", problem.var, problem.message);
            }
            let remedies: BTreeSet<ops::Remedy> = problems.iter().map(|p| p.remedy).collect();
            for remedy in remedies {
                eprintln!(
                    "hint: run {}",
                    match remedy {
                        ops::Remedy::Generate =>
                            format!("`clan vars generate {machine}` (missing or outdated vars)"),
                        ops::Remedy::Fix => format!(
                            "`clan vars fix {machine}` (secrets not encrypted to exactly who \
                             should read them)"
                        ),
                    }
                );
            }
            Ok(ExitCode::from(EXIT_FAILED))
        }
        VarsCommand::Fix { machine } => {
            let session = Session::open(context)?;
            session.machine(&machine)?;
            let lock = session.lock()?;
            let admin = session.admin()?;
            let changes = ops::fix(&session.graph, &session.store, &machine, &admin)?;
            lock.commit(&changes.paths, &changes.message)?;
            Ok(ExitCode::SUCCESS)
        }
        VarsCommand::List { machine, json } => {
            let session = Session::open(context)?;
            session.machine(&machine)?;
            list(&session, &machine, json)
        }
        VarsCommand::Get { machine, var } => {
            let session = Session::open(context)?;
            session.machine(&machine)?;
            let var = ops::find(&session.graph, &machine, &var)?;
            let identities = if var.declaration.secret {
                session.identities()?
            } else {
                Identities::default()
            };
            let value = ops::get(&session.store, &var, &identities)?;
            std::io::stdout().lock().write_all(value.expose())?;
            Ok(ExitCode::SUCCESS)
        }
        VarsCommand::Set { machine, var } => {
            let session = Session::open(context)?;
            session.machine(&machine)?;
            let var = ops::find(&session.graph, &machine, &var)?;
            let admin = session.admin()?;
            let value = read_value(&var.id())?;
            let lock = session.lock()?;
            let changes = ops::set(&session.graph, &session.store, &var, &value, &admin)?;
            lock.commit(&changes.paths, &changes.message)?;
            Ok(ExitCode::SUCCESS)
        }
        VarsCommand::Export { directory } => {
            let session = Session::open(context)?;
            let identities = session.identities()?;
            let count = ops::export(&session.graph, &session.store, &directory, &identities)?;
            eprintln!("exported {count} vars to {}", directory.display());
            Ok(ExitCode::SUCCESS)
        }
        VarsCommand::Import { directory } => {
            let session = Session::open(context)?;
            let admin = session.admin()?;
            let lock = session.lock()?;
            let changes = ops::import(&session.graph, &session.store, &directory, &admin)?;
            lock.commit(&changes.paths, &changes.message)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Generates what `machines` still miss (and what depends on it), as `vars generate` does:
/// prompts first, one commit. Quiet when nothing is missing; generators that fail are
/// reported and the machines needing them fail later, alone. Without a terminal, machines
/// whose generators ask for an answer that `prompt_values` lacks are left out: returned by
/// name with the reason, for the deploy to fail them alone. Also returns whether anything ran.
pub fn generate_missing(
    clan_dir: &Path,
    fleet: &clan_eval::Fleet,
    machines: &[MachineName],
    prompt_values: Option<&Path>,
    sandbox: bool,
) -> anyhow::Result<(bool, BTreeMap<String, String>)> {
    let session = Session::of(clan_dir.to_path_buf(), fleet)?;
    let mut selection = Selection {
        machines: machines.to_vec(),
        generator: None,
        regenerate: false,
    };
    let unanswerable = if std::io::stdin().is_terminal() {
        BTreeMap::new()
    } else {
        unanswered_machines(&session, fleet, &selection, prompt_values)?
    };
    if !unanswerable.is_empty() {
        selection
            .machines
            .retain(|m| !unanswerable.contains_key(m.as_str()));
        if selection.machines.is_empty() {
            return Ok((false, unanswerable));
        }
    }
    let options = RunOptions {
        confinement: Confinement::detect(sandbox)?,
        jobs: cores(),
    };
    let ran = generate(&session, &selection, prompt_values, &options)?.is_some();
    Ok((ran, unanswerable))
}

/// The machines of `selection` that a generator still to run needs an answer for which
/// `prompt_values` has none, each with the reason (a shared generator's prompt blocks every
/// machine using it).
fn unanswered_machines(
    session: &Session,
    fleet: &clan_eval::Fleet,
    selection: &Selection,
    prompt_values: Option<&Path>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let plan = Plan::new(&session.graph, &session.store, selection)?;
    let mut answers = Answers::default();
    let admin = session.admin().ok();
    let requests = plan.prompts(&session.graph, &session.store, admin.as_ref(), &mut answers)?;
    if let (Some(path), false) = (prompt_values, requests.is_empty()) {
        let (bytes, name) = read_prompt_values(path)?;
        answers.fill_from_json(&bytes, &name, &requests)?;
    }
    let mut blocked = BTreeMap::new();
    for request in requests.iter().filter(|r| !answers.contains(r)) {
        let key = &request.generator;
        let reason = format!(
            "generator `{key}` asks for `{}` and no answer is at hand: run `clan vars generate` \
             on a terminal, or pass the answer with --prompt-values",
            request.name
        );
        let users: Vec<String> = match &key.placement {
            clan_vars::Placement::PerMachine(machine) => vec![machine.to_string()],
            clan_vars::Placement::Shared => selection
                .machines
                .iter()
                .filter(|m| {
                    fleet
                        .machine(m.as_str())
                        .is_ok_and(|machine| machine.config.generators.contains_key(&key.name))
                })
                .map(ToString::to_string)
                .collect(),
        };
        for machine in users {
            blocked.entry(machine).or_insert_with(|| reason.clone());
        }
    }
    Ok(blocked)
}

/// Runs what `selection` needs under the clan lock; `None` when nothing is missing.
fn generate(
    session: &Session,
    selection: &Selection,
    prompt_values: Option<&Path>,
    options: &RunOptions,
) -> anyhow::Result<Option<ExitCode>> {
    let lock = change::lock(session.store.clan_dir())?;
    let plan = Plan::new(&session.graph, &session.store, selection)?;
    if plan.order.is_empty() {
        return Ok(None);
    }
    let admin = session.admin()?;
    let mut answers = Answers::default();
    let requests = plan.prompts(&session.graph, &session.store, Some(&admin), &mut answers)?;
    if !requests.is_empty() {
        if let Some(path) = prompt_values {
            let (bytes, name) = read_prompt_values(path)?;
            answers.fill_from_json(&bytes, &name, &requests)?;
        }
        ask_remaining(&requests, &mut answers)?;
    }
    lock.begin(VARS_SCOPE)?;
    let report = clan_vars::generate::run(
        &session.graph,
        &session.store,
        &plan,
        &answers,
        &admin,
        options,
    )?;
    let names: Vec<String> = report.generated.iter().map(|k| k.name.clone()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    let message = if report.generated.is_empty() {
        "vars: create machine keys".to_owned()
    } else {
        format!(
            "vars: generate {} ({} generator runs)",
            unique.join(", "),
            report.generated.len()
        )
    };
    lock.commit(&report.changed, &message)?;
    if report.interrupted {
        return Err(clan_vars::Error::Interrupted.into());
    }
    eprintln!("generated {} generator runs", report.generated.len());
    for (key, error) in &report.failed {
        eprintln!("error: {key}: {error}");
        if let Some(hint) = error.hint() {
            eprintln!("hint: {hint}");
        }
    }
    Ok(Some(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }))
}

fn read_prompt_values(path: &Path) -> anyhow::Result<(Zeroizing<Vec<u8>>, String)> {
    let mut bytes = Zeroizing::new(Vec::new());
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("reading prompt values from stdin")?;
        return Ok((bytes, "stdin".to_owned()));
    }
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .with_context(|| format!("reading prompt values from `{}`", path.display()))?;
    Ok((bytes, format!("`{}`", path.display())))
}

/// Asks the prompts not answered yet on the terminal; without one, that is an error.
fn ask_remaining(requests: &[PromptRequest], answers: &mut Answers) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    for request in requests {
        if answers.contains(request) {
            continue;
        }
        let key = &request.generator;
        if !interactive {
            return Err(clan_vars::Error::PromptMissing {
                placement: key.placement.to_string(),
                generator: key.name.clone(),
                prompt: request.name.clone(),
            }
            .into());
        }
        let label = if request.prompt.description.is_empty() {
            request.name.clone()
        } else {
            request.prompt.description.clone()
        };
        let title = format!("{key} — {label}");
        let value = match request.prompt.kind {
            clan_config::PromptType::Hidden => ask_hidden_twice(&title, false)?,
            clan_config::PromptType::MultilineHidden => ask_hidden_twice(&title, true)?,
            clan_config::PromptType::Line => {
                eprint!("{title}: ");
                let mut line = Zeroizing::new(String::new());
                std::io::stdin().lock().read_line(&mut line)?;
                Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned())
            }
            clan_config::PromptType::Multiline => {
                eprintln!("{title} (finish with Ctrl-D on an empty line):");
                let mut text = Zeroizing::new(String::new());
                std::io::stdin().lock().read_to_string(&mut text)?;
                text
            }
        };
        answers.insert(key.clone(), &request.name, value);
    }
    Ok(())
}

/// Asks for a secret on the terminal without echoing it, twice; `multiline` reads until
/// Ctrl-D instead of one line.
fn ask_hidden_twice(title: &str, multiline: bool) -> anyhow::Result<Zeroizing<String>> {
    let ask = |prompt: &str| -> std::io::Result<Zeroizing<String>> {
        if multiline {
            read_hidden_until_eof(prompt)
        } else {
            rpassword::prompt_password(format!("{prompt}: ")).map(Zeroizing::new)
        }
    };
    for _ in 0..3 {
        let first = ask(title)?;
        let second = ask("Again, to confirm")?;
        if first == second {
            return Ok(first);
        }
        eprintln!("the two entries differ; try again");
    }
    Err(hinted(
        "the two entries differed three times",
        "run `clan vars generate` again",
    ))
}

/// Reads the terminal until Ctrl-D with echo off (newlines still echo, to show progress).
fn read_hidden_until_eof(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    // Only now: whatever is typed after the prompt appears is not echoed.
    eprintln!("{prompt} (hidden; finish with Ctrl-D on an empty line):");
    let mut text = Zeroizing::new(String::new());
    let read = stdin.lock().read_to_string(&mut text);
    tcsetattr(&stdin, OptionalActions::Now, &saved)?;
    read.map(|_| text)
}

fn list(session: &Session, machine: &MachineName, json: bool) -> anyhow::Result<ExitCode> {
    let vars = ops::list(&session.graph, &session.store, machine);
    let value_of = |var: &ops::Var| -> Option<String> {
        if var.declaration.secret || !var.exists {
            return None;
        }
        session
            .store
            .read_public(&var.generator, &var.file)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    };
    if json {
        let entries: Vec<serde_json::Value> = vars
            .iter()
            .map(|var| {
                serde_json::json!({
                    "generator": var.generator.name,
                    "file": var.file,
                    "shared": var.generator.placement == clan_vars::Placement::Shared,
                    "secret": var.declaration.secret,
                    "exists": var.exists,
                    "value": value_of(var),
                })
            })
            .collect();
        print_json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec!["VAR".to_owned(), "VALUE".to_owned()]];
    for var in &vars {
        let shown = match (var.exists, var.declaration.secret) {
            (false, _) => "<not set>".to_owned(),
            (true, true) => "********".to_owned(),
            (true, false) => value_of(var)
                .map(|v| v.trim_end().replace('\n', "⏎"))
                .unwrap_or_default(),
        };
        rows.push(vec![var.id(), shown]);
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
    let user = match user {
        Some(user) => user,
        None => std::env::var("USER")
            .ok()
            .and_then(|name| name.parse().ok())
            .ok_or_else(|| {
                hinted(
                    "cannot tell your user name from $USER",
                    "pass `--user <name>`",
                )
            })?,
    };
    let lock = change::begin(&clan_dir, &["sops"])?;
    let store = VarsStore::new(&clan_dir);
    let done = ops::keygen(&store, &KeySources::from_env(), &user)?;
    match &done.created {
        Some((path, recipient)) => eprintln!("created age key {recipient} in {}", path.display()),
        None => eprintln!("using your existing age key"),
    }
    match &done.user_added {
        Some(changes) => {
            eprintln!("added sops user `{user}`");
            lock.commit(&changes.paths, &changes.message)?;
        }
        None => {
            let sops = SopsDir::new(&clan_dir);
            let admin = sops.admin(
                Identities::discover(&KeySources::from_env())?,
                "your key files",
            )?;
            eprintln!("you are sops user `{}`", admin.user);
        }
    }
    Ok(ExitCode::SUCCESS)
}
