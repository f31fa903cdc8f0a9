//! `clan show`, `clan select` and `clan schema`: read-only views of the evaluated clan
//! (`clan_lib::show`, `clan_lib::select`).

use std::process::ExitCode;

use super::output::{print_json, print_line};
use super::{clan_dir, Context};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  clan show
  clan show --json | jq .machines")]
pub struct ShowArgs {
    #[command(flatten)]
    pub clan: super::ClanArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The clan's name, domain and what it holds.
pub fn show(args: ShowArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let overview = clan_lib::show::show(&clan_dir(context)?)?;
    if args.json {
        print_json(&overview)?;
        return Ok(ExitCode::SUCCESS);
    }
    let meta = &overview.meta;
    print_line(format_args!("clan      {}", meta.name))?;
    print_line(format_args!("domain    {}", meta.domain))?;
    if let Some(description) = &meta.description {
        print_line(format_args!("about     {description}"))?;
    }
    print_line(format_args!("directory {}", overview.directory.display()))?;
    print_line(format_args!(
        "machines  {} ({})",
        overview.machines.len(),
        overview.machines.join(", ")
    ))?;
    print_line(format_args!(
        "instances {} ({})",
        overview.instances.len(),
        overview.instances.join(", ")
    ))?;
    let services: Vec<&str> = overview.services.iter().map(String::as_str).collect();
    print_line(format_args!("services  {}", services.join(", ")))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  clan select 'machines.*.tags'
  clan select 'machines.web01.config.files'")]
pub struct SelectArgs {
    #[command(flatten)]
    pub clan: super::ClanArg,
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
    #[command(after_help = "Example:
  clan schema inventory > clan.schema.json")]
    Inventory,
}

pub fn schema(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    match args.which {
        Schema::Inventory => print_json(&clan_inventory::json_schema())?,
    }
    Ok(ExitCode::SUCCESS)
}
