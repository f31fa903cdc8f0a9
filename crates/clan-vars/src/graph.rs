//! The fleet's generators as one graph: each machine's declarations, shared generators merged
//! into one node (differing definitions are an error), dependencies resolved to nodes,
//! cycles refused, and the selection of what `vars generate` runs, in dependency order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::PathBuf;

use clan_config::{Generator, GeneratorFile, PromptType};
use clan_secrets::MachineName;

use crate::Error;

/// Where a generator's outputs live: `vars/shared/` or `vars/per-machine/<machine>/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placement {
    Shared,
    PerMachine(MachineName),
}

impl Placement {
    /// The directory holding the generators of this placement, relative to the clan.
    pub fn dir(&self) -> PathBuf {
        match self {
            Placement::Shared => PathBuf::from("vars/shared"),
            Placement::PerMachine(machine) => {
                PathBuf::from("vars/per-machine").join(machine.as_str())
            }
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Shared => f.write_str("shared"),
            Placement::PerMachine(machine) => write!(f, "machine `{machine}`"),
        }
    }
}

/// One generator of the clan: its name and placement.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GeneratorKey {
    pub placement: Placement,
    pub name: String,
}

impl GeneratorKey {
    /// Where generator `name`, as `machine` declares it (`share` or not), is stored.
    pub fn declared(machine: &MachineName, name: &str, definition: &Generator) -> GeneratorKey {
        let placement = if definition.share {
            Placement::Shared
        } else {
            Placement::PerMachine(machine.clone())
        };
        GeneratorKey {
            placement,
            name: name.to_owned(),
        }
    }

    /// `vars/shared/<name>` or `vars/per-machine/<machine>/<name>`, relative to the clan.
    pub fn dir(&self) -> PathBuf {
        self.placement.dir().join(&self.name)
    }

    /// The directory of one of its files.
    pub fn file_dir(&self, file: &str) -> PathBuf {
        self.dir().join(file)
    }
}

impl fmt::Display for GeneratorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.placement)
    }
}

/// A generator as the fleet declares it.
#[derive(Clone, Debug)]
pub struct FleetGenerator {
    pub key: GeneratorKey,
    pub definition: Generator,
    /// The machines declaring it (one, unless shared), sorted.
    pub machines: Vec<MachineName>,
    /// Its dependencies, resolved.
    pub dependencies: Vec<GeneratorKey>,
}

impl FleetGenerator {
    /// The files it stores: the declared ones plus a file per persisted prompt that is not
    /// declared (secret when the prompt is hidden).
    pub fn files(&self) -> BTreeMap<String, GeneratorFile> {
        stored_files(&self.definition)
    }

    /// The machines its file is deployed to: every declaring machine unless `deploy = false`
    /// or the file is public.
    pub fn deploy_targets(&self, file: &GeneratorFile) -> &[MachineName] {
        if file.secret && file.deploy {
            &self.machines
        } else {
            &[]
        }
    }
}

/// The files a generator stores: the declared ones plus a file per persisted prompt that is
/// not declared (secret when the prompt is hidden).
pub fn stored_files(definition: &Generator) -> BTreeMap<String, GeneratorFile> {
    let mut files = definition.files.clone();
    for (name, prompt) in &definition.prompts {
        if prompt.persist && !files.contains_key(name) {
            let secret = matches!(
                prompt.kind,
                PromptType::Hidden | PromptType::MultilineHidden
            );
            let file: GeneratorFile =
                serde_json::from_value(serde_json::json!({ "secret": secret }))
                    .expect("a generator file with defaults");
            files.insert(name.clone(), file);
        }
    }
    files
}

/// Every generator of the clan, keyed and linked.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    generators: BTreeMap<GeneratorKey, FleetGenerator>,
    by_machine: BTreeMap<MachineName, Vec<GeneratorKey>>,
}

fn check_name(kind: &'static str, name: &str, generator: &str) -> Result<(), Error> {
    if name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\0') {
        return Err(Error::InvalidName {
            kind,
            name: name.to_owned(),
            generator: generator.to_owned(),
        });
    }
    Ok(())
}

fn differences(a: &Generator, b: &Generator) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |name: &str, same: bool| {
        if !same {
            out.push(name.to_owned());
        }
    };
    differ("files", a.files == b.files);
    differ("prompts", a.prompts == b.prompts);
    differ("dependencies", a.dependencies == b.dependencies);
    differ("validation", a.validation == b.validation);
    differ("script", a.script == b.script);
    differ("runtimeInputs", a.runtime_inputs == b.runtime_inputs);
    differ("timeout", a.timeout == b.timeout);
    out
}

impl Graph {
    /// Builds the graph from each machine's generators.
    pub fn build<'a>(
        machines: impl IntoIterator<Item = (MachineName, &'a BTreeMap<String, Generator>)>,
    ) -> Result<Graph, Error> {
        let machines: Vec<_> = machines.into_iter().collect();
        let mut graph = Graph::default();
        let mut shared_names = BTreeSet::new();
        for (machine, generators) in &machines {
            // A machine without generators is still a machine (`vars check` of it is fine).
            graph.by_machine.entry(machine.clone()).or_default();
            for (name, definition) in generators.iter() {
                check_name("generator", name, name)?;
                for file in definition.files.keys().chain(definition.prompts.keys()) {
                    check_name("file or prompt", file, name)?;
                }
                if definition.share {
                    shared_names.insert(name.clone());
                }
                let key = GeneratorKey::declared(machine, name, definition);
                graph
                    .by_machine
                    .entry(machine.clone())
                    .or_default()
                    .push(key.clone());
                match graph.generators.get_mut(&key) {
                    Some(existing) => {
                        let differ = differences(&existing.definition, definition);
                        if !differ.is_empty() {
                            return Err(Error::SharedConflict {
                                generator: name.clone(),
                                first: existing.machines[0].to_string(),
                                second: machine.to_string(),
                                differences: differ,
                            });
                        }
                        existing.machines.push(machine.clone());
                    }
                    None => {
                        graph.generators.insert(
                            key.clone(),
                            FleetGenerator {
                                key,
                                definition: definition.clone(),
                                machines: vec![machine.clone()],
                                dependencies: Vec::new(),
                            },
                        );
                    }
                }
            }
        }
        for (machine, generators) in &machines {
            for (name, definition) in generators.iter() {
                let mut resolved = Vec::new();
                for dependency in &definition.dependencies {
                    let placement = match generators.get(dependency) {
                        Some(dep) if !dep.share => Placement::PerMachine(machine.clone()),
                        Some(_) => Placement::Shared,
                        None if shared_names.contains(dependency) => Placement::Shared,
                        None => {
                            return Err(Error::UnknownDependency {
                                machine: machine.to_string(),
                                generator: name.clone(),
                                dependency: dependency.clone(),
                            })
                        }
                    };
                    if definition.share && placement != Placement::Shared {
                        return Err(Error::SharedDependsOnMachine {
                            machine: machine.to_string(),
                            generator: name.clone(),
                            dependency: dependency.clone(),
                        });
                    }
                    resolved.push(GeneratorKey {
                        placement,
                        name: dependency.clone(),
                    });
                }
                graph
                    .generators
                    .get_mut(&GeneratorKey::declared(machine, name, definition))
                    .expect("inserted above")
                    .dependencies = resolved;
            }
        }
        for list in graph.by_machine.values_mut() {
            list.sort();
        }
        graph.check_cycles()?;
        Ok(graph)
    }

    /// Where the generator at `key` was stored before its `share` setting changed: the
    /// other placement (`vars/shared/<g>`, or `vars/per-machine/<m>/<g>` of each machine
    /// declaring it), unless the clan still declares a generator there.
    pub fn other_placements(&self, key: &GeneratorKey) -> Vec<GeneratorKey> {
        let Some(generator) = self.get(key) else {
            return Vec::new();
        };
        let placements = match &key.placement {
            Placement::PerMachine(_) => vec![Placement::Shared],
            Placement::Shared => generator
                .machines
                .iter()
                .cloned()
                .map(Placement::PerMachine)
                .collect(),
        };
        placements
            .into_iter()
            .map(|placement| GeneratorKey {
                placement,
                name: key.name.clone(),
            })
            .filter(|other| self.get(other).is_none())
            .collect()
    }

    pub fn get(&self, key: &GeneratorKey) -> Option<&FleetGenerator> {
        self.generators.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &FleetGenerator> {
        self.generators.values()
    }

    /// The generators `machine` declares (its own and the shared ones), sorted.
    pub fn of_machine(&self, machine: &MachineName) -> &[GeneratorKey] {
        self.by_machine.get(machine).map_or(&[], Vec::as_slice)
    }

    /// The machines that declare generators.
    pub fn machines(&self) -> impl Iterator<Item = &MachineName> {
        self.by_machine.keys()
    }

    fn check_cycles(&self) -> Result<(), Error> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        let mut marks: BTreeMap<&GeneratorKey, Mark> = BTreeMap::new();
        for start in self.generators.keys() {
            if marks.contains_key(start) {
                continue;
            }
            // Iterative depth-first search; `path` is the current chain.
            let mut path: Vec<(&GeneratorKey, usize)> = vec![(start, 0)];
            marks.insert(start, Mark::Visiting);
            while let Some((key, index)) = path.last_mut() {
                let dependencies = &self.generators[*key].dependencies;
                if let Some(next) = dependencies.get(*index) {
                    *index += 1;
                    match marks.get(next) {
                        Some(Mark::Done) => {}
                        Some(Mark::Visiting) => {
                            let from = path.iter().position(|(k, _)| *k == next).unwrap_or(0);
                            let mut cycle: Vec<String> =
                                path[from..].iter().map(|(k, _)| k.to_string()).collect();
                            cycle.push(next.to_string());
                            return Err(Error::Cycle { cycle });
                        }
                        None => {
                            marks.insert(next, Mark::Visiting);
                            path.push((next, 0));
                        }
                    }
                } else {
                    marks.insert(key, Mark::Done);
                    path.pop();
                }
            }
        }
        Ok(())
    }

    /// Who depends on each generator.
    fn dependents(&self) -> BTreeMap<&GeneratorKey, Vec<&GeneratorKey>> {
        let mut dependents: BTreeMap<&GeneratorKey, Vec<&GeneratorKey>> = BTreeMap::new();
        for generator in self.generators.values() {
            for dependency in &generator.dependencies {
                dependents
                    .entry(dependency)
                    .or_default()
                    .push(&generator.key);
            }
        }
        dependents
    }

    /// What to run, in dependency order. With `requested`, every root runs plus its missing
    /// dependencies; otherwise only the roots that are `missing`. Either way, everything that
    /// depends (transitively, across the clan) on something that runs, runs too.
    pub fn selection(
        &self,
        roots: &[GeneratorKey],
        requested: bool,
        missing: impl Fn(&FleetGenerator) -> bool,
    ) -> Vec<GeneratorKey> {
        let mut selected: BTreeSet<&GeneratorKey> = BTreeSet::new();
        let mut queue: VecDeque<&GeneratorKey> = VecDeque::new();
        for root in roots {
            let Some(generator) = self.generators.get(root) else {
                continue;
            };
            if requested || missing(generator) {
                selected.insert(&generator.key);
                queue.push_back(&generator.key);
            }
        }
        if requested {
            while let Some(key) = queue.pop_front() {
                for dependency in &self.generators[key].dependencies {
                    if !selected.contains(dependency) && missing(&self.generators[dependency]) {
                        selected.insert(dependency);
                        queue.push_back(dependency);
                    }
                }
            }
            queue.extend(selected.iter().copied());
        }
        let dependents = self.dependents();
        while let Some(key) = queue.pop_front() {
            for dependent in dependents.get(key).into_iter().flatten() {
                if selected.insert(dependent) {
                    queue.push_back(dependent);
                }
            }
        }
        self.order(&selected)
    }

    /// `selected` in dependency order (Kahn's algorithm; ties in key order).
    fn order(&self, selected: &BTreeSet<&GeneratorKey>) -> Vec<GeneratorKey> {
        let mut pending: BTreeMap<&GeneratorKey, usize> = selected
            .iter()
            .map(|key| {
                let count = self.generators[*key]
                    .dependencies
                    .iter()
                    .filter(|dependency| selected.contains(dependency))
                    .count();
                (*key, count)
            })
            .collect();
        let dependents = self.dependents();
        let mut ready: BTreeSet<&GeneratorKey> = pending
            .iter()
            .filter(|(_, count)| **count == 0)
            .map(|(key, _)| *key)
            .collect();
        let mut order = Vec::with_capacity(selected.len());
        while let Some(key) = ready.pop_first() {
            pending.remove(key);
            order.push(key.clone());
            for dependent in dependents.get(key).into_iter().flatten() {
                if let Some(count) = pending.get_mut(dependent) {
                    *count -= 1;
                    if *count == 0 {
                        ready.insert(dependent);
                    }
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(json: serde_json::Value) -> Generator {
        serde_json::from_value(json).unwrap()
    }

    fn machine(name: &str) -> MachineName {
        name.parse().unwrap()
    }

    fn build(machines: &[(&str, BTreeMap<String, Generator>)]) -> Result<Graph, Error> {
        Graph::build(machines.iter().map(|(m, g)| (machine(m), g)))
    }

    fn per(machine_name: &str, name: &str) -> GeneratorKey {
        GeneratorKey {
            placement: Placement::PerMachine(machine(machine_name)),
            name: name.into(),
        }
    }

    fn shared(name: &str) -> GeneratorKey {
        GeneratorKey {
            placement: Placement::Shared,
            name: name.into(),
        }
    }

    #[test]
    fn resolves_dependencies_and_orders_them() {
        let gens: BTreeMap<String, Generator> = [
            (
                "a",
                generator(serde_json::json!({"dependencies": ["b", "ca"]})),
            ),
            ("b", generator(serde_json::json!({}))),
            ("ca", generator(serde_json::json!({"share": true}))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let graph = build(&[("m1", gens.clone()), ("m2", gens)]).unwrap();
        let a = graph.get(&per("m1", "a")).unwrap();
        assert_eq!(a.dependencies, vec![per("m1", "b"), shared("ca")]);
        assert_eq!(graph.get(&shared("ca")).unwrap().machines.len(), 2);
        let all: Vec<_> = graph.iter().map(|g| g.key.clone()).collect();
        let order = graph.selection(&all, true, |_| true);
        assert_eq!(order.len(), 5);
        let position = |k: &GeneratorKey| order.iter().position(|o| o == k).unwrap();
        assert!(position(&per("m1", "b")) < position(&per("m1", "a")));
        assert!(position(&shared("ca")) < position(&per("m2", "a")));
    }

    #[test]
    fn missing_selection_adds_dependents_across_the_clan() {
        let gens: BTreeMap<String, Generator> = [
            ("a", generator(serde_json::json!({"dependencies": ["ca"]}))),
            ("ca", generator(serde_json::json!({"share": true}))),
            ("z", generator(serde_json::json!({}))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let graph = build(&[("m1", gens.clone()), ("m2", gens)]).unwrap();
        // Only machine m1 requested, only the shared one missing: both `a`s run after it.
        let roots = graph.of_machine(&machine("m1")).to_vec();
        let order = graph.selection(&roots, false, |g| g.key == shared("ca"));
        assert_eq!(order, vec![shared("ca"), per("m1", "a"), per("m2", "a")]);
        // Requested `a` on m1 with nothing missing: only it.
        let order = graph.selection(&[per("m1", "a")], true, |_| false);
        assert_eq!(order, vec![per("m1", "a")]);
    }

    #[test]
    fn cycles_are_refused() {
        let gens: BTreeMap<String, Generator> = [
            ("a", generator(serde_json::json!({"dependencies": ["b"]}))),
            ("b", generator(serde_json::json!({"dependencies": ["c"]}))),
            ("c", generator(serde_json::json!({"dependencies": ["a"]}))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let error = build(&[("m1", gens)]).unwrap_err();
        let Error::Cycle { cycle } = &error else {
            panic!("{error}")
        };
        assert_eq!(cycle.len(), 4);
        assert_eq!(cycle.first(), cycle.last());
    }

    #[test]
    fn shared_definitions_must_agree() {
        let one = [(
            "s".to_owned(),
            generator(serde_json::json!({"share": true, "script": "a"})),
        )];
        let two = [(
            "s".to_owned(),
            generator(serde_json::json!({"share": true, "script": "b"})),
        )];
        let error = build(&[("m1", one.into()), ("m2", two.into())]).unwrap_err();
        assert!(
            matches!(&error, Error::SharedConflict { differences, .. } if differences == &["script"])
        );
        assert!(error.to_string().contains("`m1` and `m2`"));
    }

    #[test]
    fn bad_names_and_dependencies() {
        let bad = [("../x".to_owned(), generator(serde_json::json!({})))];
        assert!(matches!(
            build(&[("m1", bad.into())]),
            Err(Error::InvalidName { .. })
        ));
        let unknown = [(
            "a".to_owned(),
            generator(serde_json::json!({"dependencies": ["nope"]})),
        )];
        assert!(matches!(
            build(&[("m1", unknown.into())]),
            Err(Error::UnknownDependency { .. })
        ));
        let shared_on_local: BTreeMap<String, Generator> = [
            (
                "s",
                generator(serde_json::json!({"share": true, "dependencies": ["l"]})),
            ),
            ("l", generator(serde_json::json!({}))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert!(matches!(
            build(&[("m1", shared_on_local)]),
            Err(Error::SharedDependsOnMachine { .. })
        ));
    }
}
