//! Built-in settings deployed for real on testbed machines and observed inside them: users'
//! groups and shells (changed by a second deploy, a removed group left, a missing one
//! refused), one shared password on two machines, sshd's password logins on and off (an
//! actual password login), hello-world's greeting, and Data Mesher members finding their
//! bootstrap peer with no extra peers configured, at its network address or by a name that
//! resolves only later, `clan mesher status` saying why while the peer is missing, and a file
//! that the `files` setting allows replicating between them. Skips with the reason when the
//! host cannot run a testbed (not root, a tool missing).

mod env;
mod support;

use std::process::Command;

use support::fixture::{run, stdout, Fixture};

const PASSWORD: &str = "correct horse battery";

/// Test machines `names` with `clan_toml` committed and an admin age key; `None` when the
/// host cannot run them or lacks one of `tools`.
fn clan_on(
    names: &[&str],
    tools: &[&str],
    clan_toml: impl Fn(&Fixture) -> String,
) -> Option<Fixture> {
    let f = Fixture::new(names, tools)?;
    f.commit_clan_toml(&clan_toml(&f), "init");
    f.clan_ok(&["vars", "keygen", "--user", "admin"]);
    Some(f)
}

/// Deploys `machines` (all when empty); `tofu` for first contact with fresh machines.
fn deploy(f: &Fixture, machines: &[&str], host_key_check: &str) {
    let mut args = vec!["machines", "update"];
    args.extend(machines);
    args.extend([
        "--confirm-timeout",
        "10",
        "--host-key-check",
        host_key_check,
    ]);
    f.clan_ok(&args);
}

/// Tries a password login as `user` on `machine` (password authentication only; the password
/// reaches sshpass through its environment, not argv): `true` when it got in, `false` when
/// sshd refused it; anything else (no answer, sshpass trouble) fails the test rather than
/// passing for a refusal.
fn password_login(f: &Fixture, machine: &str, user: &str, password: &str) -> bool {
    // Until its boot has finished a machine admits no one but root (pam_nologin), which on a
    // loaded host can outlast the deploy: a user logs in once it is up.
    f.on(
        machine,
        "systemctl is-system-running --wait >/dev/null || true",
    );
    let output = run(Command::new("sshpass")
        .arg("-e")
        .args(["ssh", "-F", "/dev/null"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "PubkeyAuthentication=no"])
        .args([
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .args(["-o", "ConnectTimeout=5"])
        .arg("--")
        .arg(format!("{user}@{}", f.address_of(machine)))
        .arg("id -un")
        .env("SSHPASS", password));
    if output.status.success() {
        return stdout(&output) == user;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // sshpass exits 5 for a wrong password; ssh says so when no password method is offered.
    let refused = output.status.code() == Some(5) || stderr.contains("Permission denied");
    assert!(
        refused,
        "password login to {machine} neither got in nor was refused: {stderr}"
    );
    false
}

fn users_toml(f: &Fixture, groups: &str, shell: &str, password_logins: bool) -> String {
    format!(
        "[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n\
         [machines.one]\ndeploy.targetHost = \"root@{}\"\n\n\
         [machines.two]\ndeploy.targetHost = \"root@{}\"\n\n\
         [instances.people]\nmodule.name = \"users\"\nroles.default.tags = [\"all\"]\n\
         roles.default.settings = {{ user = \"alice\", groups = {groups}, shell = \"{shell}\", share = true }}\n\n\
         [instances.ssh]\nmodule.name = \"sshd\"\nroles.server.tags = [\"all\"]\n\
         roles.server.machines.one.settings.passwordAuthentication = {password_logins}\n\n\
         [instances.hello]\nmodule.name = \"hello-world\"\nroles.default.tags = [\"all\"]\n\
         roles.default.settings.greeting = \"Salut\"\n",
        f.address_of("one"),
        f.address_of("two"),
    )
}

/// users `groups`, `shell` and `share`, sshd `passwordAuthentication` and hello-world
/// `greeting`, on two machines: set, observed, changed by a second deploy and observed again.
/// A group or shell the machine lacks fails the deploy, naming it, and changes nothing.
#[test]
fn user_groups_shell_shared_password_and_password_logins_reach_the_machines() {
    let tools = ["openssl", "git", "bwrap", "sshpass"];
    let Some(f) = clan_on(&["one", "two"], &tools, |f| {
        users_toml(f, "[\"users\", \"adm\"]", "/bin/sh", true)
    }) else {
        return;
    };
    // One prompt for the shared generator, whichever machine asks; never in argv.
    let answers = f.work.path().join("answers.json");
    std::fs::write(
        &answers,
        format!("{{\"user-password-alice\": {{\"user-password\": \"{PASSWORD}\"}}}}"),
    )
    .unwrap();
    let answers = answers.to_str().unwrap();
    f.clan_ok(&["vars", "generate", "--prompt-values", answers]);
    deploy(&f, &[], "tofu");

    for machine in ["one", "two"] {
        let groups = f.on(machine, "id -nG alice");
        let groups: Vec<&str> = groups.split_whitespace().collect();
        assert!(groups.contains(&"adm"), "{machine}: {groups:?}");
        assert!(groups.contains(&"users"), "{machine}: {groups:?}");
        assert_eq!(
            f.on(machine, "getent passwd alice | cut -d: -f7"),
            "/bin/sh",
            "{machine}"
        );
        assert_eq!(
            f.on(machine, "cat /etc/hello"),
            format!("Salut from {machine}")
        );
    }
    // share: one hash, stored once, on both machines.
    let hash = |machine: &str| f.on(machine, "getent shadow alice | cut -d: -f2");
    let shared = hash("one");
    assert!(shared.starts_with("$6$"), "{shared}");
    assert_eq!(hash("two"), shared);
    assert!(f
        .clan
        .path()
        .join("vars/shared/user-password-alice")
        .is_dir());
    assert!(!f
        .clan
        .path()
        .join("vars/per-machine/one/user-password-alice")
        .exists());
    // passwordAuthentication: sshd's effective setting, and a real login with the password.
    let effective = |machine: &str| f.on(machine, "sshd -T | grep -i '^passwordauthentication '");
    assert_eq!(effective("one"), "passwordauthentication yes");
    assert_eq!(effective("two"), "passwordauthentication no");
    assert!(
        password_login(&f, "one", "alice", PASSWORD),
        "password login on one"
    );
    assert!(
        !password_login(&f, "one", "alice", "wrong"),
        "wrong password accepted"
    );
    assert!(
        !password_login(&f, "two", "alice", PASSWORD),
        "password login on two"
    );

    // Second deploy: alice leaves `adm`, gets bash; password logins are off again.
    let toml = users_toml(&f, "[\"users\"]", "/bin/bash", false);
    f.commit_clan_toml(&toml, "fewer groups, bash, no passwords");
    deploy(&f, &[], "strict");
    for machine in ["one", "two"] {
        let groups = f.on(machine, "id -nG alice");
        let groups: Vec<&str> = groups.split_whitespace().collect();
        assert!(!groups.contains(&"adm"), "{machine}: {groups:?}");
        assert!(groups.contains(&"users"), "{machine}: {groups:?}");
        assert_eq!(
            f.on(machine, "getent passwd alice | cut -d: -f7"),
            "/bin/bash",
            "{machine}"
        );
        assert_eq!(hash(machine), shared, "{machine}");
    }
    assert_eq!(effective("one"), "passwordauthentication no");
    assert!(
        !password_login(&f, "one", "alice", PASSWORD),
        "password login still on"
    );

    // Valid names the machine does not have: refused there, before any account changes.
    for (groups, shell, refusal) in [
        (
            "[\"users\", \"nosuchgroup\"]",
            "/bin/bash",
            "user `alice`: group `nosuchgroup` does not exist on the machine",
        ),
        (
            "[\"users\"]",
            "/usr/bin/nosuchshell",
            "user `alice`: shell `/usr/bin/nosuchshell` does not exist on the machine",
        ),
    ] {
        f.commit_clan_toml(
            &users_toml(&f, groups, shell, false),
            "what the machine lacks",
        );
        let output = run(&mut f.clan(&["machines", "update", "one", "--host-key-check", "strict"]));
        assert_eq!(output.status.code(), Some(1), "the deploy did not fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(refusal), "{stderr}");
        assert_eq!(
            f.on("one", "getent passwd alice | cut -d: -f7"),
            "/bin/bash"
        );
    }
}

/// Polls `check` (the first mesher exchange takes a moment); a hang guard, not a timing
/// assertion.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..120 {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    false
}

/// Data Mesher with the internet service and no `extraBootstrapPeers`: the laptop dials the
/// hub at the hub's `peer` address (the hub has no deploy target; the internet service names
/// its address) on the hub's own port and interface. Before the hub runs, the laptop's
/// `clan mesher status` names the unreachable hub; afterwards both see each other.
#[test]
fn data_mesher_members_find_their_bootstrap_peer_at_its_network_address() {
    let Some(f) = clan_on(&["hub", "laptop"], &["openssl", "git", "bwrap"], |f| {
        let (hub, laptop) = (f.address_of("hub"), f.address_of("laptop"));
        format!(
            "[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n\
             [machines.hub]\n\n\
             [machines.laptop]\ndeploy.targetHost = \"root@{laptop}\"\n\n\
             [instances.net]\nmodule.name = \"internet\"\nroles.default.tags = [\"all\"]\n\
             roles.default.machines.hub.settings.host = \"{hub}\"\n\n\
             [instances.mesh]\nmodule.name = \"data-mesher\"\n\
             roles.bootstrap.machines.hub.settings = {{ port = 7950, interfaces = [\"{hub}\"] }}\n\
             roles.default.machines.laptop = {{}}\n\
             roles.default.settings = {{ pushPullInterval = \"10s\", namespaces = [\"facts\"] }}\n"
        )
    }) else {
        return;
    };
    let hub = f.address_of("hub");
    let status = |machine: &str| -> serde_json::Value {
        let text = f.on(machine, "/var/lib/clan/bin/clan mesher status --json");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    };
    let peers = |machine: &str| status(machine)["peers"].as_array().map_or(0, Vec::len);

    // The laptop alone: its status names the hub's address, which refuses.
    deploy(&f, &["laptop"], "tofu");
    let config = f.on("laptop", "cat /etc/data-mesher/dm.toml");
    assert!(
        config.contains(&format!("bootstrap_peers = [\"{hub}:7950\"]")),
        "{config}"
    );
    assert!(config.contains("push_pull_interval = \"10s\""), "{config}");
    assert!(config.contains("namespaces = [\"facts\"]"), "{config}");
    let dialled = format!("/ip4/{hub}/tcp/7950");
    assert!(
        eventually(|| status("laptop")["bootstrap"][0]["error"].is_string()),
        "no dial failure reported"
    );
    let text = f.on("laptop", "/var/lib/clan/bin/clan mesher status");
    assert!(
        text.contains(&format!(
            "no peers: none of the bootstrap peers is reachable: {dialled}: "
        )),
        "{text}"
    );

    // With the hub deployed (reached through its peer address), each sees the other, the
    // hub listening only where its settings say.
    deploy(&f, &["hub"], "tofu");
    let listening = status("hub")["listen_addrs"].clone();
    assert_eq!(listening, serde_json::json!([dialled]), "hub listens on");
    assert!(
        eventually(|| (peers("hub"), peers("laptop")) == (1, 1)),
        "the members do not see each other"
    );
    assert!(status("laptop")["no_peers"].is_null());
    assert_eq!(status("laptop")["bootstrap"][0]["connected"], true);

    // `files`: a key the laptop made may sign `zone` once the setting lists it, and what it
    // publishes reaches the hub.
    let clan = "/var/lib/clan/bin/clan mesher";
    let signer = f.on(
        "laptop",
        &format!("{clan} generate signing-key --out /root/signing.key"),
    );
    let publish = format!(
        "echo 'example.org. IN A 10.0.0.1' | {clan} file update zone - --signing-key /root/signing.key"
    );
    let refused = run(f.testbed.ssh_command("laptop").unwrap().arg(&publish));
    assert!(!refused.status.success(), "published without being allowed");
    for role in ["default", "bootstrap"] {
        let setting = format!("{role}.files={{\"zone\": [\"{signer}\"]}}");
        f.clan_ok(&["instances", "set", "mesh", &setting]);
    }
    deploy(&f, &[], "strict");
    assert!(
        eventually(|| (peers("hub"), peers("laptop")) == (1, 1)),
        "the restarted members do not see each other"
    );
    let published = run(f.testbed.ssh_command("laptop").unwrap().arg(&publish));
    assert!(published.status.success(), "publishing failed");
    assert!(
        eventually(|| f.on("hub", &format!("{clan} file get zone")) == "example.org. IN A 10.0.0.1"),
        "the file did not reach the hub"
    );
}

/// A bootstrap machine known by name only (no deploy target, no network service: members
/// dial `<machine>.<domain>`): while the name does not resolve on the laptop, its
/// `clan mesher status` says so; once the name resolves there (an admin's hosts entry),
/// the running daemon dials it without a restart.
#[test]
fn data_mesher_dials_a_bootstrap_host_name_once_it_resolves() {
    let Some(f) = clan_on(&["hub", "laptop"], &["openssl", "git", "bwrap"], |f| {
        format!(
            "[meta]\nname = \"test\"\ndomain = \"mesh.test\"\n\n\
             [machines.hub]\n\n\
             [machines.laptop]\ndeploy.targetHost = \"root@{}\"\n\n\
             [instances.mesh]\nmodule.name = \"data-mesher\"\n\
             roles.bootstrap.machines.hub = {{}}\nroles.default.machines.laptop = {{}}\n",
            f.address_of("laptop")
        )
    }) else {
        return;
    };
    let hub = f.address_of("hub");
    let target = format!("root@{hub}");
    f.clan_ok(&[
        "machines",
        "update",
        "hub",
        "--target-host",
        &target,
        "--confirm-timeout",
        "10",
        "--host-key-check",
        "tofu",
    ]);
    deploy(&f, &["laptop"], "tofu");
    let config = f.on("laptop", "cat /etc/data-mesher/dm.toml");
    assert!(
        config.contains("bootstrap_peers = [\"hub.mesh.test:7946\"]"),
        "{config}"
    );
    let text = f.on("laptop", "/var/lib/clan/bin/clan mesher status");
    assert!(
        text.contains("no peers: none of the bootstrap peers is reachable: hub.mesh.test:7946: does not resolve (yet)"),
        "{text}"
    );

    f.on(
        "laptop",
        &format!("echo '{hub} hub.mesh.test' >> /etc/hosts"),
    );
    let status = || -> serde_json::Value {
        let text = f.on("laptop", "/var/lib/clan/bin/clan mesher status --json");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    };
    assert!(
        eventually(|| status()["peers"].as_array().is_some_and(|p| p.len() == 1)),
        "the laptop never reached the hub by name"
    );
    let status = status();
    assert_eq!(status["unresolved_bootstrap"], serde_json::json!([]));
    assert_eq!(
        status["bootstrap"][0]["address"],
        format!("/ip4/{hub}/tcp/7946")
    );
}
