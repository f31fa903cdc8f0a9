//! Renders errors for people ([`clan_agent::report`], shared with the machine binary), with the
//! hints of every library error the `clan` binary links.

use std::process::ExitCode;

pub use clan_agent::report::{hinted, Hinted, EXIT_FAILED};

/// The hint of a library error, if `cause` is one.
fn library_hint(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(error) = cause.downcast_ref::<clan_lib::Error>() {
        return error.hint();
    }
    if let Some(error) = cause.downcast_ref::<clan_lib::mesher::Error>() {
        return error.hint();
    }
    if let Some(error) = cause.downcast_ref::<clan_secrets::Error>() {
        return error.hint();
    }
    if let Some(error) = cause.downcast_ref::<clan_inventory::Error>() {
        return error.hint();
    }
    if let Some(error) = cause.downcast_ref::<clan_eval::Error>() {
        return error.hint();
    }
    if let Some(error) = cause.downcast_ref::<clan_deploy::Error>() {
        return error.hint();
    }
    if let Some(error) = cause.downcast_ref::<clan_network::Error>() {
        return error.hint();
    }
    if let Some(error) = cause.downcast_ref::<clan_vars::Error>() {
        return error.hint();
    }
    if let Some(error) = cause.downcast_ref::<clan_git::Error>() {
        return error.hint();
    }
    None
}

/// Prints `error` to stderr and returns the exit code for it.
pub fn print_error(error: &anyhow::Error) -> ExitCode {
    clan_agent::report::print_error(error, &library_hint)
}
