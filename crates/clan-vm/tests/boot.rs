//! A real VM under QEMU (TCG here): it boots to sshd, is reachable with the runner's key and
//! known host key, keeps its disk across a SIGKILL of QEMU, and stops over QMP.

use std::process::Command;
use std::time::Duration;

use clan_vm::{RunOptions, Running};

fn ssh(running: &Running, command: &str) -> std::process::Output {
    Command::new("ssh")
        .arg("-F")
        .arg(&running.ssh_config)
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-p",
        ])
        .arg(running.ssh_port.to_string())
        .arg("127.0.0.1")
        .arg(command)
        .output()
        .expect("ssh runs")
}

#[test]
fn a_vm_boots_to_sshd_keeps_its_disk_across_sigkill_and_stops() {
    if !rustix::process::geteuid().is_root() {
        clan_testbed::skip(
            "the VM image is built from the testbed's Debian tree, which needs root",
        );
        return;
    }
    if let Err(missing) = clan_vm::TOOLS
        .iter()
        .map(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {}", tool.name)])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .ok_or(tool.package)
        })
        .collect::<Result<Vec<_>, _>>()
    {
        clan_testbed::skip(format!("apt-get install {missing}"));
        return;
    }
    let vms = tempfile::tempdir().unwrap();
    let options = RunOptions {
        machine: "vm01".into(),
        vms_dir: vms.path().to_owned(),
        cache_dir: clan_host::default_cache_dir(),
        memory_mib: 512,
        cpus: 1,
        publish: Vec::new(),
        lan: None,
        boot_timeout: Duration::from_secs(300),
        progress: |message| eprintln!("{message}"),
    };
    let accel = clan_vm::detect_accel();
    eprintln!("accel: {} ({})", accel.mode.as_str(), accel.reason);
    let booted = clan_vm::run(&options, &accel).expect("the VM boots");
    eprintln!("boot: {:?}", booted.times);
    assert!(booted.new_disk);
    let hostname = ssh(
        &booted.running,
        "cat /etc/hostname; echo kept > /var/lib/kept; sync",
    );
    assert!(
        hostname.status.success(),
        "{}",
        String::from_utf8_lossy(&hostname.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "vm01");

    // SIGKILL: no clean shutdown; the next boot still finds what was synced.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(booted.running.pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    while std::path::Path::new(&format!("/proc/{}", booted.running.pid)).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let again = clan_vm::run(&options, &accel).expect("the VM boots again");
    assert!(!again.new_disk, "the machine's disk is kept");
    let kept = ssh(&again.running, "cat /var/lib/kept");
    assert_eq!(String::from_utf8_lossy(&kept.stdout).trim(), "kept");

    let stopped = clan_vm::stop(vms.path(), "vm01", Duration::from_secs(60)).unwrap();
    assert_eq!(stopped.pid, again.running.pid);
    assert!(clan_vm::list(vms.path())
        .unwrap()
        .iter()
        .all(|(_, r)| r.is_none()));
}
