//! The names and values of a MachineConfig that reach a machine's file system or systemd
//! (absolute paths, unit names, user and group names, package names, file modes), validated
//! where they enter: [`MachineConfig::check`] runs on every fragment a service returns, so a
//! bad value is an error of the evaluation (`clan show`), naming the instance and machine,
//! and the deployment side parses the same types before it trusts a manifest.

use std::fmt;

use crate::model::MachineConfig;

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

impl clan_error::Hint for InvalidName {
    fn hint(&self) -> Option<String> {
        Some("fix the value in the service (or the machine's config.star) that sets it".into())
    }

    fn exit(&self) -> clan_error::Exit {
        clan_error::Exit::Failed
    }
}

clan_error::register!(InvalidName);

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $check:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

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

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// An absolute, normal file path: no `.` or `..` component, no trailing `/`, no NUL.
    AbsolutePath,
    check_absolute_path
);
name_type!(
    /// A systemd unit name (`app.service`, `getty@tty1.service`): it cannot escape
    /// `/etc/systemd/system` or be read as an option.
    UnitName,
    check_unit_name
);
name_type!(
    /// A user or group name: 1 to 32 of letters, digits, `-`, `_`, `.`, not starting with `-`.
    AccountName,
    check_account_name
);
name_type!(
    /// A distribution package name: letters, digits and `+-._:`, not starting with `-`.
    PackageName,
    check_package_name
);

name_type!(
    /// The name of a state or a backup provider (clan-core's `^[a-zA-Z0-9_-]+$`): it becomes
    /// an archive and a unit name part.
    StateName,
    check_state_name
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

/// Octal permission bits (`"0644"`), at most `0o7777`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileMode(u32);

impl FileMode {
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

impl MachineConfig {
    /// Checks every name and value that reaches the machine: file paths, owners, groups and
    /// modes; unit names and their triggers; users, their groups, home and shell; groups;
    /// packages; secret owners, groups and modes; state names and folders; backup provider
    /// names. The first bad one is the error.
    pub fn check(&self) -> Result<(), InvalidName> {
        for (path, file) in &self.files {
            AbsolutePath::parse(path, "file path")?;
            let subject = format!("file `{path}`");
            AccountName::parse(&file.owner, format!("{subject} owner"))?;
            AccountName::parse(&file.group, format!("{subject} group"))?;
            FileMode::parse(&file.mode, format!("{subject} mode"))?;
        }
        for (name, unit) in &self.units {
            UnitName::parse(name, "unit name")?;
            for trigger in unit.restart_triggers.iter().chain(&unit.reload_triggers) {
                AbsolutePath::parse(trigger, format!("unit `{name}` trigger"))?;
            }
        }
        for (name, user) in &self.users {
            AccountName::parse(name, "user name")?;
            for group in user.group.iter().chain(&user.groups) {
                AccountName::parse(group, format!("user `{name}` group"))?;
            }
            for path in user.home.iter().chain(&user.shell) {
                AbsolutePath::parse(path, format!("user `{name}` home or shell"))?;
            }
        }
        for name in self.groups.keys() {
            AccountName::parse(name, "group name")?;
        }
        for (family, names) in &self.packages {
            for name in names {
                PackageName::parse(name, format!("{family} package"))?;
            }
        }
        for (name, secret) in &self.secrets {
            let subject = format!("secret `{name}`");
            AccountName::parse(&secret.owner, format!("{subject} owner"))?;
            AccountName::parse(&secret.group, format!("{subject} group"))?;
            FileMode::parse(&secret.mode, format!("{subject} mode"))?;
        }
        for (generator, definition) in &self.generators {
            for (file, output) in &definition.files {
                let subject = format!("generator `{generator}` file `{file}`");
                AccountName::parse(&output.owner, format!("{subject} owner"))?;
                AccountName::parse(&output.group, format!("{subject} group"))?;
                FileMode::parse(&output.mode, format!("{subject} mode"))?;
            }
        }
        for (name, state) in &self.state {
            StateName::parse(name, "state name")?;
            for folder in &state.folders {
                AbsolutePath::parse(folder, format!("state `{name}` folder"))?;
            }
        }
        for (name, provider) in &self.backups.providers {
            StateName::parse(name, "backup provider name")?;
            for calendar in provider.start_at.iter().chain(&provider.check_at) {
                if calendar.is_empty() || calendar.chars().any(char::is_control) {
                    return Err(InvalidName {
                        subject: format!("backup provider `{name}` schedule"),
                        value: calendar.clone(),
                        rule: "not a systemd calendar event",
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn check_names_the_subject_and_the_value() {
        let config: MachineConfig = serde_json::from_value(serde_json::json!({
            "files": {"/etc/ok": {"content": "", "mode": "0644"}},
            "units": {"bad name": {"content": ""}},
        }))
        .unwrap();
        assert_eq!(
            config.check().unwrap_err().to_string(),
            "unit name: `bad name` is not a systemd unit name"
        );
        let config: MachineConfig = serde_json::from_value(serde_json::json!({
            "files": {"etc/relative": {"content": "", "mode": "9"}},
        }))
        .unwrap();
        assert_eq!(
            config.check().unwrap_err().to_string(),
            "file path: `etc/relative` is not an absolute path"
        );
    }
}
