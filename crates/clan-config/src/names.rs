//! Validated names, parsed where they enter (a service's result, clan.toml, a manifest the
//! agent receives, the command line) so the rest of clan never re-checks them. Each type
//! holds one rule; deserialising (serde) and `FromStr` apply it, serialising writes the plain
//! string, so JSON is unchanged.
//!
//! - The fleet's names ([`MachineName`], [`InstanceName`], [`TagName`], [`RoleName`],
//!   [`ServiceName`], [`MachineClass`]) follow clan-core: machine and instance names are DNS
//!   labels, `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63 characters (machines become
//!   `<name>.<domain>`). Their error is [`NameError`].
//! - The names and values of a MachineConfig that reach a machine's file system or systemd
//!   ([`AbsolutePath`], [`UnitName`], [`AccountName`], [`PackageName`], [`FileMode`]). Their
//!   error is [`InvalidName`], which names where the value is (`file `/etc/x` mode`), so a bad
//!   value a service returns is an error of the evaluation (`clan show`).

use std::fmt;
use std::str::FromStr;

/// A value that is not what its place in a MachineConfig needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject}: `{value}` is {rule}")]
pub struct InvalidName {
    /// Where the value is: `unit `x``, `file `/etc/y` mode`.
    pub subject: String,
    pub value: String,
    /// What it should be: `not an absolute path`.
    pub rule: &'static str,
}

/// What to do about a bad value a service returned.
pub(crate) const FIX_IN_SERVICE: &str =
    "fix the value in the service (or the machine's config.star) that sets it";

impl clan_error::Hint for InvalidName {
    fn hint(&self) -> Option<String> {
        Some(FIX_IN_SERVICE.into())
    }

    fn exit(&self) -> clan_error::Exit {
        clan_error::Exit::Failed
    }
}

clan_error::register!(InvalidName);

/// A fleet name that broke its naming rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name `{name}`: {rule}")]
pub struct NameError {
    pub kind: &'static str,
    pub name: String,
    pub rule: &'static str,
}

impl clan_error::Hint for NameError {}
clan_error::register!(NameError);

/// What every validated string shares: it reads as a `str`, compares with one, prints and
/// serialises as its text and deserialises only through its rule.
macro_rules! string_name {
    ($(#[$doc:meta])* $name:ident, $error:ty, |$value:ident| $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = $error;
            fn from_str($value: &str) -> Result<Self, $error> {
                $parse.map(|()| Self($value.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = $error;
            fn try_from(value: String) -> Result<Self, $error> {
                let $value = value.as_str();
                $parse?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
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

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::try_from(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A fleet name: its rule is a check and the sentence shown when it fails.
macro_rules! fleet_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:ident, $rule:ident) => {
        string_name!($(#[$doc])* $name, NameError, |name| if $check(name) {
            Ok(())
        } else {
            Err(NameError { kind: $kind, name: name.to_owned(), rule: $rule })
        });

        #[cfg(feature = "schema")]
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

fleet_name!(
    /// A machine's name; also its hostname.
    MachineName, "machine", is_dns_label, DNS_LABEL_RULE
);
fleet_name!(
    /// A service instance's name.
    InstanceName, "instance", is_dns_label, DNS_LABEL_RULE
);
fleet_name!(
    /// A role of a service (`server`, `client`, `default`…).
    RoleName, "role", is_tag, TAG_RULE
);
fleet_name!(
    /// A tag grouping machines; `all` and the machine class are computed tags.
    TagName, "tag", is_tag, TAG_RULE
);
fleet_name!(
    /// A service's name (`sshd`, `hello-world`, or a directory under `services/`).
    ServiceName, "service", is_tag, TAG_RULE
);

/// How a machine is configured and deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum MachineClass {
    /// Any systemd Linux distribution, deployed by the clan agent.
    #[default]
    Linux,
    /// NixOS, deployed with nixos-rebuild.
    Nixos,
    /// macOS with nix-darwin (planned).
    Darwin,
}

impl MachineClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linux => "linux",
            Self::Nixos => "nixos",
            Self::Darwin => "darwin",
        }
    }
}

impl fmt::Display for MachineClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name of a MachineConfig: parsed with the subject its place gives it (`file `/x` owner`).
pub trait ConfigName: Sized {
    /// `value` when it is valid; the error names `subject` and the rule broken.
    fn parse(value: &str, subject: impl fmt::Display) -> Result<Self, InvalidName>;
}

/// A MachineConfig name: its rule, and the subject it is named by when nothing more precise
/// is known (a bare `FromStr` or a manifest field).
macro_rules! config_name {
    ($(#[$doc:meta])* $name:ident, $check:ident, $subject:literal) => {
        string_name!($(#[$doc])* $name, InvalidName, |value| $name::parse(value, $subject).map(drop));

        impl $name {
            /// `value` when it is valid; the error names `subject` and the rule broken.
            pub fn parse(value: &str, subject: impl fmt::Display) -> Result<$name, InvalidName> {
                match $check(value) {
                    Ok(()) => Ok($name(value.to_owned())),
                    Err(rule) => Err(InvalidName {
                        subject: subject.to_string(),
                        value: value.to_owned(),
                        rule,
                    }),
                }
            }
        }

        impl ConfigName for $name {
            fn parse(value: &str, subject: impl fmt::Display) -> Result<$name, InvalidName> {
                $name::parse(value, subject)
            }
        }
    };
}

config_name!(
    /// An absolute, normal file path: no `.` or `..` component, no trailing `/`, no NUL.
    AbsolutePath,
    check_absolute_path,
    "path"
);
config_name!(
    /// A systemd unit name (`app.service`, `getty@tty1.service`): it cannot escape
    /// `/etc/systemd/system` or be read as an option.
    UnitName,
    check_unit_name,
    "unit name"
);
config_name!(
    /// A user or group name: 1 to 32 of letters, digits, `-`, `_`, `.`, not starting with `-`.
    AccountName,
    check_account_name,
    "user or group"
);
config_name!(
    /// A distribution package name: letters, digits and `+-._:`, not starting with `-`.
    PackageName,
    check_package_name,
    "package"
);

config_name!(
    /// A host name for `/etc/hosts`: dot-separated labels of letters, digits and `-` (not at a
    /// label's ends), at most 253 characters, so an entry cannot add a line or an alias.
    HostName,
    check_host_name,
    "host name"
);

impl AccountName {
    /// The superuser, owner of what names no owner.
    pub fn root() -> AccountName {
        AccountName("root".to_owned())
    }
}

config_name!(
    /// The name of a state or a backup provider (clan-core's `^[a-zA-Z0-9_-]+$`): it becomes
    /// part of archive and unit names.
    StateName,
    check_state_name,
    "state or provider name"
);
config_name!(
    /// A systemd calendar event (`*-*-* 01:00:00`, `daily`) as a timer's `OnCalendar=`
    /// takes it: one line, so it cannot add directives to the unit.
    CalendarEvent,
    check_calendar_event,
    "calendar event"
);

fn check_state_name(name: &str) -> Result<(), &'static str> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
    valid
        .then_some(())
        .ok_or("not a state or provider name (letters, digits, `-`, `_`)")
}

fn check_host_name(name: &str) -> Result<(), &'static str> {
    let label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let valid = name.len() <= 253 && name.split('.').all(label);
    valid
        .then_some(())
        .ok_or("not a host name (labels of letters, digits and `-`, joined by `.`)")
}

fn check_calendar_event(event: &str) -> Result<(), &'static str> {
    let valid = !event.trim().is_empty() && !event.chars().any(char::is_control);
    valid.then_some(()).ok_or("not a systemd calendar event")
}

fn check_absolute_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') || path.len() < 2 {
        return Err("not an absolute path");
    }
    if path.ends_with('/') || path.contains('\0') {
        return Err("not a file path");
    }
    if path.split('/').any(|part| part == ".." || part == ".") {
        return Err("a path with `.` or `..` in it");
    }
    Ok(())
}

fn check_unit_name(name: &str) -> Result<(), &'static str> {
    let valid = name.contains('.')
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@:\\".contains(c));
    valid.then_some(()).ok_or("not a systemd unit name")
}

fn check_account_name(name: &str) -> Result<(), &'static str> {
    let valid = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    valid.then_some(()).ok_or("not a valid user or group name")
}

fn check_package_name(name: &str) -> Result<(), &'static str> {
    let valid = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._:".contains(c));
    valid.then_some(()).ok_or("not a package name")
}

/// Permission bits, at most `0o7777`; written as four octal digits (`"0644"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileMode(u32);

impl FileMode {
    /// `rw-r--r--`, a managed file's mode unless it says otherwise.
    pub const FILE: FileMode = FileMode(0o644);
    /// `r--------`, a secret's mode unless it says otherwise.
    pub const SECRET: FileMode = FileMode(0o400);

    pub fn parse(text: &str, subject: impl fmt::Display) -> Result<FileMode, InvalidName> {
        let bits = u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777);
        bits.map(FileMode).ok_or_else(|| InvalidName {
            subject: subject.to_string(),
            value: text.to_owned(),
            rule: "not an octal file mode (at most 7777)",
        })
    }

    pub fn bits(self) -> u32 {
        self.0
    }
}

impl ConfigName for FileMode {
    fn parse(value: &str, subject: impl fmt::Display) -> Result<FileMode, InvalidName> {
        FileMode::parse(value, subject)
    }
}

impl FromStr for FileMode {
    type Err = InvalidName;
    fn from_str(text: &str) -> Result<FileMode, InvalidName> {
        FileMode::parse(text, "mode")
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl serde::Serialize for FileMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MachineConfig;

    #[test]
    fn names_that_could_escape_or_be_read_as_options_are_refused() {
        for bad in ["etc/x", "/", "/etc/", "/etc/../shadow", "/./x"] {
            assert!(AbsolutePath::parse(bad, "file").is_err(), "{bad}");
        }
        assert!(AbsolutePath::parse("/etc/app.conf", "file").is_ok());
        for bad in [
            "app",
            "-x.service",
            ".hidden.service",
            "../x.service",
            "a b.service",
        ] {
            assert!(UnitName::parse(bad, "unit").is_err(), "{bad}");
        }
        assert!(UnitName::parse("getty@tty1.service", "unit").is_ok());
        for bad in ["", "-root", "a/b", &"x".repeat(33)] {
            assert!(AccountName::parse(bad, "user").is_err(), "{bad}");
        }
        for bad in ["644x", "8", "17777", ""] {
            assert!(FileMode::parse(bad, "mode").is_err(), "{bad}");
        }
        assert_eq!(FileMode::parse("0640", "mode").unwrap().bits(), 0o640);
    }

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
        let parsed: Result<MachineName, _> = serde_json::from_str("\"Web01\"");
        assert!(parsed.is_err(), "deserialising applies the rule");
    }

    #[test]
    fn tags_allow_underscores_but_not_spaces() {
        assert!("my_tag".parse::<TagName>().is_ok());
        assert!("Web-1".parse::<TagName>().is_ok());
        assert!("my tag".parse::<TagName>().is_err());
        assert!("_x".parse::<TagName>().is_err());
    }

    #[test]
    fn names_serialise_as_their_text() {
        let json = serde_json::json!({
            "files": {"/etc/ok": {"content": "", "mode": "0640", "owner": "app"}},
            "units": {"app.service": {"content": "", "restartTriggers": ["/etc/ok"]}},
        });
        let config: MachineConfig = serde_json::from_value(json.clone()).unwrap();
        let back = serde_json::to_value(&config).unwrap();
        assert_eq!(back["files"]["/etc/ok"]["mode"], "0640");
        assert_eq!(back["files"]["/etc/ok"]["owner"], "app");
        assert_eq!(
            back["units"]["app.service"]["restartTriggers"],
            serde_json::json!(["/etc/ok"])
        );
    }

    #[test]
    fn deserialising_names_the_subject_and_the_value() {
        let error = |json: serde_json::Value| {
            serde_json::from_value::<MachineConfig>(json)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(serde_json::json!({"units": {"bad name": {"content": ""}}})),
            "unit name: `bad name` is not a systemd unit name"
        );
        assert_eq!(
            error(serde_json::json!({"files": {"etc/relative": {"content": ""}}})),
            "file path: `etc/relative` is not an absolute path"
        );
        assert_eq!(
            error(serde_json::json!({"files": {"/etc/x": {"content": "", "mode": "9"}}})),
            "file `/etc/x` mode: `9` is not an octal file mode (at most 7777)"
        );
        assert_eq!(
            error(serde_json::json!({"users": {"alice": {"groups": ["-x"]}}})),
            "user `alice` group: `-x` is not a valid user or group name"
        );
        assert_eq!(
            error(serde_json::json!({"generators": {"g": {"files": {"f": {"owner": "a b"}}}}})),
            "generator `g` file `f` owner: `a b` is not a valid user or group name"
        );
        assert_eq!(
            error(serde_json::json!({"hosts": {"fd00::x": ["hub"]}})),
            "hosts address: `fd00::x` is not an IP address"
        );
        // A name cannot add an alias or a line to /etc/hosts.
        for name in ["a b", "x\n10.0.0.1 bank.example", "-x", "a..b"] {
            let message = error(serde_json::json!({"hosts": {"fd00::1": [name]}}));
            assert!(message.contains("is not a host name"), "{name}: {message}");
        }
    }
}
