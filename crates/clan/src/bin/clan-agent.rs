//! The machine binary `clan-agent`: what a deploy uploads to every machine (as
//! `/var/lib/clan/bin/clan`). All of it is `clan_agent`'s; it links neither the evaluator nor
//! Starlark, so a first deploy sends a small binary over the admin's uplink.

fn main() -> std::process::ExitCode {
    clan_agent::cli::main()
}
