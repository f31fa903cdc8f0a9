//! A clan directory driven by the real `clan` binary against testbed machines: the
//! environment every command gets (the admin age key, the testbed's ssh_config, a private
//! HOME and cache, a fixed git identity), git in the clan directory, and each command's
//! output echoed so that a failing test shows it.

// Each deploy test file uses part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

use clan_testbed::Testbed;

pub struct Fixture {
    /// Admin age key, test ssh keys, prompt answers, caches: kept out of the clan directory.
    pub work: tempfile::TempDir,
    pub clan: tempfile::TempDir,
    pub testbed: Testbed,
    _state: tempfile::TempDir,
}

/// Runs `command`, echoing what it printed.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().expect("command runs");
    eprintln!(
        "{:?}:\n{}{}",
        command,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Loads the nftables `rules` in network namespace `netns` (a test machine's).
pub fn nft(netns: &str, rules: &str) {
    let mut nft = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft runs");
    std::io::Write::write_all(&mut nft.stdin.take().expect("piped"), rules.as_bytes())
        .expect("nft reads its rules");
    assert!(nft.wait().expect("nft ends").success(), "nft");
}

impl Fixture {
    /// Test machines `machines` and empty clan and work directories; `None` (after saying
    /// why) when the host cannot run them or one of `tools` is not installed.
    pub fn new(machines: &[&str], tools: &[&str]) -> Option<Self> {
        Fixture::with_packages(machines, tools, &[])
    }

    /// [`Fixture::new`] with `packages` installed on the machines.
    pub fn with_packages(machines: &[&str], tools: &[&str], packages: &[&str]) -> Option<Self> {
        Fixture::with_options(machines, tools, |options| {
            options.extra_packages = packages.iter().map(|p| (*p).to_owned()).collect();
        })
    }

    /// [`Fixture::new`] with `configure` applied to the testbed's options.
    pub fn with_options(
        machines: &[&str],
        tools: &[&str],
        configure: impl FnOnce(&mut clan_testbed::Options),
    ) -> Option<Self> {
        let (state, testbed) = super::testbed_configured(machines, configure)?;
        for tool in tools {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                clan_testbed::skip(format!("`{tool}` is not installed"));
                return None;
            }
        }
        let work = tempfile::tempdir().expect("work dir");
        for sub in ["home", "cache"] {
            std::fs::create_dir(work.path().join(sub)).unwrap();
        }
        Some(Fixture {
            work,
            clan: tempfile::tempdir().expect("clan dir"),
            testbed,
            _state: state,
        })
    }

    pub fn admin_key(&self) -> std::path::PathBuf {
        self.work.path().join("admin.age")
    }

    /// Machine `name`'s address on the testbed network.
    pub fn address_of(&self, name: &str) -> String {
        self.testbed.machine(name).unwrap().address.to_string()
    }

    pub fn clan(&self, args: &[&str]) -> Command {
        let mut command = Command::new(super::clan_binary());
        let work = self.work.path();
        crate::env::clan_env(
            command.args(args),
            &self.admin_key(),
            &work.join("home"),
            &work.join("cache"),
        )
        .env("CLAN_DIR", self.clan.path())
        .env("CLAN_SSH_CONFIG", self.testbed.ssh_config());
        command
    }

    /// The first `clan machines update` of the whole clan, as fresh servers meet it (host
    /// keys trusted on first use, a 10 s confirmation window); asserts that it succeeded.
    pub fn deploy_fresh(&self) -> Output {
        let output = run(&mut self.clan(&[
            "machines",
            "update",
            "--confirm-timeout",
            "10",
            "--host-key-check",
            "tofu",
        ]));
        assert!(output.status.success(), "deploy failed");
        output
    }

    pub fn clan_ok(&self, args: &[&str]) -> String {
        let output = run(&mut self.clan(args));
        assert!(output.status.success(), "clan {args:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `program` with the environment `clan` commands get.
    pub fn with_clan_env(&self, program: &str) -> Command {
        self.clan(&[])
            .get_envs()
            .fold(Command::new(program), |mut command, (key, value)| {
                match value {
                    Some(value) => command.env(key, value),
                    None => command.env_remove(key),
                };
                command
            })
    }

    pub fn git(&self, args: &[&str]) {
        let status = self
            .with_clan_env("git")
            .args(args)
            .current_dir(self.clan.path())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    /// Writes and commits `clan.toml` (the first call also creates the repository).
    pub fn commit_clan_toml(&self, toml: &str, message: &str) {
        std::fs::write(self.clan.path().join("clan.toml"), toml).unwrap();
        if !self.clan.path().join(".git").exists() {
            self.git(&["init", "-q"]);
        }
        self.git(&["add", "clan.toml"]);
        self.git(&["commit", "-q", "-m", message]);
    }

    /// Drops SSH from the admin (the host's testbed address) in network namespace `netns`:
    /// connections to that machine's sshd hang, while other machines still reach it.
    pub fn drop_admin_ssh(&self, netns: &str) {
        let admin = self.testbed.host_address();
        nft(
            netns,
            &format!(
                "table inet noadmin {{\n  chain input {{\n    type filter hook input priority -10;\n    ip saddr {admin} tcp dport 22 drop\n  }}\n}}\n"
            ),
        );
    }

    /// `command` run by root on `machine` through the testbed's own way in; its stdout.
    pub fn on(&self, machine: &str, command: &str) -> String {
        stdout(&run(self
            .testbed
            .ssh_command(machine)
            .unwrap()
            .arg(command)))
    }
}
