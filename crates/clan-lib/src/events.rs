//! The progress sink: what an operation reports while it works, for the front end to show.

use std::path::PathBuf;

/// What an operation reports while it runs. Outcomes are return values; these are the news
/// on the way there.
#[derive(Debug)]
pub enum Event {
    /// Another clan process holds the clan lock; the operation waits for it.
    WaitingForLock {
        path: PathBuf,
        /// Who holds it, when the lock file says so.
        holder: Option<String>,
    },
    /// What an interrupted command left behind was recovered (committed or cleared).
    Recovered(String),
    /// A deploy reports on one machine.
    Deploy(Box<clan_deploy::events::Event>),
    /// A deploy generated the vars its machines still missed.
    VarsGenerated(crate::vars::Generated),
}

/// Receives [`Event`]s; implemented by each front end (the CLI prints them, a GUI streams
/// them). Deploys report from several threads at once.
pub trait Progress: Sync {
    fn event(&self, event: Event);
}

/// A sink that drops every event.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _event: Event) {}
}
