//! One module per subcommand group. Each has a clap `Args` type and a `run` function that
//! calls library crates and prints; data goes to stdout, everything else to stderr.

use std::path::PathBuf;

pub mod agent;
mod change;
pub mod demo;
pub mod init;
pub mod inspect;
pub mod instances;
pub mod machines;
pub mod mesher;
pub mod output;
pub mod secrets;
pub mod services;
pub mod ssh;
pub mod testbed;
pub mod vars;

/// What every subcommand gets from the global flags.
pub struct Context {
    /// `--flake`/`-C`/`CLAN_DIR`: the clan directory, if given.
    pub clan_dir: Option<PathBuf>,
}

/// The clan directory: `--flake` if given, else the nearest ancestor of the working directory
/// that holds a `clan.toml`.
pub fn clan_dir(context: &Context) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &context.clan_dir {
        return Ok(dir.clone());
    }
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .find(|dir| dir.join("clan.toml").is_file())
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| {
            crate::report::hinted(
                format!("no clan.toml in {} or any parent directory", cwd.display()),
                "run `clan init <dir>` to create a clan, or pass `--flake <dir>`",
            )
        })
}
