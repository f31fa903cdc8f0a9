//! `clan machines update-hardware-config`: a machine's hardware report fetched and committed
//! (`clan_lib::hardware`), and how hardware facts read for people (also in `machines show`).

use std::path::Path;
use std::process::ExitCode;

use clan_deploy::deploy::AgentBinary;
use clan_facter::Facts;
use clan_inventory::MachineName;
use clan_lib::hardware::UpdateHardwareRequest;

use super::deploy::SshArgs;
use crate::commands::output::{print_json, print_table, printer};
use crate::commands::Terminal;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  clan machines update-hardware-config web01
  clan machines update-hardware-config web01 --target-host root@203.0.113.4 --json

The report is nixos-facter's format (what clan-core and NixOS read), written to
machines/<machine>/facter.json and committed; services see it as ctx.machine.hardware.")]
pub struct UpdateHardwareArgs {
    /// The machine whose hardware is described.
    machine: MachineName,
    /// Also record serial numbers, UUID-bearing disk names and MAC addresses (the file is
    /// committed: leave them out unless you need them).
    #[arg(long)]
    with_serials: bool,
    /// Print what was written and the facts services see, as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ssh: SshArgs,
}

pub fn update(args: UpdateHardwareArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let request = UpdateHardwareRequest {
        machine: args.machine,
        target_host: args.ssh.target_host.clone(),
        ssh: args.ssh.options(),
        agent: AgentBinary::current()?,
        with_serials: args.with_serials,
    };
    printer().note(format_args!(
        "[{}] collecting the hardware report",
        request.machine
    ));
    let update = clan_lib::hardware::update_config(dir, &request, &Terminal)?;
    if args.json {
        print_json(&update)?;
        return Ok(ExitCode::SUCCESS);
    }
    printer().note(format_args!(
        "[{}] {} {}",
        update.machine,
        update.path.display(),
        if update.changed {
            "written and committed"
        } else {
            "unchanged"
        }
    ));
    let rows: Vec<Vec<String>> = facts_lines(&update.facts)
        .into_iter()
        .map(|(label, value)| vec![label.to_owned(), value])
        .collect();
    print_table(&rows)?;
    Ok(ExitCode::SUCCESS)
}

/// The facts as `(label, value)` lines for people.
pub fn facts_lines(facts: &Facts) -> Vec<(&'static str, String)> {
    let mut lines = vec![
        ("system", facts.system.clone()),
        (
            "virtualisation",
            facts.virtualisation.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(cpu) = &facts.cpu {
        let mut text = [cpu.vendor.as_deref(), cpu.model_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(threads) = cpu.threads {
            text.push_str(&format!(" ({threads} threads)"));
        }
        lines.push(("cpu", text));
    }
    if let Some(bytes) = facts.memory_bytes {
        lines.push(("memory", gibibytes(bytes)));
    }
    let disks: Vec<String> = facts
        .disks
        .iter()
        .map(|disk| match disk.size_bytes {
            Some(bytes) => format!("{} {}", disk.name, gibibytes(bytes)),
            None => disk.name.clone(),
        })
        .collect();
    lines.push(("disks", list_or_dash(disks)));
    let interfaces: Vec<String> = facts
        .network_interfaces
        .iter()
        .map(|interface| match &interface.kind {
            Some(kind) => format!("{} ({kind})", interface.name),
            None => interface.name.clone(),
        })
        .collect();
    lines.push(("interfaces", list_or_dash(interfaces)));
    lines
}

fn list_or_dash(items: Vec<String>) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

fn gibibytes(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}
