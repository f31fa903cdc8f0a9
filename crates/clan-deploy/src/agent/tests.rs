//! Activation into an image directory (`--root`): files tracked across generations, kept
//! aside and restored, dry runs that change nothing, history and rollback.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use clan_config::{File, MachineConfig};

use super::*;
use crate::generation::Generation;

fn image() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.path().join("etc/group"), "root:x:0:\n").unwrap();
    root
}

fn config(files: &[(&str, &str)]) -> MachineConfig {
    let files = files
        .iter()
        .map(|(path, content)| {
            (
                path.to_string(),
                File {
                    content: content.to_string(),
                    template: false,
                    owner: "root".into(),
                    group: "root".into(),
                    mode: "0640".into(),
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
    MachineConfig {
        files,
        ..MachineConfig::default()
    }
}

fn store(agent: &Agent, config: &MachineConfig) -> String {
    let generation = Generation::build("m", config, &[]).unwrap();
    agent
        .receive(&generation.id, &generation.bundle()[..])
        .unwrap();
    generation.id
}

const NO_MAGIC: ActivateOptions = ActivateOptions {
    confirm_timeout: None,
    lock_timeout: Duration::from_secs(1),
};

fn read(root: &tempfile::TempDir, path: &str) -> Option<String> {
    fs::read_to_string(root.path().join(path.trim_start_matches('/'))).ok()
}

#[test]
fn generations_track_files_keep_originals_and_roll_back() {
    let root = image();
    let agent = Agent::new(root.path());
    fs::write(root.path().join("etc/motd"), "the admin's own motd\n").unwrap();

    let first = store(
        &agent,
        &config(&[("/etc/hello", "hi\n"), ("/etc/motd", "clan motd\n")]),
    );
    let diff = agent.diff(&first).unwrap();
    assert_eq!(diff.files_written, ["/etc/hello", "/etc/motd"]);
    assert_eq!(diff.files_kept_aside, ["/etc/motd"]);
    assert_eq!(read(&root, "/etc/hello"), None, "a dry run changes nothing");

    let activation = agent.activate(&first, &NO_MAGIC, |_| {}).unwrap();
    assert_eq!(activation.changes, diff);
    assert_eq!(read(&root, "/etc/hello").as_deref(), Some("hi\n"));
    assert_eq!(
        read(&root, "/etc/motd.clan-orig").as_deref(),
        Some("the admin's own motd\n")
    );
    let mode = fs::metadata(root.path().join("etc/hello"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777,
        0o640
    );

    // Same generation again: nothing to do.
    assert_eq!(agent.diff(&first).unwrap(), Changes::default());

    // The second generation drops /etc/motd (the original comes back) and changes hello.
    let second = store(&agent, &config(&[("/etc/hello", "hello\n")]));
    let changes = agent.activate(&second, &NO_MAGIC, |_| {}).unwrap().changes;
    assert_eq!(changes.files_written, ["/etc/hello"]);
    assert_eq!(changes.files_removed, ["/etc/motd"]);
    assert_eq!(
        read(&root, "/etc/motd").as_deref(),
        Some("the admin's own motd\n")
    );
    assert_eq!(read(&root, "/etc/motd.clan-orig"), None);

    // Rollback re-activates the first generation.
    let back = agent.rollback(None, Duration::from_secs(1)).unwrap();
    assert_eq!(back.generation, first);
    assert_eq!(read(&root, "/etc/hello").as_deref(), Some("hi\n"));
    assert_eq!(read(&root, "/etc/motd").as_deref(), Some("clan motd\n"));
    let (current, history) = agent.generations().unwrap();
    assert_eq!(current.as_deref(), Some(first.as_str()));
    let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["deploy", "deploy", "rollback"]);
    assert_eq!(
        agent.status().unwrap().current.as_deref(),
        Some(first.as_str())
    );
}

#[test]
fn failed_activation_restores_the_previous_generation() {
    let root = image();
    let agent = Agent::new(root.path());
    let good = store(&agent, &config(&[("/etc/hello", "hi\n")]));
    agent.activate(&good, &NO_MAGIC, |_| {}).unwrap();
    // A directory where a file should go makes the second generation fail half-way.
    fs::create_dir_all(root.path().join("srv/blocked")).unwrap();
    let bad = store(
        &agent,
        &config(&[("/etc/hello", "changed\n"), ("/srv/blocked", "x")]),
    );
    let error = agent.activate(&bad, &NO_MAGIC, |_| {}).unwrap_err();
    assert!(matches!(error, AgentError::RolledBack { .. }), "{error}");
    assert!(
        error.to_string().contains("directory is in the way"),
        "{error}"
    );
    assert!(error.to_string().contains("restored"), "{error}");
    assert_eq!(read(&root, "/etc/hello").as_deref(), Some("hi\n"));
    assert_eq!(
        agent.status().unwrap().current.as_deref(),
        Some(good.as_str())
    );
}

#[test]
fn a_second_deploy_waits_for_the_lock_and_then_refuses() {
    let root = image();
    let agent = Agent::new(root.path());
    let id = store(&agent, &config(&[("/etc/hello", "hi\n")]));
    let _held = Lock::acquire(&agent.paths, Duration::from_secs(1), |_| {}).unwrap();
    let mut holder = String::new();
    let error = agent
        .activate(&id, &NO_MAGIC, |who| holder = who.to_owned())
        .unwrap_err();
    // Who holds the lock, and since when, is said while waiting and in the refusal.
    let pid = format!("pid {}", std::process::id());
    assert!(holder.contains(&pid), "{holder}");
    assert!(matches!(error, AgentError::Busy(_)), "{error}");
    assert!(error.to_string().contains(&pid), "{error}");
}

#[test]
fn truncated_uploads_store_nothing() {
    let root = image();
    let agent = Agent::new(root.path());
    let generation = Generation::build("m", &config(&[("/etc/hello", "hi\n")]), &[]).unwrap();
    let bundle = generation.bundle();
    assert!(agent
        .receive(&generation.id, &bundle[..bundle.len() - 3])
        .is_err());
    assert!(agent.status().unwrap().stored.is_empty());
    assert!(matches!(
        agent.activate(&generation.id, &NO_MAGIC, |_| {}),
        Err(AgentError::UnknownGeneration(_))
    ));
}

#[test]
fn units_restart_or_reload_when_a_declared_input_changes() {
    let root = image();
    let agent = Agent::new(root.path());
    let generation = |app: &str, other: &str| {
        let mut config = config(&[("/etc/app.conf", app), ("/etc/other.conf", other)]);
        let unit = |restart: &[&str], reload: &[&str]| clan_config::Unit {
            content: "[Service]\nExecStart=/bin/true\n".into(),
            enabled: true,
            restart_on_change: true,
            restart_triggers: restart.iter().map(|p| p.to_string()).collect(),
            reload_triggers: reload.iter().map(|p| p.to_string()).collect(),
        };
        config
            .units
            .insert("app.service".into(), unit(&["/etc/app.conf"], &[]));
        config
            .units
            .insert("other.service".into(), unit(&[], &["/etc/other.conf"]));
        config
            .units
            .insert("bystander.service".into(), unit(&[], &[]));
        store(&agent, &config)
    };
    let first = generation("a=1\n", "o=1\n");
    agent.activate(&first, &NO_MAGIC, |_| {}).unwrap();

    let app_changed = generation("a=2\n", "o=1\n");
    let changes = agent
        .activate(&app_changed, &NO_MAGIC, |_| {})
        .unwrap()
        .changes;
    assert_eq!(changes.units_restarted, ["app.service"]);
    assert!(changes.units_reloaded.is_empty());

    let other_changed = generation("a=2\n", "o=2\n");
    let changes = agent.diff(&other_changed).unwrap();
    assert!(changes.units_restarted.is_empty());
    assert_eq!(changes.units_reloaded, ["other.service"]);
}

#[test]
fn short_ids_cut_any_text_on_a_character_boundary() {
    assert_eq!(super::short("0123456789abcdef"), "0123456789ab");
    assert_eq!(super::short("ééééééééééééé"), "éééééééééééé");
    assert_eq!(super::short("abc"), "abc");
}
