//! clan-core's `select` query grammar: parsing queries such as
//! `machines.{web01,?db01}.tags.*` into a [`Query`] and applying them to a
//! [`serde_json::Value`]. This crate owns the grammar, its canonical printed
//! form and the shape of results; it never does I/O and never evaluates Nix —
//! callers hand it a JSON value and print what comes back.
//!
//! The grammar and result shapes follow clan-core's Python selector
//! (`pkgs/clan-cli/clan_lib/flake/flake.py`, `parse_selector` and
//! `FlakeCacheEntry.select`), which mirrors the Nix `nix-select` library;
//! `docs/select.md` describes it for users.

mod apply;
mod parse;
mod query;

pub use apply::SelectError;
pub use parse::{ParseError, ParseErrorKind};
pub use query::{Query, Selector, SetItem};

use serde_json::Value;

/// Parses a select query, e.g. `machines.*.tags`.
pub fn parse(query: &str) -> Result<Query, ParseError> {
    parse::parse(query)
}

/// Parses `query` and applies it to `value` in one step.
pub fn select(query: &str, value: &Value) -> Result<Value, Error> {
    Ok(parse(query)?.apply(value)?)
}

/// Either way [`select`] can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Select(#[from] SelectError),
}

impl clan_error::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Parse(error) => error.hint(),
            Error::Select(error) => error.hint(),
        }
    }
}

impl clan_error::Hint for ParseError {
    fn hint(&self) -> Option<String> {
        Some("see docs/select.md for the grammar".to_owned())
    }
}

impl clan_error::Hint for SelectError {
    fn hint(&self) -> Option<String> {
        Some("`clan select '*'` lists the roots".to_owned())
    }
}

clan_error::register!(Error, ParseError, SelectError);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn select_reports_both_kinds_of_error() {
        let doc = json!({"a": 1});
        assert!(matches!(select("{a", &doc), Err(Error::Parse(_))));
        assert!(matches!(select("b", &doc), Err(Error::Select(_))));
        assert_eq!(select("a", &doc).unwrap(), json!(1));
    }
}
