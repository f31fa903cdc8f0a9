//! `clan machines update|generations|rollback`: deploys through `clan-deploy`, printing its
//! events as `[machine] …` lines on stderr (or JSON lines on stdout with `--json`) and a
//! summary table; exit 1 when any machine failed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clan_deploy::agent::{Activation, HistoryEntry};
use clan_deploy::deploy::{run_agent, AgentBinary, DeployOptions};
use clan_deploy::events::Event;
use clan_deploy::fleet::Route;
use clan_deploy::ssh::{ControlDir, HostKeyCheck, SshHost, SshOptions};

use crate::commands::output::{print_json, print_table, MachineProgress};

use crate::report::{hinted, EXIT_FAILED};

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
pub struct UpdateArgs {
    /// Machines to deploy (default: all).
    machines: Vec<String>,
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
pub struct GenerationsArgs {
    machine: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ssh: SshArgs,
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    machine: String,
    /// Generation id (or its first characters) or history number (default: the previous one).
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ssh: SshArgs,
}

pub fn update(args: UpdateArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let fleet = clan_eval::Fleet::open(dir)?;
    let machines = fleet.select_machines(&args.machines, &args.tags.tags)?;
    if args.ssh.target_host.is_some() && machines.len() != 1 {
        return Err(hinted(format!(
            "--target-host is one machine's address, but {} machines are selected",
            machines.len()
        ), "name exactly one machine, e.g. `clan machines update web01 --target-host root@203.0.113.4`"));
    }
    // Vars first, for every selected machine, all prompts before anything runs; a machine
    // whose vars still fail to generate then fails alone, at resolve. New public vars can
    // change the machines' configuration, so the clan is evaluated again then.
    let (generated, unanswered) = if args.dry_run {
        (false, Default::default())
    } else {
        let selection: Vec<clan_secrets::MachineName> = machines
            .iter()
            .map(|name| name.parse())
            .collect::<Result<_, _>>()?;
        crate::commands::vars::generate_missing(
            dir,
            &fleet,
            &selection,
            args.prompt_values.as_deref(),
            !args.no_sandbox,
        )?
    };
    let fleet = if generated {
        clan_eval::Fleet::open(dir)?
    } else {
        fleet
    };
    let mut jobs =
        clan_deploy::fleet::jobs(&fleet, dir, &machines, args.ssh.target_host.as_deref())?;
    for job in &mut jobs {
        if let Some(reason) = unanswered.get(&job.machine) {
            job.plan = Err(clan_deploy::Error::VarsMissing {
                machine: job.machine.clone(),
                reason: reason.clone(),
            });
        }
    }
    let options = DeployOptions {
        agent: AgentBinary::current()?,
        confirm_timeout: (!args.no_magic_rollback)
            .then(|| Duration::from_secs(args.confirm_timeout)),
        lock_timeout: Duration::from_secs(args.lock_timeout),
        dry_run: args.dry_run,
    };
    let json = args.json;
    let names: Vec<String> = jobs.iter().map(|job| job.machine.clone()).collect();
    let progress = (!json).then(|| MachineProgress::new(&names));
    let out = Mutex::new(());
    let standing: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let interrupted = report_interruption(Arc::clone(&standing))?;
    let emit = |event: Event| {
        // After Ctrl-C, what fails is the interruption's doing (ssh died with it): the report
        // says where each machine stood when it came. Such a failure can be seen a moment
        // before clan's own handler runs, so a failure waits that moment first.
        if matches!(event, Event::Failed { .. }) {
            std::thread::sleep(Duration::from_millis(200));
        }
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Some(now) = event.standing() {
            standing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(event.machine().to_owned(), now);
        }
        let _guard = out.lock();
        if json {
            let mut stdout = std::io::stdout().lock();
            if let Ok(line) = serde_json::to_string(&event) {
                let _ = writeln!(stdout, "{line}");
            }
        } else if let Some(progress) = &progress {
            let finished = match &event {
                Event::Done { .. } => Some(true),
                Event::Failed { .. } => Some(false),
                _ => None,
            };
            match &event {
                Event::Stage { stage, .. } => progress.stage(event.machine(), &stage.to_string()),
                _ => progress.lines(event.machine(), &event.human(), finished),
            }
        }
    };
    let results = clan_deploy::fleet::run(jobs, &args.ssh.options(), &options, args.jobs, &emit)?;
    if let Some(progress) = &progress {
        progress.finish();
    }
    if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
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
                result.machine.clone(),
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
            eprintln!(
                "{failed} of {} machines failed: {}",
                results.len(),
                names.join(", ")
            );
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
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
            eprintln!("\ninterrupted; where each machine stands:");
            for (machine, now) in standing.iter() {
                eprintln!("[{machine}] {now}");
            }
            std::process::exit(130);
        }
    });
    Ok(interrupted)
}

/// A connection to one machine, for commands outside a fleet run, and its control directory
/// (bound first, so that the host, dropped first, closes before the directory goes).
pub fn connect(dir: &Path, machine: &str, ssh: &SshArgs) -> anyhow::Result<(ControlDir, SshHost)> {
    let fleet = clan_eval::Fleet::open(dir)?;
    let route = Route::of(&fleet, dir, machine, ssh.target_host.as_deref())?;
    let control_dir = ControlDir::new()?;
    let host = route.connect(&ssh.options(), &control_dir)?;
    Ok((control_dir, host))
}

pub fn generations(args: GenerationsArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let (_control_dir, host) = connect(dir, &args.machine, &args.ssh)?;
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Generations {
        current: Option<String>,
        history: Vec<HistoryEntry>,
    }
    let generations: Generations = run_agent(&host, &["generations"])?;
    if args.json {
        print_json(&generations)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["#", "GENERATION", "TIME", "ACTION", "CURRENT", "DETAIL"]
        .map(str::to_owned)
        .to_vec()];
    let last_current = generations
        .history
        .iter()
        .rposition(|e| Some(&e.generation) == generations.current.as_ref() && e.action != "failed");
    for (index, entry) in generations.history.iter().enumerate() {
        rows.push(vec![
            entry.number.to_string(),
            clan_deploy::agent::short(&entry.generation).to_owned(),
            format!("unix {}", entry.time),
            entry.action.clone(),
            if Some(index) == last_current { "*" } else { "" }.to_owned(),
            entry.detail.clone().unwrap_or_default(),
        ]);
    }
    print_table(&rows)?;
    Ok(ExitCode::SUCCESS)
}

pub fn rollback(args: RollbackArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let (_control_dir, host) = connect(dir, &args.machine, &args.ssh)?;
    let mut words = vec!["rollback"];
    if let Some(to) = &args.to {
        words.extend(["--to", to]);
    }
    let activation: Activation = run_agent(&host, &words)?;
    if args.json {
        print_json(&activation)?;
    } else {
        eprintln!(
            "[{}] rolled back to generation {}: {}",
            args.machine,
            clan_deploy::agent::short(&activation.generation),
            activation.changes.summary()
        );
    }
    Ok(ExitCode::SUCCESS)
}
