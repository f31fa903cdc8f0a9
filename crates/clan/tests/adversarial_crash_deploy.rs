//! Issue 10, "every edit is serialized and complete", for deploys: SIGKILL of `clan machines
//! update` at random moments (`CLAN_ADVERSARIAL_TRIALS` trials, default 8, seed printed)
//! against a real test machine (a systemd-nspawn container with sshd); after each, the next
//! deploy must succeed and the machine must hold that trial's configuration. Skips with the
//! reason when the host cannot run a testbed (not root, a tool missing).
//! Nothing a killed deploy started may outlive it by more than a moment (its ssh
//! ControlMaster ends with it).

mod crash_support;
mod env;
mod support;

use crash_support::{kill_trials, Clan};

#[test]
fn machines_update_killed_anywhere_is_recovered_by_the_next_run() {
    let Some((_state, testbed)) = support::testbed(&["victim"]) else {
        return;
    };
    let mut clan = Clan::new(&[]);
    clan.binary = support::clan_binary().to_path_buf();
    clan.env = vec![("CLAN_SSH_CONFIG".into(), testbed.ssh_config())];
    // What a killed deploy leaves running is recorded (and killed), and must be nothing.
    clan.kill_orphans = true;
    let machine = &testbed.machines()[0];
    clan.ok(
        &[
            "machines",
            "create",
            "victim",
            "--target-host",
            &machine.ssh_target(),
        ],
        b"",
    );
    clan.ok(&["instances", "add", "hello", "default", "victim"], b"");
    let on_machine = |command: &str| {
        let output = testbed
            .ssh_command("victim")
            .unwrap()
            .arg(command)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let update = |trial: usize| {
        // Each trial deploys a change (so every deploy has work) after setting it.
        let setting = format!("default.greeting=hello-{trial}");
        clan.ok(&["instances", "set", "hello", &setting], b"");
        (
            [
                "machines",
                "update",
                "--confirm-timeout",
                "5",
                "--host-key-check",
                "tofu",
            ]
            .map(String::from)
            .to_vec(),
            Vec::new(),
        )
    };
    let tally = kill_trials("machines update", &clan, update, |clan, trial| {
        assert_eq!(
            on_machine("cat /etc/hello"),
            format!("hello-{trial} from victim")
        );
        clan.ok(&["machines", "generations", "victim"], b"");
    });
    // The control directories of killed runs are removed by the next run.
    let stale: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix("clan-ssh-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    assert!(
        stale.is_empty(),
        "control directories of dead runs: {stale:?}"
    );
    let orphaned = clan.orphaned.borrow();
    assert!(
        orphaned.is_empty(),
        "{} of {} killed runs left processes running: {orphaned:?}",
        orphaned.len(),
        tally.killed
    );
}
