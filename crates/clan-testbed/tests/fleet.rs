//! End-to-end tests with real containers: machines boot systemd and sshd, are reached over
//! SSH with the generated config, keep separate disks, lose and regain their link, restart,
//! and leave nothing behind. Each test skips with the reason when the host cannot run a
//! testbed (not root, a tool missing); the first run builds the root filesystem (≈35 s).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use clan_testbed::{check_host, Error, Options, Testbed};

/// A testbed of `names` in a fresh state directory, or `None` (with the reason printed).
fn up(names: &[&str]) -> Option<(tempfile::TempDir, Testbed)> {
    up_with(names, false)
}

/// Like [`up`]; with `detach` the containers get their own session, as under the CLI.
fn up_with(names: &[&str], detach: bool) -> Option<(tempfile::TempDir, Testbed)> {
    if let Err(reason) = check_host() {
        clan_testbed::skip(reason);
        return None;
    }
    let state = tempfile::tempdir().expect("temporary state directory");
    let mut options = Options::named(state.path(), names.iter().copied());
    options.detach = detach;
    options.progress = |message| eprintln!("{message}");
    match Testbed::up(&options) {
        Ok(testbed) => Some((state, testbed)),
        // Only needed when the root filesystem is not cached yet.
        Err(error @ Error::Host(clan_host::Error::ToolMissing { .. })) => {
            clan_testbed::skip(error);
            None
        }
        Err(error) => panic!("testbed up: {error}"),
    }
}

/// Runs `command` on machine `name`; ssh joins the words into one line for the remote shell.
fn ssh(testbed: &Testbed, name: &str, command: &[&str]) -> Output {
    testbed
        .ssh_command(name)
        .expect("known machine")
        .args(command)
        .output()
        .expect("ssh runs")
}

fn ssh_stdout(testbed: &Testbed, name: &str, command: &[&str]) -> String {
    let output = ssh(testbed, name, command);
    assert!(
        output.status.success(),
        "`{}` on {name} failed: {}",
        command.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn pid_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// What identifies the testbed's network objects: each namespace's inode and the host
/// interface's index. Names alone are not enough: tests run in parallel, and another test may
/// reuse a freed subnet, and so the same names, at once.
fn network_identity(testbed: &Testbed) -> Vec<(PathBuf, String)> {
    let mut objects: Vec<(PathBuf, String)> = testbed
        .network_namespaces()
        .into_iter()
        .map(|ns| Path::new("/run/netns").join(ns))
        .filter_map(|path| {
            Some((
                path.clone(),
                std::fs::metadata(&path).ok()?.ino().to_string(),
            ))
        })
        .collect();
    let ifindex = Path::new("/sys/class/net")
        .join(testbed.host_interface())
        .join("ifindex");
    if let Ok(index) = std::fs::read_to_string(&ifindex) {
        objects.push((ifindex, index));
    }
    objects
}

/// Asserts that the network objects recorded by [`network_identity`] and the container
/// processes are gone.
fn assert_gone(objects: &[(PathBuf, String)], pids: &[u32]) {
    assert!(
        objects.len() >= 2,
        "namespaces and host interface were not found: {objects:?}"
    );
    for (path, identity) in objects {
        let now = if path.starts_with("/run/netns") {
            std::fs::metadata(path).ok().map(|m| m.ino().to_string())
        } else {
            std::fs::read_to_string(path).ok()
        };
        assert_ne!(
            now.as_ref(),
            Some(identity),
            "{} left behind",
            path.display()
        );
    }
    for pid in pids {
        assert!(!pid_exists(*pid), "container process {pid} left behind");
    }
}

#[test]
fn three_machines_boot_with_their_names_and_separate_disks_and_down_removes_them() {
    let Some((_state, testbed)) = up(&["alpha", "beta", "gamma"]) else {
        return;
    };
    for machine in testbed.machines() {
        assert_eq!(
            ssh_stdout(&testbed, &machine.name, &["hostname"]),
            machine.name
        );
        // Exits non-zero when degraded, which is fine: only the state word matters.
        let state = ssh(
            &testbed,
            &machine.name,
            &["systemctl", "is-system-running", "--wait"],
        );
        let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
        assert!(
            matches!(state.as_str(), "running" | "degraded"),
            "{}: system is {state}",
            machine.name
        );
    }

    ssh_stdout(&testbed, "alpha", &["echo only-alpha > /root/marker"]);
    assert_eq!(
        ssh_stdout(&testbed, "alpha", &["cat", "/root/marker"]),
        "only-alpha"
    );
    assert!(
        !ssh(&testbed, "beta", &["test", "-e", "/root/marker"])
            .status
            .success(),
        "beta sees alpha's file"
    );

    // Machines know each other by name, and the address target works like the alias.
    let beta = testbed.machine("beta").expect("beta").clone();
    assert_eq!(
        ssh_stdout(&testbed, "alpha", &["getent", "hosts", "beta"])
            .split_whitespace()
            .next(),
        Some(beta.address.to_string().as_str())
    );
    // Like a server never contacted, nothing is known of its host key until the first login
    // under the caller's policy records it.
    let known_hosts = std::fs::read_to_string(testbed.known_hosts()).expect("known_hosts");
    assert_eq!(known_hosts, "", "a fresh testbed trusts no host key");
    let output = std::process::Command::new("ssh")
        .arg("-F")
        .arg(testbed.ssh_config())
        .args([
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "BatchMode=yes",
        ])
        .arg(beta.ssh_target())
        .arg("hostname")
        .output()
        .expect("ssh runs");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "beta");
    let known_hosts = std::fs::read_to_string(testbed.known_hosts()).expect("known_hosts");
    assert!(
        known_hosts.starts_with(&format!("{} ssh-ed25519 ", beta.address)),
        "{known_hosts}"
    );

    let network = network_identity(&testbed);
    let pids: Vec<u32> = testbed
        .machines()
        .iter()
        .filter_map(|m| testbed.pid(&m.name).expect("known machine"))
        .collect();
    assert_eq!(pids.len(), 3);
    testbed.down().expect("down");
    assert_gone(&network, &pids);
}

#[test]
fn link_down_cuts_ssh_and_link_up_restores_it() {
    let Some((_state, testbed)) = up(&["cable"]) else {
        return;
    };
    assert_eq!(ssh_stdout(&testbed, "cable", &["hostname"]), "cable");
    testbed.link_down("cable").expect("link down");
    let cut = testbed
        .ssh_command("cable")
        .expect("cable")
        .args(["-o", "ConnectTimeout=2", "true"])
        .output();
    assert!(
        !cut.expect("ssh runs").status.success(),
        "ssh worked with the link down"
    );
    testbed.link_up("cable").expect("link up");
    assert_eq!(ssh_stdout(&testbed, "cable", &["hostname"]), "cable");
}

#[test]
fn a_stopped_machine_starts_again_with_its_files() {
    let Some((_state, mut testbed)) = up(&["phoenix"]) else {
        return;
    };
    ssh_stdout(&testbed, "phoenix", &["echo survived > /root/kept"]);
    testbed.stop("phoenix").expect("stop");
    assert!(!testbed.is_running("phoenix").expect("known machine"));
    let refused = testbed
        .ssh_command("phoenix")
        .expect("phoenix")
        .args(["-o", "ConnectTimeout=2", "true"])
        .output();
    assert!(
        !refused.expect("ssh runs").status.success(),
        "ssh worked on a stopped machine"
    );
    testbed.start("phoenix").expect("start");
    assert!(testbed.is_running("phoenix").expect("known machine"));
    assert_eq!(
        ssh_stdout(&testbed, "phoenix", &["cat", "/root/kept"]),
        "survived"
    );
    assert!(testbed.stop("nobody").is_err());
}

#[test]
fn a_detached_testbed_is_found_by_attach_and_stopped_by_it() {
    let Some((state, testbed)) = up_with(&["lasting"], true) else {
        return;
    };
    let machines = testbed.machines().to_vec();
    testbed.keep_running();

    let attached = Testbed::attach(state.path()).expect("attach");
    assert_eq!(attached.machines(), machines.as_slice());
    let pid = attached
        .pid("lasting")
        .expect("known machine")
        .expect("still running");
    assert_eq!(ssh_stdout(&attached, "lasting", &["hostname"]), "lasting");
    // A second `up` into the same directory refuses rather than clobbering it.
    let again = Options::named(state.path(), ["lasting"]);
    assert!(matches!(
        Testbed::up(&again),
        Err(Error::AlreadyRunning { .. })
    ));

    let network = network_identity(&attached);
    attached.down().expect("down");
    assert_gone(&network, &[]);
    // No handle reaped it, so it may linger as a zombie of this process: dead all the same.
    assert!(!is_nspawn(pid), "container process {pid} left behind");
    assert!(matches!(
        Testbed::attach(state.path()),
        Err(Error::NoTestbed { .. })
    ));
}

/// Whether `pid` runs systemd-nspawn (a zombie has an empty command line).
fn is_nspawn(pid: u32) -> bool {
    std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("systemd-nspawn"))
}

#[test]
fn dropping_a_testbed_tears_it_down() {
    let Some((_state, testbed)) = up(&["brief"]) else {
        return;
    };
    let network = network_identity(&testbed);
    let pid = testbed
        .pid("brief")
        .expect("known machine")
        .expect("running");
    drop(testbed);
    assert_gone(&network, &[pid]);
}
