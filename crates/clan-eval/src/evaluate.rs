//! The evaluation proper: resolve each instance's members and settings, run the services in
//! two phases (exports first, then services that read exports), and merge each machine's
//! fragments into its MachineConfig.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use indexmap::IndexMap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use clan_config::{Fragment, MachineConfig};
use clan_inventory::{
    did_you_mean, Instance, InstanceName, Inventory, LoadedInventory, MachineClass, MachineName,
    RoleName, ServiceName, TagName,
};
use clan_service::{CallOutput, InstanceCall, MachineCall, Service, SharedValue};

use crate::error::Error;
use crate::services::Services;
use crate::settings::{deep_merge, SettingsSchema};

/// A machine's place in the fleet, without its configuration (cheap to list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineSummary {
    pub name: MachineName,
    pub class: MachineClass,
    /// Declared tags; `all` and the class are implied.
    pub tags: Vec<TagName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_host: Option<String>,
    /// `(instance, role)` memberships.
    pub roles: Vec<Membership>,
}

impl MachineSummary {
    /// Whether the machine carries `tag`: a declared one, `all`, or its class name.
    pub fn has_tag(&self, tag: &str) -> bool {
        tag == "all" || tag == self.class.as_str() || self.tags.iter().any(|t| t == tag)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub instance: InstanceName,
    pub service: ServiceName,
    pub role: RoleName,
}

/// A machine with its settings per instance and role, and its merged configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluatedMachine {
    #[serde(flatten)]
    pub summary: MachineSummary,
    /// instance → role → complete settings.
    pub settings: BTreeMap<String, BTreeMap<String, Value>>,
    pub config: MachineConfig,
    /// What its hardware report (`machines/<m>/facter.json`) says, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<clan_facter::Facts>,
}

/// Fleet-wide results of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSummary {
    pub meta: clan_inventory::Meta,
    pub machines: IndexMap<MachineName, MachineSummary>,
    pub instances: IndexMap<InstanceName, InstanceSummary>,
    /// `instances.<i>.instance` and `instances.<i>.machines.<m>`.
    pub exports: Value,
}

/// A service instance: its service and the machines of each role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSummary {
    pub service: ServiceName,
    pub roles: IndexMap<RoleName, Vec<MachineName>>,
}

/// Public var values: `{"per-machine": {m: {gen: {file: value}}}, "shared": {gen: {file: value}}}`.
pub type PublicVars = Value;

/// One member of one role of one instance, settings complete.
struct Member<'a> {
    machine: &'a MachineName,
    settings: Value,
}

struct ResolvedRole<'a> {
    role: RoleName,
    members: Vec<Member<'a>>,
}

struct ResolvedInstance<'a> {
    name: &'a InstanceName,
    service_name: &'a ServiceName,
    service: &'a Service,
    roles: Vec<ResolvedRole<'a>>,
    /// The `ctx.roles` value every call of this instance shares.
    roles_value: SharedValue,
}

fn machine_tags(machine: &clan_inventory::Machine) -> impl Iterator<Item = &str> {
    machine
        .tags
        .iter()
        .map(|tag| tag.as_str())
        .chain(["all", machine.machine_class.as_str()])
}

/// Each machine's hardware facts as services see them (`ctx.machine.hardware`).
type HardwareValues = BTreeMap<String, Value>;

/// `ctx.machine`: the machine's name, class, tags, target and hardware facts (`None` without
/// a report).
fn machine_value(
    name: &MachineName,
    machine: &clan_inventory::Machine,
    hardware: &HardwareValues,
) -> Value {
    json!({
        "name": name.as_str(),
        "class": machine.machine_class.as_str(),
        "tags": machine.tags,
        "targetHost": machine.deploy.target_host,
        "hardware": hardware.get(name.as_str()).unwrap_or(&Value::Null),
    })
}

fn resolve_instance<'a>(
    loaded: &'a LoadedInventory,
    services: &'a Services,
    name: &'a InstanceName,
    instance: &'a Instance,
) -> Result<ResolvedInstance<'a>, Error> {
    let inventory = &loaded.inventory;
    let path = loaded.source_of("instances", name);
    let service_name = instance.module.name.as_str();
    let service = services.get(service_name).ok_or_else(|| Error::Invalid {
        path: path.clone(),
        key: format!("instances.{name}.module.name"),
        message: format!("unknown service `{service_name}`"),
        hint: did_you_mean(service_name, services.keys().map(String::as_str))
            .or_else(|| Some("`clan services list` shows the services".to_owned())),
    })?;
    let mut roles = Vec::new();
    let mut roles_json = serde_json::Map::new();
    for (role_name, role) in &instance.roles {
        let role_def = service.roles.get(role_name).ok_or_else(|| Error::Invalid {
            path: path.clone(),
            key: format!("instances.{name}.roles.{role_name}"),
            message: format!("service `{service_name}` has no role `{role_name}`"),
            hint: did_you_mean(role_name.as_str(), service.roles.keys().map(|r| r.as_str()))
                .or_else(|| {
                    let known: Vec<&str> = service.roles.keys().map(|r| r.as_str()).collect();
                    Some(format!("its roles are: {}", known.join(", ")))
                }),
        })?;
        let schema = SettingsSchema::compile(&role_def.interface).map_err(|message| Error::Invalid {
            path: path.clone(),
            key: format!("instances.{name}.roles.{role_name}"),
            message: format!("service `{service_name}` role `{role_name}` has an invalid settings schema: {message}"),
            hint: None,
        })?;
        let mut members = Vec::new();
        let mut machines_json = serde_json::Map::new();
        for (machine_name, machine) in &inventory.machines {
            let direct = role.machines.get(machine_name);
            let tags: Vec<&Value> = role
                .tags
                .iter()
                .filter(|(tag, _)| machine_tags(machine).any(|t| t == tag.as_str()))
                .map(|(_, settings)| settings.unwrap_or(&Value::Null))
                .collect();
            let is_member = direct.is_some()
                || role
                    .tags
                    .iter()
                    .any(|(tag, _)| machine_tags(machine).any(|t| t == tag.as_str()));
            if !is_member {
                continue;
            }
            let mut settings = role.settings.clone();
            for tag_settings in tags.into_iter().filter(|s| !s.is_null()) {
                deep_merge(&mut settings, tag_settings);
            }
            if let Some(direct) = direct {
                deep_merge(&mut settings, &direct.settings);
            }
            let settings = schema
                .complete(settings)
                .map_err(|violation| Error::Invalid {
                    path: path.clone(),
                    key: format!(
                        "instances.{name}.roles.{role_name}.settings{}{}",
                        if violation.key.is_empty() { "" } else { "." },
                        violation.key
                    ),
                    message: format!("machine `{machine_name}`: {}", violation.message),
                    hint: violation.hint,
                })?;
            // The deploy target lets a member reach the others (data-mesher's bootstrap).
            machines_json.insert(
                machine_name.to_string(),
                json!({"settings": settings, "targetHost": machine.deploy.target_host}),
            );
            members.push(Member {
                machine: machine_name,
                settings,
            });
        }
        roles_json.insert(
            role_name.to_string(),
            json!({"machines": machines_json, "settings": role.settings}),
        );
        roles.push(ResolvedRole {
            role: role_name.clone(),
            members,
        });
    }
    let roles_value = SharedValue::new(&Value::Object(roles_json));
    Ok(ResolvedInstance {
        name,
        service_name: &instance.module.name,
        service,
        roles,
        roles_value,
    })
}

/// The outputs of one instance's calls: `(machine, role, output)`.
type InstanceOutputs<'a> = Vec<(&'a MachineName, RoleName, CallOutput)>;

fn run_instance<'a>(
    instance: &ResolvedInstance<'a>,
    inventory: &Inventory,
    hardware: &HardwareValues,
    shared: &clan_service::Shared<'_>,
) -> Result<InstanceOutputs<'a>, Error> {
    let machines: Vec<Value> = instance
        .roles
        .iter()
        .flat_map(|role| role.members.iter())
        .map(|member| {
            machine_value(
                member.machine,
                &inventory.machines[member.machine],
                hardware,
            )
        })
        .collect();
    let mut machine_values = machines.iter();
    let calls: Vec<InstanceCall<'_>> = instance
        .roles
        .iter()
        .flat_map(|role| role.members.iter().map(move |member| (role, member)))
        .map(|(role, member)| InstanceCall {
            instance: instance.name,
            role: &role.role,
            machine: machine_values.next().expect("one machine value per member"),
            settings: &member.settings,
            roles: &instance.roles_value,
        })
        .collect();
    let outputs = instance.service.call_instances(&calls, shared)?;
    let members = instance.roles.iter().flat_map(|role| {
        role.members
            .iter()
            .map(move |member| (member.machine, role.role.clone()))
    });
    Ok(members
        .zip(outputs)
        .map(|((machine, role), output)| (machine, role, output))
        .collect())
}

/// Evaluates the whole clan: every machine's configuration and the fleet summary.
pub fn evaluate(
    loaded: &LoadedInventory,
    services: &Services,
    machine_modules: &BTreeMap<String, Service>,
    hardware: &BTreeMap<String, clan_facter::Facts>,
    vars: &PublicVars,
) -> Result<(FleetSummary, Vec<EvaluatedMachine>), Error> {
    let inventory = &loaded.inventory;
    let hardware_values: HardwareValues = hardware
        .iter()
        .map(|(machine, facts)| {
            let value = serde_json::to_value(facts).expect("facts are plain data");
            (machine.clone(), value)
        })
        .collect();
    let resolved: Vec<ResolvedInstance<'_>> = inventory
        .instances
        .iter()
        .map(|(name, instance)| resolve_instance(loaded, services, name, instance))
        .collect::<Result<_, _>>()?;
    let meta =
        SharedValue::new(&serde_json::to_value(&inventory.meta).expect("meta is plain data"));
    let vars = SharedValue::new(vars);

    let mut exports = json!({"instances": {}});
    let mut outputs: Vec<(usize, InstanceOutputs<'_>)> = Vec::new();
    let mut machine_outputs: Vec<(String, String, CallOutput)> = Vec::new();
    for phase_reads_exports in [false, true] {
        let exports_value = SharedValue::new(&exports);
        let shared = clan_service::Shared {
            meta: &meta,
            vars: &vars,
            exports: &exports_value,
        };
        let phase: Vec<(usize, InstanceOutputs<'_>)> = resolved
            .par_iter()
            .enumerate()
            .filter(|(_, instance)| instance.service.manifest.reads_exports == phase_reads_exports)
            .map(|(index, instance)| {
                run_instance(instance, inventory, &hardware_values, &shared).map(|out| (index, out))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<Result<_, _>>()?;
        for (index, instance_outputs) in &phase {
            collect_exports(&mut exports, resolved[*index].name, instance_outputs);
        }
        outputs.extend(phase);
        machine_outputs.extend(run_per_machine(
            inventory,
            &hardware_values,
            &resolved,
            phase_reads_exports,
            &shared,
        )?);
    }
    let exports_value = SharedValue::new(&exports);
    let shared = clan_service::Shared {
        meta: &meta,
        vars: &vars,
        exports: &exports_value,
    };
    for (machine, module) in machine_modules {
        let value = machine_value(
            &machine.parse().expect("checked machine name"),
            &inventory.machines[machine.as_str()],
            &hardware_values,
        );
        if let Some(output) = module.call_machine(
            &MachineCall {
                machine: &value,
                instances: &json!({}),
            },
            &shared,
        )? {
            machine_outputs.push((
                machine.clone(),
                format!("machines/{machine}/config.star"),
                output,
            ));
        }
    }
    outputs.sort_by_key(|(index, _)| *index);

    let machines = assemble_machines(inventory, hardware, &resolved, outputs, machine_outputs)?;
    let summary = FleetSummary {
        meta: inventory.meta.clone(),
        machines: machines
            .iter()
            .map(|m| (m.summary.name.clone(), m.summary.clone()))
            .collect(),
        instances: resolved
            .iter()
            .map(|instance| {
                let roles = instance
                    .roles
                    .iter()
                    .map(|role| {
                        let members = role.members.iter().map(|m| m.machine.clone());
                        (role.role.clone(), members.collect())
                    })
                    .collect();
                let summary = InstanceSummary {
                    service: instance.service_name.clone(),
                    roles,
                };
                (instance.name.clone(), summary)
            })
            .collect(),
        exports,
    };
    Ok((summary, machines))
}

fn collect_exports(exports: &mut Value, instance: &str, outputs: &InstanceOutputs<'_>) {
    let slot = &mut exports["instances"][instance];
    for (machine, _, output) in outputs {
        if !output.exports.is_null() {
            let machine_slot = &mut slot["machines"][machine.as_str()];
            if machine_slot.is_null() {
                *machine_slot = json!({});
            }
            deep_merge(machine_slot, &output.exports);
        }
        if !output.instance_exports.is_null() {
            if slot["instance"].is_null() {
                slot["instance"] = json!({});
            }
            deep_merge(&mut slot["instance"], &output.instance_exports);
        }
    }
    if slot.is_null() {
        *slot = json!({});
    }
}

/// Each service's `per_machine`, once per machine that is in one of its instances.
fn run_per_machine(
    inventory: &Inventory,
    hardware: &HardwareValues,
    resolved: &[ResolvedInstance<'_>],
    phase_reads_exports: bool,
    shared: &clan_service::Shared<'_>,
) -> Result<Vec<(String, String, CallOutput)>, Error> {
    // service name → machine → {instance: {roles: {role: {settings}}}}
    let mut per_service: BTreeMap<&str, (&Service, BTreeMap<&MachineName, Value>)> =
        BTreeMap::new();
    for instance in resolved
        .iter()
        .filter(|i| i.service.manifest.reads_exports == phase_reads_exports)
    {
        let entry = per_service
            .entry(instance.service.name())
            .or_insert_with(|| (instance.service, BTreeMap::new()));
        for role in &instance.roles {
            for member in &role.members {
                let instances = entry.1.entry(member.machine).or_insert_with(|| json!({}));
                instances[instance.name.as_str()]["roles"][role.role.as_str()] =
                    json!({"settings": member.settings});
            }
        }
    }
    let mut outputs = Vec::new();
    for (service_name, (service, machines)) in per_service {
        for (machine, instances) in machines {
            let value = machine_value(machine, &inventory.machines[machine], hardware);
            if let Some(output) = service.call_machine(
                &MachineCall {
                    machine: &value,
                    instances: &instances,
                },
                shared,
            )? {
                outputs.push((
                    machine.to_string(),
                    format!("service `{service_name}` (per_machine)"),
                    output,
                ));
            }
        }
    }
    Ok(outputs)
}

fn assemble_machines(
    inventory: &Inventory,
    hardware: &BTreeMap<String, clan_facter::Facts>,
    resolved: &[ResolvedInstance<'_>],
    outputs: Vec<(usize, InstanceOutputs<'_>)>,
    machine_outputs: Vec<(String, String, CallOutput)>,
) -> Result<Vec<EvaluatedMachine>, Error> {
    // (source, fragment as returned) per machine, parsed below where the machine is named.
    let mut fragments: BTreeMap<&str, Vec<(String, Value)>> = BTreeMap::new();
    let mut roles: BTreeMap<&str, Vec<Membership>> = BTreeMap::new();
    let mut settings: BTreeMap<&str, BTreeMap<String, BTreeMap<String, Value>>> = BTreeMap::new();
    for (index, instance_outputs) in outputs {
        let instance = &resolved[index];
        for (machine, role, output) in instance_outputs {
            let source = format!(
                "instance `{}` (service {}, role {role})",
                instance.name,
                instance.service.name()
            );
            fragments
                .entry(machine.as_str())
                .or_default()
                .push((source, output.config));
            roles.entry(machine.as_str()).or_default().push(Membership {
                instance: instance.name.clone(),
                service: instance.service_name.clone(),
                role: role.clone(),
            });
        }
        for role in &instance.roles {
            for member in &role.members {
                settings
                    .entry(member.machine.as_str())
                    .or_default()
                    .entry(instance.name.to_string())
                    .or_default()
                    .insert(role.role.to_string(), member.settings.clone());
            }
        }
    }
    let mut by_machine: BTreeMap<String, Vec<(String, Value)>> = fragments
        .into_iter()
        .map(|(machine, fragments)| (machine.to_owned(), fragments))
        .collect();
    for (machine, source, output) in machine_outputs {
        by_machine
            .entry(machine)
            .or_default()
            .push((source, output.config));
    }
    let work: Vec<_> = inventory
        .machines
        .iter()
        .map(|(name, machine)| {
            (
                name,
                machine,
                by_machine.remove(name.as_str()).unwrap_or_default(),
            )
        })
        .collect();
    // Collected in full before the first error is taken: rayon's short-circuiting collect
    // would report whichever machine failed first in time, a different one per run.
    work.into_par_iter()
        .map(|(name, machine, fragments)| {
            let fragments = fragments
                .into_iter()
                .map(|(source, config)| match MachineConfig::from_json(config) {
                    Ok(config) => Ok(Fragment { source, config }),
                    Err(invalid) => Err(Error::InvalidConfig {
                        machine: name.to_string(),
                        from: source,
                        invalid,
                    }),
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let config = MachineConfig::merge(fragments).map_err(|conflict| Error::Conflict {
                machine: name.to_string(),
                conflict,
            })?;
            Ok(EvaluatedMachine {
                summary: MachineSummary {
                    name: name.clone(),
                    class: machine.machine_class,
                    tags: machine.tags.clone(),
                    description: machine.description.clone(),
                    target_host: machine.deploy.target_host.clone(),
                    roles: roles.get(name.as_str()).cloned().unwrap_or_default(),
                },
                settings: settings.get(name.as_str()).cloned().unwrap_or_default(),
                config,
                hardware: hardware.get(name.as_str()).cloned(),
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .collect()
}

/// Tags in use anywhere, computed ones included (for listings and hints).
pub fn known_tags(inventory: &Inventory) -> BTreeSet<String> {
    inventory
        .machines
        .values()
        .flat_map(|m| machine_tags(m).map(str::to_owned))
        .collect()
}

/// Reads the public values under `vars/` (files named `value`), for services to use. A link
/// anywhere there is an error naming it: its target is never read.
pub fn read_public_vars(dir: &Path) -> Result<PublicVars, Error> {
    let tree = crate::files::open(dir)?;
    let mut per_machine = serde_json::Map::new();
    let machines_dir = Path::new("vars/per-machine");
    for machine in crate::files::subdirs(&tree, machines_dir)? {
        let generators = read_generators(&tree, &machines_dir.join(&machine))?;
        per_machine.insert(machine, generators);
    }
    let shared = read_generators(&tree, Path::new("vars/shared"))?;
    Ok(json!({"per-machine": per_machine, "shared": shared}))
}

fn read_generators(tree: &clan_fs::Tree, dir: &Path) -> Result<Value, Error> {
    let mut generators = serde_json::Map::new();
    for generator in crate::files::subdirs(tree, dir)? {
        let generator_dir = dir.join(&generator);
        let mut files = serde_json::Map::new();
        for file in crate::files::subdirs(tree, &generator_dir)? {
            let path = generator_dir.join(&file).join("value");
            if let Some(value) = crate::files::read_text(tree, &path)? {
                files.insert(file, Value::String(value));
            }
        }
        if !files.is_empty() {
            generators.insert(generator, Value::Object(files));
        }
    }
    Ok(Value::Object(generators))
}
