//! `clan backups` with the built-in `borgbackup` and `restic` services, deployed for real on
//! two testbed machines (a server and a client, real borg and restic over SSH between them): a
//! clan-local service declares state with a pre-backup dump and a post-restore load; the test
//! backs up, lists, damages the data, restores over it and into staging directories, and
//! compares checksums of a tree with odd names, modes, symlinks and a sparse file. Faults: a
//! failing pre-backup script makes no archive and names the state; an archive that does not
//! exist; a state the machine does not have; `backups check` and `status` see the results;
//! two backups at once, one killed half way, an unreachable server and a wrong repokey.
//! Skips with the reason when the host cannot run a testbed.

mod env;
mod support;

use support::fixture::{run, Fixture};

const SERVICE: &str = r#"
manifest = {"name": "notes", "description": "A note store with a dump-based backup"}

def _notes(ctx):
    return {"config": {"state": {"notes": {
        "folders": ["/var/lib/notes"],
        # A consistent copy of the live "database" before each backup, loaded after a restore.
        "preBackupScript": "test ! -e /var/lib/notes/fail-backup && cp /var/lib/notes/db /var/lib/notes/db.dump && if test -e /var/lib/notes/slow; then sleep 3; fi",
        "postRestoreScript": "cp /var/lib/notes/db.dump /var/lib/notes/db",
    }}}}

roles = {"default": {"description": "Keeps notes", "interface": {"type": "object"}, "perInstance": _notes}}
"#;

/// Checksums, modes, link targets and sizes of every entry under `dir`, sorted.
const TREE_SUM: &str =
    "cd DIR && find . -mindepth 1 ! -name db.dump -printf '%p %y %m %s %l\\n' | sort && \
     find . -type f ! -name db.dump -print0 | sort -z | xargs -0 sha256sum";

fn tree_sum(f: &Fixture, dir: &str) -> String {
    let sum = f.on("web01", &TREE_SUM.replace("DIR", dir));
    assert!(sum.contains("./sparse f 644 67108869"), "{dir}: {sum}");
    sum
}

/// A server `backup01` and a client `web01` with the notes state, deployed with the providers
/// `providers` (`borgbackup`, `restic`) between them.
fn deployed(providers: &[&str]) -> Option<Fixture> {
    let f = Fixture::with_packages(
        &["backup01", "web01"],
        &["ssh-keygen", "openssl", "git", "bwrap"],
        &["borgbackup", "restic"],
    )?;
    let mut toml = format!(
        "[meta]\nname = \"bak\"\ndomain = \"invalid\"\n\n\
         [machines.backup01]\ndeploy.targetHost = \"root@{server}\"\n\n\
         [machines.web01]\ndeploy.targetHost = \"root@{client}\"\n\n\
         [instances.notes]\nmodule.name = \"notes\"\nroles.default.machines.web01 = {{}}\n",
        server = f.address_of("backup01"),
        client = f.address_of("web01"),
    );
    for provider in providers {
        let roles = if *provider == "localbackup" {
            "roles.default.machines.web01.settings = \
             { snapshots = 2, targets.disk.directory = \"/srv/backups\" }\n"
        } else {
            "roles.server.machines.backup01 = {}\nroles.client.machines.web01 = {}\n"
        };
        toml.push_str(&format!(
            "\n[instances.{provider}]\nmodule.name = \"{provider}\"\n{roles}"
        ));
    }
    let service_dir = f.clan.path().join("services/notes");
    std::fs::create_dir_all(&service_dir).unwrap();
    std::fs::write(service_dir.join("service.star"), SERVICE).unwrap();
    f.git(&["init", "-q"]);
    f.git(&["add", "services"]);
    f.commit_clan_toml(&toml, "init");
    f.clan_ok(&["vars", "keygen", "--user", "admin"]);
    f.deploy_fresh();
    f.on(
        "web01",
        "mkdir -p /var/lib/notes && echo v1 > /var/lib/notes/db",
    );
    Some(f)
}

fn archives(f: &Fixture, provider: &str) -> Vec<String> {
    let listed = f.clan_ok(&["backups", "list", "web01", "--provider", provider, "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let names = listed[0]["archives"].as_array().unwrap().iter();
    names
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

fn archive_count(f: &Fixture) -> usize {
    archives(f, "borgbackup").len()
}

/// A tree with what backups get wrong: odd names, modes, a symlink, a sparse file.
const ODD_TREE: &str = "mkdir -p '/var/lib/notes/sub dir' && cd /var/lib/notes && \
     printf 'x' > 'sub dir/we\"ird $name' && chmod 0640 'sub dir/we\"ird $name' && \
     ln -s 'sub dir' link && truncate -s 64M sparse && echo tail >> sparse && \
     chmod 0750 'sub dir'";

#[test]
fn borgbackup_backs_up_restores_and_reports() {
    let Some(f) = deployed(&["borgbackup", "restic"]) else {
        return;
    };
    f.on("web01", ODD_TREE);
    let before = tree_sum(&f, "/var/lib/notes");
    let allocated = |path: &str| -> u64 {
        f.on("web01", &format!("stat -c %b {path}"))
            .parse::<u64>()
            .unwrap()
            * 512
    };
    assert!(
        allocated("/var/lib/notes/sparse") < 1 << 20,
        "the test file is sparse"
    );

    let created = f.clan_ok(&["backups", "create", "web01", "--json"]);
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(
        created["providers"],
        serde_json::json!(["borgbackup", "restic"])
    );
    assert_eq!(
        f.on("web01", "cat /var/lib/notes/db.dump"),
        "v1",
        "the pre-backup script ran"
    );
    // The repository is on the server, in the client's own directory.
    assert_eq!(
        f.on(
            "backup01",
            "test -f /var/lib/borgbackup/web01/config && echo repo"
        ),
        "repo"
    );

    let listed = f.clan_ok(&["backups", "list", "web01", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let only_archive = |provider: usize| {
        assert_eq!(
            listed[provider]["provider"],
            ["borgbackup", "restic"][provider]
        );
        let archives = listed[provider]["archives"].as_array().unwrap();
        assert_eq!(archives.len(), 1, "{listed}");
        let archive = archives[0]["name"].as_str().unwrap().to_owned();
        assert!(archive.starts_with("backup01::"), "{archive}");
        archive
    };
    let (archive, snapshot) = (only_archive(0), only_archive(1));

    // Damage: a changed database, a removed file, a changed mode.
    f.on(
        "web01",
        "cd /var/lib/notes && echo v2 > db && rm 'sub dir/we\"ird $name' && rm link && \
         chmod 0700 'sub dir'",
    );
    // Into a staging directory: the live data stays as it is, the copy is as backed up.
    f.clan_ok(&[
        "backups",
        "restore",
        "web01",
        "borgbackup",
        &archive,
        "--to",
        "/srv/staging",
    ]);
    assert_eq!(f.on("web01", "cat /var/lib/notes/db"), "v2");
    assert_eq!(tree_sum(&f, "/srv/staging/var/lib/notes"), before);
    // restic's copy too (restic 0.14 writes sparse files out in full).
    f.clan_ok(&[
        "backups",
        "restore",
        "web01",
        "restic",
        &snapshot,
        "--to",
        "/srv/restic",
    ]);
    assert_eq!(tree_sum(&f, "/srv/restic/var/lib/notes"), before);

    // Over the live data: post-restore loaded the dump; the tree is as backed up.
    f.clan_ok(&["backups", "restore", "web01", "borgbackup", &archive]);
    assert_eq!(f.on("web01", "cat /var/lib/notes/db"), "v1");
    assert_eq!(tree_sum(&f, "/var/lib/notes"), before);
    for restored in ["/var/lib/notes/sparse", "/srv/staging/var/lib/notes/sparse"] {
        assert!(allocated(restored) < 1 << 20, "{restored} restored sparse");
    }

    // An archive that does not exist, and a state the machine does not have.
    let missing = run(&mut f.clan(&[
        "backups",
        "restore",
        "web01",
        "borgbackup",
        "backup01::nope::web01-1970",
    ]));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("no archive `backup01::nope::web01-1970`"),
        "names the archive"
    );
    let no_state = run(&mut f.clan(&[
        "backups",
        "restore",
        "web01",
        "borgbackup",
        &archive,
        "--service",
        "nextcloud",
    ]));
    assert_ne!(no_state.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&no_state.stderr).contains("declares no state `nextcloud`"));

    // A failing pre-backup script: no archive, the error names the state.
    f.on("web01", "touch /var/lib/notes/fail-backup");
    let failed = run(&mut f.clan(&["backups", "create", "web01"]));
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("pre-backup script of state `notes`"),
        "{stderr}"
    );
    let listed = f.clan_ok(&["backups", "list", "web01", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    for provider in [0, 1] {
        assert_eq!(listed[provider]["archives"].as_array().unwrap().len(), 1);
    }

    // Check and status: the check passes; the failed backup is the latest result.
    f.clan_ok(&["backups", "check", "web01"]);
    // The timers of both providers are scheduled.
    assert_eq!(
        f.on(
            "web01",
            "systemctl is-enabled clan-backup-restic.timer clan-backup-check-restic.timer"
        ),
        "enabled\nenabled"
    );
    let status = run(&mut f.clan(&["backups", "status", "--json"]));
    assert_eq!(status.status.code(), Some(1), "the failed backup is stale");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let borg = &status["web01"]["providers"]["borgbackup"];
    assert_eq!(borg["stale"], true);
    assert_eq!(borg["lastCheckOk"], true, "{status}");
    assert_eq!(
        status["web01"]["providers"]["restic"]["lastCheckOk"], true,
        "{status}"
    );
    assert!(borg["lastFailure"].as_u64() >= borg["lastSuccess"].as_u64());
    assert!(borg["lastError"]
        .as_str()
        .unwrap()
        .contains("pre-backup script of state `notes`"));
    // The server has no provider of its own: status asks only the client.
    assert!(status.get("backup01").is_none(), "{status}");
}

#[test]
fn backup_faults_are_reported_and_leave_nothing_to_repair() {
    let Some(f) = deployed(&["borgbackup"]) else {
        return;
    };
    f.clan_ok(&["backups", "create", "web01"]);

    // Two at once: the second waits for the first, both make an archive.
    f.on("web01", "touch /var/lib/notes/slow");
    // (Without the machine's backup lock the second would fail on borg's repository lock
    // and clobber the first's dump.)
    let spawn = || f.clan(&["backups", "create", "web01"]).spawn().unwrap();
    let (first, second) = (spawn(), spawn());
    for mut child in [first, second] {
        assert!(child.wait().unwrap().success());
    }
    f.on("web01", "rm /var/lib/notes/slow");
    assert_eq!(archive_count(&f), 3);

    // Killed in the middle of `borg create`: no lock to break by hand, the repository checks
    // out, and the next backup works.
    f.on("web01", "head -c 300M /dev/urandom > /var/lib/notes/big");
    let mut interrupted = f.clan(&["backups", "create", "web01"]).spawn().unwrap();
    let running = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        f.on("web01", "pgrep -f 'borg create' >/dev/null && echo yes") == "yes"
    });
    assert!(running, "borg create started");
    f.on(
        "web01",
        "pkill -KILL -f 'agent backups create'; pkill -KILL -f 'borg create'",
    );
    let _ = interrupted.wait();
    f.clan_ok(&["backups", "check", "web01"]);
    f.clan_ok(&["backups", "create", "web01"]);
    assert!(archive_count(&f) >= 4);

    // The server unreachable: the backup fails loudly, status flags it stale and exits 1;
    // once the server is back, the next backup clears it.
    let client = f.address_of("web01");
    f.on(
        "backup01",
        &format!(
            "nft add table inet blocked && nft add chain inet blocked input \
             '{{ type filter hook input priority -10; }}' && nft add rule inet blocked input \
             ip saddr {client} tcp dport 22 reject with tcp reset"
        ),
    );
    let failed = run(&mut f.clan(&["backups", "create", "web01"]));
    assert_eq!(failed.status.code(), Some(1));
    let status = run(&mut f.clan(&["backups", "status", "--json"]));
    assert_eq!(status.status.code(), Some(1), "a stale backup fails status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["web01"]["providers"]["borgbackup"]["stale"], true);
    f.on("backup01", "nft delete table inet blocked");

    // A wrong repokey (the secret replaced on the machine): refused by borg, reported.
    let key = "/run/clan/secrets/borgbackup/borgbackup.repokey";
    f.on(
        "web01",
        &format!("cp {key} /root/repokey && echo wrong > {key}"),
    );
    let wrong = run(&mut f.clan(&["backups", "create", "web01"]));
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("passphrase"),
        "borg's refusal reaches the user"
    );
    f.on("web01", &format!("cp /root/repokey {key}"));
    f.clan_ok(&["backups", "create", "web01"]);
    let status = f.clan_ok(&["backups", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["web01"]["providers"]["borgbackup"]["stale"], false);
}

#[test]
fn localbackup_keeps_linked_snapshots_on_the_machine() {
    let Some(f) = deployed(&["localbackup"]) else {
        return;
    };
    f.on("web01", ODD_TREE);
    let before = tree_sum(&f, "/var/lib/notes");
    for _ in 0..3 {
        f.clan_ok(&["backups", "create", "web01"]);
    }
    // `snapshots = 2`: the oldest is gone; unchanged files are one inode across snapshots.
    let names = archives(&f, "localbackup");
    assert_eq!(names.len(), 2, "{names:?}");
    let inodes = f.on(
        "web01",
        "stat -c %i /srv/backups/web01-*/var/lib/notes/sparse | sort -u | wc -l",
    );
    assert_eq!(inodes, "1", "hard-linked to the previous snapshot");

    f.on(
        "web01",
        "cd /var/lib/notes && rm -r 'sub dir' link && echo v2 > db",
    );
    f.clan_ok(&["backups", "restore", "web01", "localbackup", &names[1]]);
    assert_eq!(tree_sum(&f, "/var/lib/notes"), before);
    assert_eq!(
        f.on("web01", "cat /var/lib/notes/db"),
        "v1",
        "post-restore ran"
    );
    let blocks: u64 = f
        .on("web01", "stat -c %b /var/lib/notes/sparse")
        .parse()
        .unwrap();
    assert!(blocks * 512 < 1 << 20, "restored sparse");
}
