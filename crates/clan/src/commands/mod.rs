//! One module per subcommand group. Each has a clap `Args` type and a `run` function that
//! calls `clan-lib` and prints; data goes to stdout, everything else to stderr.

use std::path::PathBuf;

pub mod backups;
#[cfg(feature = "testbed")]
pub mod demo;
pub mod gui;
pub mod init;
pub mod inspect;
pub mod instances;
pub mod machines;
pub mod network;
pub mod output;
pub mod secrets;
pub mod services;
pub mod ssh;
mod terminal;
#[cfg(feature = "testbed")]
pub mod testbed;
pub mod vars;
pub mod vms;

pub use terminal::{Generators, Terminal, TerminalPrompter};

/// What every subcommand gets from the global flags.
pub struct Context {
    /// `--flake`/`-C`/`CLAN_DIR`: the clan directory, if given.
    pub clan_dir: Option<PathBuf>,
}

/// `-C/--flake` on the commands that read a clan (anywhere after their name); the commands that
/// read none (agent side, testbed, demo, init, schema) do not take it.
#[derive(clap::Args)]
pub struct ClanArg {
    /// The clan directory (default: $CLAN_DIR, else the nearest ancestor of the working
    /// directory holding clan.toml).
    #[arg(long, short = 'C', global = true, value_name = "DIR")]
    pub flake: Option<PathBuf>,
}

/// The clan directory: `--flake` if given, else the nearest ancestor of the working directory
/// that is a clan.
pub fn clan_dir(context: &Context) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &context.clan_dir {
        return Ok(dir.clone());
    }
    Ok(clan_lib::find_clan_dir(&std::env::current_dir()?)?)
}
