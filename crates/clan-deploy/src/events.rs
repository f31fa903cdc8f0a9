//! What a deploy reports as it goes: one [`Event`] per step and machine, rendered as JSON
//! lines (`--json`, shared by the CLI and the GUI) or as `[machine] …` lines for people.

use serde::Serialize;

use clan_generation::reply::{short, Changes, Failure};

/// The step a machine was in when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Resolve,
    Connect,
    Upload,
    Activate,
    Confirm,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Resolve => "resolve",
            Stage::Connect => "connect",
            Stage::Upload => "upload",
            Stage::Activate => "activate",
            Stage::Confirm => "confirm",
        })
    }
}

/// How a machine's deploy ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The machine already ran this generation.
    Unchanged,
    Activated,
    /// `--dry-run`: nothing was changed.
    DryRun,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Resolve {
        machine: String,
        /// The first route's destination, and where it came from.
        target: String,
        source: String,
        /// Every route to race, when there are several (`root@10.0.0.1 (network lan)`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        routes: Vec<String>,
        generation: String,
    },
    /// The route the connection took: the first of the raced routes to finish its handshake.
    Route {
        machine: String,
        target: String,
        source: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        #[serde(rename = "elapsedMs")]
        elapsed_ms: u64,
        /// How many routes were raced.
        routes: usize,
    },
    Upload {
        machine: String,
        /// `agent` or `generation`.
        what: &'static str,
        /// Bytes the admin sent (0 when another machine passed it on).
        bytes: u64,
        /// The machine it came from, when not from the admin.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    /// A stage begins (no line for people; it tells where a machine stands).
    Stage {
        machine: String,
        stage: Stage,
    },
    /// Something worth telling a person (waiting for a lock, …).
    Message {
        machine: String,
        message: String,
    },
    /// A line the machine printed while `stage` runs (the agent's activation output: a
    /// package installed, a unit that failed to start), as it came.
    Output {
        machine: String,
        stage: Stage,
        line: String,
    },
    Activate {
        machine: String,
        generation: String,
        changes: Changes,
    },
    DryRun {
        machine: String,
        generation: String,
        changes: Changes,
        /// The machine has no clan agent yet: everything is listed as new.
        first_deploy: bool,
    },
    Confirm {
        machine: String,
        generation: String,
    },
    Done {
        machine: String,
        generation: String,
        outcome: Outcome,
        #[serde(rename = "elapsedMs")]
        elapsed_ms: u64,
    },
    Failed {
        machine: String,
        stage: Stage,
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
        /// The agent's typed account, when the agent failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<Failure>,
    },
}

fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Unchanged => "unchanged",
        Outcome::Activated => "activated",
        Outcome::DryRun => "dry run",
    }
}

impl Event {
    pub fn machine(&self) -> &str {
        match self {
            Event::Resolve { machine, .. }
            | Event::Route { machine, .. }
            | Event::Upload { machine, .. }
            | Event::Stage { machine, .. }
            | Event::Message { machine, .. }
            | Event::Output { machine, .. }
            | Event::Activate { machine, .. }
            | Event::DryRun { machine, .. }
            | Event::Confirm { machine, .. }
            | Event::Done { machine, .. }
            | Event::Failed { machine, .. } => machine,
        }
    }

    /// Where the machine stands after this event, for a run that is interrupted.
    pub fn standing(&self) -> Option<String> {
        Some(match self {
            Event::Resolve { target, routes, .. } if routes.len() > 1 => {
                format!(
                    "about to connect (to the first of {} routes to answer)",
                    routes.len()
                )
            }
            Event::Resolve { target, .. } => format!("about to connect to {target}"),
            Event::Route { target, .. } => format!("connected to {target}; nothing changed on it"),
            Event::Stage { stage, .. } => match stage {
                Stage::Resolve => "working out what to deploy".to_owned(),
                Stage::Connect => "connecting; nothing changed on it".to_owned(),
                Stage::Upload => "uploading; nothing changed on it yet".to_owned(),
                Stage::Activate => "activating; it finishes activation by itself".to_owned(),
                Stage::Confirm => "activated, not confirmed: it returns to its previous \
                                   generation by itself"
                    .to_owned(),
            },
            Event::Activate { .. } => "activated, not confirmed: it returns to its previous \
                                       generation by itself"
                .to_owned(),
            Event::Confirm { .. } => "confirmed".to_owned(),
            Event::DryRun { .. } => "dry run done".to_owned(),
            Event::Done { outcome, .. } => format!("done ({})", outcome_word(*outcome)),
            Event::Failed { stage, .. } => format!("failed ({stage})"),
            Event::Upload { .. } | Event::Message { .. } | Event::Output { .. } => return None,
        })
    }

    /// The lines a person sees, each to be prefixed with `[machine] `.
    pub fn human(&self) -> Vec<String> {
        match self {
            Event::Resolve {
                routes, generation, ..
            } if routes.len() > 1 => vec![format!(
                "deploying generation {} over the first of {} routes to answer: {}",
                short(generation),
                routes.len(),
                routes.join(", ")
            )],
            Event::Resolve {
                target,
                source,
                generation,
                ..
            } => vec![format!(
                "deploying generation {} to {target} (from {source})",
                short(generation)
            )],
            // A single route is named by the resolve line already.
            Event::Route { routes: 1, .. } => Vec::new(),
            Event::Route {
                target,
                source,
                elapsed_ms,
                ..
            } => vec![format!(
                "reached at {target} (from {source}) in {elapsed_ms} ms"
            )],
            Event::Upload {
                what,
                from: Some(peer),
                ..
            } => vec![format!("got {what} from {peer}")],
            Event::Upload { what, bytes, .. } => {
                vec![format!("uploaded {what} ({})", human_bytes(*bytes))]
            }
            Event::Stage { .. } => Vec::new(),
            Event::Message { message, .. } => vec![message.clone()],
            // The machine's text: control characters are shown escaped, not sent to the
            // terminal.
            Event::Output { line, .. } => vec![format!("| {}", line.escape_debug())],
            Event::Activate { changes, .. } => vec![format!("activated: {}", changes.summary())],
            Event::DryRun {
                changes,
                first_deploy,
                ..
            } => {
                let mut lines = vec![format!("would change: {}", changes.summary())];
                if *first_deploy {
                    lines.push(
                        "first deploy: the machine has no clan agent yet, so everything is new \
                         (files already on it are kept aside when it is deployed)"
                            .to_owned(),
                    );
                }
                let lists = [
                    ("group", &changes.groups_created),
                    ("user", &changes.users_created),
                    ("user (modify)", &changes.users_modified),
                    ("package", &changes.packages_installed),
                    ("secret", &changes.secrets_changed),
                    ("file", &changes.files_written),
                    ("file (remove)", &changes.files_removed),
                    ("file (keep aside)", &changes.files_kept_aside),
                    ("unit (start)", &changes.units_started),
                    ("unit (restart)", &changes.units_restarted),
                    ("unit (reload)", &changes.units_reloaded),
                    ("unit (stop)", &changes.units_stopped),
                ];
                for (what, items) in lists {
                    lines.extend(items.iter().map(|item| format!("  {what} {item}")));
                }
                lines
            }
            Event::Confirm { .. } => vec!["confirmed over a new connection".to_owned()],
            Event::Done {
                outcome,
                elapsed_ms,
                ..
            } => vec![format!(
                "done: {} in {:.1} s",
                outcome_word(*outcome),
                *elapsed_ms as f64 / 1000.0
            )],
            Event::Failed {
                stage, error, hint, ..
            } => {
                let mut lines = vec![format!("failed ({stage}): {error}")];
                lines.extend(hint.iter().map(|hint| format!("hint: {hint}")));
                lines
            }
        }
    }
}

fn human_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}
