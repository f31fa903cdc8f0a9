//! Deployment of clan machines: the admin side builds a **generation** (manifest, files,
//! units, users, packages and secrets still encrypted to the machine's age key), uploads it
//! with the agent over the system's OpenSSH, and asks the machine-side agent to activate it;
//! the agent applies it atomically, rolls back on failure, and reverts by itself unless the
//! deployer confirms over a fresh connection (magic rollback).
//!
//! Modules: [`target`] picks where to connect, [`ssh`] is the transport (one ControlMaster per
//! machine per run) behind the [`host::Host`] trait, [`quote`] is the one place argv becomes a
//! shell string, [`relay`] gets the agent to every machine with the admin's uplink carrying it
//! once, [`generation`] builds and serialises generations (with [`firewall`]'s rule
//! set when the machine's firewall is on), [`deploy`] runs the stages
//! for one machine and [`fleet`] for many, reporting [`events::Event`]s. [`agent`] is the machine
//! side (`clan agent …`).
//!
//! It must never put a secret in argv, a log line or a world-readable file, never build a
//! remote command by string concatenation outside [`quote`], and never panic on input.

pub mod agent;
pub mod deploy;
mod error;
pub mod events;
pub mod firewall;
pub mod fleet;
pub mod generation;
pub mod host;
pub mod quote;
pub mod relay;
pub mod ssh;
pub mod target;

pub use error::{Error, SshFailure};

/// Where the agent keeps its state on a machine.
pub const STATE_DIR: &str = "/var/lib/clan";
