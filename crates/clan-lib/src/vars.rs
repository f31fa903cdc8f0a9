//! Vars operations over `clan-vars`: generate (prompts answered by the front end's
//! [`Prompter`], all of them before any generator runs), check, fix, list, get, set, export,
//! import and keygen. Mutations hold the clan lock and are committed to git (one commit per
//! operation) unless `CLAN_NO_COMMIT=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clan_secrets::{Admin, Identities, KeySources, MachineName, Plaintext, Recipient, UserName};
use clan_vars::{
    ops, Answers, Confinement, GeneratorKey, Graph, Plan, PromptRequest, RunOptions, Selection,
    VarsStore,
};
use zeroize::Zeroizing;

use crate::change::{self, Change};
use crate::{Error, Progress};

/// What a vars operation may change.
const VARS_SCOPE: &[&str] = &["vars", "sops"];

/// Answers the prompts of generators about to run: a terminal, a GUI form, a test.
pub trait Prompter {
    /// Whether [`Prompter::ask`] can answer at all (a person is at hand). Without one, a
    /// deploy leaves out the machines whose prompts have no answer in the prompt values.
    fn interactive(&self) -> bool;
    /// Answers given up front, read only when some generator about to run has prompts
    /// (and, for a file or stdin, only once: they are asked for again in one deploy).
    fn prompt_values(
        &mut self,
    ) -> Result<Option<&PromptValues>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(None)
    }
    /// The answer to `request`.
    fn ask(
        &mut self,
        request: &PromptRequest,
    ) -> Result<Zeroizing<String>, Box<dyn std::error::Error + Send + Sync>>;
}

/// A [`Prompter`] with nobody at hand: every prompt must be answered by prompt values.
pub struct NoPrompts;

impl Prompter for NoPrompts {
    fn interactive(&self) -> bool {
        false
    }
    fn ask(
        &mut self,
        _request: &PromptRequest,
    ) -> Result<Zeroizing<String>, Box<dyn std::error::Error + Send + Sync>> {
        Err("no one to ask".into())
    }
}

/// Prompt answers given up front, `{"<generator>": {"<prompt>": "value"}}` as JSON.
pub struct PromptValues {
    pub json: Zeroizing<Vec<u8>>,
    /// Where they came from, for errors (`stdin`, a file name).
    pub source: String,
}

/// What to generate.
#[derive(Default)]
pub struct GenerateRequest {
    /// Machines whose generators to run (empty: all).
    pub machines: Vec<MachineName>,
    /// Only this generator (even if complete), what it needs and what depends on it.
    pub generator: Option<String>,
    /// Run complete generators again and ask persisted prompts again.
    pub regenerate: bool,
    /// Run scripts without bubblewrap.
    pub no_sandbox: bool,
    /// Scripts to run at once (default: the number of cores).
    pub jobs: Option<usize>,
}

/// What a generation run did. Serialised for front ends as `{"runs": [{"machine",
/// "generator"}], "failed": [{"machine", "generator", "error", "hint"}]}` (`machine` null
/// for a shared generator).
#[derive(Debug)]
pub struct Generated {
    /// Generators stored, in order.
    pub runs: Vec<GeneratorKey>,
    /// Generators that failed or were skipped because a dependency failed.
    pub failed: Vec<(GeneratorKey, clan_vars::Error)>,
}

impl serde::Serialize for Generated {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use clan_error::Hint as _;
        #[derive(serde::Serialize)]
        struct Run {
            machine: Option<String>,
            generator: String,
        }
        #[derive(serde::Serialize)]
        struct Failure {
            #[serde(flatten)]
            run: Run,
            error: String,
            hint: Option<String>,
        }
        #[derive(serde::Serialize)]
        struct Document {
            runs: Vec<Run>,
            failed: Vec<Failure>,
        }
        let run = |key: &GeneratorKey| Run {
            machine: crate::events::machine_of(key),
            generator: key.name.clone(),
        };
        Document {
            runs: self.runs.iter().map(run).collect(),
            failed: self
                .failed
                .iter()
                .map(|(key, error)| Failure {
                    run: run(key),
                    error: error.to_string(),
                    hint: error.hint(),
                })
                .collect(),
        }
        .serialize(serializer)
    }
}

/// One var of a machine as listings show it; `value` only for existing public vars.
#[derive(Debug, serde::Serialize)]
pub struct VarEntry {
    #[serde(skip)]
    pub id: String,
    pub generator: String,
    pub file: String,
    pub shared: bool,
    pub secret: bool,
    pub exists: bool,
    pub value: Option<String>,
}

/// The clan's generators and where the admin's keys are.
pub struct Vars {
    store: VarsStore,
    graph: Graph,
    sources: KeySources,
}

impl Vars {
    /// The vars of the clan in `clan_dir`, evaluated now.
    pub fn open(clan_dir: &Path, sources: KeySources) -> Result<Vars, Error> {
        let fleet = clan_eval::Fleet::open(clan_dir)?;
        Vars::of(clan_dir, &fleet, sources)
    }

    /// The vars of `fleet`, the clan evaluated from `clan_dir`.
    pub fn of(
        clan_dir: &Path,
        fleet: &clan_eval::Fleet,
        sources: KeySources,
    ) -> Result<Vars, Error> {
        let machines = fleet.machines()?;
        let mut generators = Vec::new();
        for machine in &machines {
            generators.push((machine.summary.name.clone(), &machine.config.generators));
        }
        let graph = Graph::build(generators.iter().map(|(name, g)| (name.clone(), *g)))?;
        Ok(Vars {
            store: VarsStore::new(clan_dir),
            graph,
            sources,
        })
    }

    pub fn store(&self) -> &VarsStore {
        &self.store
    }

    /// Fails unless `machine` is a machine of the clan.
    pub fn machine(&self, machine: &MachineName) -> Result<(), Error> {
        if self.graph.machines().any(|m| m == machine) {
            return Ok(());
        }
        Err(clan_vars::Error::UnknownMachine {
            machine: machine.to_string(),
        }
        .into())
    }

    /// `machines`, each checked, or every machine when none is named.
    fn machines_or_all(&self, machines: &[MachineName]) -> Result<Vec<MachineName>, Error> {
        if machines.is_empty() {
            return Ok(self.graph.machines().cloned().collect());
        }
        for machine in machines {
            self.machine(machine)?;
        }
        Ok(machines.to_vec())
    }

    /// The admin's identities; none is an error that says how to create one.
    pub fn identities(&self) -> Result<Identities, Error> {
        let identities = Identities::discover(&self.sources)?;
        if identities.public_keys().is_empty() {
            return Err(Error::NoAdminKey {
                source: clan_secrets::Error::NoAdminKey {
                    searched: self.sources.describe(),
                },
            });
        }
        Ok(identities)
    }

    pub fn admin(&self) -> Result<Admin, Error> {
        Ok(self
            .store
            .sops()
            .admin(self.identities()?, &self.sources.describe())?)
    }

    fn lock(&self, progress: &dyn Progress) -> Result<Change, Error> {
        change::begin(self.store.clan_dir(), VARS_SCOPE, progress)
    }

    /// Runs the generators `request` selects whose vars are missing or outdated (or all of
    /// them with `regenerate`) and what depends on them, under the clan lock, in one commit;
    /// `None` when nothing is missing.
    pub fn generate(
        &self,
        request: &GenerateRequest,
        prompter: &mut dyn Prompter,
        progress: &dyn Progress,
    ) -> Result<Option<Generated>, Error> {
        for machine in &request.machines {
            self.machine(machine)?;
        }
        let selection = Selection {
            machines: request.machines.clone(),
            generator: request.generator.clone(),
            regenerate: request.regenerate,
        };
        let options = RunOptions {
            confinement: Confinement::detect(!request.no_sandbox)?,
            jobs: request.jobs.unwrap_or_else(cores),
        };
        self.run(&selection, &options, prompter, progress)
    }

    fn run(
        &self,
        selection: &Selection,
        options: &RunOptions,
        prompter: &mut dyn Prompter,
        progress: &dyn Progress,
    ) -> Result<Option<Generated>, Error> {
        let lock = change::lock(self.store.clan_dir(), progress)?;
        let plan = Plan::new(&self.graph, &self.store, selection)?;
        if plan.order.is_empty() {
            return Ok(None);
        }
        let admin = self.admin()?;
        let mut answers = Answers::default();
        let requests = plan.prompts(&self.graph, &self.store, Some(&admin), &mut answers)?;
        if !requests.is_empty() {
            fill_from_prompt_values(&requests, &mut answers, prompter)?;
            ask_remaining(&requests, &mut answers, prompter)?;
        }
        lock.begin(VARS_SCOPE)?;
        let step = |key: &GeneratorKey, step| progress.event(crate::Event::generator(key, step));
        let report = clan_vars::generate::run(
            &self.graph,
            &self.store,
            &plan,
            &answers,
            &admin,
            options,
            &step,
        )?;
        let mut unique: Vec<&str> = report.generated.iter().map(|k| k.name.as_str()).collect();
        unique.sort_unstable();
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
        Ok(Some(Generated {
            runs: report.generated,
            failed: report.failed,
        }))
    }

    /// The machines of `selection` that a generator still to run needs an answer for which
    /// `prompt_values` has none, each with the reason (a shared generator's prompt blocks
    /// every machine using it).
    fn unanswered_machines(
        &self,
        fleet: &clan_eval::Fleet,
        selection: &Selection,
        prompter: &mut dyn Prompter,
    ) -> Result<BTreeMap<String, String>, Error> {
        let plan = Plan::new(&self.graph, &self.store, selection)?;
        let mut answers = Answers::default();
        let admin = self.admin().ok();
        let requests = plan.prompts(&self.graph, &self.store, admin.as_ref(), &mut answers)?;
        if !requests.is_empty() {
            fill_from_prompt_values(&requests, &mut answers, prompter)?;
        }
        let mut blocked = BTreeMap::new();
        for request in requests.iter().filter(|r| !answers.contains(r)) {
            let key = &request.generator;
            let reason = format!(
                "generator `{key}` asks for `{}` and no answer is at hand: run `clan vars \
                 generate` on a terminal, or pass the answer with --prompt-values",
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

    /// What is wrong with the vars of `machines` (all when empty), machine by machine;
    /// machines without problems are left out.
    pub fn check(
        &self,
        machines: &[MachineName],
        progress: &dyn Progress,
    ) -> Result<Vec<(MachineName, Vec<ops::Problem>)>, Error> {
        let machines = self.machines_or_all(machines)?;
        change::recover_if_interrupted(self.store.clan_dir(), progress)?;
        let admin = self.admin()?;
        let mut found = Vec::new();
        for machine in machines {
            let problems = ops::check(&self.graph, &self.store, &machine, &admin.user)?;
            if !problems.is_empty() {
                found.push((machine, problems));
            }
        }
        Ok(found)
    }

    /// Re-links and re-encrypts the secret vars of `machines` (all when empty) to who should
    /// read them, in one commit. Returns the paths changed.
    pub fn fix(
        &self,
        machines: &[MachineName],
        progress: &dyn Progress,
    ) -> Result<Vec<PathBuf>, Error> {
        let machines = self.machines_or_all(machines)?;
        let lock = self.lock(progress)?;
        let admin = self.admin()?;
        let mut paths = Vec::new();
        let mut messages = Vec::new();
        for machine in &machines {
            let changes = ops::fix(&self.graph, &self.store, machine, &admin)?;
            paths.extend(changes.paths);
            messages.push(changes.message);
        }
        let message = match messages.as_slice() {
            [one] => one.clone(),
            _ => format!(
                "vars: fix secrets of machines {}",
                machines
                    .iter()
                    .map(MachineName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        lock.commit(&paths, &message)?;
        Ok(paths)
    }

    /// The vars of `machine`; secret values are never read.
    pub fn list(&self, machine: &MachineName) -> Result<Vec<VarEntry>, Error> {
        self.machine(machine)?;
        Ok(ops::list(&self.graph, &self.store, machine)
            .into_iter()
            .map(|var| {
                let value = (!var.declaration.secret && var.exists)
                    .then(|| self.store.read_public(&var.generator, &var.file).ok())
                    .flatten()
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
                VarEntry {
                    id: var.id(),
                    generator: var.generator.name.clone(),
                    shared: var.generator.placement == clan_vars::Placement::Shared,
                    secret: var.declaration.secret,
                    exists: var.exists,
                    file: var.file,
                    value,
                }
            })
            .collect())
    }

    /// The value of var `id` (`<generator>/<file>`) of `machine`; a secret one is decrypted
    /// with the admin's key.
    pub fn get(&self, machine: &MachineName, id: &str) -> Result<Plaintext, Error> {
        self.machine(machine)?;
        let var = ops::find(&self.graph, machine, id)?;
        let identities = if var.declaration.secret {
            self.identities()?
        } else {
            Identities::default()
        };
        Ok(ops::get(&self.store, &var, &identities)?)
    }

    /// The full id (`<generator>/<file>`) of var `id` of `machine`, checked to exist.
    pub fn find(&self, machine: &MachineName, id: &str) -> Result<String, Error> {
        self.machine(machine)?;
        Ok(ops::find(&self.graph, machine, id)?.id())
    }

    /// Sets var `id` of `machine` to `value`.
    pub fn set(
        &self,
        machine: &MachineName,
        id: &str,
        value: &Plaintext,
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        self.machine(machine)?;
        let var = ops::find(&self.graph, machine, id)?;
        let admin = self.admin()?;
        let lock = self.lock(progress)?;
        let changes = ops::set(&self.graph, &self.store, &var, value, &admin)?;
        lock.commit(&changes.paths, &changes.message)
    }

    /// Writes every var, decrypted, into the new directory `directory` (0700); returns how
    /// many.
    pub fn export(&self, directory: &Path) -> Result<usize, Error> {
        let identities = self.identities()?;
        Ok(ops::export(
            &self.graph,
            &self.store,
            directory,
            &identities,
        )?)
    }

    /// Reads a directory written by [`Vars::export`] back into the clan.
    pub fn import(&self, directory: &Path, progress: &dyn Progress) -> Result<(), Error> {
        let admin = self.admin()?;
        let lock = self.lock(progress)?;
        let changes = ops::import(&self.graph, &self.store, directory, &admin)?;
        lock.commit(&changes.paths, &changes.message)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Fills `answers` from the prompter's prompt values, if it has any.
fn fill_from_prompt_values(
    requests: &[PromptRequest],
    answers: &mut Answers,
    prompter: &mut dyn Prompter,
) -> Result<(), Error> {
    let values = prompter
        .prompt_values()
        .map_err(|source| Error::PromptValues { source })?;
    if let Some(values) = values {
        answers.fill_from_json(&values.json, &values.source, requests)?;
    }
    Ok(())
}

/// Asks `prompter` for the prompts not answered yet; with nobody to ask, that is an error.
fn ask_remaining(
    requests: &[PromptRequest],
    answers: &mut Answers,
    prompter: &mut dyn Prompter,
) -> Result<(), Error> {
    for request in requests {
        if answers.contains(request) {
            continue;
        }
        let key = &request.generator;
        if !prompter.interactive() {
            return Err(clan_vars::Error::PromptMissing {
                placement: key.placement.to_string(),
                generator: key.name.clone(),
                prompt: request.name.clone(),
            }
            .into());
        }
        let value = prompter.ask(request).map_err(|source| Error::Prompt {
            generator: key.to_string(),
            prompt: request.name.clone(),
            source,
        })?;
        answers.insert(key.clone(), &request.name, value);
    }
    Ok(())
}

/// What [`generate_missing`] did before a deploy.
#[derive(Debug, Default)]
pub struct Missing {
    /// What ran, when anything did.
    pub generated: Option<Generated>,
    /// Machines left out because a prompt has no answer at hand, with the reason.
    pub unanswered: BTreeMap<String, String>,
}

/// Generates what `machines` still miss (and what depends on it), as `generate` does:
/// prompts first, one commit. When the prompter is not interactive, machines whose
/// generators ask for an answer its prompt values lack are left out, returned by name with
/// the reason, for the deploy to fail them alone.
pub fn generate_missing(
    clan_dir: &Path,
    fleet: &clan_eval::Fleet,
    machines: &[MachineName],
    no_sandbox: bool,
    prompter: &mut dyn Prompter,
    progress: &dyn Progress,
) -> Result<Missing, Error> {
    let vars = Vars::of(clan_dir, fleet, KeySources::from_env())?;
    let mut selection = Selection {
        machines: machines.to_vec(),
        generator: None,
        regenerate: false,
    };
    let unanswered = if prompter.interactive() {
        BTreeMap::new()
    } else {
        vars.unanswered_machines(fleet, &selection, prompter)?
    };
    if !unanswered.is_empty() {
        selection
            .machines
            .retain(|m| !unanswered.contains_key(m.as_str()));
        if selection.machines.is_empty() {
            return Ok(Missing {
                generated: None,
                unanswered,
            });
        }
    }
    let options = RunOptions {
        confinement: Confinement::detect(!no_sandbox)?,
        jobs: cores(),
    };
    let generated = vars.run(&selection, &options, prompter, progress)?;
    Ok(Missing {
        generated,
        unanswered,
    })
}

/// The logged-in user: `$USER`, else the passwd entry of this process's user id (as
/// clan-core's `getpass.getuser()` falls back to it).
pub fn login_user() -> Result<UserName, Error> {
    let uid = nix::unistd::Uid::current();
    let name = match std::env::var("USER").ok().filter(|name| !name.is_empty()) {
        Some(name) => name,
        None => nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|user| user.name)
            .ok_or(Error::NoUserName { uid: uid.as_raw() })?,
    };
    name.parse()
        .map_err(|source| Error::BadUserName { name, source })
}

/// What [`keygen`] did.
#[derive(Debug)]
pub struct Keygen {
    /// The key created in this key file, when the admin had none.
    pub created: Option<(PathBuf, Recipient)>,
    /// The admin's sops user, and whether it was created now.
    pub user: UserName,
    pub user_created: bool,
}

/// Creates the admin's age key unless one exists, and the sops user `user` (default: the
/// logged-in user) with its public keys unless a user already has them.
pub fn keygen(
    clan_dir: &Path,
    sources: &KeySources,
    user: Option<UserName>,
    progress: &dyn Progress,
) -> Result<Keygen, Error> {
    let user = match user {
        Some(user) => user,
        None => login_user()?,
    };
    let lock = change::begin(clan_dir, &["sops"], progress)?;
    let store = VarsStore::new(clan_dir);
    let done = ops::keygen(&store, sources, &user)?;
    let (user, user_created) = match &done.user_added {
        Some(changes) => {
            lock.commit(&changes.paths, &changes.message)?;
            (user, true)
        }
        None => {
            let admin = store
                .sops()
                .admin(Identities::discover(sources)?, "your key files")?;
            (admin.user, false)
        }
    };
    Ok(Keygen {
        created: done.created,
        user,
        user_created,
    })
}
