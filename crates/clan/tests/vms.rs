//! `clan vms` against real QEMU VMs (TCG here): a machine booted, deployed by the normal path
//! (its clan host key and its secret arrive as on a real machine), a published port answering,
//! `clan ssh --vm`, `list`, `console`, `stop`; and the faults: QEMU missing, a machine
//! already running, a published port taken, a VM that does not boot in time.

mod env;
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Clan {
    work: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Clan {
    fn clan(&self, args: &[&str]) -> Command {
        let mut command = Command::new(support::clan_binary());
        let work = self.work.path();
        env::clan_env(
            command.args(args),
            &work.join("admin.age"),
            &work.join("home"),
            &work.join("cache"),
        )
        .env("CLAN_DIR", self.dir.path())
        .env("CLAN_VM_DIR", work.join("vms"));
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = self.clan(args).output().expect("clan runs");
        eprintln!(
            "clan {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "clan {args:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn git(&self, args: &[&str]) {
        let status = self
            .clan(&[])
            .get_envs()
            .fold(Command::new("git"), |mut command, (key, value)| {
                if let Some(value) = value {
                    command.env(key, value);
                }
                command
            })
            .args(args)
            .current_dir(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
}

/// A failing test leaves no VM behind.
impl Drop for Clan {
    fn drop(&mut self) {
        let Ok(output) = self.clan(&["vms", "list", "--json"]).output() else {
            return;
        };
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        for vm in list.as_array().into_iter().flatten() {
            if let Some(machine) = vm["machine"].as_str().filter(|_| !vm["running"].is_null()) {
                let _ = self
                    .clan(&["vms", "stop", machine, "--grace", "0"])
                    .output();
            }
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A clan with `web01` (sshd service, a web server unit on port 80 from busybox, a secret) and
/// `db01`; `None` after saying why when this host cannot run VMs.
fn clan() -> Option<Clan> {
    if !rustix::process::geteuid().is_root() {
        clan_testbed::skip(
            "the VM image is built from the testbed's Debian tree, which needs root",
        );
        return None;
    }
    for tool in clan_vm::TOOLS {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {}", tool.name)])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            clan_testbed::skip(format!(
                "`{}` missing: apt-get install {}",
                tool.name, tool.package
            ));
            return None;
        }
    }
    let clan = Clan {
        work: tempfile::tempdir().unwrap(),
        dir: tempfile::tempdir().unwrap(),
    };
    for sub in ["home", "cache"] {
        std::fs::create_dir(clan.work.path().join(sub)).unwrap();
    }
    std::fs::write(
        clan.dir.path().join("clan.toml"),
        "[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n\
         [machines.web01]\n\n[machines.db01]\n\n\
         [instances.ssh]\nmodule.name = \"sshd\"\nroles.server.machines.web01 = {}\n",
    )
    .unwrap();
    let machine = clan.dir.path().join("machines/web01");
    std::fs::create_dir_all(&machine).unwrap();
    std::fs::write(
        machine.join("config.star"),
        "def per_machine(ctx):\n    return {\"config\": {\n\
         \"files\": {\"/srv/www/index.html\": {\"content\": \"hello from the web01 VM\\n\"}},\n\
         \"units\": {\"www.service\": {\"content\": \"[Unit]\\nDescription=www\\n[Service]\\nExecStart=/bin/busybox httpd -f -p 80 -h /srv/www\\n[Install]\\nWantedBy=multi-user.target\\n\"}},\n\
         }}\n",
    )
    .unwrap();
    clan.git(&["init", "-q"]);
    clan.git(&["add", "."]);
    clan.git(&["commit", "-q", "-m", "init"]);
    clan.ok(&["vars", "keygen", "--user", "admin"]);
    let secret = clan.work.path().join("token");
    std::fs::write(&secret, "vm-secret-token").unwrap();
    let set = clan
        .clan(&["secrets", "set", "api-token", "--machine", "web01"])
        .stdin(std::fs::File::open(&secret).unwrap())
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", stderr(&set));
    Some(clan)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/index.html"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_machine_runs_in_a_vm_deployed_reachable_and_stoppable() {
    let Some(clan) = clan() else { return };
    let port = free_port();
    let publish = format!("{port}:80");
    let run = clan.run(&[
        "vms",
        "run",
        "web01",
        "--publish",
        &publish,
        "--memory",
        "768",
        "--cpus",
        "2",
    ]);
    assert!(run.status.success(), "vms run failed");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = stderr(&run);
    assert!(err.contains("booting a micro VM with"), "{err}");
    assert!(err.contains("web01 is deployed in its VM"), "{err}");
    assert!(out.contains("clan ssh web01 --vm"), "{out}");

    // The deployed web server answers on the published port.
    assert_eq!(http_get(port), "hello from the web01 VM\n");

    // Reached as any machine: its secrets arrived (a clan secret, the clan's host key).
    let token = clan.ok(&[
        "ssh",
        "web01",
        "--vm",
        "--",
        "cat",
        "/run/secrets/api-token",
    ]);
    assert_eq!(token.trim(), "vm-secret-token");
    let host_key = clan.ok(&[
        "ssh",
        "web01",
        "--vm",
        "--",
        "ssh-keygen",
        "-y",
        "-f",
        "/run/clan/secrets/openssh/ssh.id_ed25519",
    ]);
    let var_key = std::fs::read_to_string(
        clan.dir
            .path()
            .join("vars/per-machine/web01/openssh/ssh.id_ed25519.pub/value"),
    )
    .unwrap();
    assert_eq!(
        host_key.split_whitespace().nth(1),
        var_key.split_whitespace().nth(1)
    );
    let memory = clan.ok(&["ssh", "web01", "--vm", "--", "nproc"]);
    assert_eq!(memory.trim(), "2");

    let list: serde_json::Value =
        serde_json::from_str(&clan.ok(&["vms", "list", "--json"])).unwrap();
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["machine"] == "web01")
        .unwrap();
    assert_eq!(web["running"]["memoryMib"], 768);
    assert_eq!(web["running"]["publish"][0]["host"], port);
    let console = clan.ok(&["vms", "console", "web01"]);
    assert!(
        console.contains("clan-vm: switching to systemd"),
        "{console}"
    );

    // Faults, each refused before anything starts.
    let again = clan.run(&["vms", "run", "web01"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already runs as a VM"),
        "{}",
        stderr(&again)
    );
    let taken = clan.run(&["vms", "run", "db01", "--publish", &publish]);
    assert_eq!(taken.status.code(), Some(2));
    assert!(
        stderr(&taken).contains(&format!("cannot publish 127.0.0.1:{port}")),
        "{}",
        stderr(&taken)
    );
    let empty = tempfile::tempdir().unwrap();
    let no_qemu = clan
        .clan(&["vms", "run", "db01"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(no_qemu.status.code(), Some(2));
    assert!(
        stderr(&no_qemu).contains("apt-get install qemu-system-x86"),
        "{}",
        stderr(&no_qemu)
    );

    clan.ok(&["vms", "stop", "web01"]);
    let list: serde_json::Value =
        serde_json::from_str(&clan.ok(&["vms", "list", "--json"])).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|vm| vm["running"].is_null()),
        "{list}"
    );
    let gone = clan.run(&["ssh", "web01", "--vm", "--", "true"]);
    assert_eq!(gone.status.code(), Some(2));
    assert!(stderr(&gone).contains("does not run as a VM"));
}

#[test]
fn a_vm_that_does_not_boot_in_time_is_stopped_and_its_console_shown() {
    let Some(clan) = clan() else { return };
    let output = clan.run(&["vms", "run", "db01", "--no-deploy", "--boot-timeout", "6"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("did not boot within 6 s"), "{err}");
    let log: PathBuf = clan.work.path().join("vms");
    let console = find_console(&log).expect("a console log");
    let text = std::fs::read_to_string(console).unwrap();
    match text.lines().last() {
        Some(last) => assert!(err.contains(last), "{err}"),
        None => assert!(err.contains("the console log is empty"), "{err}"),
    }
    let list = clan.ok(&["vms", "list"]);
    assert!(list.contains("stopped"), "{list}");
}

fn find_console(dir: &Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_console(&path) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == "console.log") {
            return Some(path);
        }
    }
    None
}
