//! `clan init`: a new clan directory with its clan.toml, a git repository and a first commit.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context as _};

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    /// The directory to create (it may exist, but must not hold a clan.toml yet).
    dir: PathBuf,
    /// The clan's name (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// The domain machines are reachable under, `<machine>.<domain>`.
    #[arg(long, default_value = "clan")]
    domain: String,
}

pub fn run(args: Args, _context: &Context) -> anyhow::Result<ExitCode> {
    let clan_toml = args.dir.join(clan_inventory::CLAN_TOML);
    if clan_toml.exists() {
        return Err(exists(&clan_toml));
    }
    let name = match args.name {
        Some(name) => name,
        None => args
            .dir
            .canonicalize()
            .unwrap_or_else(|_| args.dir.clone())
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "clan".to_owned()),
    };
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating `{}`", args.dir.display()))?;
    git_init(&args.dir)?;
    let change = super::change::begin(&args.dir, &[clan_inventory::CLAN_TOML])?;
    // Again under the lock: another `clan init` may have been quicker.
    if clan_toml.exists() {
        return Err(exists(&clan_toml));
    }
    clan_inventory::write_atomically(
        &clan_toml,
        clan_inventory::new_clan_toml(&name, &args.domain).as_bytes(),
    )?;
    change.commit(&[clan_inventory::CLAN_TOML.into()], "clan init")?;
    eprintln!("created clan `{name}` in {}", args.dir.display());
    eprintln!(
        "next: cd {} && clan machines create <name>",
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn exists(clan_toml: &std::path::Path) -> anyhow::Error {
    crate::report::hinted(
        format!("`{}` already exists", clan_toml.display()),
        "pick another directory; `clan show` describes the existing clan",
    )
}

/// `git init`, and a repository-local identity when the user has none, so commits work.
fn git_init(dir: &std::path::Path) -> anyhow::Result<()> {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
    };
    if !git(&["init", "--quiet"])
        .context("running git (is it installed?)")?
        .success()
    {
        bail!("`git init` failed in `{}`", dir.display());
    }
    let has_identity = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["config", "user.email"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_identity {
        git(&["config", "user.name", "clan"])?;
        git(&["config", "user.email", "clan@localhost"])?;
        eprintln!(
            "note: git has no user identity; this repository commits as `clan <clan@localhost>`"
        );
    }
    Ok(())
}
