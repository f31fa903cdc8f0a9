//! What people read, pinned: one transcript (exit code, stdout, stderr) per command group —
//! machines, instances, secrets, vars, mesher, testbed — and the errors with their hints.
//! Temporary paths, keys, ports and times are filtered (see `transcript`). A missing or
//! changed snapshot fails the test; review a change and accept it with
//! `INSTA_UPDATE=always cargo test -p clan --test snapshots_cli`.

mod cli;
mod env;
mod transcript;

use transcript::{Step, Transcript};

/// A clan (`cli::Workspace`) and the transcript of the commands run in it.
struct Session {
    workspace: cli::Workspace,
    transcript: Transcript,
}

impl Session {
    fn new(clan_toml: &str, prepare: impl FnOnce(&cli::Workspace)) -> Self {
        let workspace = cli::Workspace::init(clan_toml, prepare);
        let mut transcript = Transcript::default();
        transcript.hide_path(&workspace.root(), "CLAN");
        transcript.hide_path(workspace.dir.path(), "TMP");
        Session {
            workspace,
            transcript,
        }
    }

    fn clan(&mut self, args: &[&str], stdin: &str) -> Step {
        let run = self.workspace.run(args, stdin.as_bytes());
        self.transcript.record(
            args,
            Step {
                code: run.code,
                stdout: run.stdout,
                stderr: run.stderr,
            },
        )
    }

    /// A step that must succeed (the transcript then shows what it printed).
    fn ok(&mut self, args: &[&str], stdin: &str) -> Step {
        let step = self.clan(args, stdin);
        assert_eq!(step.code, 0, "clan {args:?}: {}", step.stderr);
        step
    }

    /// A step that must fail with `code`: 1 when the clan failed a check or validation
    /// (clan.toml, an edit of it, a service), 2 when the command could not do its job.
    fn fails(&mut self, code: i32, args: &[&str], stdin: &str) -> Step {
        let step = self.clan(args, stdin);
        assert_eq!(step.code, code, "clan {args:?}: {}", step.stderr);
        step
    }
}

const FLEET: &str = r#"[meta]
name = "home"
domain = "home.arpa"

[machines.web01]
tags = ["web"]
deploy.targetHost = "root@192.0.2.10"

[machines.db01]
tags = ["db", "backup"]
"#;

#[test]
fn machines_and_instances() {
    let mut s = Session::new(FLEET, |_| {});
    s.ok(&["machines", "list"], "");
    s.ok(&["machines", "list", "--tags", "web"], "");
    s.ok(&["machines", "list", "--json"], "");
    s.ok(&["machines", "create", "laptop", "--tags", "desktop"], "");
    s.fails(1, &["machines", "create", "laptop"], "");
    s.fails(2, &["machines", "create", "Bad_Name"], "");
    s.ok(
        &["instances", "create", "hello", "--service", "hello-world"],
        "",
    );
    s.ok(&["instances", "add", "hello", "default", "tag:web"], "");
    s.ok(&["instances", "add", "hello", "default", "db01"], "");
    s.fails(1, &["instances", "add", "hello", "default", "nosuch"], "");
    s.fails(1, &["instances", "add", "hello", "nosuchrole", "db01"], "");
    s.ok(&["instances", "list"], "");
    s.ok(&["instances", "list", "--json"], "");
    s.ok(&["show"], "");
    s.ok(&["machines", "show", "db01"], "");
    s.fails(2, &["machines", "show", "web1"], "");
    s.ok(&["instances", "remove", "hello", "default", "db01"], "");
    s.ok(&["machines", "delete", "laptop"], "");
    s.ok(&["services", "list"], "");
    s.ok(&["services", "show", "hello-world", "--json"], "");
    s.ok(&["select", "machines.*.tags"], "");
    assert_transcript!("machines_and_instances", s.transcript);
}

#[test]
fn secrets() {
    let mut s = Session::new(FLEET, |_| {});
    s.ok(&["secrets", "users", "list"], "");
    s.ok(&["secrets", "set", "db-password"], "correct horse\n");
    s.ok(&["secrets", "get", "db-password"], "");
    s.ok(&["secrets", "list"], "");
    s.ok(&["secrets", "groups", "add-user", "admins", "admin"], "");
    s.ok(&["secrets", "set", "tls", "--group", "admins"], "pem");
    s.ok(&["secrets", "groups", "list"], "");
    s.ok(&["secrets", "audit"], "");
    s.ok(&["secrets", "rename", "tls", "tls-cert"], "");
    s.ok(&["secrets", "remove", "db-password"], "");
    s.ok(&["secrets", "list"], "");
    // Not JSON: the parser's message is part of the error above it and printed once.
    s.workspace
        .write("sops/secrets/tls-cert/secret", "{not json");
    s.fails(2, &["secrets", "get", "tls-cert"], "");
    s.fails(2, &["secrets", "get", "nosuch"], "");
    s.fails(2, &["secrets", "set", "../escape"], "x");
    s.fails(2, &["secrets", "set", "x", "--group", "nobody"], "x");
    s.fails(2, &["secrets", "machines", "add", "web01", "not-a-key"], "");
    assert_transcript!("secrets", s.transcript);
}

/// A generator whose outputs are the same on every run: a public greeting and a secret.
const GENERATORS: &str = r#"{"greeting": {"files": {"text": {"secret": False}, "token": {}},
    "prompts": {"name": {"description": "Who to greet", "type": "line"}},
    "runtimeInputs": ["cat"],
    "script": "printf 'hello %s' \"$(cat $prompts/name)\" > $out/text; printf s3cret > $out/token"}}"#;

#[test]
fn vars() {
    let mut s = Session::new(FLEET, |workspace| {
        workspace.machine_generators("web01", GENERATORS);
    });
    s.fails(1, &["vars", "check", "web01"], "");
    s.ok(&["vars", "check", "db01"], "");
    s.fails(2, &["vars", "generate", "--prompt-values", "-"], "not json");
    s.ok(
        &["vars", "generate", "--prompt-values", "-"],
        r#"{"greeting": {"name": "web"}}"#,
    );
    s.ok(&["vars", "check", "web01"], "");
    // What the generation left in the clan: the public value in the clear, the secret only
    // encrypted.
    let tree: Vec<String> = cli::walk(&s.workspace.root().join("vars"))
        .into_iter()
        .map(|(path, content)| match path.ends_with("/value") {
            true => format!("vars/{path}: {content}"),
            false => format!("vars/{path}"),
        })
        .collect();
    s.transcript.note(&tree.join("\n# "));
    s.ok(&["vars", "list", "web01"], "");
    s.ok(&["vars", "get", "web01", "greeting/text"], "");
    s.ok(&["vars", "get", "web01", "greeting/token"], "");
    s.ok(&["vars", "set", "web01", "greeting/text"], "hi there");
    s.ok(&["vars", "get", "web01", "greeting/text"], "");
    s.fails(2, &["vars", "get", "web01", "greeting/nosuch"], "");
    s.fails(2, &["vars", "get", "nosuch", "greeting/text"], "");
    s.ok(&["vars", "generate", "web01", "--prompt-values", "-"], "{}");
    assert_transcript!("vars", s.transcript);
}

#[test]
fn errors_with_hints() {
    let mut s = Session::new(FLEET, |_| {});
    s.workspace.write(
        "clan.toml",
        "[meta]\nname = \"home\"\n[machines.web01]\ntagz = [\"web\"]\n",
    );
    s.fails(1, &["machines", "list"], "");
    s.workspace.write(
        "clan.toml",
        "[meta]\nname = \"home\"\n[machines.web01]\n[instances.x]\nmodule.name = \"nosuch\"\n",
    );
    s.fails(1, &["show"], "");
    s.workspace.write("clan.toml", FLEET);
    s.fails(2, &["select", "machines.*.[tags"], "");
    s.fails(2, &["machines", "update", "nosuch"], "");
    s.fails(2, &["machines", "generations", "nosuch"], "");
    s.fails(2, &["nosuch-command"], "");
    s.fails(2, &["machines", "create"], "");
    std::fs::remove_file(s.workspace.dir.path().join("admin.key")).unwrap();
    s.fails(2, &["secrets", "set", "x"], "value");
    assert_transcript!("errors_with_hints", s.transcript);
}

/// `clan` outside any clan directory, with `args`, recorded under `transcript`.
fn outside_a_clan(transcript: &mut Transcript, dir: &std::path::Path, args: &[&str]) -> Step {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_clan"))
        .args(args)
        .current_dir(dir)
        .env_remove("CLAN_DIR")
        .env("HOME", dir)
        .env("USER", "admin")
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    transcript.record(args, Step::from(&output))
}

#[test]
fn no_clan_here() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Transcript::default();
    t.hide_path(dir.path(), "TMP");
    assert_eq!(
        outside_a_clan(&mut t, dir.path(), &["machines", "list"]).code,
        2
    );
    // The directory's name is not a clan name: the clan is named after it, made valid.
    assert_eq!(
        outside_a_clan(&mut t, dir.path(), &["init", "Not A Name"]).code,
        0
    );
    assert_transcript!("no_clan_here", t);
}

#[test]
fn mesher() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let mut t = Transcript::default();
    t.hide_path(dir.path(), "TMP");
    let run = |t: &mut Transcript, args: &[&str]| outside_a_clan(t, dir.path(), args);
    let network = path("network.key");
    let identity = path("id.key");
    let cert = path("id.cert");
    let generated = run(
        &mut t,
        &["mesher", "generate", "network", "--out", &network],
    );
    assert_eq!(generated.code, 0);
    let network_id = generated.stdout.trim().to_owned();
    assert_eq!(
        run(
            &mut t,
            &["mesher", "generate", "identity-key", "--out", &identity]
        )
        .code,
        0
    );
    assert_eq!(
        run(
            &mut t,
            &["mesher", "generate", "identity-key", "--out", &identity]
        )
        .code,
        2
    );
    let sign = [
        "mesher",
        "certificate",
        "sign",
        "--network-key",
        &network,
        "--identity-key",
        &identity,
        "--out",
        &cert,
    ];
    assert_eq!(run(&mut t, &sign).code, 0);
    let verify = [
        "mesher",
        "certificate",
        "verify",
        "--network-id",
        &network_id,
        "--certificate",
    ];
    assert_eq!(
        run(&mut t, &[&verify[..], &[cert.as_str()]].concat()).code,
        0
    );
    let garbage = path("garbage.cert");
    std::fs::write(&garbage, "not a certificate").unwrap();
    assert_eq!(
        run(&mut t, &[&verify[..], &[garbage.as_str()]].concat()).code,
        2
    );
    let config = path("dm.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[cluster]\nport = 0\ninterfaces = [\"127.0.0.1\"]\n\
         identity_key = \"id.key\"\nidentity_cert = \"id.cert\"\n\
         [network]\nid = \"{network_id}\"\n[http]\nport = 0\n"
        ),
    )
    .unwrap();
    assert_eq!(
        run(&mut t, &["mesher", "status", "--config", &config]).code,
        2
    );
    assert_eq!(
        run(&mut t, &["mesher", "file", "list", "--config", &config]).code,
        2
    );
    assert_transcript!("mesher", t);
}

#[test]
fn testbed_without_machines() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let mut t = Transcript::default();
    t.hide_path(dir.path(), "TMP");
    outside_a_clan(
        &mut t,
        dir.path(),
        &["testbed", "status", "--state-dir", &state],
    );
    outside_a_clan(
        &mut t,
        dir.path(),
        &["testbed", "down", "--state-dir", &state],
    );
    assert_transcript!("testbed_without_machines", t);
}

/// `clan vms` where no VM runs: nothing boots, every error names the machine and says what
/// to do.
#[test]
fn vms_without_vms() {
    let mut s = Session::new(FLEET, |_| {});
    s.ok(&["vms", "list"], "");
    s.fails(2, &["vms", "stop", "web01"], "");
    s.fails(2, &["vms", "console", "web01"], "");
    s.fails(2, &["ssh", "web01", "--vm", "--", "true"], "");
    s.fails(2, &["vms", "run", "web01", "--publish", "80"], "");
    s.fails(2, &["vms", "stop", "nosuch"], "");
    assert_transcript!("vms_without_vms", s.transcript);
}

/// One command per exit status: 0 ok; 1 ran and something failed (a check, a validation, a
/// machine); 2 could not do its job (usage, the environment). A bug (a panic) is 2 as well,
/// tested beside `main`.
#[test]
fn exit_codes_by_category() {
    let mut s = Session::new(FLEET, |workspace| {
        workspace.machine_generators("web01", GENERATORS);
    });
    s.transcript.note("0: done");
    s.ok(&["machines", "list"], "");
    s.transcript.note("1: a check found problems");
    s.fails(1, &["vars", "check", "web01"], "");
    s.transcript
        .note("1: a machine failed (nothing listens on port 1)");
    s.fails(
        1,
        &[
            "machines",
            "update",
            "db01",
            "--target-host",
            "root@127.0.0.1:1",
        ],
        "",
    );
    s.transcript.note("2: usage errors");
    s.fails(2, &["machines", "show", "nosuch"], "");
    s.fails(2, &["machines", "frobnicate"], "");
    s.transcript
        .note("2: the environment (a key file that is not there)");
    std::fs::remove_file(s.workspace.dir.path().join("admin.key")).unwrap();
    s.fails(2, &["secrets", "get", "x"], "");
    s.transcript.note("1: a validation (clan.toml)");
    s.workspace.write(
        "clan.toml",
        "[meta]\nname = \"home\"\n[machines.web01]\ntags = \"web\"\n",
    );
    s.fails(1, &["machines", "list"], "");
    assert_transcript!("exit_codes_by_category", s.transcript);
}

/// `-q` leaves data, errors and failures; notes go (stdout is the same either way).
#[test]
fn quiet_prints_no_notes() {
    let mut s = Session::new(FLEET, |_| {});
    s.ok(&["-q", "machines", "create", "laptop"], "");
    s.ok(
        &["--quiet", "secrets", "set", "db-password"],
        "correct horse\n",
    );
    s.ok(&["-q", "machines", "list", "--tags", "web"], "");
    s.fails(2, &["-q", "machines", "show", "nosuch"], "");
    s.fails(2, &["-q", "-v", "machines", "list"], "");
    assert_transcript!("quiet_prints_no_notes", s.transcript);
}

/// The notes of every command group go with `-q`: the same commands in two clans, each
/// printing notes without `-q` and nothing with it, with the same data on stdout.
#[test]
fn quiet_silences_the_notes_of_every_command_group() {
    let prepare = |workspace: &cli::Workspace| workspace.machine_generators("web01", GENERATORS);
    let loud = Session::new(FLEET, prepare);
    let quiet = Session::new(FLEET, prepare);
    let commands: [&[&str]; 9] = [
        &["init", "{TMP}/another", "--name", "other"],
        &["machines", "create", "laptop"],
        &["instances", "create", "hello", "--service", "hello-world"],
        &["instances", "add", "hello", "default", "laptop"],
        &["secrets", "set", "db-password"],
        &["vars", "generate", "--prompt-values", "-"],
        &["vars", "check", "web01"],
        &["vars", "keygen"],
        &["machines", "delete", "laptop"],
    ];
    let stdin = |args: &[&str]| match args[0] {
        "secrets" => "correct horse\n",
        "vars" => r#"{"greeting": {"name": "web"}}"#,
        _ => "",
    };
    // A failure's account stays.
    let failed = quiet.workspace.run(&["-q", "vars", "check", "web01"], b"");
    assert_eq!(failed.code, 1);
    assert!(
        failed.stderr.contains("greeting/text: missing\n")
            && failed
                .stderr
                .contains("hint: run `clan vars generate web01`"),
        "{}",
        failed.stderr
    );
    for args in commands {
        let words = |session: &Session| -> Vec<String> {
            let tmp = session.workspace.dir.path().display().to_string();
            args.iter()
                .map(|word| word.replace("{TMP}", &tmp))
                .collect()
        };
        let loud_words = words(&loud);
        let loud_args: Vec<&str> = loud_words.iter().map(String::as_str).collect();
        let shown = loud.workspace.run(&loud_args, stdin(args).as_bytes());
        assert_eq!(shown.code, 0, "clan {args:?}: {}", shown.stderr);
        assert_ne!(shown.stderr, "", "clan {args:?} prints notes without -q");
        let quiet_words = words(&quiet);
        let quiet_args: Vec<&str> = ["-q"]
            .into_iter()
            .chain(quiet_words.iter().map(String::as_str))
            .collect();
        let silent = quiet.workspace.run(&quiet_args, stdin(args).as_bytes());
        assert_eq!(silent.code, 0, "clan -q {args:?}: {}", silent.stderr);
        assert_eq!(silent.stderr, "", "clan -q {args:?} prints notes");
        assert_eq!(
            silent.stdout, shown.stdout,
            "clan -q {args:?}: the same data"
        );
    }
}

/// What `clan args…` shows on a terminal (a pty from `script`), stdout and stderr together.
fn on_a_terminal(s: &Session, args: &[&str], no_colour: bool) -> String {
    let root = s.workspace.root().display().to_string();
    let words: Vec<&str> = [env!("CARGO_BIN_EXE_clan"), "--flake", &root]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let line: Vec<String> = words
        .iter()
        .map(|word| format!("'{}'", word.replace('\'', r"'\''")))
        .collect();
    let mut command = std::process::Command::new("script");
    command.args(["-qec", &line.join(" "), "/dev/null"]);
    s.workspace.env(&mut command).env("TERM", "xterm");
    if no_colour {
        command.env("NO_COLOR", "1");
    } else {
        command.env_remove("NO_COLOR");
    }
    let output = command.output().expect("`script` (bsdutils) runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Colour marks `error:` and `hint:` on a terminal only, and never with `NO_COLOR`.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let s = Session::new(FLEET, |_| {});
    let args = ["machines", "show", "nosuch"];
    let coloured = on_a_terminal(&s, &args, false);
    assert!(
        coloured.contains("\x1b[1;31merror:\x1b[0m unknown machine `nosuch`"),
        "{coloured:?}"
    );
    assert!(coloured.contains("\x1b[36mhint:\x1b[0m"), "{coloured:?}");
    let plain = on_a_terminal(&s, &args, true);
    assert!(
        plain.contains("error: unknown machine `nosuch`"),
        "{plain:?}"
    );
    assert!(!plain.contains('\x1b'), "{plain:?}");
    // Not a terminal: no colour either (the other tests run without NO_COLOR set).
    let piped = s.workspace.run(&args, b"");
    assert!(!piped.stderr.contains('\x1b'), "{}", piped.stderr);
}

/// A clan-local network service: its host is a var (as tor's onion hostname is); its module is
/// neither direct nor tor, so whether it runs does not depend on tor being installed here.
const OVERLAY_SERVICE: &str = r#"manifest = {"name": "overlay", "description": "test overlay", "exports": ["networking", "peer"]}

def _peer(ctx):
    name = ctx.machine["name"]
    return {
        "config": {"generators": {"overlay": {"files": {"address": {"secret": False}}, "script": "echo fd00::1 > $out/address"}}},
        "exports": {"peer": {"hosts": [{"var": {"machine": name, "generator": "overlay", "file": "address"}}]}},
        "instanceExports": {"networking": {"priority": 10, "module": "clan_lib.network.overlay"}},
    }

roles = {"default": {"description": "member", "interface": {"type": "object"}, "perInstance": _peer}}
"#;

#[test]
fn networks() {
    let toml = format!(
        "{FLEET}\n[machines.nas]\n[machines.cam]\n[machines.tv]\n\n\
         [instances.lan]\nmodule.name = \"internet\"\nroles.default.tags = [\"all\"]\n\
         roles.default.machines.db01.settings = {{ host = \"10.0.0.2\", jumphosts = [\"admin@192.0.2.10:2222\"] }}\n\n\
         [instances.onion]\nmodule.name = \"overlay\"\nroles.default.machines.db01 = {{}}\n"
    );
    let mut s = Session::new(&toml, |w| {
        w.write("services/overlay/service.star", OVERLAY_SERVICE)
    });
    s.ok(&["network", "list"], "");
    s.ok(&["network", "list", "--json"], "");
    s.ok(&["ssh", "db01", "--json"], "");
    s.fails(2, &["network", "ping", "db01", "--network", "nosuch"], "");
    s.fails(1, &["network", "ping", "web01", "--network", "onion"], "");
    // The onion host is a var not generated yet: the ping says which generator to run.
    s.fails(
        1,
        &[
            "network",
            "ping",
            "db01",
            "--network",
            "onion",
            "--host-key-check",
            "strict",
        ],
        "",
    );
    assert_transcript!("networks", s.transcript);
}

/// A hardware report as `machines show` prints it, and a malformed one naming file and key.
#[test]
fn hardware_reports() {
    let mut s = Session::new(FLEET, |_| {});
    s.workspace.write(
        "machines/web01/facter.json",
        r#"{"version": 1, "system": "x86_64-linux", "virtualisation": "none",
  "hardware": {
    "cpu": [{"vendor_name": "GenuineIntel", "model_name": "Intel(R) Xeon(R) E-2236", "physical_id": 0, "siblings": 12}],
    "memory": [{"resources": [{"type": "phys_mem", "range": 34359738368}]}],
    "disk": [{"unix_device_name": "/dev/nvme0n1", "resources": [{"type": "size", "unit": "sectors", "value_1": 1000215216, "value_2": 512}]}],
    "network_interface": [{"unix_device_name": "eno1", "sub_class": {"hex": "0001", "name": "Ethernet", "value": 1}}]
  }}"#,
    );
    s.ok(&["machines", "show", "web01"], "");
    s.workspace.write(
        "machines/web01/facter.json",
        r#"{"version": 1, "system": "x86_64-linux", "hardware": {"cpu": {"vendor_name": "GenuineIntel"}}}"#,
    );
    s.fails(1, &["machines", "show", "web01"], "");
    assert_transcript!("hardware_reports", s.transcript);
}
