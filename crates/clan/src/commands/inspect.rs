//! `clan show`, `clan select` and `clan schema`: read-only views of the evaluated clan.

use std::process::ExitCode;

use serde_json::json;

use super::output::print_json;
use super::{clan_dir, Context};

#[derive(clap::Args)]
pub struct ShowArgs {
    #[arg(long)]
    json: bool,
}

/// The clan's name, domain and what it holds.
pub fn show(args: ShowArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let dir = clan_dir(context)?;
    let fleet = clan_eval::Fleet::open(&dir)?;
    let summary = &fleet.summary;
    let services: std::collections::BTreeSet<&str> = summary
        .instances
        .values()
        .filter_map(|instance| instance["service"].as_str())
        .collect();
    if args.json {
        print_json(&json!({
            "meta": summary.meta,
            "directory": dir,
            "machines": summary.machines.keys().collect::<Vec<_>>(),
            "instances": summary.instances.keys().collect::<Vec<_>>(),
            "services": services,
        }))?;
    } else {
        println!("clan      {}", summary.meta.name);
        println!("domain    {}", summary.meta.domain);
        if let Some(description) = &summary.meta.description {
            println!("about     {description}");
        }
        println!("directory {}", dir.display());
        println!(
            "machines  {} ({})",
            summary.machines.len(),
            summary
                .machines
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "instances {} ({})",
            summary.instances.len(),
            summary
                .instances
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "services  {}",
            services.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct SelectArgs {
    /// A clan-core select query, e.g. `machines.*.tags` or `machines.web01.config.files`.
    /// Roots: meta, machines (each with its evaluated config and settings), instances,
    /// services, exports. See docs/select.md.
    query: String,
}

/// Applies a select query to the evaluated clan and prints the result as JSON.
pub fn select(args: SelectArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let query = clan_lib::select::parse(&args.query)?;
    let dir = clan_dir(context)?;
    print_json(&clan_lib::select::select(&dir, &query)?)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    which: Schema,
}

#[derive(clap::Subcommand)]
enum Schema {
    /// JSON Schema of clan.toml (for editors: taplo, VS Code Even Better TOML).
    Inventory,
}

pub fn schema(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    match args.which {
        Schema::Inventory => print_json(&clan_inventory::json_schema())?,
    }
    Ok(ExitCode::SUCCESS)
}
