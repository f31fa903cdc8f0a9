//! `clan services list|show`: the built-in and clan-local services and their roles' settings.

use std::process::ExitCode;

use clan_lib::services::{describe, describe_all};
use serde_json::Value;

use super::output::{print_json, print_line, print_table};
use super::{clan_dir, Context};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub clan: super::ClanArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// One line per service.
    #[command(after_help = "Examples:
  clan services list
  clan services list --json")]
    List {
        /// Print JSON: each service's roles and their settings' schemas.
        #[arg(long)]
        json: bool,
    },
    /// A service's roles and each role's settings with types, defaults and descriptions.
    #[command(after_help = "Example:
  clan services show sshd")]
    Show {
        /// The service (`clan services list`).
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let dir = clan_dir(context)?;
    match args.command {
        Command::List { json } => {
            let services = clan_lib::services::list(&dir)?;
            if json {
                print_json(&describe_all(&services))?;
            } else {
                let mut rows = vec![vec![
                    "NAME".into(),
                    "ROLES".into(),
                    "ORIGIN".into(),
                    "DESCRIPTION".into(),
                ]];
                for (name, service) in &services {
                    let roles: Vec<&str> = service.roles.keys().map(|role| role.as_str()).collect();
                    rows.push(vec![
                        name.clone(),
                        roles.join(","),
                        service.origin.clone(),
                        service.manifest.description.clone(),
                    ]);
                }
                print_table(&rows)?;
            }
        }
        Command::Show { name, json } => {
            let service = clan_lib::services::get(&dir, &name)?;
            if json {
                print_json(&describe(&service))?;
            } else {
                print_service(&service)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_service(service: &clan_service::Service) -> anyhow::Result<()> {
    let manifest = &service.manifest;
    print_line(format_args!("{} — {}", manifest.name, manifest.description))?;
    print_line(format_args!("origin: {}", service.origin))?;
    if !manifest.categories.is_empty() {
        print_line(format_args!(
            "categories: {}",
            manifest.categories.join(", ")
        ))?;
    }
    if !manifest.exports.is_empty() {
        print_line(format_args!("exports: {}", manifest.exports.join(", ")))?;
    }
    for (role, definition) in &service.roles {
        print_line(format_args!("\nrole {role}: {}", definition.description))?;
        let properties = definition
            .interface
            .get("properties")
            .and_then(Value::as_object);
        let required: Vec<&str> = definition
            .interface
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match properties {
            Some(properties) if !properties.is_empty() => {
                for (key, property) in properties {
                    let kind = property
                        .get("type")
                        .map_or_else(|| "any".to_owned(), |t| t.to_string().replace('"', ""));
                    let default = match property.get("default") {
                        Some(default) => format!(" = {default}"),
                        None if required.contains(&key.as_str()) => " (required)".to_owned(),
                        None => String::new(),
                    };
                    let description = property
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    print_line(format_args!(
                        "  {key}: {kind}{default}\n      {description}"
                    ))?;
                }
            }
            _ => print_line("  (no settings)")?,
        }
    }
    Ok(())
}
