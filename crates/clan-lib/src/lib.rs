//! The operations every clan front end calls, following clan-core's `clan_lib`: init, show,
//! machines, instances and settings, services and their schemas, select, vars, secrets,
//! deploys (with dry run, generations and rollback), hardware reports, machines in micro VMs,
//! networks (list, ping, overview) and the Data
//! Mesher client.
//!
//! Each operation takes plain typed input, returns typed output and reports progress through
//! a [`Progress`] sink the front end implements; questions for a person (vars prompts) go
//! through a [`vars::Prompter`] the front end answers. This crate never reads a terminal,
//! never prints, and never exits the process: the `clan` binary parses arguments, calls these
//! functions and prints, and a GUI calls the same functions.

pub mod backups;
pub mod change;
pub mod deploy;
mod dir;
mod error;
mod events;
pub mod hardware;
pub mod init;
pub mod instances;
pub mod machines;
pub mod network;
pub mod secrets;
pub mod select;
pub mod services;
pub mod show;
pub mod vars;
pub mod vms;

/// The mesher client, which lives with the daemon (the machine binary needs it too).
pub use clan_mesher::client as mesher;
pub use dir::find_clan_dir;
pub use error::Error;
pub use events::{Event, Progress, Silent};
