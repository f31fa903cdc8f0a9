//! What a caller asks for when starting a testbed, validated before anything is created.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::net::MAX_MACHINES;

/// How to start a testbed.
#[derive(Debug, Clone)]
pub struct Options {
    /// Machine names; each becomes the container's hostname. Clan machine name rules apply.
    pub machines: Vec<String>,
    /// Where keys, `ssh_config`, logs, machine overlays and `state.json` go.
    pub state_dir: PathBuf,
    /// Root filesystem cache; `None` means `CLAN_TESTBED_CACHE` or `/var/cache/clan-testbed`.
    pub cache_dir: Option<PathBuf>,
    /// Debian suite of the root filesystem; `None` means the host's (same glibc as the host).
    pub suite: Option<String>,
    /// Packages added to the root filesystem (a different list is a different cache).
    pub extra_packages: Vec<String>,
    /// Host files bound read-only into every machine (`host path`, `path in the machine`):
    /// tools from other registries than Debian's, e.g. a `cargo install`ed binary.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// Start containers in their own session so they outlive this process (the CLI's `up`).
    pub detach: bool,
    /// How long machines may take until their sshd answers; `None` scales with the count.
    pub boot_timeout: Option<Duration>,
    /// Write the machines' host keys into the testbed's `known_hosts` up front. Off by
    /// default: like a real server, a fresh machine's key is unknown to the deployer, whose
    /// first contact follows its own policy.
    pub trust_host_keys: bool,
    /// Receives progress messages (the one slow step is building the root filesystem).
    pub progress: fn(&str),
}

impl Options {
    /// Options for machines with the given names.
    pub fn named<I, S>(state_dir: impl Into<PathBuf>, names: I) -> Options
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Options {
            machines: names.into_iter().map(Into::into).collect(),
            state_dir: state_dir.into(),
            cache_dir: None,
            suite: None,
            extra_packages: Vec::new(),
            binds: Vec::new(),
            detach: false,
            boot_timeout: None,
            trust_host_keys: false,
            progress: |_| {},
        }
    }

    /// Options for `count` machines named `machine-1` … `machine-<count>`.
    pub fn numbered(state_dir: impl Into<PathBuf>, count: usize) -> Options {
        Options::named(state_dir, (1..=count).map(|i| format!("machine-{i}")))
    }

    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(clan_host::rootfs::default_cache_dir)
    }

    pub(crate) fn boot_timeout(&self) -> Duration {
        self.boot_timeout
            .unwrap_or(Duration::from_secs(60 + self.machines.len() as u64))
    }

    /// Checks names, counts and paths; everything later may rely on them.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.machines.is_empty() {
            return Err(Error::InvalidOptions("no machines requested".into()));
        }
        if self.machines.len() > MAX_MACHINES {
            return Err(Error::InvalidOptions(format!(
                "{} machines requested, one testbed holds at most {MAX_MACHINES}",
                self.machines.len()
            )));
        }
        for (i, name) in self.machines.iter().enumerate() {
            validate_name(name)?;
            if self.machines[..i].contains(name) {
                return Err(Error::InvalidOptions(format!(
                    "machine `{name}` is listed twice"
                )));
            }
        }
        validate_path(&self.state_dir, "state directory")?;
        validate_path(&self.cache_dir(), "cache directory")?;
        for package in &self.extra_packages {
            let valid = !package.is_empty()
                && package
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
            if !valid {
                return Err(Error::InvalidOptions(format!(
                    "`{package}` is not a Debian package name"
                )));
            }
        }
        Ok(())
    }
}

/// Clan machine names (`clan_config::MachineName`'s rule, the only one): also valid
/// hostnames, which is what they become.
pub fn validate_name(name: &str) -> Result<()> {
    match name.parse::<clan_config::MachineName>() {
        Ok(_) => Ok(()),
        Err(error) => Err(Error::InvalidName {
            name: error.name,
            reason: error.rule,
        }),
    }
}

/// Paths end up in `--overlay=A:B:/` and in quoted `ssh_config` values, where `:`, `"` and
/// line breaks cannot be expressed.
fn validate_path(path: &Path, what: &str) -> Result<()> {
    let text = path.to_string_lossy();
    if text.contains([':', '"', '\n', '\r']) {
        return Err(Error::InvalidOptions(format!(
            "{what} `{text}` contains `:`, `\"` or a line break; choose another"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_clan_rules() {
        for good in ["web01", "a", "db-1", &"x".repeat(63)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Web", "-a", "a-", "a_b", "a.b", &"x".repeat(64), "é"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(Options::numbered("/tmp/t", 3).validate().is_ok());
        assert!(Options::numbered("/tmp/t", 0).validate().is_err());
        assert!(Options::numbered("/tmp/t", 254).validate().is_err());
        assert!(Options::named("/tmp/t", ["a", "a"]).validate().is_err());
        assert!(Options::named("/tmp/a:b", ["a"]).validate().is_err());
        let mut options = Options::named("/tmp/t", ["a"]);
        options.extra_packages.push("curl; rm".into());
        assert!(options.validate().is_err());
    }

    #[test]
    fn numbered_names() {
        assert_eq!(
            Options::numbered("/t", 2).machines,
            ["machine-1", "machine-2"]
        );
    }
}
