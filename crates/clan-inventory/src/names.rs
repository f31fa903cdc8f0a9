//! Validated names: machine, instance, role and tag names parse at the edge (`FromStr` and
//! serde) so the rest of clan never re-checks them.
//!
//! Machine and instance names follow clan-core: `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63
//! characters (a DNS label, since machines become `<name>.<domain>`).

use std::fmt;
use std::str::FromStr;

/// A name that broke its naming rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name `{name}`: {rule}")]
pub struct NameError {
    pub kind: &'static str,
    pub name: String,
    pub rule: &'static str,
}

const DNS_LABEL_RULE: &str =
    "use 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit";
const TAG_RULE: &str = "use letters, digits, `-` and `_`, starting with a letter or digit";

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(allowed)
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn is_tag(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr, $rule:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(name: &str) -> Result<Self, NameError> {
                if $check(name) {
                    Ok(Self(name.to_owned()))
                } else {
                    Err(NameError { kind: $kind, name: name.to_owned(), rule: $rule })
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": $rule })
            }
        }
    };
}

validated_name!(
    /// A machine's name; also its hostname.
    MachineName, "machine", is_dns_label, DNS_LABEL_RULE
);
validated_name!(
    /// A service instance's name.
    InstanceName, "instance", is_dns_label, DNS_LABEL_RULE
);
validated_name!(
    /// A role of a service (`server`, `client`, `default`…).
    RoleName, "role", is_tag, TAG_RULE
);
validated_name!(
    /// A tag grouping machines; `all` and the machine class are computed tags.
    TagName, "tag", is_tag, TAG_RULE
);
validated_name!(
    /// A service's name (`sshd`, `hello-world`, or a directory under `services/`).
    ServiceName, "service", is_tag, TAG_RULE
);

impl clan_error::Hint for NameError {}
clan_error::register!(NameError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_names_follow_clan_core() {
        for good in ["web01", "a", "a-b", "0", &"x".repeat(63)] {
            assert!(
                good.parse::<MachineName>().is_ok(),
                "{good} should be valid"
            );
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", &"x".repeat(64), "é"] {
            let error = bad.parse::<MachineName>().unwrap_err();
            assert_eq!(error.name, bad);
            assert!(error.to_string().contains("invalid machine name"));
        }
    }

    #[test]
    fn tags_allow_underscores_but_not_spaces() {
        assert!("my_tag".parse::<TagName>().is_ok());
        assert!("Web-1".parse::<TagName>().is_ok());
        assert!("my tag".parse::<TagName>().is_err());
        assert!("_x".parse::<TagName>().is_err());
    }
}
