//! `clan gui`: serves the local web app of `clan-gui` and prints its URL (with the one-time
//! token) on stdout; the browser is opened through a private file that redirects to it, so
//! the token never appears in another process's arguments.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clan_deploy::deploy::AgentBinary;
use clan_deploy::ssh::HostKeyCheck;

use super::machines::SshArgs;
use super::output::{print_json, print_line, printer};
use super::Context;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  clan gui                             # serve on 127.0.0.1 and open the browser
  clan gui --port 8080 --no-open       # print the URL (with its one-time token) only
  clan gui --json                      # {\"url\": …} for scripts")]
pub struct Args {
    #[command(flatten)]
    pub clan: super::ClanArg,
    /// Port on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Do not open a browser.
    #[arg(long)]
    no_open: bool,
    /// Print the URL as JSON.
    #[arg(long)]
    json: bool,
    /// Seconds a machine waits for a deploy's confirmation before reverting.
    #[arg(long, default_value_t = 30)]
    confirm_timeout: u64,
    /// Deploys from the GUI ask nobody on a terminal: `ask` is taken as `strict`.
    #[command(flatten)]
    ssh: SshArgs,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    if args.ssh.target_host.is_some() {
        anyhow::bail!("--target-host does not apply: the GUI deploys each machine to its target");
    }
    // No clan yet is an empty start: the page offers to create one.
    let clan_dir = super::clan_dir(context).ok();
    let mut ssh = args.ssh.options();
    if ssh.host_key_check == HostKeyCheck::Ask {
        ssh.host_key_check = HostKeyCheck::Strict;
    }
    let state_dir = clan_gui::Options::default_state_dir()?;
    let server = clan_gui::Server::bind(clan_gui::Options {
        clan_dir,
        port: args.port,
        ssh,
        agent: AgentBinary::current().ok(),
        confirm_timeout: args.confirm_timeout,
        state_dir: state_dir.clone(),
    })?;
    if args.json {
        print_json(&serde_json::json!({ "url": server.url() }))?;
    } else {
        print_line(server.url())?;
    }
    if !args.no_open {
        if let Err(error) = open_browser(&state_dir, server.url()) {
            printer().note(format!(
                "could not open a browser ({error:#}): open the URL above"
            ));
        }
    }
    printer().note("serving the GUI; Ctrl-C stops it");
    server.run()?;
    Ok(ExitCode::SUCCESS)
}

/// Opens `url` with `xdg-open` through a 0600 page in the private `state_dir` that
/// redirects to it.
fn open_browser(state_dir: &Path, url: &str) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let page: PathBuf = state_dir.join("open.html");
    let html = format!(
        "<!doctype html><meta http-equiv=\"refresh\" content=\"0;url={url}\"><a href=\"{url}\">clan gui</a>\n"
    );
    clan_fs::write_file(&page, html.as_bytes(), clan_fs::WriteOptions::new(0o600))?;
    Command::new("xdg-open")
        .arg(&page)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(())
}
