//! Activation into an image directory (`--root`): files tracked across generations, kept
//! aside and restored, dry runs that change nothing, history and rollback.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use clan_config::{File, MachineConfig};

use crate::*;
use clan_generation::reply::FailureKind;
use clan_generation::Generation;

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
                path.parse().unwrap(),
                File {
                    content: content.to_string(),
                    template: false,
                    owner: "root".parse().unwrap(),
                    group: "root".parse().unwrap(),
                    mode: "0640".parse().unwrap(),
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
    let generation = Generation::build(&"m".parse().unwrap(), config, &[]).unwrap();
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
    let generations = agent.generations().unwrap();
    assert_eq!(generations.current.as_deref(), Some(first.as_str()));
    let actions: Vec<&str> = generations
        .history
        .iter()
        .map(|e| e.action.as_str())
        .collect();
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
    // What the deployer gets: the rollback, and what caused it.
    let failure = error.failure();
    assert_eq!(failure.kind, FailureKind::RolledBack);
    assert_eq!(failure.message, error.to_string());
    let cause = failure.cause.expect("the cause travels with it");
    assert!(
        cause.message.contains("directory is in the way"),
        "{cause:?}"
    );
    assert_eq!(
        (cause.kind, cause.path.as_deref()),
        (FailureKind::Path, Some("/srv/blocked"))
    );
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
    let generation = Generation::build(
        &"m".parse().unwrap(),
        &config(&[("/etc/hello", "hi\n")]),
        &[],
    )
    .unwrap();
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

/// An image whose `/home/alice` belongs to alice (uid 1000), and a config managing
/// `/home/alice/.app/config` (owned by alice) with `content`.
fn alice_image() -> tempfile::TempDir {
    let root = image();
    fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.path().join("etc/group"), "root:x:0:\nalice:x:1000:\n").unwrap();
    fs::create_dir_all(root.path().join("etc/cron.d")).unwrap();
    fs::write(root.path().join("etc/shadow"), "root:!:1::::::\n").unwrap();
    let home = root.path().join("home/alice");
    fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(1000), Some(1000)).unwrap();
    root
}

fn app_config(content: &str) -> MachineConfig {
    let mut config = config(&[("/home/alice/.app/config", content)]);
    let file = config.files.get_mut("/home/alice/.app/config").unwrap();
    file.owner = "alice".parse().unwrap();
    file.group = "alice".parse().unwrap();
    config
}

fn is_root() -> bool {
    let root = rustix::process::geteuid().as_raw() == 0;
    if !root {
        clan_testbed::skip("needs root to own files as another user");
    }
    root
}

/// A non-root user owns a directory above a managed file: what they put there (a link to a
/// root location, at the directory or at the file) is refused or replaced, never followed.
#[test]
fn links_a_user_plants_under_a_managed_path_are_never_followed() {
    use std::os::unix::fs::{lchown, symlink, MetadataExt as _};
    if !is_root() {
        return;
    }
    let root = alice_image();
    let home = root.path().join("home/alice");
    let agent = Agent::new(root.path());

    let first = store(&agent, &app_config("one\n"));
    agent.activate(&first, &NO_MAGIC, |_| {}).unwrap();
    let meta = fs::metadata(home.join(".app/config")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000), "chowned on the fd");

    // alice swaps her directory for a link to /etc/cron.d between deploys.
    fs::rename(home.join(".app"), home.join(".app-old")).unwrap();
    symlink("/etc/cron.d", home.join(".app")).unwrap();
    lchown(home.join(".app"), Some(1000), Some(1000)).unwrap();
    let second = store(&agent, &app_config("two\n"));
    let error = agent.diff(&second).unwrap_err();
    assert!(error.to_string().contains("home/alice/.app"), "{error}");
    let error = agent.activate(&second, &NO_MAGIC, |_| {}).unwrap_err();
    assert!(error.to_string().contains("home/alice/.app`"), "{error}");
    assert_eq!(
        fs::read_dir(root.path().join("etc/cron.d"))
            .unwrap()
            .count(),
        0,
        "nothing written where the link points"
    );

    // A link at the file itself is replaced by the file, its target left alone.
    fs::remove_file(home.join(".app")).unwrap();
    fs::rename(home.join(".app-old"), home.join(".app")).unwrap();
    fs::remove_file(home.join(".app/config")).unwrap();
    symlink("/etc/shadow", home.join(".app/config")).unwrap();
    lchown(home.join(".app/config"), Some(1000), Some(1000)).unwrap();
    agent.activate(&second, &NO_MAGIC, |_| {}).unwrap();
    assert_eq!(
        read(&root, "/etc/shadow").as_deref(),
        Some("root:!:1::::::\n")
    );
    let meta = fs::symlink_metadata(home.join(".app/config")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.uid(), 1000);
    assert_eq!(
        read(&root, "/home/alice/.app/config").as_deref(),
        Some("two\n")
    );
}

/// alice swaps `~/.app` between her directory and a link to `/etc/cron.d` as fast as she can,
/// and hardlinks `/etc/shadow` to `~/.app/config`, while deploys run: each either writes into
/// her directory or is refused, and nothing ever lands outside it.
#[test]
fn racing_a_user_who_swaps_her_directory_never_writes_outside() {
    use std::sync::atomic::{AtomicBool, Ordering};
    if !is_root() {
        return;
    }
    let trials: usize = std::env::var("CLAN_ADVERSARIAL_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let root = alice_image();
    let home = root.path().join("home/alice");
    fs::create_dir_all(home.join(".app")).unwrap();
    std::os::unix::fs::chown(home.join(".app"), Some(1000), Some(1000)).unwrap();
    let agent = Agent::new(root.path());
    let configs = [app_config("a\n"), app_config("b\n")];
    let stop = AtomicBool::new(false);
    let (mut written, mut refused, mut swaps) = (0, 0, 0);
    std::thread::scope(|scope| {
        let racer = scope.spawn(|| {
            let mut swaps = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = fs::rename(home.join(".app"), home.join(".app-real"));
                let _ = std::os::unix::fs::symlink("/etc/cron.d", home.join(".app"));
                let _ = fs::remove_file(home.join(".app"));
                let _ = fs::rename(home.join(".app-real"), home.join(".app"));
                // A hardlink to a root file at the managed name.
                let _ = fs::remove_file(home.join(".app/config"));
                let _ = fs::hard_link(root.path().join("etc/shadow"), home.join(".app/config"));
                swaps += 1;
            }
            swaps
        });
        for trial in 0..trials {
            // Uploaded right before, as a deploy does (activation collects older uploads).
            let generation = store(&agent, &configs[trial % 2]);
            match agent.activate(&generation, &NO_MAGIC, |_| {}) {
                Ok(_) => written += 1,
                Err(error) => {
                    assert!(error.to_string().contains("home/alice/.app"), "{error}");
                    refused += 1
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        swaps = racer.join().unwrap();
    });
    eprintln!("{trials} deploys against {swaps} swaps: {written} written, {refused} refused");
    assert_eq!(
        fs::read_dir(root.path().join("etc/cron.d"))
            .unwrap()
            .count(),
        0,
        "a write went through the link"
    );
    assert_eq!(
        read(&root, "/etc/shadow").as_deref(),
        Some("root:!:1::::::\n")
    );
    // Every file left in alice's home is in her directory, and clan's is hers.
    for dir in [".app", ".app-real"] {
        if let Ok(meta) = fs::symlink_metadata(home.join(dir).join("config")) {
            if meta.is_file()
                && fs::read(home.join(dir).join("config")).unwrap() != b"root:!:1::::::\n"
            {
                assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 1000);
            }
        }
    }
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
            restart_triggers: restart.iter().map(|p| p.parse().unwrap()).collect(),
            reload_triggers: reload.iter().map(|p| p.parse().unwrap()).collect(),
        };
        config.units.insert(
            "app.service".parse().unwrap(),
            unit(&["/etc/app.conf"], &[]),
        );
        config.units.insert(
            "other.service".parse().unwrap(),
            unit(&[], &["/etc/other.conf"]),
        );
        config
            .units
            .insert("bystander.service".parse().unwrap(), unit(&[], &[]));
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
