//! `clan demo`: the main job on a built-in default. Creates a throwaway clan with several
//! machines and service instances, evaluates it and prints the fleet; where this host can run
//! the testbed (root, systemd-nspawn, debootstrap) it also starts the machines as local
//! containers, generates their vars and deploys them, running the same `clan` commands a user
//! would, then stops the machines again.

use std::path::PathBuf;
use std::process::ExitCode;

use clan_host::Tool;
use clan_inventory::{Editor, MachineClass, RoleTarget, SettingScope};
use serde_json::json;

use super::output::{print_line, printer};
use super::Context;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  sudo clan demo                 # evaluate, start the machines, deploy, stop them
  clan demo --no-deploy --dir /tmp/demo")]
pub struct Args {
    /// Where to create the demo clan (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only evaluate: do not start test machines and deploy to them.
    #[arg(long)]
    no_deploy: bool,
}

/// The demo user's password, answered to the `users` service's prompt.
const DEMO_PASSWORD: &str = "demo-password";

const MACHINES: &[(&str, &[&str])] = &[
    ("web01", &["web"]),
    ("web02", &["web"]),
    ("db01", &["db"]),
    ("laptop", &["desktop"]),
];

pub fn run(args: Args, _context: &Context) -> anyhow::Result<ExitCode> {
    let temporary = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temporary.as_ref().expect("made above").path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let testbed = if args.no_deploy {
        None
    } else {
        start_testbed(&dir)
    };
    printer().note(format_args!("creating a demo clan in {}", dir.display()));
    clan_inventory::write_atomically(
        &dir.join(clan_inventory::CLAN_TOML),
        clan_inventory::new_clan_toml("demo", "clan").as_bytes(),
    )?;
    declare_fleet(&dir, testbed.as_ref())?;

    let fleet = clan_eval::Fleet::open_with_cache(&dir, &dir.join(".cache"))?;
    print_line(format_args!(
        "clan `{}`: {} machines, {} service instances\n",
        fleet.summary.meta.name,
        fleet.summary.machines.len(),
        fleet.summary.instances.len()
    ))?;
    let mut rows = vec![vec![
        "MACHINE".into(),
        "TAGS".into(),
        "ROLES".into(),
        "FILES".into(),
        "USERS".into(),
        "GENERATORS".into(),
        "PORTS".into(),
    ]];
    for machine in fleet.machines()? {
        let config = &machine.config;
        rows.push(vec![
            machine.summary.name.to_string(),
            machine.summary.tags.join(","),
            machine
                .summary
                .roles
                .iter()
                .map(|m| format!("{}/{}", m.instance, m.role))
                .collect::<Vec<_>>()
                .join(","),
            config.files.len().to_string(),
            config.users.keys().cloned().collect::<Vec<_>>().join(","),
            config
                .generators
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
            config
                .firewall
                .tcp
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    super::output::print_table(&rows)?;
    let laptop = fleet.machine("laptop")?;
    print_line(format_args!(
        "\n/etc/hello on laptop: {}",
        laptop.config.files["/etc/hello"].content.trim_end()
    ))?;
    let web01 = fleet.machine("web01")?;
    print_line(format_args!(
        "/etc/hello on web01:  {}",
        web01.config.files["/etc/hello"].content.trim_end()
    ))?;
    if let Some(testbed) = &testbed {
        deploy(&dir, testbed)?;
    }
    if args.dir.is_some() {
        printer().note(format_args!(
            "\nthe demo clan stays in {}; try `clan -C {} machines show web01`",
            dir.display(),
            dir.display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// What the demo runs on the host besides the testbed's own tools: the vars sandbox and the
/// users service's password hashing.
const DEMO_TOOLS: &[Tool] = &[
    Tool {
        name: "bwrap",
        package: "bubblewrap",
    },
    Tool {
        name: "openssl",
        package: "openssl",
    },
];

/// Starts one test machine per demo machine, or says why it cannot and returns None. As
/// root, the host packages it needs are installed first (and it says so).
fn start_testbed(dir: &std::path::Path) -> Option<clan_testbed::Testbed> {
    // The deploy uploads `clan-agent`, which `cargo run -p clan` does not build.
    if let Err(error) = clan_deploy::deploy::AgentBinary::current() {
        let printer = printer();
        printer.note(format_args!("not deploying: {error}"));
        if let Some(hint) = clan_error::Hint::hint(&error) {
            printer.note(printer.hint_line(hint));
        }
        return None;
    }
    let tools: Vec<Tool> = clan_testbed::HOST_TOOLS
        .iter()
        .chain(DEMO_TOOLS)
        .copied()
        .collect();
    let started = clan_testbed::check_host()
        .or_else(|error| match error {
            clan_testbed::Error::Host(clan_host::Error::ToolMissing { .. }) => Ok(()),
            other => Err(other),
        })
        .map_err(|error| error.to_string())
        .and_then(|()| {
            let missing = clan_host::missing_packages(&tools);
            if !missing.is_empty() {
                printer().note(format_args!(
                    "installing what the test machines need on this host: apt-get install {}",
                    missing.join(" ")
                ));
                clan_host::install_packages(&missing).map_err(|error| error.to_string())?;
            }
            printer().note(format_args!(
                "starting {} test machines (systemd-nspawn containers with sshd)",
                MACHINES.len()
            ));
            let mut options = clan_testbed::Options::named(
                dir.join("testbed"),
                MACHINES.iter().map(|(name, _)| *name),
            );
            options.progress = |message| printer().note(format_args!("  {message}"));
            clan_testbed::Testbed::up(&options).map_err(|error| error.to_string())
        });
    match started {
        Ok(testbed) => Some(testbed),
        Err(reason) => {
            let printer = printer();
            printer.note(format_args!("not deploying: {reason}"));
            printer.note(printer.hint_line(format_args!(
                "run the demo as root on Debian: it installs what the test machines need \
                 ({}) and deploys to them",
                clan_host::missing_packages(&tools).join(" ")
            )));
            None
        }
    }
}

/// Generates the demo clan's vars and deploys every machine, as a user would.
fn deploy(dir: &std::path::Path, testbed: &clan_testbed::Testbed) -> anyhow::Result<()> {
    let answers = dir.join("demo-answers.json");
    clan_inventory::write_atomically(
        &answers,
        format!("{{\"user-password-alice\": {{\"user-password\": \"{DEMO_PASSWORD}\"}}}}")
            .as_bytes(),
    )?;
    let clan = |args: &[&str]| -> anyhow::Result<()> {
        printer().note(format_args!("\n$ clan {}", args.join(" ")));
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(args)
            .env("CLAN_DIR", dir)
            .env("SOPS_AGE_KEY_FILE", dir.join("admin.age"))
            .env("CLAN_SSH_CONFIG", testbed.ssh_config())
            .env("CLAN_CACHE_DIR", dir.join(".cache"))
            .env("CLAN_NO_COMMIT", "1")
            .status()?;
        anyhow::ensure!(status.success(), "`clan {}` failed", args.join(" "));
        Ok(())
    };
    clan(&["vars", "keygen", "--user", "admin"])?;
    clan(&[
        "vars",
        "generate",
        "--prompt-values",
        &answers.display().to_string(),
    ])?;
    // The machines are new to us, as a fresh server is: trust on first use records each one's
    // original host key, the deploy installs its clan-generated one and trusts that after.
    clan(&["machines", "update", "--host-key-check", "tofu"])?;
    // Log in trusting only the host key clan generated for web01: the machine now presents it.
    let web01 = testbed.machine("web01")?;
    let host_key = std::fs::read_to_string(
        dir.join("vars/per-machine/web01/openssh/ssh.id_ed25519.pub/value"),
    )?;
    let known_hosts = dir.join("demo-known-hosts");
    std::fs::write(
        &known_hosts,
        format!("{} {}\n", web01.address, host_key.trim()),
    )?;
    let output = std::process::Command::new("ssh")
        .arg("-F")
        .arg(testbed.ssh_config())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            &web01.ssh_target(),
            "cat",
            "/etc/hello",
        ])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "ssh to web01 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    print_line(format_args!(
        "\ndeployed; web01 presents its clan host key and says: {}",
        String::from_utf8_lossy(&output.stdout).trim_end()
    ))?;
    printer().note("stopping the test machines");
    Ok(())
}

/// The demo's machines and instances, written through the same editor the CLI uses; with a
/// testbed, each machine's deploy target is its container.
fn declare_fleet(
    dir: &std::path::Path,
    testbed: Option<&clan_testbed::Testbed>,
) -> anyhow::Result<()> {
    let mut editor = Editor::open(dir)?;
    for (name, tags) in MACHINES {
        let tags: Vec<_> = tags
            .iter()
            .map(|tag| tag.parse())
            .collect::<Result<_, _>>()?;
        let target = testbed
            .map(|testbed| testbed.machine(name).map(|machine| machine.ssh_target()))
            .transpose()?;
        editor.add_machine(
            &name.parse()?,
            &tags,
            MachineClass::Linux,
            target.as_deref(),
            None,
        )?;
    }
    let add = |editor: &mut Editor,
               instance: &str,
               service: &str,
               members: &[(&str, &str)]|
     -> anyhow::Result<()> {
        editor.add_instance(&instance.parse()?, &service.parse()?)?;
        for (role, target) in members {
            editor.add_role_member(
                &instance.parse()?,
                &role.parse()?,
                &target.parse::<RoleTarget>()?,
            )?;
        }
        Ok(())
    };
    add(
        &mut editor,
        "hello",
        "hello-world",
        &[("default", "tag:all")],
    )?;
    add(
        &mut editor,
        "ssh",
        "sshd",
        &[("server", "tag:all"), ("client", "tag:desktop")],
    )?;
    add(&mut editor, "alice", "users", &[("default", "tag:all")])?;
    add(&mut editor, "lan", "internet", &[("default", "tag:all")])?;
    let role = |name: &str| name.parse();
    editor.set_setting(
        &"hello".parse()?,
        &role("default")?,
        &SettingScope::Role,
        "greeting",
        &json!("Hi"),
    )?;
    editor.set_setting(
        &"hello".parse()?,
        &role("default")?,
        &SettingScope::Member("laptop".parse()?),
        "greeting",
        &json!("Hello laptop"),
    )?;
    editor.set_setting(
        &"alice".parse()?,
        &role("default")?,
        &SettingScope::Role,
        "user",
        &json!("alice"),
    )?;
    editor.save()?;
    Ok(())
}
