//! `clan machines update` against real test machines (systemd-nspawn containers with sshd):
//! each test checks the outcome inside the containers. Tests skip with the reason when the
//! host cannot run a testbed (not root, a tool missing).

mod env;
mod support;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use clan_testbed::Testbed;

/// A testbed of `names` plus a clan directory whose machines target them.
struct Fixture {
    _state: tempfile::TempDir,
    clan: tempfile::TempDir,
    testbed: Testbed,
}

fn fixture(names: &[&str]) -> Option<Fixture> {
    let (state, testbed) = support::testbed(names)?;
    let clan = tempfile::tempdir().expect("clan dir");
    let mut toml = String::from("[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n");
    for machine in testbed.machines() {
        toml.push_str(&format!(
            "[machines.{}]\ndeploy.targetHost = \"{}\"\n\n",
            machine.name,
            machine.ssh_target()
        ));
    }
    toml.push_str(
        "[instances.hello]\nmodule.name = \"hello-world\"\nroles.default.tags = [\"all\"]\n",
    );
    std::fs::write(clan.path().join("clan.toml"), toml).unwrap();
    Some(Fixture {
        _state: state,
        clan,
        testbed,
    })
}

impl Fixture {
    /// Sets `machines/<m>/config.star` to return `config` (a Starlark dict literal).
    fn configure(&self, machine: &str, config: &str) {
        let dir = self.clan.path().join("machines").join(machine);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.star"),
            format!("def per_machine(ctx):\n    return {{\"config\": {config}}}\n"),
        )
        .unwrap();
    }

    fn clan(&self, args: &[&str]) -> Command {
        let mut command = Command::new(support::clan_binary());
        command
            .args(args)
            .env("CLAN_DIR", self.clan.path())
            .env("CLAN_SSH_CONFIG", self.testbed.ssh_config())
            // The machines are fresh, their host keys unknown: trust them on first use.
            .env("CLAN_HOST_KEY_CHECK", "tofu")
            .env("XDG_CACHE_HOME", self.clan.path().join(".cache"));
        command
    }

    /// `clan machines update ARGS`, with a 5 s confirmation window unless ARGS sets one.
    fn update(&self, args: &[&str]) -> Output {
        let mut all = vec!["machines", "update"];
        if !args.contains(&"--confirm-timeout") {
            all.extend(["--confirm-timeout", "5"]);
        }
        all.extend(args);
        let output = self.clan(&all).output().expect("clan runs");
        eprintln!(
            "clan {}:\n{}{}",
            all.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn update_ok(&self, args: &[&str]) -> String {
        let output = self.update(args);
        assert!(output.status.success(), "deploy failed");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Runs a command on `machine` (words joined by ssh for the remote shell).
    fn on(&self, machine: &str, command: &str) -> Output {
        self.testbed
            .ssh_command(machine)
            .unwrap()
            .arg(command)
            .output()
            .unwrap()
    }

    /// How many magic rollbacks `machine`'s history records.
    fn magic_rollbacks(&self, machine: &str) -> usize {
        let output = self
            .clan(&["machines", "generations", machine])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .matches("magic-rollback")
            .count()
    }

    /// Starts a deploy and kills it as soon as `path` appears on `machine` (activated, not
    /// yet confirmed).
    /// Deploys with a confirmation window of `window` seconds and kills the deployer as soon
    /// as `path` shows that the machine activated.
    fn activate_then_kill_deployer(&self, machine: &str, path: &str, window: u32) {
        let window = window.to_string();
        let mut child = self
            .clan(&["machines", "update", "--confirm-timeout", &window])
            .process_group(0)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.on(machine, &format!("test -e {path}")).status.code() != Some(0) {
            assert!(Instant::now() < deadline, "never activated");
            std::thread::sleep(Duration::from_millis(10));
        }
        Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status()
            .unwrap();
        child.wait().unwrap();
    }

    fn stdout_on(&self, machine: &str, command: &str) -> String {
        let output = self.on(machine, command);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn unit(exec: &str) -> String {
    format!(
        "{{\"content\": \"[Unit]\\nDescription=test\\n[Service]\\n{exec}\\n[Install]\\nWantedBy=multi-user.target\\n\"}}"
    )
}

#[test]
fn deploy_lifecycle() {
    let Some(f) = fixture(&["web"]) else { return };
    // A pre-existing file the clan will start managing.
    f.on("web", "echo admin-owned > /etc/motd.d-test");
    let base = |extra_files: &str, exec: &str| {
        format!(
            "{{\"files\": {{\"/etc/app.conf\": {{\"content\": \"v=1\\n\", \"mode\": \"0600\", \"owner\": \"alice\"}}, \
              \"/etc/motd.d-test\": {{\"content\": \"clan\\n\"}}{extra_files}}}, \
             \"units\": {{\"app.service\": {}}}, \
             \"users\": {{\"alice\": {{\"home\": \"/home/alice\", \"shell\": \"/bin/sh\"}}}}}}",
            unit(exec)
        )
    };
    f.configure(
        "web",
        &base(
            ", \"/etc/dropped\": {\"content\": \"x\"}",
            "ExecStart=/bin/sleep 1000",
        ),
    );

    // Dry run: reports, changes nothing.
    let dry = f.update_ok(&["--dry-run"]);
    assert!(dry.contains("file /etc/hello"), "{dry}");
    assert!(dry.contains("user alice"), "{dry}");
    assert!(dry.contains("unit (start) app.service"), "{dry}");
    assert!(dry.contains("file (keep aside) /etc/motd.d-test"), "{dry}");
    assert!(dry.contains("first deploy"), "{dry}");
    assert_eq!(f.on("web", "test -e /etc/hello").status.code(), Some(1));
    // Not even the agent or the generation went to the machine.
    assert_eq!(f.on("web", "test -e /var/lib/clan").status.code(), Some(1));

    let first = f.update_ok(&[]);
    assert!(first.contains("confirmed"), "{first}");
    assert_eq!(f.stdout_on("web", "cat /etc/hello"), "Hello from web");
    assert_eq!(
        f.stdout_on("web", "getent passwd alice | cut -d: -f6,7"),
        "/home/alice:/bin/sh"
    );
    assert_eq!(
        f.stdout_on("web", "stat -c %U:%a /etc/app.conf"),
        "alice:600"
    );
    assert_eq!(
        f.stdout_on("web", "cat /etc/motd.d-test.clan-orig"),
        "admin-owned"
    );
    assert_eq!(f.stdout_on("web", "cat /etc/motd.d-test"), "clan");
    assert_eq!(
        f.stdout_on("web", "systemctl is-active app.service"),
        "active"
    );
    let pid = f.stdout_on("web", "systemctl show -P MainPID app.service");

    // Nothing changed: the machine is not touched.
    let again = f.update_ok(&[]);
    assert!(again.contains("done: unchanged"), "{again}");
    assert_eq!(
        f.stdout_on("web", "systemctl show -P MainPID app.service"),
        pid
    );

    // Changing the unit restarts it; dropping files removes them; the original comes back.
    // A dry run first compares on the machine without storing the new generation.
    f.configure("web", &base("", "ExecStart=/bin/sleep 2000"));
    let stored = || f.stdout_on("web", "ls /var/lib/clan/generations");
    let before = stored();
    let dry = f.update_ok(&["--dry-run"]);
    assert!(dry.contains("unit (restart) app.service"), "{dry}");
    assert!(dry.contains("file (remove) /etc/dropped"), "{dry}");
    assert!(!dry.contains("first deploy"), "{dry}");
    assert_eq!(stored(), before, "a dry run stored a generation");
    let second = f.update_ok(&[]);
    assert!(second.contains("unit restarted"), "{second}");
    assert_ne!(
        f.stdout_on("web", "systemctl show -P MainPID app.service"),
        pid
    );
    assert_eq!(f.on("web", "test -e /etc/dropped").status.code(), Some(1));
    assert_eq!(f.stdout_on("web", "cat /etc/motd.d-test"), "clan");

    // History and rollback.
    let generations = f
        .clan(&["machines", "generations", "web"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&generations.stdout).into_owned();
    assert!(generations.status.success(), "{}", stderr(&generations));
    assert_eq!(
        table.lines().filter(|l| l.contains("deploy")).count(),
        2,
        "{table}"
    );
    let rollback = f.clan(&["machines", "rollback", "web"]).output().unwrap();
    assert!(rollback.status.success(), "{}", stderr(&rollback));
    assert_eq!(f.stdout_on("web", "cat /etc/dropped"), "x");
    assert!(f
        .stdout_on("web", "systemctl cat app.service")
        .contains("sleep 1000"));
}

/// What the machine prints while a stage runs arrives as `output` events of that stage, line
/// by line, before the stage's end: here `systemctl`'s account of a unit that fails to start,
/// and with `-v` as `[machine] | …` lines.
#[test]
fn remote_output_streams_as_events_while_the_stage_runs() {
    let Some(f) = fixture(&["web"]) else {
        return;
    };
    f.configure(
        "web",
        &format!(
            "{{\"units\": {{\"loud.service\": {}}}}}",
            unit("Type=oneshot\\nExecStart=/bin/sh -c 'echo boom; exit 1'")
        ),
    );
    let output = f.update(&["--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    let position = |wanted: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .position(wanted)
            .unwrap_or_else(|| panic!("no such event in {events:#?}"))
    };
    let activating = position(&|e| e["event"] == "stage" && e["stage"] == "activate");
    let said = position(&|e| {
        e["event"] == "output"
            && e["stage"] == "activate"
            && e["line"]
                .as_str()
                .is_some_and(|l| l.contains("Job for loud.service failed"))
    });
    let failed = position(&|e| e["event"] == "failed" && e["stage"] == "activate");
    assert!(activating < said && said < failed, "{events:#?}");
    let shown = stderr(&f.update(&["-v"]));
    assert!(
        shown.contains("[web] | Job for loud.service failed"),
        "{shown}"
    );
}

#[test]
fn deploy_faults() {
    let Some(mut f) = fixture(&["db"]) else {
        return;
    };
    f.configure(
        "db",
        &format!(
            "{{\"units\": {{\"good.service\": {}}}}}",
            unit("ExecStart=/bin/sleep 1000")
        ),
    );
    f.update_ok(&[]);

    // A unit that fails to start: the previous generation comes back, the failure is reported.
    f.configure(
        "db",
        &format!(
            "{{\"units\": {{\"good.service\": {}, \"bad.service\": {}}}, \"files\": {{\"/etc/new\": {{\"content\": \"n\"}}}}}}",
            unit("ExecStart=/bin/sleep 1000"),
            unit("Type=oneshot\\nExecStart=/bin/false")
        ),
    );
    let failed = f.update(&[]);
    assert_eq!(failed.status.code(), Some(1));
    let text = stderr(&failed);
    assert!(
        text.contains("bad.service") && text.contains("restored"),
        "{text}"
    );
    // The agent reports it typed, and the deployer passes that on: a rollback, caused by
    // the unit.
    let failed = f.update(&["--json"]);
    assert_eq!(failed.status.code(), Some(1));
    let event = String::from_utf8_lossy(&failed.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "failed")
        .expect("a failed event");
    let failure = &event["failure"];
    assert_eq!(failure["kind"], "rolled-back", "{event}");
    assert_eq!(failure["cause"]["kind"], "unit", "{event}");
    assert_eq!(failure["cause"]["unit"], "bad.service", "{event}");
    assert!(
        failure["message"].as_str().unwrap().contains("restored"),
        "{event}"
    );
    assert_eq!(f.on("db", "test -e /etc/new").status.code(), Some(1));
    assert_eq!(
        f.on("db", "test -e /etc/systemd/system/bad.service")
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        f.stdout_on("db", "systemctl is-active good.service"),
        "active"
    );

    // The deployer killed during the upload: the machine is unchanged. An `ssh` wrapper holds
    // the generation's stream after its first bytes, so the kill lands mid-upload.
    let wrapper = f.clan.path().join("bin");
    std::fs::create_dir_all(&wrapper).unwrap();
    std::fs::write(
        wrapper.join("ssh"),
        "#!/bin/sh\ncase \"$*\" in\n  *\"'receive'\"*) { head -c 100; sleep 60; cat; } | /usr/bin/ssh \"$@\" ;;\n  *) exec /usr/bin/ssh \"$@\" ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(
        wrapper.join("ssh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let before = f.stdout_on("db", "cat /var/lib/clan/state.json");
    f.configure(
        "db",
        "{\"files\": {\"/etc/interrupted\": {\"content\": \"i\"}}}",
    );
    let path = format!(
        "{}:{}",
        wrapper.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = f
        .clan(&["machines", "update", "--no-magic-rollback"])
        .env("PATH", path)
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f.on("db", "pgrep -f 'agent receive'").status.success() {
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.on("db", "pgrep -f 'agent receive'").status.success() {
        assert!(Instant::now() < deadline, "the receiving agent never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        f.on("db", "test -e /etc/interrupted").status.code(),
        Some(1)
    );
    assert_eq!(f.stdout_on("db", "cat /var/lib/clan/state.json"), before);
    assert_eq!(
        f.stdout_on("db", "ls /var/lib/clan/generations | grep -c tmp"),
        "0"
    );

    // A generation that cuts off SSH access (its unit stops sshd; sessions already open
    // survive, as with a firewall that drops new connections): the confirmation cannot get
    // in, the deployer says so, the machine reverts by itself within the timeout (stopping
    // the unit starts sshd again), and the deployer reconnects to see it.
    f.configure(
        "db",
        &format!(
            "{{\"files\": {{\"/etc/unconfirmed\": {{\"content\": \"u\"}}}}, \"units\": {{\"cut-off.service\": {}}}}}",
            unit("Type=oneshot\\nRemainAfterExit=yes\\nExecStart=/bin/systemctl stop ssh.service\\nExecStop=/bin/systemctl start ssh.service")
        ),
    );
    let output = f.update(&[]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains("cut off SSH access") && text.contains("returns to generation"),
        "{text}"
    );
    assert!(text.contains("back on generation"), "{text}");
    assert_eq!(
        f.on("db", "test -e /etc/unconfirmed").status.code(),
        Some(1)
    );
    let generations = f.clan(&["machines", "generations", "db"]).output().unwrap();
    assert!(String::from_utf8_lossy(&generations.stdout).contains("magic-rollback"));

    // The deployer dies right after an activation, and so does the machine's waiter (stopped
    // for good): past the deadline the stale confirmation blocks nothing, and the next deploy
    // first puts the unconfirmed generation back.
    f.configure("db", "{\"files\": {\"/etc/orphan\": {\"content\": \"o\"}}}");
    f.activate_then_kill_deployer("db", "/etc/orphan", 8);
    let before = f.magic_rollbacks("db");
    // Its waiter starts at the end of the activation, which runs on without the deployer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while f
        .stdout_on("db", "systemctl list-units --no-legend 'clan-confirm-*'")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no waiter ever started");
        std::thread::sleep(Duration::from_millis(20));
    }
    f.on("db", "systemctl stop 'clan-confirm-*'");
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(
        f.stdout_on("db", "cat /etc/orphan"),
        "o",
        "nothing reverted it yet"
    );
    f.configure("db", "{\"files\": {\"/etc/after\": {\"content\": \"a\"}}}");
    f.update_ok(&[]);
    assert_eq!(f.on("db", "test -e /etc/orphan").status.code(), Some(1));
    assert_eq!(f.stdout_on("db", "cat /etc/after"), "a");
    assert_eq!(f.magic_rollbacks("db"), before + 1);

    // A reboot inside the confirmation window: the machine comes back up, resumes waiting,
    // and reverts when no confirmation comes.
    f.configure(
        "db",
        "{\"files\": {\"/etc/rebooted\": {\"content\": \"r\"}}}",
    );
    // The window outlasts a clean poweroff (up to 15 s) on a loaded host.
    f.activate_then_kill_deployer("db", "/etc/rebooted", 30);
    f.testbed.stop("db").unwrap();
    f.testbed.start("db").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.on("db", "test -e /etc/rebooted").status.code() != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the rebooted machine kept the generation"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(f.stdout_on("db", "cat /etc/after"), "a");
    assert_eq!(f.magic_rollbacks("db"), before + 2);

    // Two deploys of the same machine at once never interleave: both end well or one says why.
    f.configure(
        "db",
        "{\"files\": {\"/etc/concurrent\": {\"content\": \"c\"}}}",
    );
    let spawn = || {
        f.clan(&["machines", "update", "--lock-timeout", "30"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for output in [&a, &b] {
        assert!(
            output.status.success() || stderr(output).contains("busy"),
            "{}",
            stderr(output)
        );
    }
    assert_eq!(f.stdout_on("db", "cat /etc/concurrent"), "c");
}

#[test]
fn fleet_with_unreachable_machines_and_clear_errors() {
    let names: Vec<String> = (1..=50).map(|i| format!("m{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let Some(mut f) = fixture(&names) else { return };
    // 5 of 50 unreachable: three stopped, two with their link down.
    let unreachable = ["m07", "m19", "m26", "m33", "m44"];
    for name in ["m07", "m19", "m33"] {
        f.testbed.stop(name).unwrap();
    }
    for name in ["m26", "m44"] {
        f.testbed.link_down(name).unwrap();
    }
    // 50 confirmations at once on a loaded 2-core host can take longer than 5 s; only the
    // unreachable machines may fail, and those fail at connecting.
    let window = ["--confirm-timeout", "30", "--jobs", "50"];
    let output = f.update(&[&window[..], &["--json"]].concat());
    assert_eq!(output.status.code(), Some(1));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let ended = |event: &str| -> Vec<String> {
        let mut machines: Vec<String> = events
            .iter()
            .filter(|e| e["event"] == event)
            .map(|e| e["machine"].as_str().unwrap().to_owned())
            .collect();
        machines.sort();
        machines
    };
    let reachable: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !unreachable.contains(name))
        .collect();
    assert_eq!(ended("failed"), unreachable);
    assert_eq!(ended("done"), reachable);
    for name in &reachable {
        assert_eq!(
            f.stdout_on(name, "cat /etc/hello"),
            format!("Hello from {name}")
        );
    }
    // The text form's summary names the five.
    let text = f.update(&window);
    assert_eq!(text.status.code(), Some(1));
    assert!(
        stderr(&text).contains("5 of 50 machines failed: m07, m19, m26, m33, m44"),
        "{}",
        stderr(&text)
    );
    assert!(String::from_utf8_lossy(&text.stdout).contains("FAILED (connect)"));

    // `--tags`: only the machines with every given tag.
    let toml_path = f.clan.path().join("clan.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    let toml = ["m03", "m04"].iter().fold(toml, |toml, name| {
        toml.replace(
            &format!("[machines.{name}]\n"),
            &format!("[machines.{name}]\ntags = [\"web\"]\n"),
        )
    });
    std::fs::write(&toml_path, toml).unwrap();
    let tagged = f.update(&["--tags", "web", "--json"]);
    assert_eq!(tagged.status.code(), Some(0), "{}", stderr(&tagged));
    let mut done: Vec<String> = String::from_utf8_lossy(&tagged.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "done")
        .map(|e| e["machine"].as_str().unwrap().to_owned())
        .collect();
    done.sort();
    assert_eq!(done, ["m03", "m04"]);
    let untagged = f.update(&["--tags", "db"]);
    assert_eq!(untagged.status.code(), Some(2));
    assert!(
        stderr(&untagged).contains("no machine has the tags db"),
        "{}",
        stderr(&untagged)
    );

    // Unknown machine: a usage error with a suggestion.
    let unknown = f.update(&["m51"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("m51"), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("hint:"), "{}", stderr(&unknown));

    // Host key mismatch and permission denied, each explained.
    let config = f.clan.path().join("bad_ssh_config");
    let known = f.clan.path().join("known_hosts");
    let m1 = f.testbed.machine("m01").unwrap().address;
    std::fs::write(&known, format!("{m1} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")).unwrap();
    let write_config = |identity: &Path, known: &Path| {
        std::fs::write(
            &config,
            format!(
                "Host *\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  BatchMode yes\n",
                identity.display(),
                known.display()
            ),
        )
        .unwrap();
    };
    write_config(&f.testbed.admin_key(), &known);
    let mismatch = f
        .clan(&["machines", "update", "m01", "--host-key-check", "strict"])
        .env("CLAN_SSH_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(mismatch.status.code(), Some(1));
    assert!(
        stderr(&mismatch).contains("host key"),
        "{}",
        stderr(&mismatch)
    );

    let stranger = f.clan.path().join("stranger");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(keygen.success());
    write_config(&stranger, &PathBuf::from("/dev/null"));
    let denied = f
        .clan(&["machines", "update", "m01", "--host-key-check", "none"])
        .env("CLAN_SSH_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        stderr(&denied).contains("Permission denied"),
        "{}",
        stderr(&denied)
    );
    assert!(
        stderr(&denied).contains("authorized_keys"),
        "{}",
        stderr(&denied)
    );

    // A machine with no target host: the fallback name does not resolve, the hint says what to set.
    let toml = std::fs::read_to_string(f.clan.path().join("clan.toml")).unwrap();
    std::fs::write(
        f.clan.path().join("clan.toml"),
        format!("{toml}\n[machines.lost]\n"),
    )
    .unwrap();
    let lost = f.update(&["lost"]);
    assert_eq!(lost.status.code(), Some(1));
    assert!(stderr(&lost).contains("lost.invalid"), "{}", stderr(&lost));
    assert!(
        stderr(&lost).contains("deploy.targetHost"),
        "{}",
        stderr(&lost)
    );
}

/// Whether a TCP connection to `port` on `address` is accepted within two seconds.
fn accepts(address: std::net::Ipv4Addr, port: u16) -> bool {
    let address = std::net::SocketAddr::from((address, port));
    std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
}

/// A socket unit on `port` (systemd itself listens) and its service template.
fn listener(port: u16) -> serde_json::Value {
    serde_json::json!({
        format!("listen{port}.socket"): {"content": format!(
            "[Unit]\nDescription=listener\n[Socket]\nListenStream={port}\nAccept=yes\n[Install]\nWantedBy=sockets.target\n"
        )},
        format!("listen{port}@.service"): {"content": "[Service]\nExecStart=/bin/true\nStandardInput=socket\n", "enabled": false},
    })
}

/// The firewall: declared ports open and others dropped, SSH always reachable, a changed
/// port list applied on the next deploy, other tables untouched, everything gone when it is
/// turned off; and a rule set that locks the deployer out reverted by magic rollback.
#[test]
fn firewall_opens_declared_ports_only_and_a_lockout_reverts() {
    let Some(f) = fixture(&["fw"]) else { return };
    let address = f.testbed.machine("fw").unwrap().address;
    f.on("fw", "nft add table inet theirs");
    let mut units = listener(8080);
    units
        .as_object_mut()
        .unwrap()
        .extend(listener(8081).as_object().unwrap().clone());
    let deploy = |firewall: serde_json::Value, extra: &[&str]| {
        let config = serde_json::json!({"units": units, "firewall": firewall});
        let starlark = config
            .to_string()
            .replace("false", "False")
            .replace("true", "True");
        f.configure("fw", &starlark);
        f.update(extra)
    };
    let tables = || f.stdout_on("fw", "nft list tables");

    assert!(
        deploy(serde_json::json!({"enable": true, "tcp": [8080]}), &[])
            .status
            .success()
    );
    assert!(accepts(address, 8080), "a declared port is dropped");
    assert!(!accepts(address, 8081), "an undeclared port is open");
    assert!(accepts(address, 22), "SSH is dropped");
    assert!(tables().contains("table inet clan"), "{}", tables());
    assert!(tables().contains("table inet theirs"), "{}", tables());

    assert!(
        deploy(serde_json::json!({"enable": true, "tcp": [8081]}), &[])
            .status
            .success()
    );
    assert!(!accepts(address, 8080), "a dropped port stays open");
    assert!(accepts(address, 8081));

    assert!(deploy(serde_json::json!({"tcp": [8081]}), &[])
        .status
        .success());
    assert!(accepts(address, 8080) && accepts(address, 8081));
    assert!(!tables().contains("table inet clan"), "{}", tables());
    assert!(tables().contains("table inet theirs"), "{}", tables());

    // sshd also listens on 2222, which the deployer uses; a firewall that does not declare
    // it drops the confirmation's new connection (the open one survives): magic rollback.
    let sshd = serde_json::json!({
        "files": {"/etc/ssh/sshd_config.d/01-ports.conf": {"content": "Port 22\nPort 2222\n"}},
        "units": {"ports-reload.service": {
            "content": "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/systemctl reload-or-restart ssh.service\n[Install]\nWantedBy=multi-user.target\n",
            "restartTriggers": ["/etc/ssh/sshd_config.d/01-ports.conf"],
        }},
    });
    let with_sshd = |firewall: serde_json::Value| {
        let mut config = sshd.clone();
        config["firewall"] = firewall;
        let starlark = config
            .to_string()
            .replace("false", "False")
            .replace("true", "True");
        f.configure("fw", &starlark);
    };
    with_sshd(serde_json::json!({}));
    f.update_ok(&[]);
    assert!(accepts(address, 2222), "sshd does not listen on 2222");
    with_sshd(serde_json::json!({"enable": true}));
    let target = format!("root@{address}:2222");
    let locked = f.update(&["fw", "--target-host", &target]);
    assert_eq!(locked.status.code(), Some(1));
    let text = stderr(&locked);
    assert!(text.contains("cut off SSH access"), "{text}");
    assert!(text.contains("back on generation"), "{text}");
    assert!(!tables().contains("table inet clan"), "{}", tables());
    assert!(accepts(address, 2222));
}

/// A machine whose vars need an answer nobody gave (no terminal, no --prompt-values) fails
/// alone; the others deploy.
#[test]
fn a_machine_missing_prompt_answers_fails_alone() {
    let Some(f) = fixture(&["asks", "free"]) else {
        return;
    };
    let toml_path = f.clan.path().join("clan.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(
        &toml_path,
        format!(
            "{toml}\n[instances.people]\nmodule.name = \"users\"\n\
             roles.default.machines.asks = {{}}\nroles.default.settings.user = \"alice\"\n"
        ),
    )
    .unwrap();
    let output = f.update(&["--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let failed = events
        .iter()
        .find(|e| e["event"] == "failed")
        .expect("a failure");
    assert_eq!(failed["machine"], "asks");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("user-password") && error.contains("--prompt-values"),
        "{error}"
    );
    assert!(events
        .iter()
        .any(|e| e["event"] == "done" && e["machine"] == "free"));
    assert_eq!(f.stdout_on("free", "cat /etc/hello"), "Hello from free");
}

/// Ctrl-C in the middle of an activation: the deployer says where the machine stands and
/// exits 130; the machine finishes the activation and, unconfirmed, reverts by itself.
#[test]
fn ctrl_c_says_where_each_machine_stands() {
    let Some(f) = fixture(&["slow"]) else { return };
    f.update_ok(&[]);
    let before = f.magic_rollbacks("slow");
    f.configure(
        "slow",
        &format!(
            "{{\"files\": {{\"/etc/slow-marker\": {{\"content\": \"s\"}}}}, \"units\": {{\"slow.service\": {}}}}}",
            unit("Type=oneshot\\nRemainAfterExit=yes\\nExecStart=/bin/sleep 10")
        ),
    );
    let child = f
        .clan(&["machines", "update", "--confirm-timeout", "5"])
        .process_group(0)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.on("slow", "test -e /etc/slow-marker").status.code() != Some(0) {
        assert!(Instant::now() < deadline, "never started activating");
        std::thread::sleep(Duration::from_millis(20));
    }
    // As a terminal does: the whole foreground process group gets SIGINT.
    Command::new("kill")
        .args(["-INT", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    let text = stderr(&output);
    assert!(text.contains("where each machine stands"), "{text}");
    // Activating, or (on a slow host) just past it and awaiting confirmation.
    assert!(
        text.contains("[slow] activating") || text.contains("[slow] activated, not confirmed"),
        "{text}"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while f.magic_rollbacks("slow") == before {
        assert!(
            Instant::now() < deadline,
            "the machine did not revert by itself"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        f.on("slow", "test -e /etc/slow-marker").status.code(),
        Some(1)
    );
}

/// The agent's upload events of a `--json` run: (machine, bytes the admin sent, from whom).
fn agent_uploads(output: &Output) -> Vec<(String, u64, Option<String>)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "upload" && e["what"] == "agent")
        .map(|e| {
            (
                e["machine"].as_str().unwrap_or_default().to_owned(),
                e["bytes"].as_u64().unwrap_or_default(),
                e["from"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// A first deploy sends the agent from the admin once (compressed); the other machines get
/// it from the first over their own network. A machine that cannot reach the first gets it
/// from the admin.
#[test]
fn the_agent_leaves_the_admin_once() {
    let Some(f) = fixture(&["r1", "r2", "r3", "r4"]) else {
        return;
    };
    // r4 cannot open connections to the others, except SSH.
    let others: Vec<String> = ["r1", "r2", "r3"]
        .iter()
        .map(|m| f.testbed.machine(m).unwrap().address.to_string())
        .collect();
    let blocked = f.on(
        "r4",
        &format!(
            "nft add table inet block && nft add chain inet block out '{{ type filter hook output priority 0; policy accept; }}' && nft add rule inet block out ct state new ip daddr {{ {} }} tcp dport != 22 reject",
            others.join(", ")
        ),
    );
    assert!(blocked.status.success(), "{}", stderr(&blocked));
    // One at a time, so r1 is the one the admin uploads to first.
    let output = f.update(&["--jobs", "1", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut uploads = agent_uploads(&output);
    uploads.sort();
    // The agent the deployer uploads: the one beside it.
    let agent = support::clan_binary().with_file_name("clan-agent");
    let binary = std::fs::metadata(agent).unwrap().len();
    let (r1, r2, r3, r4) = (&uploads[0], &uploads[1], &uploads[2], &uploads[3]);
    assert_eq!(uploads.len(), 4, "{uploads:?}");
    assert!(
        r1.1 > 0 && r1.1 < binary / 2,
        "{r1:?}: compressed, from the admin"
    );
    for peer in [r2, r3] {
        assert_eq!((peer.1, peer.2.as_deref()), (0, Some("r1")), "{peer:?}");
    }
    assert_eq!(
        (r4.1, r4.2.as_deref()),
        (r1.1, None),
        "r4 fell back to the admin"
    );
    for machine in ["r1", "r2", "r3", "r4"] {
        assert_eq!(
            f.stdout_on(machine, "cat /etc/hello"),
            format!("Hello from {machine}")
        );
    }
    // The server (streamed while r1 received it) lived as long as the run, and its file
    // went with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let server = "pgrep -f '[s]ystemd-socket-activate|[a]gent serve-file'";
    while f.on("r1", server).status.code() != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the agent server outlived the run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        f.stdout_on("r1", "ls /var/lib/clan/bin | grep -c stream || true"),
        "0"
    );
}

/// Without systemd-socket-activate on the first machine (the stream server), its agent
/// serves the others once it is installed.
#[test]
fn without_socket_activation_the_first_machines_agent_serves_the_others() {
    let Some(f) = fixture(&["s1", "s2"]) else {
        return;
    };
    let hidden = f.on(
        "s1",
        "mv \"$(command -v systemd-socket-activate)\" /root/hidden-socket-activate",
    );
    assert!(hidden.status.success(), "{}", stderr(&hidden));
    let output = f.update(&["--jobs", "1", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut uploads = agent_uploads(&output);
    uploads.sort();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert!(
        uploads[0].1 > 0 && uploads[0].2.is_none(),
        "{uploads:?}: s1 from the admin"
    );
    assert_eq!(
        (uploads[1].1, uploads[1].2.as_deref()),
        (0, Some("s1")),
        "s2 from s1"
    );
    assert_eq!(f.stdout_on("s2", "cat /etc/hello"), "Hello from s2");
    assert_eq!(
        f.stdout_on("s1", "ls /var/lib/clan/bin | grep -c stream || true"),
        "0",
        "the stream file outlived the run"
    );
}

/// `machines update --tags all` selects as `machines list --tags all` does, and
/// `machines generations` without a machine shows every machine's current generation; a
/// machine that cannot be asked is a failed row and exit 1, the others still shown.
#[test]
fn tags_all_deploys_every_machine_and_generations_shows_the_fleet() {
    let Some(mut f) = fixture(&["g1", "g2"]) else {
        return;
    };
    let output = f.update(&["--tags", "all", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let generation_of = |machine: &str| -> String {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "done" && e["machine"] == machine)
            .and_then(|e| e["generation"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("{machine} was not deployed"))
    };
    let (g1, g2) = (generation_of("g1"), generation_of("g2"));

    let fleet = f.clan(&["machines", "generations"]).output().unwrap();
    assert!(fleet.status.success(), "{}", stderr(&fleet));
    let table = String::from_utf8_lossy(&fleet.stdout).into_owned();
    for (machine, generation) in [("g1", &g1), ("g2", &g2)] {
        let row = table
            .lines()
            .find(|line| line.starts_with(machine))
            .unwrap_or_else(|| panic!("no row for {machine}:\n{table}"));
        assert!(row.contains(&generation[..12]), "{row}");
        // The history entry that made it current: the deploy.
        assert!(row.contains("deploy"), "{row}");
    }
    let json = f
        .clan(&["machines", "generations", "--json"])
        .output()
        .unwrap();
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["g1"]["current"], serde_json::json!(g1));
    assert_eq!(document["g2"]["current"], serde_json::json!(g2));

    f.testbed.stop("g2").unwrap();
    let partial = f.clan(&["machines", "generations"]).output().unwrap();
    assert_eq!(partial.status.code(), Some(1), "{}", stderr(&partial));
    let table = String::from_utf8_lossy(&partial.stdout).into_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("g1") && l.contains(&g1[..12])),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("g2") && l.contains("FAILED")),
        "{table}"
    );
    assert!(stderr(&partial).contains("[g2] "), "{}", stderr(&partial));
}

/// `machines status` says where each machine stands against the clan: a machine never
/// deployed is out of sync with no generation, a deployed one in sync on the generation the
/// deploy reported, a changed configuration makes it out of sync again, and a machine that
/// cannot be reached is named with why (exit 1) while the others are still reported.
#[test]
fn status_tells_reached_generation_in_sync_and_last_deploy() {
    let Some(mut f) = fixture(&["s1", "s2"]) else {
        return;
    };
    let status = |f: &Fixture| -> (Option<i32>, Vec<serde_json::Value>) {
        let output = f.clan(&["machines", "status", "--json"]).output().unwrap();
        let list = serde_json::from_slice::<serde_json::Value>(&output.stdout)
            .unwrap_or_else(|_| panic!("{}", stderr(&output)));
        (output.status.code(), list.as_array().unwrap().clone())
    };
    let (code, before) = status(&f);
    assert_eq!(code, Some(0), "{before:?}");
    assert_eq!(before[0]["machine"], "s1");
    assert_eq!(before[0]["current"], serde_json::Value::Null);
    assert_eq!(before[0]["inSync"], false);
    assert_eq!(before[0]["reached"]["source"], "targetHost");

    let deployed = f.update(&["s1", "--json"]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let events = String::from_utf8_lossy(&deployed.stdout).into_owned();
    let (_, after) = status(&f);
    let generation = after[0]["current"].as_str().unwrap().to_owned();
    assert!(events.contains(&generation), "{generation} not in {events}");
    assert_eq!(after[0]["wanted"], generation.as_str());
    assert_eq!(after[0]["inSync"], true);
    assert_eq!(after[0]["last"]["action"], "deploy");
    assert_eq!(after[1]["inSync"], false, "s2 was not deployed");

    // A change the machine does not have yet.
    f.configure("s1", "{\"files\": {\"/etc/new\": {\"content\": \"n\"}}}");
    let (_, changed) = status(&f);
    assert_eq!(changed[0]["current"], generation.as_str());
    assert_eq!(changed[0]["inSync"], false);
    assert_ne!(changed[0]["wanted"], generation.as_str());

    f.testbed.stop("s2").unwrap();
    let (code, down) = status(&f);
    assert_eq!(code, Some(1));
    assert_eq!(down[0]["inSync"], false, "s1 is still reported");
    assert_eq!(down[1]["reached"], serde_json::Value::Null);
    assert_eq!(down[1]["inSync"], serde_json::Value::Null);
    let error = down[1]["error"].as_str().unwrap();
    assert!(error.contains("machine `s2`"), "{error}");
    let text = f.clan(&["machines", "status"]).output().unwrap();
    assert!(
        stderr(&text).contains("[s2] machine `s2`"),
        "{}",
        stderr(&text)
    );
    let table = String::from_utf8_lossy(&text.stdout).into_owned();
    let s1 = table.lines().find(|l| l.starts_with("s1 ")).unwrap();
    assert!(
        s1.contains(&generation[..12]) && s1.contains(" no "),
        "{table}"
    );
}
