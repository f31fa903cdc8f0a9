//! The progress sink: what an operation reports while it works, for the front end to show.
//! Events serialise to JSON objects tagged by a stable `kind` (the GUI streams them as they
//! are); a deploy's event keeps the fields and `event` tag of `machines update --json`.

use std::path::PathBuf;

use serde::Serialize;

/// What an operation reports while it runs. Outcomes are return values; these are the news
/// on the way there.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// Another clan process holds the clan lock; the operation waits for it.
    WaitingForLock {
        path: PathBuf,
        /// Who holds it, when the lock file says so.
        holder: Option<String>,
    },
    /// What an interrupted command left behind was recovered (committed or cleared).
    Recovered { what: String },
    /// A vars generator started, was generated or failed.
    Generator {
        /// The machine it belongs to; `None` for a shared generator.
        machine: Option<String>,
        generator: String,
        step: clan_vars::GeneratorStep,
    },
    /// A deploy reports on one machine.
    Deploy(Box<clan_deploy::events::Event>),
    /// A deploy generated the vars its machines still missed.
    VarsGenerated(crate::vars::Generated),
    /// A machine's micro VM starts.
    Vm(crate::vms::VmEvent),
}

impl Event {
    /// The event for `step` of generator `key`.
    pub fn generator(key: &clan_vars::GeneratorKey, step: clan_vars::GeneratorStep) -> Event {
        Event::Generator {
            machine: machine_of(key),
            generator: key.name.clone(),
            step,
        }
    }
}

/// The machine a generator belongs to; `None` for a shared one.
pub(crate) fn machine_of(key: &clan_vars::GeneratorKey) -> Option<String> {
    match &key.placement {
        clan_vars::Placement::PerMachine(machine) => Some(machine.to_string()),
        clan_vars::Placement::Shared => None,
    }
}

/// Receives [`Event`]s; implemented by each front end (the CLI prints them, a GUI streams
/// them). Deploys and vars generation report from several threads at once.
pub trait Progress: Sync {
    fn event(&self, event: Event);
}

/// A sink that drops every event.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _event: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(machine: Option<&str>, name: &str) -> clan_vars::GeneratorKey {
        clan_vars::GeneratorKey {
            placement: match machine {
                Some(machine) => clan_vars::Placement::PerMachine(machine.parse().unwrap()),
                None => clan_vars::Placement::Shared,
            },
            name: name.to_owned(),
        }
    }

    /// The JSON of each kind of event, pinned: the GUI reads these tags and fields.
    #[test]
    fn events_serialise_with_stable_kind_tags() {
        let as_json = |event: Event| serde_json::to_value(&event).unwrap();
        assert_eq!(
            as_json(Event::WaitingForLock {
                path: "/c/.clan/lock".into(),
                holder: Some("pid 7".into()),
            }),
            json!({"kind": "waiting-for-lock", "path": "/c/.clan/lock", "holder": "pid 7"})
        );
        assert_eq!(
            as_json(Event::Recovered {
                what: "a commit".into()
            }),
            json!({"kind": "recovered", "what": "a commit"})
        );
        assert_eq!(
            as_json(Event::generator(
                &key(Some("web01"), "openssh"),
                clan_vars::GeneratorStep::Running
            )),
            json!({"kind": "generator", "machine": "web01", "generator": "openssh", "step": "running"})
        );
        assert_eq!(
            as_json(Event::generator(
                &key(None, "ca"),
                clan_vars::GeneratorStep::Generated
            )),
            json!({"kind": "generator", "machine": null, "generator": "ca", "step": "generated"})
        );
        // A deploy's event keeps the `--json` form of `machines update`, with the kind added.
        let deploy = clan_deploy::events::Event::Stage {
            machine: "web01".into(),
            stage: clan_deploy::events::Stage::Activate,
        };
        let mut expected = serde_json::to_value(&deploy).unwrap();
        assert_eq!(
            expected,
            json!({"event": "stage", "machine": "web01", "stage": "activate"})
        );
        expected["kind"] = json!("deploy");
        assert_eq!(as_json(Event::Deploy(Box::new(deploy))), expected);
        let failure = clan_vars::Error::UnknownMachine {
            machine: "db01".into(),
        };
        let message = failure.to_string();
        assert_eq!(
            as_json(Event::VarsGenerated(crate::vars::Generated {
                runs: vec![key(Some("web01"), "openssh")],
                failed: vec![(key(None, "ca"), failure)],
            })),
            json!({
                "kind": "vars-generated",
                "runs": [{"machine": "web01", "generator": "openssh"}],
                "failed": [{
                    "machine": null, "generator": "ca", "error": message,
                    "hint": "`clan machines list` shows the machines",
                }],
            })
        );
        assert_eq!(
            as_json(Event::Vm(crate::vms::VmEvent::Accel {
                machine: "web01".into(),
                accel: clan_vm::Accel {
                    mode: clan_vm::Mode::Tcg,
                    reason: "no /dev/kvm".into(),
                },
            })),
            json!({
                "kind": "vm", "event": "accel", "machine": "web01",
                "accel": {"mode": "tcg", "reason": "no /dev/kvm"},
            })
        );
    }
}
