//! `clan machines update-hardware-config` against a real test machine (a systemd-nspawn
//! container with sshd, never deployed): the committed `machines/<m>/facter.json` is checked
//! against what the machine says of itself with its own tools (`lsblk -J`, `ip -j link`,
//! `/proc/cpuinfo`, `systemd-detect-virt`), evaluation shows it, a second run changes nothing,
//! and a report the clan cannot evaluate leaves the old file. A malformed file names itself.
//! Skips with the reason when the host cannot run a testbed (not root, a tool missing).

mod env;
mod support;

use std::collections::BTreeSet;

use clan_facter::Report;
use serde_json::Value;
use support::fixture::{run, stdout, Fixture};

/// One fresh machine `hw01` in a committed clan, with `extra` appended to clan.toml.
fn clan_with(extra: &str) -> Option<Fixture> {
    let f = Fixture::new(&["hw01"], &[])?;
    let target = f.testbed.machine("hw01").unwrap().ssh_target();
    let toml = format!(
        "[meta]\nname = \"hw\"\n\n[machines.hw01]\ndeploy.targetHost = \"{target}\"\n\n\
         [instances.microcode]\nmodule.name = \"microcode\"\nroles.default.tags = [\"all\"]\n{extra}"
    );
    f.commit_clan_toml(&toml, "init");
    Some(f)
}

fn update_hardware(f: &Fixture) -> std::process::Output {
    run(&mut f.clan(&[
        "machines",
        "update-hardware-config",
        "hw01",
        "--host-key-check",
        "tofu",
        "--json",
    ]))
}

fn json_on(f: &Fixture, command: &str) -> Value {
    let text = f.on("hw01", command);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("`{command}`: {e}: {text}"))
}

fn commits(f: &Fixture) -> usize {
    let output = run(f
        .with_clan_env("git")
        .args(["rev-list", "--count", "HEAD"])
        .current_dir(f.clan.path()));
    stdout(&output).parse().unwrap()
}

#[test]
fn the_committed_report_agrees_with_the_machines_own_tools() {
    let Some(f) = clan_with("") else { return };
    let output = update_hardware(&f);
    assert!(output.status.success());
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["changed"], true);
    // The machine was never deployed: the agent came over as a first deploy sends it.
    let agents = f.on("hw01", "ls /var/lib/clan/bin");
    assert!(
        agents.lines().any(|name| name.starts_with("clan-")),
        "{agents}"
    );
    assert_eq!(answer["path"], "machines/hw01/facter.json");

    let text = std::fs::read_to_string(f.clan.path().join("machines/hw01/facter.json")).unwrap();
    let report = Report::parse("facter.json", &text).unwrap();
    let facts = report.facts();
    assert_eq!(answer["facts"], serde_json::to_value(&facts).unwrap());
    assert_eq!(report.version, clan_facter::REPORT_VERSION);
    assert_eq!(report.system, format!("{}-linux", std::env::consts::ARCH));

    // What systemd on the machine says it runs in.
    let virt = f.on("hw01", "systemd-detect-virt || true");
    assert_eq!(report.virtualisation.as_deref(), Some(virt.as_str()));
    assert!(!facts.bare_metal);

    // Whole disks backed by a device (not zram, loop or RAM disks), with their sizes.
    let lsblk = json_on(&f, "lsblk -J -d -b -o NAME,TYPE,SIZE,SUBSYSTEMS");
    let lsblk_disks: BTreeSet<(String, u64)> = lsblk["blockdevices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "disk" && d["subsystems"] != "block")
        .map(|d| {
            let name = format!("/dev/{}", d["name"].as_str().unwrap());
            (name, d["size"].as_u64().unwrap())
        })
        .collect();
    let reported_disks: BTreeSet<(String, u64)> = facts
        .disks
        .iter()
        .map(|d| (d.name.clone(), d.size_bytes.unwrap()))
        .collect();
    assert_eq!(reported_disks, lsblk_disks);

    // Every interface the machine's network namespace has, and no MAC address.
    let links = json_on(&f, "ip -j link");
    let links = links.as_array().unwrap();
    let names: BTreeSet<&str> = links
        .iter()
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    let reported: BTreeSet<&str> = facts
        .network_interfaces
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(reported, names);
    for link in links {
        let mac = link["address"].as_str().unwrap_or_default();
        if mac.len() == 17 && mac != "00:00:00:00:00:00" {
            assert!(!text.contains(mac), "MAC {mac} committed");
        }
    }
    let serial = f.on("hw01", "cat /sys/class/block/*/serial 2>/dev/null || true");
    for serial in serial.split_whitespace() {
        assert!(!text.contains(serial), "serial {serial} committed");
    }

    // The CPU as /proc/cpuinfo describes it.
    let cpuinfo = f.on("hw01", "cat /proc/cpuinfo");
    let field = |key: &str| {
        cpuinfo.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == key).then(|| value.trim().to_owned())
        })
    };
    let cpu = facts.cpu.clone().unwrap();
    assert_eq!(cpu.vendor, field("vendor_id"));
    assert_eq!(cpu.model_name, field("model name"));
    assert_eq!(cpu.family, field("cpu family").map(|v| v.parse().unwrap()));
    assert_eq!(cpu.model, field("model").map(|v| v.parse().unwrap()));
    let processors = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert_eq!(cpu.threads, Some(processors as u64));
    let flags = field("flags").unwrap_or_default();
    assert_eq!(
        report.hardware.cpu[0].features,
        flags.split_whitespace().collect::<Vec<_>>()
    );

    // Committed, and what services see: a container gets no microcode.
    let log = run(f
        .with_clan_env("git")
        .args(["log", "-1", "--format=%s", "--name-only"])
        .current_dir(f.clan.path()));
    assert_eq!(
        stdout(&log),
        "machines: hardware report of hw01\n\nmachines/hw01/facter.json"
    );
    let shown: Value =
        serde_json::from_str(&f.clan_ok(&["machines", "show", "hw01", "--json"])).unwrap();
    assert_eq!(shown["hardware"]["virtualisation"], virt.as_str());
    assert_eq!(shown["hardware"]["cpu"]["vendor"], cpu.vendor.unwrap());
    assert!(shown["config"]["packages"].is_null(), "{shown}");

    // The same hardware again, for people this time: nothing to commit.
    let before = commits(&f);
    let again = run(&mut f.clan(&["machines", "update-hardware-config", "hw01"]));
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("[hw01] machines/hw01/facter.json unchanged"),
        "{stderr}"
    );
    let table = String::from_utf8_lossy(&again.stdout);
    let line = |label: &str| {
        table
            .lines()
            .find_map(|l| l.strip_prefix(label).map(str::trim))
            .unwrap_or_else(|| panic!("no `{label}` in {table}"))
            .to_owned()
    };
    assert_eq!(line("virtualisation"), virt);
    assert!(line("disks").starts_with("/dev/"), "{table}");
    assert_eq!(commits(&f), before);
    assert_eq!(
        std::fs::read_to_string(f.clan.path().join("machines/hw01/facter.json")).unwrap(),
        text
    );
}

/// A service that cannot take the new report fails the update; the old report stays, and
/// nothing is committed.
#[test]
fn a_report_the_clan_cannot_evaluate_leaves_the_old_one() {
    let Some(f) =
        clan_with("\n[instances.picky]\nmodule.name = \"picky\"\nroles.default.tags = [\"all\"]\n")
    else {
        return;
    };
    let service = "manifest = {\"name\": \"picky\"}\n\n\
        def _default(ctx):\n    \
            hw = ctx.machine[\"hardware\"]\n    \
            if hw != None and hw[\"virtualisation\"] != \"kvm\":\n        \
                fail(\"picky runs in KVM only, not %s\" % hw[\"virtualisation\"])\n    \
            return None\n\n\
        roles = {\"default\": {\"perInstance\": _default}}\n";
    let old = "{\"version\": 1, \"system\": \"x86_64-linux\", \"virtualisation\": \"kvm\"}\n";
    std::fs::create_dir_all(f.clan.path().join("services/picky")).unwrap();
    std::fs::create_dir_all(f.clan.path().join("machines/hw01")).unwrap();
    std::fs::write(f.clan.path().join("services/picky/service.star"), service).unwrap();
    std::fs::write(f.clan.path().join("machines/hw01/facter.json"), old).unwrap();
    f.git(&["add", "."]);
    f.git(&["commit", "-q", "-m", "picky"]);
    let before = commits(&f);

    let output = update_hardware(&f);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("picky runs in KVM only, not systemd-nspawn"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(f.clan.path().join("machines/hw01/facter.json")).unwrap(),
        old
    );
    assert_eq!(commits(&f), before);
    let status = run(f
        .with_clan_env("git")
        .args(["status", "--porcelain"])
        .current_dir(f.clan.path()));
    assert_eq!(stdout(&status), "");
}
