//! `clan secrets …` end to end: the real binary in a temporary git clan, keys made by
//! `age-keygen` (Debian package `age`), values through stdin only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Clan {
    dir: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Clan {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("clan")).unwrap();
        std::fs::write(dir.path().join("clan/clan.toml"), "").unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        let clan = Clan { dir };
        clan.git(&["init", "-q"]);
        clan.git(&["add", "clan.toml"]);
        clan.git(&["commit", "-q", "-m", "init"]);
        clan
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("clan")
    }

    fn git(&self, args: &[&str]) -> String {
        let output = self
            .env(Command::new("git").args(args))
            .current_dir(self.root())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CLAN_NO_COMMIT")
            .env_remove("CLAN_DIR")
            .env("HOME", self.dir.path().join("home"))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "test")
            .env("GIT_AUTHOR_EMAIL", "test@example.org")
            .env("GIT_COMMITTER_NAME", "test")
            .env("GIT_COMMITTER_EMAIL", "test@example.org")
    }

    /// Makes an age key with `age-keygen`; returns its file and public key.
    fn keygen(&self, name: &str) -> (PathBuf, String) {
        let path = self.dir.path().join(format!("{name}.key"));
        let output = Command::new("age-keygen").arg("-o").arg(&path).output();
        let output = output.expect("age-keygen must be installed (Debian package `age`)");
        assert!(output.status.success());
        let text = std::fs::read_to_string(&path).unwrap();
        let public = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .unwrap()
            .to_owned();
        (path, public)
    }

    fn run(&self, key: Option<&Path>, args: &[&str], stdin: &[u8]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clan"));
        self.env(&mut command)
            .current_dir(self.root())
            .arg("secrets")
            .args(args);
        if let Some(key) = key {
            command.env("SOPS_AGE_KEY_FILE", key);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The command may exit before reading stdin (usage errors): a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    fn ok(&self, key: Option<&Path>, args: &[&str], stdin: &[u8]) -> String {
        let run = self.run(key, args, stdin);
        assert_eq!(
            run.code, 0,
            "clan secrets {args:?}\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        run.stdout
    }
}

/// A clan where alice (the admin) has added herself.
fn clan_with_alice() -> (Clan, PathBuf, String) {
    let clan = Clan::new();
    let (key, public) = clan.keygen("alice");
    clan.ok(Some(&key), &["users", "add", "alice", &public], b"");
    (clan, key, public)
}

#[test]
fn set_get_with_users_machines_groups_and_commits() {
    let (clan, alice, _) = clan_with_alice();
    let k = Some(alice.as_path());
    clan.ok(k, &["set", "db-password"], b"correct horse\n");
    assert_eq!(clan.ok(k, &["get", "db-password"], b""), "correct horse\n");
    assert_eq!(clan.ok(k, &["list"], b""), "db-password\n");
    assert_eq!(clan.ok(k, &["list", "pass"], b""), "db-password\n");
    assert_eq!(clan.ok(k, &["list", "nothing"], b""), "");

    let (web_key, web_public) = clan.keygen("web01");
    clan.ok(k, &["machines", "add", "web01", &web_public], b"");
    assert_eq!(
        clan.ok(k, &["machines", "get", "web01"], b""),
        format!("{web_public}\n")
    );
    let denied = clan.run(Some(&web_key), &["get", "db-password"], b"");
    assert_eq!(denied.code, 2);
    assert!(
        denied.stderr.contains("it can be decrypted by user alice"),
        "{}",
        denied.stderr
    );

    clan.ok(k, &["machines", "add-secret", "web01", "db-password"], b"");
    assert_eq!(
        clan.ok(Some(&web_key), &["get", "db-password"], b""),
        "correct horse\n"
    );
    clan.ok(
        k,
        &["machines", "remove-secret", "web01", "db-password"],
        b"",
    );
    assert_eq!(
        clan.run(Some(&web_key), &["get", "db-password"], b"").code,
        2
    );

    // Group membership re-keys the group's secrets.
    let missing_group = clan.run(k, &["set", "tls", "--group", "nobody"], b"pem");
    assert_eq!(missing_group.code, 2, "{}", missing_group.stderr);
    clan.ok(k, &["groups", "add-user", "servers", "alice"], b"");
    clan.ok(k, &["set", "tls", "--group", "servers"], b"pem");
    clan.ok(k, &["groups", "add-machine", "servers", "web01"], b"");
    assert_eq!(clan.ok(Some(&web_key), &["get", "tls"], b""), "pem");
    assert_eq!(
        clan.ok(k, &["groups", "list"], b""),
        "servers\nmachines:\n  web01\nusers:\n  alice\n\n"
    );
    clan.ok(k, &["groups", "remove-machine", "servers", "web01"], b"");
    assert_eq!(clan.run(Some(&web_key), &["get", "tls"], b"").code, 2);

    let audit = clan.ok(k, &["audit"], b"");
    assert!(
        audit.contains("sops/secrets/tls\n  user alice\n  user alice via group servers\n"),
        "{audit}"
    );

    clan.ok(k, &["rename", "tls", "tls-cert"], b"");
    clan.ok(k, &["remove", "db-password"], b"");
    assert_eq!(clan.ok(k, &["list"], b""), "tls-cert\n");

    let log = clan.git(&["log", "--format=%s"]);
    for message in [
        "secrets: add user alice",
        "secrets: update db-password",
        "secrets: add machine web01",
        "secrets: add machine web01 to db-password",
        "secrets: add machine web01 to group servers",
        "secrets: rename tls to tls-cert",
        "secrets: remove db-password",
    ] {
        assert!(
            log.lines().any(|line| line == message),
            "missing commit {message:?} in\n{log}"
        );
    }
    assert_eq!(
        clan.git(&["status", "--porcelain"]),
        "",
        "everything committed"
    );
}

/// Every listing's `--json` is the same list as its text, as JSON a program parses.
#[test]
fn listings_print_json() {
    let (clan, alice, _) = clan_with_alice();
    let k = Some(alice.as_path());
    let (_, web_public) = clan.keygen("web01");
    clan.ok(k, &["machines", "add", "web01", &web_public], b"");
    clan.ok(k, &["groups", "add-user", "servers", "alice"], b"");
    clan.ok(k, &["groups", "add-machine", "servers", "web01"], b"");
    clan.ok(k, &["set", "db-password"], b"x");
    clan.ok(k, &["set", "tls"], b"y");
    let json = |args: &[&str]| -> serde_json::Value {
        let out = clan.ok(k, args, b"");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    assert_eq!(
        json(&["list", "--json"]),
        serde_json::json!(["db-password", "tls"])
    );
    assert_eq!(
        json(&["list", "db", "--json"]),
        serde_json::json!(["db-password"])
    );
    assert_eq!(
        json(&["users", "list", "--json"]),
        serde_json::json!(["alice"])
    );
    assert_eq!(
        json(&["machines", "list", "--json"]),
        serde_json::json!(["web01"])
    );
    assert_eq!(
        json(&["groups", "list", "--json"]),
        serde_json::json!([{"name": "servers", "users": ["alice"], "machines": ["web01"]}])
    );
}

#[test]
fn no_commit_when_asked() {
    let (clan, alice, _) = clan_with_alice();
    let mut command = Command::new(env!("CARGO_BIN_EXE_clan"));
    clan.env(&mut command)
        .current_dir(clan.root())
        .env("SOPS_AGE_KEY_FILE", &alice)
        .env("CLAN_NO_COMMIT", "1")
        .args(["secrets", "set", "x"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"v").unwrap();
    assert!(child.wait().unwrap().success());
    assert!(clan
        .git(&["status", "--porcelain"])
        .contains("sops/secrets/"));
}

#[test]
fn user_keys_rekey_and_the_last_key_stays() {
    let (clan, alice, alice_public) = clan_with_alice();
    let k = Some(alice.as_path());
    clan.ok(k, &["set", "s"], b"v");
    let (laptop, laptop_public) = clan.keygen("laptop");
    clan.ok(
        k,
        &["users", "add-key", "alice", "--age-key", &laptop_public],
        b"",
    );
    assert_eq!(clan.ok(Some(&laptop), &["get", "s"], b""), "v");
    let got: serde_json::Value =
        serde_json::from_str(&clan.ok(k, &["users", "get", "alice"], b"")).unwrap();
    assert_eq!(got.as_array().unwrap().len(), 2);

    clan.ok(
        Some(&laptop),
        &["users", "remove-key", "alice", &alice_public],
        b"",
    );
    assert_eq!(
        clan.run(k, &["get", "s"], b"").code,
        2,
        "the removed key lost access"
    );
    let last = clan.run(
        Some(&laptop),
        &["users", "remove-key", "alice", &laptop_public],
        b"",
    );
    assert_eq!(last.code, 2);
    assert!(
        last.stderr
            .contains("refusing to remove the last key of user `alice`"),
        "{}",
        last.stderr
    );
    assert!(
        last.stderr.contains("hint: add another key first"),
        "{}",
        last.stderr
    );
}

#[test]
fn no_admin_key_is_explained() {
    let (clan, alice, _) = clan_with_alice();
    clan.ok(Some(&alice), &["set", "s"], b"v");
    let run = clan.run(None, &["get", "s"], b"");
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("error: no age key found (looked in SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: run `clan secrets key generate`"),
        "{}",
        run.stderr
    );
    let run = clan.run(None, &["set", "t"], b"v");
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no age key found"), "{}", run.stderr);
}

#[test]
fn unknown_key_is_told_who_can_decrypt() {
    let (clan, alice, _) = clan_with_alice();
    clan.ok(Some(&alice), &["set", "s"], b"v");
    let (web_key, web_public) = clan.keygen("web");
    clan.ok(Some(&alice), &["machines", "add", "web", &web_public], b"");
    clan.ok(Some(&alice), &["machines", "add-secret", "web", "s"], b"");
    let (stranger, _) = clan.keygen("stranger");
    let run = clan.run(Some(&stranger), &["get", "s"], b"");
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot decrypt `sops/secrets/s/secret`: none of your keys is a recipient; it can be decrypted by machine web, user alice"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint: ask alice"), "{}", run.stderr);
    let set = clan.run(Some(&stranger), &["set", "t"], b"v");
    assert!(
        set.stderr.contains("belongs to a user in `sops/users`"),
        "{}",
        set.stderr
    );
    assert!(
        set.stderr
            .contains("hint: add yourself with `clan secrets users add"),
        "{}",
        set.stderr
    );
    let _ = web_key;
}

#[test]
fn tampered_secret_is_named() {
    let (clan, alice, _) = clan_with_alice();
    clan.ok(Some(&alice), &["set", "s"], b"value");
    let path = clan.root().join("sops/secrets/s/secret");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let data = json["data"].as_str().unwrap().to_owned();
    let at = data.find("data:").unwrap() + 5;
    let mut bytes = data.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    json["data"] = serde_json::Value::String(String::from_utf8(bytes).unwrap());
    std::fs::write(&path, json.to_string()).unwrap();
    let run = clan.run(Some(&alice), &["get", "s"], b"");
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("error: failed to decrypt `sops/secrets/s/secret`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("Caused by: authentication of `data` failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("hint: restore `sops/secrets/s/secret` from git"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "", "no partial plaintext");

    let audit = clan.run(Some(&alice), &["audit"], b"");
    assert_eq!(
        audit.code, 0,
        "the recipients still match: {}",
        audit.stdout
    );
    std::fs::write(&path, "{}").unwrap();
    let audit = clan.run(Some(&alice), &["audit"], b"");
    assert_eq!(audit.code, 1);
    assert!(
        audit
            .stdout
            .contains("problem: sops/secrets/s/secret: failed to parse"),
        "{}",
        audit.stdout
    );
}

#[test]
fn names_breaking_the_rules_are_refused() {
    let (clan, alice, public) = clan_with_alice();
    for args in [
        vec!["users", "add", "Alice", public.as_str()],
        vec!["users", "add", "9lives", public.as_str()],
        vec![
            "users",
            "add",
            "a-very-long-user-name-that-is-over-32",
            public.as_str(),
        ],
        vec!["machines", "add", "web_01", public.as_str()],
        vec!["set", "a/b"],
        vec!["set", ".."],
        vec!["set", "with space"],
        vec!["groups", "add-user", "Admins", "alice"],
    ] {
        let run = clan.run(Some(&alice), &args, b"v");
        assert_eq!(run.code, 2, "{args:?}");
        assert!(run.stderr.contains("name `"), "{args:?}: {}", run.stderr);
    }
    assert!(
        !clan.root().join("sops/secrets").exists(),
        "nothing was written"
    );
}

#[test]
fn secrets_and_private_keys_never_come_from_arguments() {
    let (clan, alice, _) = clan_with_alice();
    let run = clan.run(Some(&alice), &["set", "s", "the-value"], b"");
    assert_eq!(run.code, 2, "a value argument is a usage error");
    let private = std::fs::read_to_string(&alice).unwrap();
    let private = private
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let run = clan.run(Some(&alice), &["users", "add", "bob", private], b"");
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("refusing a private key on the command line"),
        "{}",
        run.stderr
    );
    // A key file path is fine: the public key is derived from it.
    let (bob_key, bob_public) = clan.keygen("bob");
    clan.ok(
        Some(&alice),
        &["users", "add", "bob", bob_key.to_str().unwrap()],
        b"",
    );
    assert!(clan
        .ok(Some(&alice), &["users", "get", "bob"], b"")
        .contains(&bob_public));
}

#[test]
fn key_generate_and_show() {
    let clan = Clan::new();
    let key_file = clan.dir.path().join("home/.config/sops/age/keys.txt");
    let run = clan.run(None, &["key", "show"], b"");
    assert_eq!(run.code, 2);
    clan.ok(None, &["key", "generate"], b"");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let shown: serde_json::Value =
        serde_json::from_str(&clan.ok(None, &["key", "show"], b"")).unwrap();
    let public = shown[0]["publickey"].as_str().unwrap().to_owned();
    // The same key works with the age CLI.
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&key_file)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), public);
    // Generating again without --new keeps the one key.
    clan.ok(None, &["key", "generate"], b"");
    assert_eq!(
        std::fs::read_to_string(&key_file)
            .unwrap()
            .matches("AGE-SECRET-KEY-")
            .count(),
        1
    );
    clan.ok(None, &["key", "generate", "--new"], b"");
    assert_eq!(
        std::fs::read_to_string(&key_file)
            .unwrap()
            .matches("AGE-SECRET-KEY-")
            .count(),
        2
    );
}

/// clan-core's fixture (its links restored) read by the CLI with the fixture's key.
#[test]
fn reads_clan_core_fixture() {
    let clan = Clan::new();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/clan-core-sops");
    copy_restoring_links(&fixture.join("sops"), &clan.root().join("sops"));
    let key = fixture.join("key.age");
    assert_eq!(
        clan.ok(Some(&key), &["list"], b""),
        "group-secret\nsecret\n"
    );
    assert_eq!(clan.ok(Some(&key), &["users", "list"], b""), "admin\n");
    for name in ["secret", "group-secret"] {
        assert_eq!(clan.ok(Some(&key), &["get", name], b"").len(), 3);
    }
    let audit = clan.ok(Some(&key), &["audit"], b"");
    assert!(
        audit.contains("sops/secrets/group-secret\n  machine machine via group group\n"),
        "{audit}"
    );
    // key update on an up-to-date clan changes nothing.
    clan.ok(Some(&key), &["key", "update"], b"");
    assert_eq!(
        std::fs::read(clan.root().join("sops/secrets/secret/secret")).unwrap(),
        std::fs::read(fixture.join("sops/secrets/secret/secret")).unwrap()
    );
}

fn copy_restoring_links(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let parent = from.file_name().unwrap().to_str().unwrap();
        if entry.path().is_dir() {
            copy_restoring_links(&entry.path(), &target);
        } else if ["users", "machines", "groups"].contains(&parent) {
            let link = std::fs::read_to_string(entry.path()).unwrap();
            std::os::unix::fs::symlink(link.trim(), &target).unwrap();
        } else {
            std::fs::write(&target, std::fs::read(entry.path()).unwrap()).unwrap();
        }
    }
}
