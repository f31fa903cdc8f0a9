//! The hermetic Starlark runtime: loads a service file once into a frozen module, then calls
//! its per-instance and per-machine functions with a `ctx` struct.
//!
//! Hermetic means the globals offer only pure functions (no `load`, no `print`, no file,
//! network, clock or randomness). Every module evaluation and call runs under a step budget.
//! Every module sees one more global, `clan`: the helpers of src/clan.star (where a peer is
//! reached), evaluated once.

use std::cell::Cell;
use std::sync::OnceLock;

use indexmap::IndexMap;
use serde_json::Value as Json;
use starlark::environment::{FrozenModule, Globals, LibraryExtension, Module};
use starlark::eval::Evaluator;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::dict::DictRef;
use starlark::values::structs::AllocStruct;
use starlark::values::{FrozenHeap, OwnedFrozenValue, Value};

use clan_inventory::RoleName;

use crate::error::Error;

/// Steps a module evaluation or one call may take; starlark checks the budget every 1,000
/// instructions. Generous for any real service, small enough that a loop fails in a second.
const STEP_BUDGET: u64 = 20_000_000;
const CHECK_PERIOD: u64 = 1_000;
/// Calls that share one temporary starlark heap.
const CALLS_PER_HEAP: usize = 32;

/// What a service says about itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub categories: Vec<String>,
    /// Kinds of exports the service provides (`networking`, `peer`, …).
    #[serde(default)]
    pub exports: Vec<String>,
    /// Run in the second phase, seeing every other service's exports.
    #[serde(default)]
    pub reads_exports: bool,
}

/// A role of a service: its description and settings interface (a JSON Schema).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleDef {
    pub description: String,
    pub interface: Json,
    #[serde(skip)]
    per_instance: Option<OwnedFrozenValue>,
}

/// A loaded service.
#[derive(Debug)]
pub struct Service {
    pub manifest: Manifest,
    pub roles: IndexMap<RoleName, RoleDef>,
    /// `built-in` or the path of its service.star.
    pub origin: String,
    per_machine: Option<OwnedFrozenValue>,
}

/// A JSON value allocated once in a frozen heap, shared by many calls without copying.
#[derive(Debug, Clone)]
pub struct SharedValue(OwnedFrozenValue);

impl SharedValue {
    pub fn new(value: &Json) -> Self {
        let frozen = Module::with_temp_heap(|module| {
            module.set("value", module.heap().alloc(value));
            module.freeze()
        })
        .expect("plain JSON data always freezes");
        Self(frozen.get("value").expect("set just above"))
    }
}

/// One call of a role's `perInstance` function for one member machine.
pub struct InstanceCall<'a> {
    pub instance: &'a str,
    pub role: &'a RoleName,
    /// `{name, class, tags}` of the machine.
    pub machine: &'a Json,
    /// The member's merged, validated settings.
    pub settings: &'a Json,
    /// `{role: {machines: {m: {settings}}, settings}}` of the whole instance.
    pub roles: &'a SharedValue,
}

/// One call of the service's `per_machine` function.
pub struct MachineCall<'a> {
    pub machine: &'a Json,
    /// `{instance: {roles: {role: {settings}}}}`: this service's instances the machine is in.
    pub instances: &'a Json,
}

/// Data every call of one evaluation sees.
pub struct Shared<'a> {
    pub meta: &'a SharedValue,
    pub vars: &'a SharedValue,
    pub exports: &'a SharedValue,
}

/// What a function returned.
#[derive(Debug, Clone, Default)]
pub struct CallOutput {
    /// The MachineConfig fragment as the service returned it; the evaluation parses it
    /// (`clan_config::MachineConfig::from_json`), naming the machine and the call.
    pub config: Json,
    /// Exports about this machine in this instance.
    pub exports: Json,
    /// Exports about the instance as a whole.
    pub instance_exports: Json,
}

fn globals() -> Globals {
    use LibraryExtension::*;
    Globals::extended_by(&[
        StructType,
        RecordType,
        EnumType,
        NamespaceType,
        Map,
        Filter,
        Partial,
        Json,
        Typing,
        SetType,
    ])
}

fn dialect() -> Dialect {
    Dialect {
        enable_load: false,
        ..Dialect::Extended
    }
}

impl Service {
    /// Evaluates a service file; `origin` is shown in errors.
    pub fn load(name: &str, origin: &str, source: &str) -> Result<Service, Error> {
        let frozen = eval_frozen_module(name, origin, source)?;
        let shape = |message: String| {
            Error::Shape {
            service: name.to_owned(),
            message,
            hint: Some("a service defines `manifest`, `roles` and optionally `per_machine`; see docs/services.md".to_owned()),
        }
        };
        let manifest_value = frozen
            .get("manifest")
            .map_err(|_| shape("it defines no `manifest`".to_owned()))?;
        let manifest_json = manifest_value
            .value()
            .to_json_value()
            .map_err(|error| shape(format!("`manifest`: {error}")))?;
        let manifest: Manifest = serde_json::from_value(manifest_json)
            .map_err(|error| shape(format!("`manifest`: {error}")))?;
        let roles_value = frozen
            .get("roles")
            .map_err(|_| shape("it defines no `roles`".to_owned()))?;
        let mut roles = IndexMap::new();
        let dict = DictRef::from_value(roles_value.value())
            .ok_or_else(|| shape("`roles` must be a dict".to_owned()))?;
        for (role_name, role_value) in dict.iter() {
            let role_name: RoleName = role_name
                .unpack_str()
                .ok_or_else(|| shape("`roles` keys must be strings".to_owned()))?
                .parse()
                .map_err(|error| shape(format!("`roles`: {error}")))?;
            let role_dict = DictRef::from_value(role_value)
                .ok_or_else(|| shape(format!("role `{role_name}` must be a dict")))?;
            let mut role = RoleDef {
                description: String::new(),
                interface: serde_json::json!({"type": "object"}),
                per_instance: None,
            };
            for (key, value) in role_dict.iter() {
                match key.unpack_str() {
                    Some("description") => {
                        role.description = value.unpack_str().unwrap_or_default().to_owned();
                    }
                    Some("interface") => {
                        role.interface =
                            value.to_json_value().map_err(|error| shape(format!("role `{role_name}` interface: {error}")))?;
                    }
                    Some("perInstance") => {
                        let frozen_value = value.unpack_frozen().expect("module is frozen");
                        role.per_instance = Some(roles_value.map(|_| frozen_value));
                    }
                    other => {
                        return Err(shape(format!(
                            "role `{role_name}` has an unknown key `{}`; known keys: description, interface, perInstance",
                            other.unwrap_or("?")
                        )))
                    }
                }
            }
            roles.insert(role_name, role);
        }
        Ok(Service {
            manifest,
            roles,
            origin: origin.to_owned(),
            per_machine: frozen.get("per_machine").ok(),
        })
    }

    /// Loads `machines/<m>/config.star`: a module defining `per_machine(ctx)` like a service.
    pub fn load_machine_module(
        machine: &str,
        origin: &str,
        source: &str,
    ) -> Result<Service, Error> {
        let name = format!("machines/{machine}/config.star");
        let frozen = eval_frozen_module(&name, origin, source)?;
        let per_machine = frozen.get("per_machine").map_err(|_| Error::Shape {
            service: name.clone(),
            message: "it defines no `per_machine(ctx)` function".to_owned(),
            hint: Some("see docs/services.md, section machines/<m>/config.star".to_owned()),
        })?;
        let manifest = Manifest {
            name,
            description: String::new(),
            categories: Vec::new(),
            exports: Vec::new(),
            reads_exports: true,
        };
        Ok(Service {
            manifest,
            roles: IndexMap::new(),
            origin: origin.to_owned(),
            per_machine: Some(per_machine),
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Calls each role's `perInstance` for each member; returns one output per call.
    pub fn call_instances(
        &self,
        calls: &[InstanceCall<'_>],
        shared: &Shared<'_>,
    ) -> Result<Vec<CallOutput>, Error> {
        let mut outputs = Vec::with_capacity(calls.len());
        // A fresh heap per chunk: starlark collects no garbage inside a temporary heap, so one
        // heap for a thousand calls would hold every intermediate value until the end.
        for chunk in calls.chunks(CALLS_PER_HEAP) {
            outputs.extend(Module::with_temp_heap(|module| {
                let frozen_heap = module.frozen_heap();
                let meta = attach(&shared.meta.0, frozen_heap);
                let vars = attach(&shared.vars.0, frozen_heap);
                let exports = attach(&shared.exports.0, frozen_heap);
                let heap = module.heap();
                chunk
                    .iter()
                    .map(|call| {
                        let Some(function) = self
                            .roles
                            .get(call.role)
                            .and_then(|role| role.per_instance.as_ref())
                        else {
                            return Ok(CallOutput::default());
                        };
                        let ctx = heap.alloc(AllocStruct([
                            ("instance", heap.alloc(call.instance)),
                            ("role", heap.alloc(call.role.as_str())),
                            ("machine", heap.alloc(call.machine)),
                            ("settings", heap.alloc(call.settings)),
                            ("roles", attach(&call.roles.0, frozen_heap)),
                            ("meta", meta),
                            ("vars", vars),
                            ("exports", exports),
                        ]));
                        let what = || {
                            format!(
                                "roles[\"{}\"][\"perInstance\"] for instance `{}` on machine {}",
                                call.role, call.instance, call.machine["name"]
                            )
                        };
                        self.call(&module, attach(function, frozen_heap), ctx, &what)
                    })
                    .collect::<Result<Vec<_>, Error>>()
            })?);
        }
        Ok(outputs)
    }

    /// Calls `per_machine` once, when the service defines it.
    pub fn call_machine(
        &self,
        call: &MachineCall<'_>,
        shared: &Shared<'_>,
    ) -> Result<Option<CallOutput>, Error> {
        let Some(function) = &self.per_machine else {
            return Ok(None);
        };
        Module::with_temp_heap(|module| {
            let frozen_heap = module.frozen_heap();
            let heap = module.heap();
            let ctx = heap.alloc(AllocStruct([
                ("machine", heap.alloc(call.machine)),
                ("instances", heap.alloc(call.instances)),
                ("meta", attach(&shared.meta.0, frozen_heap)),
                ("vars", attach(&shared.vars.0, frozen_heap)),
                ("exports", attach(&shared.exports.0, frozen_heap)),
            ]));
            self.call(&module, attach(function, frozen_heap), ctx, &|| {
                "per_machine".to_owned()
            })
            .map(Some)
        })
    }

    fn call<'v>(
        &self,
        module: &Module<'v>,
        function: Value<'v>,
        ctx: Value<'v>,
        what: &dyn Fn() -> String,
    ) -> Result<CallOutput, Error> {
        let steps = Cell::new(0);
        let result = {
            let mut eval = budgeted_evaluator(module, &steps);
            eval.eval_function(function, &[ctx], &[])
                .map_err(|error| classify(self.name(), &what(), &steps, error))?
        };
        let shape = |message: String| Error::Shape {
            service: self.name().to_owned(),
            message: format!("{} returned {message}", what()),
            hint: Some(
                "return a dict with any of `config`, `exports`, `instanceExports`".to_owned(),
            ),
        };
        if result.is_none() {
            return Ok(CallOutput::default());
        }
        let json = result
            .to_json_value()
            .map_err(|error| shape(format!("a value that is not plain data: {error}")))?;
        let Json::Object(mut map) = json else {
            return Err(shape(format!("`{json}` instead of a dict")));
        };
        let config = map.remove("config").unwrap_or(Json::Null);
        let exports = map.remove("exports").unwrap_or(Json::Null);
        let instance_exports = map.remove("instanceExports").unwrap_or(Json::Null);
        if let Some(key) = map.keys().next() {
            return Err(shape(format!("an unknown key `{key}`")));
        }
        Ok(CallOutput {
            config,
            exports,
            instance_exports,
        })
    }
}

/// A frozen value usable in a module whose frozen heap keeps `owned`'s heap alive.
fn attach<'v>(owned: &OwnedFrozenValue, heap: &FrozenHeap) -> Value<'v> {
    heap.add_reference(owned.owner());
    owned
        .value()
        .unpack_frozen()
        .expect("an owned frozen value is frozen")
        .to_value()
}

/// The `clan` namespace (src/clan.star), evaluated once and shared by every module.
fn prelude() -> &'static FrozenModule {
    static PRELUDE: OnceLock<FrozenModule> = OnceLock::new();
    PRELUDE.get_or_init(|| {
        let ast = AstModule::parse("clan.star", crate::PRELUDE.to_owned(), &dialect())
            .expect("the built-in prelude parses");
        Module::with_temp_heap(|module| {
            Evaluator::new(&module)
                .eval_module(ast, &globals())
                .expect("the built-in prelude evaluates");
            module.freeze()
        })
        .expect("the built-in prelude freezes")
    })
}

fn eval_frozen_module(name: &str, origin: &str, source: &str) -> Result<FrozenModule, Error> {
    let ast = AstModule::parse(origin, source.to_owned(), &dialect()).map_err(|error| {
        Error::Starlark {
            service: name.to_owned(),
            message: error.to_string(),
        }
    })?;
    Module::with_temp_heap(|module| -> Result<FrozenModule, Error> {
        let clan = prelude().get("clan").expect("the prelude defines `clan`");
        module.set("clan", attach(&clan, module.frozen_heap()));
        {
            let steps = Cell::new(0);
            let mut eval = budgeted_evaluator(&module, &steps);
            eval.eval_module(ast, &globals())
                .map_err(|error| classify(name, "the module", &steps, error))?;
        }
        module.freeze().map_err(|error| Error::Starlark {
            service: name.to_owned(),
            message: format!("{error:?}"),
        })
    })
}

fn budgeted_evaluator<'v, 'a, 'e>(
    module: &'a Module<'v>,
    steps: &'a Cell<u64>,
) -> Evaluator<'v, 'a, 'e> {
    let mut eval = Evaluator::new(module);
    eval.set_check_cancelled(Box::new(move || {
        steps.set(steps.get() + CHECK_PERIOD);
        steps.get() > STEP_BUDGET
    }));
    eval
}

fn classify(service: &str, function: &str, steps: &Cell<u64>, error: starlark::Error) -> Error {
    if steps.get() > STEP_BUDGET {
        Error::Budget {
            service: service.to_owned(),
            function: function.to_owned(),
            budget: STEP_BUDGET,
        }
    } else {
        Error::Starlark {
            service: service.to_owned(),
            message: format!("in {function}: {error}"),
        }
    }
}
