//! `clan machines update|generations|rollback`: deploys through `clan-deploy`, printing its
//! events as `[machine] …` lines on stderr (or JSON lines on stdout with `--json`) and a
//! summary table; exit 1 when any machine failed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clan_deploy::deploy::{AgentBinary, DeployOptions};
use clan_deploy::events::Event;
use clan_deploy::ssh::{HostKeyCheck, SshOptions};
use clan_inventory::MachineName;
use clan_lib::deploy::UpdateRequest;
use clan_lib::Progress;

use crate::commands::output::{
    print_fleet_json, print_json, print_table, printer, MachineProgress,
};
use crate::commands::{Generators, TerminalPrompter};
use crate::report::EXIT_FAILED;

#[derive(Clone, Copy, clap::ValueEnum)]
enum HostKeyArg {
    Strict,
    Ask,
    #[value(alias = "accept-new")]
    Tofu,
    None,
}

/// How to reach machines.
#[derive(clap::Args)]
pub struct SshArgs {
    /// How host keys of machines met for the first time are treated: `ask` prompts on the
    /// terminal, `tofu` records them, `strict` refuses them, `none` checks nothing (throwaway
    /// machines only). A changed key is always refused, except under `none`.
    #[arg(long, value_enum, default_value = "ask", env = "CLAN_HOST_KEY_CHECK")]
    host_key_check: HostKeyArg,
    /// An ssh_config file used instead of ~/.ssh/config (e.g. a testbed's).
    #[arg(long, env = "CLAN_SSH_CONFIG")]
    ssh_config: Option<PathBuf>,
    /// Connect to `[user@]host[:port]` instead of the machine's target.
    #[arg(long)]
    pub target_host: Option<String>,
}

impl SshArgs {
    pub fn options(&self) -> SshOptions {
        SshOptions {
            config: self.ssh_config.clone(),
            host_key_check: match self.host_key_check {
                HostKeyArg::Strict => HostKeyCheck::Strict,
                HostKeyArg::Ask => HostKeyCheck::Ask,
                HostKeyArg::Tofu => HostKeyCheck::Tofu,
                HostKeyArg::None => HostKeyCheck::None,
            },
            connect_timeout: None,
        }
    }
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  clan machines update                 # every machine
  clan machines update web01 --dry-run
  clan machines update --tags web")]
pub struct UpdateArgs {
    /// Machines to deploy (default: all).
    machines: Vec<MachineName>,
    #[command(flatten)]
    tags: super::TagsArg,
    /// JSON file with answers to the prompts of vars still to generate (see `clan vars
    /// generate --help`); `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    prompt_values: Option<PathBuf>,
    /// Run vars generator scripts without bubblewrap.
    #[arg(long)]
    no_sandbox: bool,
    /// How many machines are deployed at once.
    #[arg(long, short = 'j', default_value_t = 10)]
    jobs: usize,
    /// One JSON event per line on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Show what would change on each machine; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Seconds a machine waits for the confirmation over a new connection before reverting.
    #[arg(long, default_value_t = 30)]
    confirm_timeout: u64,
    /// Keep the new generation without the confirmation round trip.
    #[arg(long)]
    no_magic_rollback: bool,
    /// Seconds a machine waits for another deploy of itself to finish.
    #[arg(long, default_value_t = 60)]
    lock_timeout: u64,
    #[command(flatten)]
    ssh: SshArgs,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  clan machines generations web01     # web01's history; * marks the current generation
  clan machines generations           # every machine's current generation")]
pub struct GenerationsArgs {
    /// The machine (default: every machine, its current generation only).
    machine: Option<MachineName>,
    /// How many machines are asked at once (without a machine).
    #[arg(long, short = 'j', default_value_t = 10)]
    jobs: usize,
    /// Print JSON (the history, or an object of machines).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ssh: SshArgs,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  clan machines status                # every machine: reached over, generation, in sync, last deploy
  clan machines status --tags web --json")]
pub struct StatusArgs {
    /// The machines (default: every machine).
    machines: Vec<MachineName>,
    #[command(flatten)]
    tags: super::TagsArg,
    /// How many machines are asked at once.
    #[arg(long, short = 'j', default_value_t = 10)]
    jobs: usize,
    /// Print JSON (a list, one object per machine).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ssh: SshArgs,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  clan machines rollback web01         # to the previous generation
  clan machines rollback web01 --to 3")]
pub struct RollbackArgs {
    /// The machine.
    machine: MachineName,
    /// Generation id (or its first characters) or history number (default: the previous one).
    #[arg(long)]
    to: Option<String>,
    /// Print what the activation changed as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ssh: SshArgs,
}

pub fn update(args: UpdateArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let request = UpdateRequest {
        machines: args.machines,
        tags: args.tags.tags,
        target_host: args.ssh.target_host.clone(),
        no_sandbox: args.no_sandbox,
        jobs: args.jobs,
        ssh: args.ssh.options(),
        options: DeployOptions {
            agent: AgentBinary::current()?,
            confirm_timeout: (!args.no_magic_rollback)
                .then(|| Duration::from_secs(args.confirm_timeout)),
            lock_timeout: Duration::from_secs(args.lock_timeout),
            dry_run: args.dry_run,
        },
    };
    let json = args.json;
    let standing: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let sink = Sink {
        json,
        progress: MachineProgress::new(),
        generators: Generators::new(),
        out: Mutex::new(()),
        interrupted: report_interruption(Arc::clone(&standing))?,
        standing,
    };
    let mut prompter = TerminalPrompter::new(args.prompt_values);
    let results = clan_lib::deploy::update(dir, &request, &mut prompter, &sink);
    sink.generators.finish();
    sink.progress.finish();
    let results = results?;
    if sink.interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        // The interruption's own report ends the process; no summary after it.
        loop {
            std::thread::park();
        }
    }
    let failed = results.iter().filter(|r| r.result.is_err()).count();
    if !json {
        let mut rows = vec![vec![
            "MACHINE".to_owned(),
            "TARGET".to_owned(),
            "GENERATION".to_owned(),
            "RESULT".to_owned(),
            "TIME".to_owned(),
        ]];
        for result in &results {
            rows.push(vec![
                result.machine.to_string(),
                result.target.clone().unwrap_or_else(|| "-".into()),
                result
                    .generation
                    .as_deref()
                    .map_or("-", clan_deploy::agent::short)
                    .to_owned(),
                match &result.result {
                    Ok(outcome) => serde_json::to_value(outcome)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    Err((stage, _)) => format!("FAILED ({stage})"),
                },
                format!("{:.1}s", result.elapsed.as_secs_f64()),
            ]);
        }
        print_table(&rows)?;
        if failed > 0 {
            let names: Vec<&str> = results
                .iter()
                .filter(|r| r.result.is_err())
                .map(|r| r.machine.as_str())
                .collect();
            printer().failure(format_args!(
                "{failed} of {} machines failed: {}",
                results.len(),
                names.join(", ")
            ));
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints a fleet run's events: `[machine] …` lines on stderr, or JSON lines on stdout.
struct Sink {
    json: bool,
    /// Bars on a terminal, `[machine] …` lines otherwise (not with `--json`).
    progress: MachineProgress,
    /// The vars generators that run first, and every other event.
    generators: Generators,
    out: Mutex<()>,
    standing: Arc<Mutex<BTreeMap<String, String>>>,
    interrupted: Arc<std::sync::atomic::AtomicBool>,
}

impl Progress for Sink {
    fn event(&self, event: clan_lib::Event) {
        let clan_lib::Event::Deploy(event) = event else {
            return self.generators.event(event);
        };
        // After Ctrl-C, what fails is the interruption's doing (ssh died with it): the report
        // says where each machine stood when it came. Such a failure can be seen a moment
        // before clan's own handler runs, so a failure waits that moment first.
        if matches!(*event, Event::Failed { .. }) {
            std::thread::sleep(Duration::from_millis(200));
        }
        if self.interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Some(now) = event.standing() {
            self.standing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(event.machine().to_owned(), now);
        }
        let _guard = self.out.lock();
        if self.json {
            let mut stdout = std::io::stdout().lock();
            if let Ok(line) = serde_json::to_string(&*event) {
                let _ = writeln!(stdout, "{line}");
            }
        } else {
            let finished = match &*event {
                Event::Done { .. } => Some(true),
                Event::Failed { .. } => Some(false),
                _ => None,
            };
            match &*event {
                Event::Stage { stage, .. } => {
                    self.progress.stage(event.machine(), &stage.to_string())
                }
                Event::Output { .. } => {
                    for line in event.human() {
                        self.progress.stage(event.machine(), &line);
                    }
                }
                _ => self
                    .progress
                    .lines(event.machine(), &event.human(), finished),
            }
        }
    }
}

/// On Ctrl-C (or SIGTERM) during a fleet run: says where each machine stands, then ends the
/// run with 130. The machines are safe either way: an activation runs to its end on the
/// machine, and one that is not confirmed reverts by itself.
/// Returns the flag the signal sets at once, before the report is printed.
fn report_interruption(
    standing: Arc<Mutex<BTreeMap<String, String>>>,
) -> anyhow::Result<Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let standing = standing.lock().unwrap_or_else(|p| p.into_inner());
            let printer = printer();
            printer.failure("\ninterrupted; where each machine stands:");
            for (machine, now) in standing.iter() {
                printer.failure(format_args!("[{machine}] {now}"));
            }
            std::process::exit(130);
        }
    });
    Ok(interrupted)
}

pub fn generations(args: GenerationsArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(machine) = &args.machine else {
        return fleet_generations(&args, dir);
    };
    let generations = clan_lib::deploy::generations(
        dir,
        machine,
        args.ssh.target_host.as_deref(),
        &args.ssh.options(),
    )?;
    if args.json {
        print_json(&generations)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["#", "GENERATION", "TIME", "ACTION", "CURRENT", "DETAIL"]
        .map(str::to_owned)
        .to_vec()];
    let last_current = generations.current_entry();
    for (index, entry) in generations.history.iter().enumerate() {
        rows.push(vec![
            entry.number.to_string(),
            clan_deploy::agent::short(&entry.generation).to_owned(),
            local_time(entry.time),
            entry.action.clone(),
            if Some(index) == last_current { "*" } else { "" }.to_owned(),
            entry.detail.clone().unwrap_or_default(),
        ]);
    }
    print_table(&rows)?;
    Ok(ExitCode::SUCCESS)
}

/// `machines generations` without a machine: each machine's current generation and the
/// history entry that made it current; exit 1 when a machine could not be asked.
fn fleet_generations(args: &GenerationsArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    if args.ssh.target_host.is_some() {
        return Err(crate::report::hinted(
            "--target-host is one machine's address, but no machine is named",
            "name the machine, e.g. `clan machines generations web01 --target-host root@203.0.113.4`",
        ));
    }
    let results = clan_lib::deploy::fleet_generations(dir, &args.ssh.options(), args.jobs)?;
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if args.json {
        print_fleet_json(&results)?;
    } else {
        let mut rows = vec![["MACHINE", "GENERATION", "TIME", "ACTION", "GENERATIONS"]
            .map(str::to_owned)
            .to_vec()];
        for (machine, result) in &results {
            match result {
                Ok(generations) => {
                    let entry = generations
                        .current_entry()
                        .and_then(|index| generations.history.get(index));
                    rows.push(vec![
                        machine.to_string(),
                        generations
                            .current
                            .as_deref()
                            .map_or("-", clan_deploy::agent::short)
                            .to_owned(),
                        entry.map_or_else(|| "-".to_owned(), |e| local_time(e.time)),
                        entry.map_or_else(|| "-".to_owned(), |e| e.action.clone()),
                        generations.history.len().to_string(),
                    ]);
                }
                Err(error) => {
                    rows.push(vec![
                        machine.to_string(),
                        "-".into(),
                        "-".into(),
                        "FAILED".into(),
                        "-".into(),
                    ]);
                    printer().failure(format_args!("[{machine}] {error}"));
                }
            }
        }
        print_table(&rows)?;
    }
    Ok(if failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// `machines status`: exit 1 when a machine could not be reached or its generation built.
pub fn status(args: StatusArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    if args.ssh.target_host.is_some() {
        return Err(crate::report::hinted(
            "--target-host is one machine's address; `machines status` asks machines at their routes",
            "ask one machine at another address with `clan machines generations web01 --target-host root@203.0.113.4`",
        ));
    }
    let statuses = clan_lib::deploy::status(
        dir,
        &args.machines,
        &args.tags.tags,
        &args.ssh.options(),
        args.jobs,
    )?;
    let failed = statuses.iter().any(|s| s.error.is_some());
    if args.json {
        print_json(&statuses)?;
    } else {
        let mut rows = vec![["MACHINE", "REACHED", "GENERATION", "IN SYNC", "LAST"]
            .map(str::to_owned)
            .to_vec()];
        for status in &statuses {
            let reached = status.reached.as_ref().map_or_else(
                || "-".to_owned(),
                |r| match &r.network {
                    Some(network) => format!("{network} ({} ms)", r.elapsed_ms),
                    None => format!("{} ({} ms)", r.source, r.elapsed_ms),
                },
            );
            let in_sync = match status.in_sync {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            let last = status.last.as_ref().map_or_else(
                || "-".to_owned(),
                |e| format!("{} {}", e.action, local_time(e.time)),
            );
            rows.push(vec![
                status.machine.to_string(),
                reached,
                status
                    .current
                    .as_deref()
                    .map_or("-", clan_deploy::agent::short)
                    .to_owned(),
                in_sync.to_owned(),
                last,
            ]);
        }
        print_table(&rows)?;
        for status in &statuses {
            if let Some(error) = &status.error {
                printer().failure(format_args!("[{}] {error}", status.machine));
            }
        }
    }
    Ok(if failed {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn rollback(args: RollbackArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let activation = clan_lib::deploy::rollback(
        dir,
        &args.machine,
        args.ssh.target_host.as_deref(),
        args.to.as_deref(),
        &args.ssh.options(),
    )?;
    if args.json {
        print_json(&activation)?;
    } else {
        printer().note(format_args!(
            "[{}] rolled back to generation {}: {}",
            args.machine,
            clan_deploy::agent::short(&activation.generation),
            activation.changes.summary()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// A generation's time for people (the agent records Unix seconds).
fn local_time(unix_seconds: u64) -> String {
    clan_agent::report::local_time(i64::try_from(unix_seconds).unwrap_or(i64::MAX))
}
