//! `clan init`: a new clan directory with its clan.toml, a git repository, the admin's age
//! key and sops user, and a first commit (`clan_lib::init`).

use std::path::PathBuf;
use std::process::ExitCode;

use clan_lib::init::InitOptions;
use clan_secrets::{KeySources, UserName};

use super::output::printer;
use super::{Context, Terminal};

#[derive(clap::Args)]
#[command(after_help = "Example:
  clan init my-clan --domain home.arpa")]
pub struct Args {
    /// The directory to create (it may exist, but must not hold a clan.toml yet).
    dir: PathBuf,
    /// The clan's name: letters, digits, `-` and `_` (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// The domain machines are reachable under, `<machine>.<domain>`.
    #[arg(long, default_value = "clan")]
    domain: String,
    /// Your sops user in the new clan (default: your login name).
    #[arg(long)]
    user: Option<UserName>,
}

pub fn run(args: Args, _context: &Context) -> anyhow::Result<ExitCode> {
    let options = InitOptions {
        dir: args.dir,
        name: args.name,
        domain: args.domain,
        user: args.user,
        keys: KeySources::from_env(),
    };
    let done = clan_lib::init::init(&options, &Terminal)?;
    let printer = printer();
    if done.git_identity_set {
        printer.note(
            "note: git has no user identity; this repository commits as `clan <clan@localhost>`",
        );
    }
    if let Some((path, recipient)) = &done.key_created {
        printer.note(format_args!(
            "created age key {recipient} in {}",
            path.display()
        ));
        printer.note("Back it up somewhere safe: without it you lose access to your secrets.");
    }
    if done.user_created {
        printer.note(format_args!("added sops user `{}`", done.user));
    }
    printer.note(format_args!(
        "created clan `{}` in {}",
        done.name,
        options.dir.display()
    ));
    printer.note(format_args!(
        "next: cd {} && clan machines create <name>",
        options.dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}
