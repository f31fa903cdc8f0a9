//! `vars generate`: choosing what runs, listing the prompts it needs (all asked before
//! anything runs), then running the scripts on a small pool of workers in dependency order
//! (each worker with its own sandbox, see [`crate::sandbox`]), encrypting in-process into a
//! staging directory, and swapping each finished generator in at the end — after one
//! `syncfs` — so that an interrupted run stores nothing half. Machine keys the run needs are
//! made first, in memory, and written while the scripts run.
//!
//! A generator that fails, omits a declared file, or depends on one that failed stores
//! nothing; the others of the run are stored. SIGINT and SIGTERM during the run stop it
//! cleanly: running scripts are left to finish or die, nothing is stored.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use clan_secrets::{Admin, MachineName, Member, Plaintext, Recipient, SecretString};

use crate::graph::{FleetGenerator, GeneratorKey, Graph, Placement};
use crate::prompt::{Answers, PromptRequest};
use crate::sandbox::{self, Confinement, Runner};
use crate::store::{validation_hash, Output, Recipients, Staging, VarsStore};
use crate::Error;

/// What `vars generate` was asked for.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Machines whose generators are roots; empty means every machine.
    pub machines: Vec<MachineName>,
    /// Only this generator (and what it needs and what needs it), run even if complete.
    pub generator: Option<String>,
    /// Run the roots even if complete, and ask persisted prompts again.
    pub regenerate: bool,
}

/// The generators to run, in dependency order.
#[derive(Clone, Debug)]
pub struct Plan {
    pub order: Vec<GeneratorKey>,
    regenerate: bool,
}

impl Plan {
    pub fn new(graph: &Graph, store: &VarsStore, selection: &Selection) -> Result<Plan, Error> {
        let machines: Vec<MachineName> = if selection.machines.is_empty() {
            graph.machines().cloned().collect()
        } else {
            selection.machines.clone()
        };
        let mut roots: BTreeSet<GeneratorKey> = BTreeSet::new();
        for machine in &machines {
            roots.extend(
                graph
                    .of_machine(machine)
                    .iter()
                    .filter(|key| selection.generator.as_ref().is_none_or(|g| *g == key.name))
                    .cloned(),
            );
        }
        if let Some(generator) = &selection.generator {
            if roots.is_empty() {
                return Err(Error::UnknownGenerator {
                    generator: generator.clone(),
                    machines: machines.iter().map(|m| format!("`{m}`")).collect(),
                });
            }
        }
        let roots: Vec<GeneratorKey> = roots.into_iter().collect();
        let requested = selection.regenerate || selection.generator.is_some();
        let order = graph.selection(&roots, requested, |generator| !store.is_complete(generator));
        Ok(Plan {
            order,
            regenerate: selection.regenerate,
        })
    }

    /// The prompts to ask, in run order. Persisted prompts with a stored value are answered
    /// from it (into `answers`) unless regenerating.
    pub fn prompts(
        &self,
        graph: &Graph,
        store: &VarsStore,
        admin: Option<&Admin>,
        answers: &mut Answers,
    ) -> Result<Vec<PromptRequest>, Error> {
        let mut requests = Vec::new();
        for key in &self.order {
            let generator = graph.get(key).expect("planned from the graph");
            let files = generator.files();
            for (name, prompt) in &generator.definition.prompts {
                if prompt.persist && !self.regenerate {
                    let secret = files.get(name).is_some_and(|file| file.secret);
                    let readable = !secret || admin.is_some();
                    if readable && store.exists(key, name, secret) {
                        if let Some(admin) = admin.filter(|_| secret) {
                            let value = store.read(key, name, true, &admin.identities)?;
                            answers.insert(key.clone(), name, utf8(value));
                        } else {
                            let value = store.read_public(key, name)?;
                            answers.insert(key.clone(), name, utf8(Plaintext::new(value)));
                        }
                        continue;
                    }
                }
                requests.push(PromptRequest {
                    generator: key.clone(),
                    name: name.clone(),
                    prompt: prompt.clone(),
                });
            }
        }
        Ok(requests)
    }
}

fn utf8(value: Plaintext) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(String::from_utf8_lossy(value.expose()).into_owned())
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub confinement: Confinement,
    /// Scripts running at once (the CLI uses the number of cores).
    pub jobs: usize,
}

/// How far one generator of a run got, as [`run`] reports it while it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorStep {
    /// Its script started.
    Running,
    /// Its outputs are staged; they are stored with the others' when the run ends.
    Generated,
    /// It failed, or a generator it needs did (the run's [`Report`] says why).
    Failed,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Generators stored, in order.
    pub generated: Vec<GeneratorKey>,
    /// Generators that failed or were skipped because a dependency failed.
    pub failed: Vec<(GeneratorKey, Error)>,
    /// Paths changed (relative to the clan directory), for one commit.
    pub changed: Vec<PathBuf>,
    /// SIGINT or SIGTERM arrived: no generator was stored (machine keys created before
    /// may be in `changed`).
    pub interrupted: bool,
}

/// Runs `plan` and stores its outputs, telling `step` how far each generator got (from the
/// workers, as it happens). Returns `Err` only when nothing could be attempted; failures of
/// single generators, and interruption, are in the report.
pub fn run(
    graph: &Graph,
    store: &VarsStore,
    plan: &Plan,
    answers: &Answers,
    admin: &Admin,
    options: &RunOptions,
    step: &(dyn Fn(&GeneratorKey, GeneratorStep) + Sync),
) -> Result<Report, Error> {
    let mut report = Report::default();
    store.remove_stale_staging()?;
    let recipients = Recipients::new(store.sops(), admin.user.clone())?;
    let new_keys = new_machine_keys(graph, store, plan, &recipients)?;
    let bash = sandbox::which("bash").ok_or_else(|| Error::MissingTool {
        placement: "every generator".into(),
        generator: "*".into(),
        tool: "bash".into(),
    })?;
    let tools = plan.order.iter().flat_map(|key| {
        let generator = graph.get(key).expect("planned from the graph");
        generator.definition.runtime_inputs.iter()
    });
    let resolved: Vec<PathBuf> = tools
        .filter_map(|tool| sandbox::runtime_input(tool))
        .collect();
    let extra_dirs = sandbox::extra_dirs(&resolved);
    let staging = Staging::new(store)?;
    // Before any script runs: what scripts and clan create in scratch is private.
    let _umask = sandbox::PrivateUmask::set();
    let interrupted = Arc::new(AtomicBool::new(false));
    let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
        .into_iter()
        .map(|signal| signal_hook::flag::register(signal, Arc::clone(&interrupted)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(clan_error::io("watch signals of", "clan"))?;
    let context = Context {
        graph,
        store,
        answers,
        admin,
        recipients: &recipients,
        staging: &staging,
        confinement: &options.confinement,
        bash: &bash,
        extra_dirs: &extra_dirs,
        interrupted: &interrupted,
        step,
    };
    // Machine keys are written (and synced) while the scripts run; generators already
    // encrypt to their public halves.
    let (results, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_machine_keys(store, &recipients, admin, &new_keys));
        let results = schedule(&context, &plan.order, options.jobs.max(1));
        (results, writer.join().expect("key writer does not panic"))
    });
    report.changed.extend(written?);
    for id in signals {
        signal_hook::low_level::unregister(id);
    }
    if interrupted.load(Ordering::SeqCst) {
        report.interrupted = true;
        return Ok(report);
    }
    let mut staged = Vec::new();
    for (key, result) in plan.order.iter().zip(results) {
        match result {
            Some(Ok(done)) => staged.push((key, done.staged)),
            Some(Err(error)) => report.failed.push((key.clone(), error)),
            None => report.failed.push((key.clone(), Error::Interrupted)),
        }
    }
    if !staged.is_empty() {
        staging.sync()?;
        for (key, path) in staged {
            staging.swap_in(&path, &key.dir())?;
            report.changed.push(key.dir());
            report.generated.push(key.clone());
            // A generator whose `share` changed was generated anew at its new place; its
            // vars at the old place go (as in clan-core).
            for old in graph.other_placements(key) {
                if store.tree()?.remove_all(&old.dir())? {
                    report.changed.push(old.dir());
                }
            }
        }
        staging.sync()?;
    }
    share_with_new_machines(graph, store, &recipients, admin, &mut report)?;
    Ok(report)
}

/// A new machine key, not yet stored.
struct NewMachineKey<'a> {
    machine: &'a MachineName,
    text: SecretString,
    public: Recipient,
}

/// Makes (in memory) the age keys of machines that will receive secrets and have none yet,
/// and lets `recipients` encrypt to them already.
fn new_machine_keys<'a>(
    graph: &'a Graph,
    store: &VarsStore,
    plan: &Plan,
    recipients: &Recipients<'_>,
) -> Result<Vec<NewMachineKey<'a>>, Error> {
    let mut machines: BTreeSet<&MachineName> = BTreeSet::new();
    for key in &plan.order {
        let generator = graph.get(key).expect("planned from the graph");
        for file in generator.files().values() {
            machines.extend(generator.deploy_targets(file));
        }
    }
    let known = store.sops().machines()?;
    let mut keys = Vec::new();
    for machine in machines.into_iter().filter(|m| !known.contains(m)) {
        let (text, public) = clan_secrets::generate_identity();
        recipients.remember_machine(machine, public.clone());
        keys.push(NewMachineKey {
            machine,
            text,
            public,
        });
    }
    Ok(keys)
}

/// Stores `keys`, in parallel (their writes are synced one by one, which the file system
/// batches). Returns the paths written.
fn write_machine_keys(
    store: &VarsStore,
    recipients: &Recipients<'_>,
    admin: &Admin,
    keys: &[NewMachineKey<'_>],
) -> Result<Vec<PathBuf>, Error> {
    let results: Mutex<Vec<Result<clan_secrets::Changes, Error>>> = Mutex::default();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..keys.len().min(16) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(index) else {
                    break;
                };
                let groups = recipients.groups_of(key.machine);
                let result = store
                    .sops()
                    .write_machine_key(key.machine, &key.text, &key.public, &groups, admin)
                    .map_err(Error::from);
                results.lock().expect("not poisoned").push(result);
            });
        }
    });
    let mut paths = Vec::new();
    for result in results.into_inner().expect("not poisoned") {
        paths.extend(result?.paths);
    }
    Ok(paths)
}

/// A shared secret deployed to machines must be readable by every machine declaring it;
/// machines that joined later get a link and the secret is re-keyed (as clan-core does).
fn share_with_new_machines(
    graph: &Graph,
    store: &VarsStore,
    recipients: &Recipients<'_>,
    admin: &Admin,
    report: &mut Report,
) -> Result<(), Error> {
    for generator in graph
        .iter()
        .filter(|g| g.key.placement == Placement::Shared)
    {
        for (name, file) in generator.files() {
            if !store.exists(&generator.key, &name, file.secret) || !file.secret {
                continue;
            }
            let dir = generator.key.file_dir(&name);
            for machine in generator.deploy_targets(&file) {
                if store.entry_exists(&dir.join("machines").join(machine.as_str())) {
                    continue;
                }
                let groups = recipients.groups_of(machine);
                if let Some(changes) = store.sops().ensure_machine_key(machine, &groups, admin)? {
                    report.changed.extend(changes.paths);
                }
                let member = Member::Machine(machine.clone());
                let changes = store.sops().allow(&dir, &member, &admin.identities)?;
                report.changed.extend(changes.paths);
            }
        }
    }
    Ok(())
}

struct Context<'a> {
    graph: &'a Graph,
    store: &'a VarsStore,
    answers: &'a Answers,
    admin: &'a Admin,
    recipients: &'a Recipients<'a>,
    staging: &'a Staging,
    confinement: &'a Confinement,
    bash: &'a Path,
    /// Directories of the run's tools that a sandbox must see besides the system ones.
    extra_dirs: &'a [PathBuf],
    interrupted: &'a AtomicBool,
    step: &'a (dyn Fn(&GeneratorKey, GeneratorStep) + Sync),
}

/// A generator's outputs, kept for the generators that depend on it.
type Values = Arc<BTreeMap<String, Plaintext>>;

struct Done {
    values: Values,
    staged: PathBuf,
}

struct Queue {
    ready: VecDeque<usize>,
    waiting_on: Vec<usize>,
    results: Vec<Option<Result<Done, Error>>>,
    remaining: usize,
}

/// Runs `order` on `jobs` workers, each generator once its dependencies in `order` are done.
fn schedule(
    context: &Context<'_>,
    order: &[GeneratorKey],
    jobs: usize,
) -> Vec<Option<Result<Done, Error>>> {
    let index: HashMap<&GeneratorKey, usize> =
        order.iter().enumerate().map(|(i, key)| (key, i)).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
    let mut waiting_on = vec![0; order.len()];
    for (i, key) in order.iter().enumerate() {
        for dependency in &context.graph.get(key).expect("planned").dependencies {
            if let Some(&d) = index.get(dependency) {
                dependents[d].push(i);
                waiting_on[i] += 1;
            }
        }
    }
    let queue = Mutex::new(Queue {
        ready: (0..order.len()).filter(|&i| waiting_on[i] == 0).collect(),
        waiting_on,
        results: (0..order.len()).map(|_| None).collect(),
        remaining: order.len(),
    });
    let wake = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(order.len()) {
            scope.spawn(|| {
                let mut runner = Runner::new(context.confinement, context.bash, context.extra_dirs);
                loop {
                    let (i, dependency_values) = {
                        let mut state = queue.lock().expect("not poisoned");
                        let i = loop {
                            if state.remaining == 0 || context.interrupted.load(Ordering::SeqCst) {
                                wake.notify_all();
                                return;
                            }
                            if let Some(i) = state.ready.pop_front() {
                                break i;
                            }
                            state = wake.wait(state).expect("not poisoned");
                        };
                        let generator = context.graph.get(&order[i]).expect("planned");
                        let mut values = BTreeMap::new();
                        let mut failed = None;
                        for dependency in &generator.dependencies {
                            match index.get(dependency).map(|&d| &state.results[d]) {
                                Some(Some(Ok(done))) => {
                                    values.insert(dependency.clone(), Arc::clone(&done.values));
                                }
                                Some(_) => failed = Some(dependency),
                                None => {}
                            }
                        }
                        if let Some(dependency) = failed {
                            let error = Error::DependencyFailed {
                                placement: order[i].placement.to_string(),
                                generator: order[i].name.clone(),
                                dependency: dependency.to_string(),
                            };
                            finish(&mut state, &dependents, i, Err(error));
                            wake.notify_all();
                            drop(state);
                            (context.step)(&order[i], GeneratorStep::Failed);
                            continue;
                        }
                        (i, values)
                    };
                    (context.step)(&order[i], GeneratorStep::Running);
                    let result = execute(context, &mut runner, &order[i], dependency_values);
                    let outcome = match &result {
                        Ok(_) => GeneratorStep::Generated,
                        Err(_) => GeneratorStep::Failed,
                    };
                    (context.step)(&order[i], outcome);
                    let mut state = queue.lock().expect("not poisoned");
                    finish(&mut state, &dependents, i, result);
                    wake.notify_all();
                }
            });
        }
    });
    queue.into_inner().expect("not poisoned").results
}

fn finish(state: &mut Queue, dependents: &[Vec<usize>], i: usize, result: Result<Done, Error>) {
    state.results[i] = Some(result);
    state.remaining -= 1;
    for &dependent in &dependents[i] {
        state.waiting_on[dependent] -= 1;
        if state.waiting_on[dependent] == 0 {
            state.ready.push_back(dependent);
        }
    }
}

/// Runs one generator and stages its outputs.
fn execute(
    context: &Context<'_>,
    runner: &mut Runner<'_>,
    key: &GeneratorKey,
    mut dependency_values: BTreeMap<GeneratorKey, Values>,
) -> Result<Done, Error> {
    let generator = context.graph.get(key).expect("planned");
    let placement = key.placement.to_string();
    let mut tools = Vec::new();
    for tool in &generator.definition.runtime_inputs {
        let path = sandbox::runtime_input(tool).ok_or_else(|| Error::MissingTool {
            placement: placement.clone(),
            generator: key.name.clone(),
            tool: tool.clone(),
        })?;
        tools.push((tool.clone(), path));
    }
    for dependency in &generator.dependencies {
        if !dependency_values.contains_key(dependency) {
            let values = read_stored(context, dependency)?;
            dependency_values.insert(dependency.clone(), values);
        }
    }
    let job = runner.job()?;
    job.write(Path::new("script"), generator.definition.script.as_bytes())?;
    for (dependency, values) in &dependency_values {
        let dir = Path::new("in").join(&dependency.name);
        job.create_dir(&dir)?;
        for (file, value) in values.iter() {
            job.write(&dir.join(file), value.expose())?;
        }
    }
    for name in generator.definition.prompts.keys() {
        let value = context
            .answers
            .get(key, name)
            .ok_or_else(|| Error::PromptMissing {
                placement: placement.clone(),
                generator: key.name.clone(),
                prompt: name.clone(),
            })?;
        job.write(&Path::new("prompts").join(name), value.as_bytes())?;
    }
    let seconds = generator.definition.timeout_seconds();
    let finished = runner
        .run(&job, &tools, std::time::Duration::from_secs(seconds))
        .map_err(clan_error::io("run the script of", key.dir()))?;
    if finished.timed_out {
        return Err(Error::TimedOut {
            placement,
            generator: key.name.clone(),
            seconds,
        });
    }
    if !finished.success {
        return Err(Error::ScriptFailed {
            placement,
            generator: key.name.clone(),
            status: finished.status,
            stderr: finished.stderr,
        });
    }
    // Outputs are read only as regular files: a link (`ln -s /etc/shadow $out/f`), FIFO,
    // device or directory names the generator and the file, and is never opened.
    let bad_output = |file: &str, source: clan_fs::Error| Error::BadOutput {
        placement: placement.clone(),
        generator: key.name.clone(),
        file: file.to_owned(),
        reason: Box::new(source),
    };
    let out = job.outputs().map_err(|source| bad_output("$out", source))?;
    let files = generator.files();
    let mut values = BTreeMap::new();
    for name in files.keys() {
        let value = match out.read(Path::new(name), clan_fs::DEFAULT_LIMIT) {
            Ok(bytes) => Plaintext::new(bytes),
            Err(error) if !error.is_not_found() => return Err(bad_output(name, error)),
            Err(_)
                if generator
                    .definition
                    .prompts
                    .get(name)
                    .is_some_and(|p| p.persist) =>
            {
                let answer = context.answers.get(key, name).unwrap_or_default();
                Plaintext::new(answer.as_bytes().to_vec())
            }
            Err(_) => {
                let produced: Vec<String> = out
                    .list(Path::new(""))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|entry| entry.name.to_string_lossy().into_owned())
                    .collect();
                return Err(Error::FileNotProduced {
                    placement,
                    generator: key.name.clone(),
                    file: name.clone(),
                    produced,
                });
            }
        };
        values.insert(name.clone(), value);
    }
    drop(job);
    let accesses = files
        .iter()
        .filter(|(_, file)| file.secret)
        .map(|(name, file)| {
            let access = context
                .recipients
                .access(generator.deploy_targets(file), &generator.machines)?;
            Ok((name.as_str(), access))
        })
        .collect::<Result<BTreeMap<_, _>, Error>>()?;
    let outputs: Vec<Output<'_>> = files
        .iter()
        .map(|(name, file)| Output {
            name,
            file,
            value: &values[name],
            access: accesses.get(name.as_str()),
        })
        .collect();
    let validation = validation_hash(&generator.definition.validation);
    let staged = context
        .staging
        .stage_generator(key, &outputs, validation.as_deref())?;
    Ok(Done {
        values: Arc::new(values),
        staged,
    })
}

/// The stored values of a generator that does not run (for `$in`).
fn read_stored(context: &Context<'_>, key: &GeneratorKey) -> Result<Values, Error> {
    let generator: &FleetGenerator = context.graph.get(key).expect("dependencies are resolved");
    let mut values = BTreeMap::new();
    for (name, file) in generator.files() {
        let value = context
            .store
            .read(key, &name, file.secret, &context.admin.identities)?;
        values.insert(name, value);
    }
    Ok(Arc::new(values))
}
