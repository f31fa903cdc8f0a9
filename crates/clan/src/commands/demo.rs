//! `clan demo`: the main job on a built-in default. Creates a throwaway clan with several
//! machines and service instances, evaluates it and prints the fleet.

use std::path::PathBuf;
use std::process::ExitCode;

use clan_inventory::{Editor, MachineClass, RoleTarget, SettingScope};
use serde_json::json;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Where to create the demo clan (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

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
    eprintln!("creating a demo clan in {}", dir.display());
    clan_inventory::write_atomically(
        &dir.join(clan_inventory::CLAN_TOML),
        clan_inventory::new_clan_toml("demo", "clan").as_bytes(),
    )?;
    declare_fleet(&dir)?;

    let fleet = clan_eval::Fleet::open_with_cache(&dir, &dir.join(".cache"))?;
    println!(
        "clan `{}`: {} machines, {} service instances\n",
        fleet.summary.meta.name,
        fleet.summary.machines.len(),
        fleet.summary.instances.len()
    );
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
            machine.summary.name.clone(),
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
    println!(
        "\n/etc/hello on laptop: {}",
        laptop.config.files["/etc/hello"].content.trim_end()
    );
    let web01 = fleet.machine("web01")?;
    println!(
        "/etc/hello on web01:  {}",
        web01.config.files["/etc/hello"].content.trim_end()
    );
    if args.dir.is_some() {
        eprintln!(
            "\nthe demo clan stays in {}; try `clan -C {} machines show web01`",
            dir.display(),
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The demo's machines and instances, written through the same editor the CLI uses.
fn declare_fleet(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut editor = Editor::open(dir)?;
    for (name, tags) in MACHINES {
        let tags: Vec<_> = tags
            .iter()
            .map(|tag| tag.parse())
            .collect::<Result<_, _>>()?;
        editor.add_machine(&name.parse()?, &tags, MachineClass::Linux, None, None)?;
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
