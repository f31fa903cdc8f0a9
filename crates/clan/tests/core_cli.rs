//! The core CLI end to end: a user's session from `clan init` to `clan select`, and the
//! errors people see for bad input (exit code, message, hint), pinned by snapshots.

use std::path::Path;
use std::process::{Command, Output};

struct Clan {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Clan {
    fn new() -> Self {
        let clan = Self {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        let init = clan.run(&["init", "."]);
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        clan
    }

    /// An empty directory, not yet a clan.
    fn bare() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    fn with_toml(toml: &str) -> Self {
        let clan = Self::new();
        clan.write("clan.toml", toml);
        clan
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, relative: &str, content: &str) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_clan"))
            .args(args)
            .current_dir(self.path())
            .env("CLAN_CACHE_DIR", self.cache.path())
            // `clan init` creates the admin's age key: here, not in the real home.
            .env("SOPS_AGE_KEY_FILE", self.cache.path().join("admin.key"))
            .env_remove("SOPS_AGE_KEY")
            .env("USER", "admin")
            .env("NO_COLOR", "1")
            .env_remove("CLAN_DIR")
            .env_remove("CLAN_NO_COMMIT")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "clan {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a command that must fail with exit code 2 (it could not do its job: a usage
    /// error); returns stderr with the temp dir hidden.
    fn error(&self, args: &[&str]) -> String {
        self.fails_with(2, args)
    }

    /// Runs a command that must fail with exit code 1 (it ran and the clan failed a
    /// validation: clan.toml, a service, an evaluation); returns stderr as [`Clan::error`].
    fn invalid(&self, args: &[&str]) -> String {
        self.fails_with(1, args)
    }

    fn fails_with(&self, code: i32, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "clan {args:?}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let canonical = self.path().canonicalize().unwrap();
        String::from_utf8(output.stderr)
            .unwrap()
            .replace(&canonical.display().to_string(), "<clan>")
            .replace(&self.path().display().to_string(), "<clan>")
    }

    fn clan_toml(&self) -> String {
        std::fs::read_to_string(self.path().join("clan.toml")).unwrap()
    }

    fn git_log(&self) -> Vec<String> {
        let output = Command::new("git")
            .args(["log", "--format=%s"])
            .current_dir(self.path())
            .output()
            .unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

const BASE: &str =
    "[meta]\nname = \"home\"\n\n[machines.web01]\ntags = [\"web\"]\n\n[machines.laptop]\n";

#[test]
fn a_users_first_session_works_and_is_committed() {
    let clan = Clan::new();
    clan.ok(&[
        "machines",
        "create",
        "web01",
        "--tags",
        "web",
        "--target-host",
        "root@203.0.113.4",
    ]);
    clan.ok(&["machines", "create", "laptop", "--tags", "desktop"]);
    clan.ok(&[
        "instances",
        "create",
        "ssh",
        "--service",
        "sshd",
        "--role",
        "server=tag:all",
        "--setting",
        "server.authorizedKeys=[\"ssh-ed25519 AAAA test\"]",
    ]);
    clan.ok(&["instances", "set", "ssh", "server@web01.port=2222"]);

    let listed: serde_json::Value =
        serde_json::from_str(&clan.ok(&["machines", "list", "--tags", "web", "--json"])).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web01"]);

    let web01: serde_json::Value =
        serde_json::from_str(&clan.ok(&["machines", "show", "web01", "--json"])).unwrap();
    assert_eq!(
        web01["config"]["files"]["/etc/ssh/authorized_keys.d/root"]["content"],
        "ssh-ed25519 AAAA test\n"
    );
    assert_eq!(
        web01["config"]["firewall"]["tcp"],
        serde_json::json!([2222])
    );
    let laptop: serde_json::Value =
        serde_json::from_str(&clan.ok(&["machines", "show", "laptop", "--json"])).unwrap();
    assert_eq!(laptop["config"]["firewall"]["tcp"], serde_json::json!([22]));

    // The other listings' JSON.
    let json = |args: &[&str]| -> serde_json::Value {
        let out = clan.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    let services = json(&["services", "list", "--json"]);
    assert!(
        services["sshd"]["roles"]["server"].is_object(),
        "{services}"
    );
    let instances = json(&["instances", "list", "--json"]);
    assert_eq!(instances["ssh"]["service"], "sshd", "{instances}");
    assert_eq!(
        json(&["show", "--json"])["machines"],
        serde_json::json!(["web01", "laptop"])
    );
    let vars = json(&["vars", "list", "web01", "--json"]);
    let public_key = vars
        .as_array()
        .unwrap()
        .iter()
        .find(|var| var["generator"] == "openssh" && var["file"] == "ssh.id_ed25519.pub");
    assert_eq!(
        public_key.map(|var| &var["exists"]),
        Some(&serde_json::json!(false)),
        "{vars}"
    );

    let tags: serde_json::Value =
        serde_json::from_str(&clan.ok(&["select", "machines.*.tags"])).unwrap();
    assert_eq!(
        tags,
        serde_json::json!({"web01": ["web"], "laptop": ["desktop"]})
    );

    assert_eq!(
        clan.git_log(),
        [
            "instances: set settings of ssh",
            "instances: create ssh (sshd)",
            "machines: create laptop",
            "machines: create web01",
            "clan init"
        ]
    );
}

#[test]
fn services_show_lists_roles_with_types_defaults_and_descriptions() {
    let clan = Clan::new();
    insta::assert_snapshot!(clan.ok(&["services", "show", "sshd"]));
}

#[test]
fn machines_list_prints_an_aligned_table() {
    let clan = Clan::with_toml(&format!(
        "{BASE}\n[instances.hello]\nmodule.name = \"hello-world\"\nroles.default.tags = [\"all\"]\n"
    ));
    insta::assert_snapshot!(clan.ok(&["machines", "list"]));
}

#[test]
fn malformed_toml_names_line_and_column() {
    let clan = Clan::with_toml("[meta]\nname = \"home\"\n[machines.web01\n");
    insta::assert_snapshot!(clan.invalid(&["machines", "list"]));
}

#[test]
fn unknown_keys_get_a_did_you_mean() {
    let clan = Clan::with_toml("[meta]\nname = \"home\"\n[machines.web01]\ntagz = [\"web\"]\n");
    insta::assert_snapshot!(clan.invalid(&["machines", "list"]));
}

#[test]
fn wrong_types_are_reported() {
    let clan = Clan::with_toml("[meta]\nname = \"home\"\n[machines.web01]\ntags = \"web\"\n");
    insta::assert_snapshot!(clan.invalid(&["show"]));
}

#[test]
fn a_setting_failing_the_role_schema_names_instance_role_machine_and_key_and_writes_nothing() {
    let clan = Clan::with_toml(BASE);
    let before = clan.clan_toml();
    let stderr = clan.invalid(&[
        "instances",
        "create",
        "ssh",
        "--service",
        "sshd",
        "--role",
        "server=tag:all",
        "--setting",
        "server@web01.port=\"high\"",
    ]);
    insta::assert_snapshot!(stderr);
    assert_eq!(
        clan.clan_toml(),
        before,
        "a failing command must not touch clan.toml"
    );
}

#[test]
fn a_misspelt_setting_suggests_the_right_one() {
    let clan = Clan::with_toml(BASE);
    let stderr = clan.invalid(&[
        "instances",
        "create",
        "hi",
        "--service",
        "hello-world",
        "--role",
        "default=web01",
        "--setting",
        "default.greting=Hey",
    ]);
    assert!(
        stderr.contains("hint: did you mean `greeting`?"),
        "{stderr}"
    );
}

#[test]
fn unknown_service_role_tag_and_machine_are_named() {
    let clan = Clan::with_toml(BASE);
    let service = clan.invalid(&[
        "instances",
        "create",
        "x",
        "--service",
        "sshdd",
        "--role",
        "server=web01",
    ]);
    assert!(
        service.contains("unknown service `sshdd`") && service.contains("did you mean `sshd`?"),
        "{service}"
    );
    let role = clan.invalid(&[
        "instances",
        "create",
        "x",
        "--service",
        "sshd",
        "--role",
        "servre=web01",
    ]);
    assert!(
        role.contains("service `sshd` has no role `servre`")
            && role.contains("did you mean `server`?"),
        "{role}"
    );
    let tag = clan.invalid(&[
        "instances",
        "create",
        "x",
        "--service",
        "sshd",
        "--role",
        "server=tag:wbe",
    ]);
    assert!(
        tag.contains("no machine has the tag `wbe`") && tag.contains("did you mean `web`?"),
        "{tag}"
    );
    let machine = clan.error(&["machines", "show", "web1"]);
    assert!(
        machine.contains("unknown machine `web1`") && machine.contains("did you mean `web01`?"),
        "{machine}"
    );
}

fn clan_with_service(service: &str) -> Clan {
    let clan = Clan::with_toml(&format!(
        "{BASE}\n[instances.x]\nmodule.name = \"mine\"\nroles.default.tags = [\"all\"]\n"
    ));
    clan.write("services/mine/service.star", service);
    clan
}

const SERVICE_HEAD: &str = "manifest = {\"name\": \"mine\"}\n";

#[test]
fn a_starlark_syntax_error_names_file_and_line() {
    let clan = clan_with_service(&format!(
        "{SERVICE_HEAD}roles = {{\n  \"default\": {{\n}}\ndef broken(:\n"
    ));
    let stderr = clan.invalid(&["machines", "list"]);
    assert!(
        stderr.contains("services/mine/service.star:5:1"),
        "{stderr}"
    );
    assert!(stderr.contains("Parse error"), "{stderr}");
}

#[test]
fn a_starlark_runtime_error_shows_the_call_stack() {
    let service = format!(
        "{SERVICE_HEAD}def helper(ctx):\n    return ctx.settings[\"missing\"]\n\ndef run(ctx):\n    return helper(ctx)\n\nroles = {{\"default\": {{\"perInstance\": run}}}}\n"
    );
    let stderr = clan_with_service(&service).invalid(&["machines", "list"]);
    assert!(stderr.contains("Traceback"), "{stderr}");
    assert!(
        stderr.contains("Key `\"missing\"` was not found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("services/mine/service.star:6:12"),
        "{stderr}"
    );
}

#[test]
fn a_looping_service_fails_with_a_clear_error() {
    let service = format!(
        "{SERVICE_HEAD}def run(ctx):\n    n = 0\n    for i in range(1000000000):\n        n += i\n    return None\n\nroles = {{\"default\": {{\"perInstance\": run}}}}\n"
    );
    let stderr = clan_with_service(&service).invalid(&["machines", "list"]);
    assert!(stderr.contains("it probably loops forever"), "{stderr}");
}

#[test]
fn two_services_writing_one_file_differently_name_both() {
    let clan = Clan::with_toml(&format!(
        "{BASE}\n[instances.a]\nmodule.name = \"hello-world\"\nroles.default.tags = [\"all\"]\n\
         [instances.b]\nmodule.name = \"hello-world\"\nroles.default.machines.web01.settings.greeting = \"Other\"\n"
    ));
    insta::assert_snapshot!(clan.invalid(&["machines", "show", "web01"]));
}

/// A unit name, file mode or relative path a service returns is refused by the evaluation
/// (`clan show`), naming the machine, the instance and the value: never left for a deploy.
#[test]
fn bad_names_from_a_service_fail_at_show_naming_instance_machine_and_value() {
    for (config, expected) in [
        (
            r#"{"units": {"my app.service": {"content": ""}}}"#,
            "`my app.service` is not a systemd unit name",
        ),
        (
            r#"{"files": {"/etc/app.conf": {"content": "", "mode": "0688"}}}"#,
            "file `/etc/app.conf` mode: `0688` is not an octal file mode",
        ),
        (
            r#"{"files": {"etc/app.conf": {"content": ""}}}"#,
            "file path: `etc/app.conf` is not an absolute path",
        ),
        (
            r#"{"users": {"alice": {"home": "home/alice"}}}"#,
            "user `alice` home or shell: `home/alice` is not an absolute path",
        ),
    ] {
        let service = format!(
            "{SERVICE_HEAD}def run(ctx):\n    return {{\"config\": {config}}}\n\n\
             roles = {{\"default\": {{\"perInstance\": run}}}}\n"
        );
        let stderr = clan_with_service(&service).invalid(&["show"]);
        assert!(
            stderr.contains("machine `web01`: instance `x` (service mine, role default): "),
            "{stderr}"
        );
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            stderr.contains("hint: fix the value in the service"),
            "{stderr}"
        );
    }
}

#[test]
fn schema_inventory_prints_the_clan_toml_schema() {
    let clan = Clan::new();
    let schema: serde_json::Value =
        serde_json::from_str(&clan.ok(&["schema", "inventory"])).unwrap();
    assert_eq!(schema["title"], "clan.toml");
    assert!(schema.to_string().contains("targetHost"));
}

/// `cargo run -p clan` builds `clan` alone: a deploy then says how to build the agent it
/// uploads, before it connects anywhere.
#[test]
fn a_deploy_without_the_machine_agent_says_how_to_build_it() {
    let clan = Clan::new();
    clan.ok(&[
        "machines",
        "create",
        "m1",
        "--target-host",
        "root@192.0.2.1",
    ]);
    let missing = clan.path().join("no-such-clan-agent");
    let output = Command::new(env!("CARGO_BIN_EXE_clan"))
        .args(["machines", "update"])
        .current_dir(clan.path())
        .env("CLAN_CACHE_DIR", clan.cache.path())
        .env("CLAN_AGENT", &missing)
        .env_remove("CLAN_DIR")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "the machine agent `{}` is missing",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: build both binaries with `cargo build --release -p clan`"),
        "{stderr}"
    );
}

#[test]
fn outside_a_clan_the_error_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_clan"))
        .args(["machines", "list"])
        .current_dir(dir.path())
        .env_remove("CLAN_DIR")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("hint: run `clan init <dir>`"), "{stderr}");
}

#[test]
fn the_demo_evaluates_a_throwaway_fleet() {
    let output = Command::new(env!("CARGO_BIN_EXE_clan"))
        .args(["demo", "--no-deploy"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("4 machines, 4 service instances"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/etc/hello on laptop: Hello laptop from laptop"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/etc/hello on web01:  Hi from web01"),
        "{stdout}"
    );
}

/// Machine selection and targets before any connection: `--tags` means the same in every
/// command (computed tags `all` and the class included, comma or repeat), `--target-host`
/// names one machine, a target that would be read as an ssh option never reaches ssh, and a
/// port nothing listens on fails that machine with a hint.
#[test]
fn machine_selection_and_hostile_targets() {
    let clan = Clan::new();
    clan.ok(&["machines", "create", "web", "--tags", "http,public"]);
    clan.ok(&["machines", "create", "db"]);
    let listed = |tags: &str| -> Vec<String> {
        let json = clan.ok(&["machines", "list", "--tags", tags, "--json"]);
        let machines: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        machines
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed("all"), ["web", "db"]);
    assert_eq!(listed("linux"), ["web", "db"]);
    assert_eq!(listed("http,public"), ["web"]);
    assert!(clan
        .error(&["machines", "update", "--tags", "nosuch"])
        .contains("no machine has the tags nosuch"));
    assert!(clan
        .error(&["machines", "update", "--target-host", "root@192.0.2.1"])
        .contains("2 machines are selected"));

    let marker = clan.path().join("pwned");
    let hostile = format!("--target-host=-oProxyCommand=touch {}@h", marker.display());
    let output = clan.run(&["machines", "update", "web", &hostile]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a user name"), "{stderr}");
    assert!(!marker.exists(), "the target reached ssh as an option");

    let output = clan.run(&[
        "machines",
        "update",
        "web",
        "--target-host",
        "root@127.0.0.1:1",
        "--host-key-check",
        "strict",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(stderr.contains("hint: check that `web` is up"), "{stderr}");
}

/// `clan init` creates the admin's age key and their sops user, as clan-core's does, all in
/// the first commit; a name clan-core would refuse is refused before anything is created.
#[test]
fn init_creates_the_admin_key_and_sops_user_and_refuses_an_invalid_name() {
    let clan = Clan::bare();
    let refused = clan.error(&["init", "--name", "my clan", "."]);
    assert!(refused.contains("invalid clan name `my clan`"), "{refused}");
    assert!(refused.contains("hint: "), "{refused}");
    assert!(!clan.path().join("clan.toml").exists());
    assert!(!clan.path().join(".git").exists());

    clan.ok(&["init", "--name", "home", "."]);
    let key_file = clan.cache.path().join("admin.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file)
            .expect("the admin key")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the key file is readable by others");
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&key_file)
        .output()
        .unwrap();
    let public = String::from_utf8(public.stdout).unwrap();
    let user = std::fs::read_to_string(clan.path().join("sops/users/admin/key.json"))
        .expect("the sops user of $USER");
    assert!(user.contains(public.trim()), "{user}");
    assert!(clan.clan_toml().contains("name = \"home\""));
    assert_eq!(clan.git_log(), ["clan init"]);
    assert_eq!(clan.git(&["status", "--porcelain"]), "");

    let again = clan.error(&["init", "."]);
    assert!(again.contains("already exists"), "{again}");
}

/// A clan brought from clan-core with only its inventory.json is a clan: found from below,
/// its meta used, and the first edit writes a clan.toml holding that meta.
#[test]
fn a_directory_with_only_inventory_json_is_a_clan() {
    let clan = Clan::bare();
    clan.git(&["init", "-q"]);
    clan.git(&["config", "user.name", "test"]);
    clan.git(&["config", "user.email", "test@example.org"]);
    clan.write(
        "inventory.json",
        r#"{"meta": {"name": "imported", "description": "from clan-core"},
            "machines": {"jon": {"tags": ["web"]}}}"#,
    );
    clan.git(&["add", "-A"]);
    clan.git(&["commit", "-q", "-m", "from clan-core"]);
    std::fs::create_dir(clan.path().join("sub")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_clan"))
        .args(["show", "--json"])
        .current_dir(clan.path().join("sub"))
        .env("CLAN_CACHE_DIR", clan.cache.path())
        .env_remove("CLAN_DIR")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["meta"]["name"], "imported");
    assert_eq!(shown["meta"]["description"], "from clan-core");
    assert_eq!(shown["machines"], serde_json::json!(["jon"]));

    clan.ok(&["machines", "create", "sara"]);
    assert!(
        clan.clan_toml().contains("name = \"imported\""),
        "{}",
        clan.clan_toml()
    );
    let listed: serde_json::Value =
        serde_json::from_str(&clan.ok(&["machines", "list", "--json"])).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sara", "jon"]);
}

/// `-C/--flake` names the clan for the commands that read one, before or after the command's
/// name (and `$CLAN_DIR` when absent); the commands that read no clan refuse it. clan-core's
/// short aliases (`m`, `va`, `se`, `machines u`) are the same commands.
#[test]
fn flake_only_where_a_clan_is_read_and_clan_core_aliases() {
    let clan = Clan::new();
    clan.ok(&["machines", "create", "web01", "--tags", "web"]);
    let dir = clan.path().to_str().unwrap();
    let outside = Clan::bare();
    let names = |args: &[&str]| -> Vec<String> {
        let listed: serde_json::Value = serde_json::from_str(&outside.ok(args)).unwrap();
        let listed = listed.as_array().unwrap().iter();
        listed
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for args in [
        ["-C", dir, "machines", "list", "--json"],
        ["machines", "list", "--json", "-C", dir],
        ["machines", "-C", dir, "list", "--json"],
        ["m", "list", "--json", "--flake", dir],
    ] {
        assert_eq!(names(&args), ["web01"], "{args:?}");
    }
    let from_env = Command::new(env!("CARGO_BIN_EXE_clan"))
        .args(["se", "machines.*.tags"])
        .current_dir(outside.path())
        .env("CLAN_DIR", dir)
        .output()
        .unwrap();
    assert!(from_env.status.success(), "{from_env:?}");
    let tags: serde_json::Value = serde_json::from_slice(&from_env.stdout).unwrap();
    assert_eq!(tags, serde_json::json!({"web01": ["web"]}));
    assert_eq!(clan.ok(&["va", "check", "--json"]).trim(), "{}");
    assert_eq!(
        outside.run(&["machines", "u", "--help"]).status.code(),
        Some(0)
    );

    let before = outside.error(&["-C", dir, "mesher", "status"]);
    assert!(
        before.contains("`-C/--flake` names a clan, but `clan mesher` reads none"),
        "{before}"
    );
    // `secrets key generate|show` read only the admin's key.
    for args in [
        ["-C", dir, "secrets", "key", "generate"],
        ["secrets", "-C", dir, "key", "show"],
        ["secrets", "key", "show", "--flake", dir],
    ] {
        let refused = outside.error(&args);
        assert!(
            refused.contains("`-C/--flake` names a clan, but `clan secrets key"),
            "{args:?}: {refused}"
        );
    }
    for args in [
        ["mesher", "status", "-C", dir],
        ["schema", "inventory", "-C", dir],
        ["init", "new", "--flake", dir],
    ] {
        let after = outside.error(&args);
        assert!(after.contains("unexpected argument"), "{args:?}: {after}");
    }
    assert!(!outside.path().join("new").exists());
}
