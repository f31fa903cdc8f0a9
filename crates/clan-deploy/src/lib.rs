//! Deployment of clan machines: the admin side builds a **generation** (manifest, files,
//! units, users, packages and secrets still encrypted to the machine's age key), uploads it
//! with the agent over the system's OpenSSH, and asks the machine-side agent to activate it;
//! the agent applies it atomically, rolls back on failure, and reverts by itself unless the
//! deployer confirms over a fresh connection (magic rollback).
//!
//! Modules: [`ssh`] is the transport (one ControlMaster per machine per run) to where
//! `clan_network` says a machine is reached, behind the [`host::Host`] trait, [`quote`] is the
//! one place argv becomes a shell string, [`relay`] gets the agent to every machine with the admin's uplink carrying it
//! once, [`deploy`] runs the stages for one machine and [`fleet`] for many, reporting
//! [`events::Event`]s. The generation format and the agent's replies are `clan_generation`'s
//! (shared with the machine side, the `clan-agent` binary of crate `clan_agent`).
//!
//! It must never put a secret in argv, a log line or a world-readable file, never build a
//! remote command by string concatenation outside [`quote`], and never panic on input.

pub mod deploy;
mod error;
pub mod events;
pub mod fleet;
pub mod host;
pub mod quote;
pub mod relay;
pub mod ssh;

pub use error::{Error, RouteAttempt, SshFailure};

pub use clan_generation as generation;
/// The agent's replies, under the name callers of this crate know them by.
pub use clan_generation::reply as agent;
