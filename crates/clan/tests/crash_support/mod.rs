//! Shared by the adversarial crash and concurrency tests: a clan in a temporary git
//! repository (an admin key, machines with generators, a service instance), the real `clan`
//! binary run in it — concurrently, or killed with SIGKILL at a random moment or at a chosen
//! git call — and the check that the repository is consistent afterwards.
//!
//! Kills at git calls go through a `git` on `PATH` that counts the calls clan makes and, at
//! the chosen one, kills clan before running git, after it, or kills clan's whole process
//! group while git runs. Randomized loops run `CLAN_ADVERSARIAL_TRIALS` trials (default 8)
//! from a printed seed (`CLAN_ADVERSARIAL_SEED` replays one).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

/// A generator per machine with a secret and a public file, one depending on it, and one
/// shared by all machines.
const GENERATORS: &str = r#"{
    "token": {"files": {"secret": {}, "id": {"secret": False}},
              "script": "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > $out/secret; date +%s%N > $out/id"},
    "derived": {"dependencies": ["token"], "files": {"hash": {}},
                "script": "sha256sum < $in/token/secret > $out/hash"},
    "fleet": {"share": True, "files": {"key": {}},
              "script": "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > $out/key"},
}"#;

const SHIM: &str = r#"#!/bin/bash
# Counts clan's git calls; kills clan at call $CLAN_TEST_KILL_AT (or at the first
# `git -C dir $CLAN_TEST_KILL_ON`) in mode $CLAN_TEST_KILL_MODE.
if [ -n "$CLAN_TEST_KILL_COUNTER" ]; then
    n=$(( $(cat "$CLAN_TEST_KILL_COUNTER" 2>/dev/null || echo 0) + 1 ))
    echo "$n" > "$CLAN_TEST_KILL_COUNTER"
    if [ "$n" = "$CLAN_TEST_KILL_AT" ] || { [ -n "$CLAN_TEST_KILL_ON" ] && [ "$3" = "$CLAN_TEST_KILL_ON" ]; }; then
        case "$CLAN_TEST_KILL_MODE" in
            before) kill -KILL "$PPID"; exit 137 ;;
            after) "$CLAN_TEST_REAL_GIT" "$@"; kill -KILL "$PPID"; exit 137 ;;
            during)
                "$CLAN_TEST_REAL_GIT" "$@" <&0 &
                sleep "0.00$(( RANDOM % 10 ))"
                kill -KILL -- "-$PPID"
                exit 137 ;;
        esac
    fi
fi
exec "$CLAN_TEST_REAL_GIT" "$@"
"#;

pub struct Clan {
    dir: tempfile::TempDir,
    key: PathBuf,
    real_git: PathBuf,
    pub machines: Vec<String>,
    /// The clan binary run (the deploy tests use a stripped copy, which is uploaded).
    pub binary: PathBuf,
    /// More environment for every command.
    pub env: Vec<(String, PathBuf)>,
    /// Kill what a killed run left running five seconds later instead of waiting for it to
    /// finish (for processes that might never finish on their own); records what each such
    /// run left.
    pub kill_orphans: bool,
    pub orphaned: std::cell::RefCell<Vec<Vec<String>>>,
}

/// How a run ended: `code` is `None` when it was killed.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Where to kill a run.
#[derive(Clone, Debug)]
pub enum Kill {
    /// After this long; the whole process group or only clan.
    After { delay: Duration, group: bool },
    /// At clan's `call`-th git call: `before`, `after` or `during` it.
    AtGit { call: u32, mode: &'static str },
    /// At the first `git <subcommand>`, in `mode`.
    OnGit {
        subcommand: &'static str,
        mode: &'static str,
    },
}

impl Clan {
    /// A clan with `machines` (each with [`GENERATORS`] and in instance `hello`) and the
    /// admin key of sops user `admin`, all committed; vars are not generated yet.
    pub fn new(machines: &[&str]) -> Clan {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home", "cache", "bin"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let real_git = which("git").expect("git is installed");
        let shim = dir.path().join("bin/git");
        std::fs::write(&shim, SHIM).unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        let clan = Clan {
            key: dir.path().join("admin.key"),
            dir,
            real_git,
            machines: machines.iter().map(|m| m.to_string()).collect(),
            binary: PathBuf::from(env!("CARGO_BIN_EXE_clan")),
            env: Vec::new(),
            kill_orphans: false,
            orphaned: Default::default(),
        };
        let mut init = clan.command(&[]);
        init.args(["init", "--name", "test", "--user", "admin"])
            .arg(clan.root());
        assert!(init.status().unwrap().success());
        clan.ok(&["vars", "keygen", "--user", "admin"], b"");
        clan.ok(
            &["instances", "create", "hello", "--service", "hello-world"],
            b"",
        );
        for machine in machines {
            clan.ok(&["machines", "create", machine], b"");
            clan.write(
                &format!("machines/{machine}/config.star"),
                &format!(
                    "def per_machine(ctx):\n    return {{\"config\": {{\"generators\": {GENERATORS}}}}}\n"
                ),
            );
            clan.ok(&["instances", "add", "hello", "default", machine], b"");
        }
        if !machines.is_empty() {
            clan.git(&["add", "machines"]);
            clan.git(&["commit", "-q", "-m", "generators"]);
        }
        clan
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("clan")
    }

    /// `$HOME` of the commands.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The admin's age key file (`SOPS_AGE_KEY_FILE` of the commands).
    pub fn key(&self) -> &std::path::Path {
        &self.key
    }

    pub fn write(&self, path: &str, content: &str) {
        let path = self.root().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root().join(path)).unwrap()
    }

    fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let dir = self.dir.path();
        crate::env::clan_env(command, &self.key, &dir.join("home"), &dir.join("cache"))
            .env_remove("CLAN_TEST_KILL_COUNTER")
            .env("PATH", path)
            .env("CLAN_TEST_REAL_GIT", &self.real_git)
    }

    /// The real git (not the killing one), in the clan.
    pub fn git(&self, args: &[&str]) -> String {
        let output = self
            .env(Command::new(&self.real_git).args(args))
            .current_dir(self.root())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `clan args…` with `CLAN_DIR` naming the clan, in a process group of its own.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        self.env(&mut command).process_group(0);
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
        if !args.is_empty() {
            command.env("CLAN_DIR", self.root()).args(args);
        }
        command
    }

    /// Starts `args` with `stdin` written (and closed) from a thread.
    pub fn spawn(&self, args: &[&str], stdin: &[u8]) -> Child {
        self.spawn_command(self.command(args), stdin)
    }

    fn spawn_command(&self, mut command: Command, stdin: &[u8]) -> Child {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        // The command may exit (or be killed) before reading it.
        std::thread::spawn(move || pipe.write_all(&stdin));
        child
    }

    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        finish(self.spawn(args, stdin))
    }

    pub fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let run = self.run(args, stdin);
        assert_eq!(
            run.code,
            Some(0),
            "clan {args:?}\nstdout: {}\nstderr: {}",
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// How many times `args` calls git when nothing interrupts it.
    pub fn git_calls(&self, args: &[&str], stdin: &[u8]) -> u32 {
        let counter = self.dir.path().join("git-calls");
        let _ = std::fs::remove_file(&counter);
        let mut command = self.command(args);
        command
            .env("CLAN_TEST_KILL_COUNTER", &counter)
            .env("CLAN_TEST_KILL_AT", "0");
        let run = finish(self.spawn_command(command, stdin));
        assert_eq!(run.code, Some(0), "clan {args:?}: {}", run.stderr);
        std::fs::read_to_string(&counter).map_or(0, |n| n.trim().parse().unwrap())
    }

    /// Runs `args` and kills it as `kill` says; returns once every process it started is gone.
    pub fn run_killed(&self, args: &[&str], stdin: &[u8], kill: &Kill) -> Run {
        let counter = self.dir.path().join("git-calls");
        let _ = std::fs::remove_file(&counter);
        let mut command = self.command(args);
        match kill {
            Kill::After { .. } => {}
            Kill::AtGit { call, mode } => {
                command
                    .env("CLAN_TEST_KILL_COUNTER", &counter)
                    .env("CLAN_TEST_KILL_AT", call.to_string())
                    .env("CLAN_TEST_KILL_MODE", mode);
            }
            Kill::OnGit { subcommand, mode } => {
                command
                    .env("CLAN_TEST_KILL_COUNTER", &counter)
                    .env("CLAN_TEST_KILL_ON", subcommand)
                    .env("CLAN_TEST_KILL_MODE", mode);
            }
        }
        let child = self.spawn_command(command, stdin);
        let pid = child.id();
        if let Kill::After { delay, group } = kill {
            std::thread::sleep(*delay);
            send_kill(pid, *group);
        }
        let run = finish(child);
        if self.kill_orphans && run.code.is_none() {
            // What ends by itself once clan is gone gets a moment to do so.
            let grace = std::time::Instant::now() + Duration::from_secs(5);
            while !group_members(pid).is_empty() && std::time::Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(20));
            }
            let left = group_members(pid);
            if !left.is_empty() {
                self.orphaned.borrow_mut().push(left);
                send_kill(pid, true);
            }
        }
        // Orphans (a git clan started, a generator script) finish before the next run.
        while !group_members(pid).is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        run
    }

    /// Checks what every interrupted run must leave once the next run is done: all
    /// committed, no helper refs or git lock files, a sound repository, a clan.toml that
    /// evaluates, every secret and var decryptable, every machine's vars valid.
    pub fn assert_consistent(&self, context: &str) {
        let status = self.git(&["status", "--porcelain", "--untracked-files=all"]);
        assert_eq!(status, "", "{context}: uncommitted or leftover files");
        assert_eq!(
            self.git(&["for-each-ref", "refs/clan"]),
            "",
            "{context}: helper refs left"
        );
        let git_dir = self.root().join(".git");
        for lock in [
            "index.lock",
            "HEAD.lock",
            "refs/heads/main.lock",
            "clan-journal",
        ] {
            assert!(!git_dir.join(lock).exists(), "{context}: {lock} left");
        }
        let fsck = Command::new(&self.real_git)
            .arg("-C")
            .arg(self.root())
            .args(["fsck", "--no-progress", "--no-dangling"])
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{context}: git fsck: {}",
            String::from_utf8_lossy(&fsck.stderr)
        );
        self.ok(&["instances", "list", "--json"], b"");
        let secrets = self.ok(&["secrets", "list"], b"");
        for secret in secrets.lines() {
            self.ok(&["secrets", "get", secret], b"");
        }
        let export = self.dir.path().join("export");
        let _ = std::fs::remove_dir_all(&export);
        self.ok(&["vars", "export", export.to_str().unwrap()], b"");
        std::fs::remove_dir_all(&export).unwrap();
    }

    /// Starts a `vars generate` that holds the clan lock until its stdin (prompt answers,
    /// `{"pw": {"p": "…"}}`) is closed, and returns once it holds it. Adds machine `holder`
    /// with the prompting generator.
    pub fn hold_lock(&self) -> Child {
        self.write(
            "machines/holder/config.star",
            "def per_machine(ctx):\n    return {\"config\": {\"generators\": {\"pw\": {\"prompts\": {\"p\": {}}, \"files\": {\"p\": {}}, \"script\": \"cp $prompts/p $out/p\"}}}}\n",
        );
        self.git(&["add", "machines"]);
        self.git(&["commit", "-q", "-m", "a generator with a prompt"]);
        self.ok(&["machines", "create", "holder"], b"");
        let holder = self
            .command(&["vars", "generate", "--prompt-values", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = format!("pid {}\n", holder.id());
        while !self.lock_record().starts_with(&pid) {
            std::thread::sleep(Duration::from_millis(10));
        }
        holder
    }

    /// What the clan lock file says about its (last) holder.
    pub fn lock_record(&self) -> String {
        std::fs::read_to_string(self.root().join(".git/clan.lock")).unwrap_or_default()
    }

    /// `vars check` passes for every machine.
    pub fn assert_vars_valid(&self, context: &str) {
        for machine in &self.machines {
            let run = self.run(&["vars", "check", machine], b"");
            assert_eq!(
                run.code,
                Some(0),
                "{context}: vars check {machine}: {}",
                run.stderr
            );
        }
    }
}

/// Waits for `child` and collects what it printed.
pub fn finish(child: Child) -> Run {
    let output = child.wait_with_output().unwrap();
    Run {
        code: output
            .status
            .code()
            .filter(|_| output.status.signal().is_none()),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Reads `child`'s stderr line by line until a line contains `needle`; returns that line.
pub fn read_stderr_until(child: &mut Child, needle: &str) -> String {
    let stderr = child.stderr.as_mut().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        match stderr.read(&mut byte) {
            Ok(0) => panic!(
                "stderr ended before `{needle}`: {}",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) if byte[0] == b'\n' => {
                let text = String::from_utf8_lossy(&line).into_owned();
                if text.contains(needle) {
                    return text;
                }
                line.clear();
            }
            Ok(_) => line.push(byte[0]),
            Err(error) => panic!("reading stderr: {error}"),
        }
    }
}

/// Sends SIGKILL to `pid`, or to its process group when `group`; gone already is fine.
fn send_kill(pid: u32, group: bool) {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let _ = if group {
        rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)
    } else {
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)
    };
}

/// The command lines of the processes of the group `pid` leads that still run (a zombie
/// waiting for its new parent to reap it does not).
fn group_members(pid: u32) -> Vec<String> {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let group = pid.to_string();
    let running = |process: &std::fs::DirEntry| {
        let Ok(stat) = std::fs::read_to_string(process.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold anything but the last `)`.
        let Some((_, fields)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = fields.split_whitespace().collect();
        matches!(fields.as_slice(), [state, _, g, ..] if *state != "Z" && *g == group)
    };
    processes
        .flatten()
        .filter(running)
        .map(|process| {
            let line = std::fs::read(process.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&line)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .collect()
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    })
}

/// The number of randomized trials: `CLAN_ADVERSARIAL_TRIALS`, else 8.
pub fn trials() -> usize {
    std::env::var("CLAN_ADVERSARIAL_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8)
}

/// A seeded generator for `name`'s trials; the seed is printed (`CLAN_ADVERSARIAL_SEED`
/// replays it).
pub fn rng(name: &str) -> (rand::rngs::StdRng, u64) {
    let seed = std::env::var("CLAN_ADVERSARIAL_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{name}: seed {seed} (CLAN_ADVERSARIAL_SEED={seed} replays it)");
    (rand::rngs::StdRng::seed_from_u64(seed), seed)
}

/// What a series of kill trials saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub trials: usize,
    /// Runs that were killed before they finished (the others finished first).
    pub killed: usize,
    /// Next runs that reported a recovery.
    pub recovered: usize,
}

/// Kills `args_of(trial)` at random points `trials()` times; after each, the same command
/// must succeed and leave the clan consistent, and `check(trial)` must hold.
pub fn kill_trials(
    name: &str,
    clan: &Clan,
    args_of: impl Fn(usize) -> (Vec<String>, Vec<u8>),
    check: impl Fn(&Clan, usize),
) -> Tally {
    let (mut rng, seed) = rng(name);
    let (args, stdin) = args_of(0);
    let args0: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let calls = clan.git_calls(&args0, &stdin);
    let duration = started.elapsed();
    check(clan, 0);
    let mut tally = Tally::default();
    for trial in 1..=trials() {
        let (args, stdin) = args_of(trial);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let kill = if calls == 0 || rng.gen_bool(0.5) {
            Kill::After {
                delay: duration.mul_f64(rng.gen::<f64>()),
                group: rng.gen_bool(0.5),
            }
        } else {
            Kill::AtGit {
                call: rng.gen_range(1..=calls),
                mode: ["before", "after", "during"][rng.gen_range(0..3)],
            }
        };
        let killed = clan.run_killed(&args, &stdin, &kill);
        let context = format!("{name} trial {trial} (seed {seed}), killed {kill:?}");
        if killed.code.is_none() {
            tally.killed += 1;
        } else {
            assert!(
                killed.code == Some(0),
                "{context}: the run was not killed but failed: {}",
                killed.stderr
            );
        }
        let next = clan.run(&args, &stdin);
        assert_eq!(
            next.code,
            Some(0),
            "{context}: the next run failed: {}",
            next.stderr
        );
        if next.stderr.contains("recovered: ") {
            tally.recovered += 1;
        }
        clan.assert_consistent(&context);
        check(clan, trial);
        tally.trials += 1;
    }
    eprintln!(
        "{name}: {} kill trials survived ({} killed before finishing, {} recoveries reported; {calls} git calls per run, {duration:?})",
        tally.trials, tally.killed, tally.recovered
    );
    // Trials in which nothing was ever killed would prove nothing.
    assert!(
        tally.killed > 0,
        "{name}: none of {} trials killed the command (seed {seed})",
        tally.trials
    );
    tally
}
