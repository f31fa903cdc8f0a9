//! Names of users, groups and secrets (machines: `clan_config::MachineName`), validated once at the edge with clan-core's
//! rules so that everything behind them can use them as path components.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A machine (`sops/machines/<name>`): the fleet's machine name, one rule for all of clan.
pub use clan_config::MachineName;

impl From<clan_config::NameError> for Error {
    fn from(error: clan_config::NameError) -> Error {
        Error::InvalidName {
            kind: error.kind,
            name: error.name,
            rule: error.rule,
        }
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:path, $rule:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(text: &str) -> Result<Self, Error> {
                if $check(text) {
                    Ok($name(text.to_owned()))
                } else {
                    Err(Error::InvalidName { kind: $kind, name: text.to_owned(), rule: $rule })
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<std::path::Path> for $name {
            fn as_ref(&self) -> &std::path::Path {
                std::path::Path::new(&self.0)
            }
        }
    };
}

name_type!(
    /// A user of the secrets store (`sops/users/<name>`).
    UserName, "user", is_user_or_group_name,
    "use at most 32 characters from a-z, 0-9, `-` and `_`, starting with a letter or `_`"
);
name_type!(
    /// A group of users and machines (`sops/groups/<name>`).
    GroupName, "group", is_user_or_group_name,
    "use at most 32 characters from a-z, 0-9, `-` and `_`, starting with a letter or `_`"
);
name_type!(
    /// A secret (`sops/secrets/<name>`).
    SecretName, "secret", is_secret_name,
    "use characters from a-z, A-Z, 0-9, `.`, `-` and `_`, and not `.` or `..`"
);

/// clan-core: `^[a-z_]([a-z0-9_-]{0,31})?$`.
fn is_user_or_group_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && text.len() <= 32
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// clan-core: `^[a-zA-Z0-9._-]+$`; `.` and `..` are refused too since they are not directories
/// of their own.
fn is_secret_name(text: &str) -> bool {
    !text.is_empty()
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clan_core_rules() {
        for good in ["alice", "_svc", "a-b_c9", &"a".repeat(32)] {
            assert!(good.parse::<UserName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Alice",
            "9lives",
            "-x",
            "a/b",
            "a b",
            &"a".repeat(33),
            "..",
        ] {
            assert!(bad.parse::<UserName>().is_err(), "{bad}");
        }
        for good in ["web01", "a", "my-machine", &"m".repeat(63)] {
            assert!(good.parse::<MachineName>().is_ok(), "{good}");
        }
        for bad in ["", "-web", "web-", "Web", "web_01", "a.b", &"m".repeat(64)] {
            assert!(bad.parse::<MachineName>().is_err(), "{bad}");
        }
        for good in ["db-password", "web01-age.key", "A.b_c", "...x"] {
            assert!(good.parse::<SecretName>().is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", "x\n"] {
            assert!(bad.parse::<SecretName>().is_err(), "{bad}");
        }
    }
}
