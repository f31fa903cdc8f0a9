//! `clan vars …` end to end: the real binary in a temporary git clan, generator scripts run
//! in real bubblewrap with real ssh-keygen and openssl (Debian packages `bubblewrap`,
//! `openssh-client`, `openssl`, `age`), prompt answers through `--prompt-values` only.

mod cli;
mod env;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The clan of these tests, with `cli::Workspace`'s helpers.
struct Clan(cli::Workspace);

impl std::ops::Deref for Clan {
    type Target = cli::Workspace;
    fn deref(&self) -> &cli::Workspace {
        &self.0
    }
}

const CLAN_TOML: &str = r#"[meta]
name = "test"

[machines.web01]
[machines.web02]

[instances.ssh]
module.name = "sshd"
roles.server.machines.web01 = {}
roles.server.machines.web02 = {}

[instances.people]
module.name = "users"
roles.default.machines.web01 = {}
roles.default.settings.user = "alice"
"#;

impl Clan {
    fn new() -> Self {
        Clan(cli::Workspace::init(CLAN_TOML, |_| {}))
    }

    fn generate(&self, extra: &[&str], answers: &str) -> cli::Run {
        let mut args = vec!["vars", "generate", "--prompt-values", "-"];
        args.extend_from_slice(extra);
        self.run(&args, answers.as_bytes())
    }

    fn exists(&self, path: &str) -> bool {
        self.root().join(path).symlink_metadata().is_ok()
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root().join(path)).unwrap()
    }

    /// Everything under `vars/` (paths from the clan directory) with its content.
    fn snapshot(&self) -> Vec<(String, String)> {
        cli::walk(&self.root().join("vars"))
            .into_iter()
            .map(|(path, content)| (format!("vars/{path}"), content))
            .collect()
    }

    fn commits(&self) -> usize {
        self.git(&["rev-list", "--count", "HEAD"])
            .trim()
            .parse()
            .unwrap()
    }
}

/// A new age key in `path` (by the real age-keygen); returns its public key.
fn age_keygen(path: &Path) -> String {
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(path)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    String::from_utf8_lossy(&keygen.stderr)
        .trim()
        .trim_start_matches("Public key: ")
        .to_owned()
}

const ALICE: &str = r#"{"user-password-alice": {"user-password": "correct horse"}}"#;

#[test]
fn builtin_generators_run_for_real_in_one_commit() {
    let clan = Clan::new();
    let before = clan.commits();
    let run = clan.generate(&[], ALICE);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(clan.commits(), before + 1, "one commit for the whole run");
    assert!(clan.git(&["status", "--porcelain"]).trim().is_empty());

    let public = clan.read("vars/per-machine/web01/openssh/ssh.id_ed25519.pub/value");
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    let secret_dir = "vars/per-machine/web01/openssh/ssh.id_ed25519";
    assert!(clan.exists(&format!("{secret_dir}/secret")));
    assert_eq!(
        std::fs::read_link(clan.root().join(secret_dir).join("machines/web01")).unwrap(),
        Path::new("../../../../../../sops/machines/web01")
    );
    assert!(clan.exists(&format!("{secret_dir}/users/admin")));
    assert!(clan.exists("sops/machines/web01/key.json"));
    assert!(clan.exists("sops/secrets/web01-age.key/secret"));

    // The private key decrypts and matches the public one.
    let private = clan.run(&["vars", "get", "web01", "openssh/ssh.id_ed25519"], b"");
    assert_eq!(private.code, 0, "{}", private.stderr);
    assert!(private.stdout.contains("OPENSSH PRIVATE KEY"));
    // The password was hashed by openssl inside the sandbox; deploy=false keeps web01 out.
    let hash = clan.run(
        &[
            "vars",
            "get",
            "web01",
            "user-password-alice/user-password-hash",
        ],
        b"",
    );
    assert!(hash.stdout.starts_with("$6$"), "{}", hash.stdout);
    let password_dir = "vars/per-machine/web01/user-password-alice/user-password";
    assert!(!clan.exists(&format!("{password_dir}/machines/web01")));
    assert!(!clan
        .read(&format!("{password_dir}/secret"))
        .contains("correct horse"));

    // Public values reach evaluation: the sshd client config sees the host key.
    let list = clan.run(&["vars", "list", "web01"], b"");
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("openssh/ssh.id_ed25519 ") && l.ends_with(" ********")),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains(public.trim()), "{}", list.stdout);
    assert_eq!(clan.run(&["vars", "check", "web01"], b"").code, 0);

    // Nothing to do the second time; no commit.
    let again = clan.generate(&[], "{}");
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(clan.commits(), before + 1);
    // --regenerate of one generator changes only it.
    let snapshot = clan.read("vars/per-machine/web02/openssh/ssh.id_ed25519.pub/value");
    let run = clan.generate(&["web01", "-g", "openssh"], "{}");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_ne!(
        clan.read("vars/per-machine/web01/openssh/ssh.id_ed25519.pub/value"),
        public
    );
    assert_eq!(
        clan.read("vars/per-machine/web02/openssh/ssh.id_ed25519.pub/value"),
        snapshot
    );
}

#[test]
fn dependencies_shared_generators_and_validation() {
    let clan = Clan::new();
    let generators = |validation: &str| {
        format!(
            r#"{{
        "ca": {{"share": True, "files": {{"root": {{"secret": False}}}}, "script": "head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n' > $out/root", "runtimeInputs": ["head", "od", "tr"]}},
        "leaf": {{"dependencies": ["ca"], "validation": {validation}, "files": {{"cert": {{"secret": False}}}}, "script": "cat $in/ca/root > $out/cert; echo -n -leaf >> $out/cert"}},
    }}"#
        )
    };
    clan.machine_generators("web01", &generators("\"v1\""));
    clan.machine_generators("web02", &generators("\"v1\""));
    let run = clan.generate(&[], ALICE);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let root = clan.read("vars/shared/ca/root/value");
    assert_eq!(
        clan.read("vars/per-machine/web01/leaf/cert/value"),
        format!("{root}-leaf")
    );
    assert_eq!(
        clan.read("vars/per-machine/web02/leaf/cert/value"),
        format!("{root}-leaf")
    );
    // sha256 of `"v1"`, as Nix's `hashString "sha256" (toJSON "v1")`.
    assert_eq!(
        clan.read("vars/per-machine/web01/leaf/.validation-hash"),
        "161078e42e8fef3ba4b9c984035baa2e431a50b31a18ac95614cc6820394af13"
    );
    // Regenerating the shared one regenerates both dependents, across machines.
    let run = clan.generate(&["web01", "-g", "ca"], "{}");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let new_root = clan.read("vars/shared/ca/root/value");
    assert_ne!(new_root, root);
    assert_eq!(
        clan.read("vars/per-machine/web02/leaf/cert/value"),
        format!("{new_root}-leaf")
    );
    // A changed validation value forces regeneration of that machine's leaf only.
    let web02_cert = clan.read("vars/per-machine/web02/leaf/cert/value");
    let web01_hash = clan.read("vars/per-machine/web01/leaf/.validation-hash");
    clan.machine_generators("web01", &generators("\"v2\""));
    // web01's ca definition is unchanged, so sharing still agrees.
    assert_eq!(clan.run(&["vars", "check", "web01"], b"").code, 1);
    let run = clan.generate(&[], "{}");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_ne!(
        clan.read("vars/per-machine/web01/leaf/.validation-hash"),
        web01_hash
    );
    assert_eq!(
        clan.read("vars/per-machine/web02/leaf/cert/value"),
        web02_cert
    );
}

/// Generation reports each generator of each machine as it goes: `[machine] generator …`
/// lines (`running` only with `-v`) in the order the generators ran, shared ones under
/// `[shared]`; on a terminal the same on a progress line per machine.
#[test]
fn generation_shows_each_generator_of_each_machine() {
    let clan = Clan::new();
    let generators = |extra: &str| {
        format!(
            r#"{{"ca": {{"share": True, "files": {{"root": {{"secret": False}}}}, "script": "echo r > $out/root"}},
                "leaf": {{"dependencies": ["ca"], "files": {{"cert": {{"secret": False}}}}, "script": "cat $in/ca/root > $out/cert"}}{extra}}}"#
        )
    };
    clan.machine_generators("web01", &generators(""));
    clan.machine_generators(
        "web02",
        &generators(r#", "bad": {"files": {"x": {}}, "script": "exit 3"}"#),
    );
    let run = clan.generate(&["-v"], ALICE);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("no line `{line}` in:\n{}", run.stderr))
    };
    assert!(at("[shared] ca: running") < at("[shared] ca: generated"));
    assert!(at("[shared] ca: generated") < at("[web01] leaf: running"));
    assert!(at("[web01] leaf: running") < at("[web01] leaf: generated"));
    assert!(at("[shared] ca: generated") < at("[web02] leaf: generated"));
    assert!(at("[web01] openssh: generated") > 0);
    // Why a generator failed follows the progress, with the count.
    assert!(at("[web02] bad: failed") < at("generated 6 generator runs"));
    assert!(
        lines[at("generated 6 generator runs")..]
            .iter()
            .any(|l| l.starts_with("error: ") && l.contains("generator `bad`")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains('\x1b'),
        "no terminal codes off a terminal"
    );

    // Without -v only the outcomes; on a terminal a progress line per machine draws them.
    clan.machine_generators("web02", &generators(""));
    let answers = clan.dir.path().join("answers.json");
    std::fs::write(&answers, ALICE).unwrap();
    let line = [
        env!("CARGO_BIN_EXE_clan"),
        "--flake",
        &clan.root().display().to_string(),
        "vars",
        "generate",
        "--regenerate",
        "--prompt-values",
        &answers.display().to_string(),
    ]
    .map(|word| format!("'{}'", word.replace('\'', r"'\''")))
    .join(" ");
    let mut on_terminal = Command::new("script");
    // Nothing to type: a prompt would read the end of input rather than wait.
    on_terminal
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null());
    clan.env(&mut on_terminal)
        .env("TERM", "xterm")
        .env("NO_COLOR", "1");
    let output = on_terminal.output().expect("`script` (bsdutils) runs");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("[web02] leaf: generated"), "{shown:?}");
    assert!(shown.contains("[shared] ca: generated"), "{shown:?}");
    // NO_COLOR: the only terminal codes are the progress lines' redrawing.
    assert!(shown.contains('\x1b'), "progress lines: {shown:?}");
}

#[test]
fn switching_share_regenerates_at_the_new_place_and_removes_the_old() {
    let clan = Clan::new();
    let declare = |share: &str| {
        for machine in ["web01", "web02"] {
            clan.machine_generators(
                machine,
                &format!(
                    r#"{{"token": {{"share": {share}, "files": {{"t": {{"secret": False}}}},
                         "script": "head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n' > $out/t"}}}}"#
                ),
            );
        }
    };
    declare("False");
    assert_eq!(clan.generate(&["-g", "token"], ALICE).code, 0);
    assert!(clan.exists("vars/per-machine/web01/token/t/value"));
    assert!(clan.exists("vars/per-machine/web02/token/t/value"));

    declare("True");
    let run = clan.generate(&["-g", "token"], ALICE);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(clan.exists("vars/shared/token/t/value"));
    assert!(!clan.exists("vars/per-machine/web01/token"));
    assert!(!clan.exists("vars/per-machine/web02/token"));
    assert!(
        clan.git(&["status", "--porcelain", "vars"])
            .trim()
            .is_empty(),
        "not committed"
    );
    assert!(!clan.git(&["ls-files"]).contains("per-machine/web01/token"));

    declare("False");
    assert_eq!(clan.generate(&["-g", "token"], ALICE).code, 0);
    assert!(clan.exists("vars/per-machine/web01/token/t/value"));
    assert!(!clan.exists("vars/shared/token"));
    assert!(
        clan.git(&["status", "--porcelain", "vars"])
            .trim()
            .is_empty(),
        "not committed"
    );
}

#[test]
fn the_clan_tool_is_this_clan_even_off_path() {
    // The built-in data-mesher generators call `clan`; it need not be installed.
    let clan = Clan::new();
    clan.machine_generators(
        "web01",
        r#"{"self": {"files": {"v": {"secret": False}}, "runtimeInputs": ["clan"],
                     "script": "clan --version > $out/v"}}"#,
    );
    let run = clan.run(
        &[
            "vars",
            "generate",
            "web01",
            "-g",
            "self",
            "--prompt-values",
            "-",
        ],
        b"{}",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let version = clan.run(&["vars", "get", "web01", "self/v"], b"").stdout;
    assert_eq!(version.trim(), concat!("clan ", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_failing_script_stores_nothing_and_shows_its_stderr() {
    let clan = Clan::new();
    clan.machine_generators(
        "web01",
        r#"{"bad": {"files": {"x": {}}, "script": "echo half > $out/x; echo 'boom: no entropy' >&2; exit 3"},
            "lazy": {"files": {"x": {}, "y": {}}, "script": "echo x > $out/x"},
            "after": {"dependencies": ["bad"], "files": {"z": {}}, "script": "cp $in/bad/x $out/z"}}"#,
    );
    let run = clan.generate(&[], ALICE);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("boom: no entropy"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("generator `bad` (machine `web01`) failed (exit status: 3)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did not write declared file `y`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("dependency `bad (machine `web01`)` failed"),
        "{}",
        run.stderr
    );
    for generator in ["bad", "lazy", "after"] {
        assert!(
            !clan.exists(&format!("vars/per-machine/web01/{generator}")),
            "{generator}"
        );
    }
    // The others were stored and committed; nothing is left in staging.
    assert!(clan.exists("vars/per-machine/web01/openssh/ssh.id_ed25519/secret"));
    assert!(clan
        .git(&["status", "--porcelain", "vars"])
        .trim()
        .is_empty());
    let vars: Vec<_> = std::fs::read_dir(clan.root().join("vars"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(vars.iter().all(|name| !name.starts_with('.')), "{vars:?}");
}

#[test]
fn scripts_sharing_a_sandbox_leave_nothing_to_the_next() {
    let clan = Clan::new();
    // One worker, so every script runs in the same long-lived sandbox, one after another.
    clan.machine_generators(
        "web01",
        r#"{"first": {"files": {"x": {"secret": False}},
                      "script": "echo left > /tmp/leak; (sleep 1000 &); echo x > $out/x"},
            "second": {"dependencies": ["first"],
                       "files": {"tmp": {"secret": False}, "sleepers": {"secret": False}},
                       "script": "ls -A /tmp > $out/tmp; (grep -lx sleep /proc/[0-9]*/comm || true) | wc -l > $out/sleepers"},
            "killer": {"files": {"x": {}}, "script": "kill -9 -1; echo x > $out/x"},
            "survivor": {"files": {"x": {"secret": False}}, "script": "echo ok > $out/x"}}"#,
    );
    let run = clan.generate(&["--jobs", "1"], ALICE);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let get = |var: &str| clan.run(&["vars", "get", "web01", var], b"").stdout;
    assert_eq!(get("second/tmp"), "", "files in /tmp outlived their script");
    assert_eq!(
        get("second/sleepers").trim(),
        "0",
        "a process outlived its script"
    );
    // A script that kills the sandbox fails alone; the next one gets a fresh sandbox.
    assert!(
        run.stderr
            .contains("the sandbox ended while the script ran"),
        "{}",
        run.stderr
    );
    assert!(!clan.exists("vars/per-machine/web01/killer"));
    assert_eq!(get("survivor/x"), "ok\n");
}

#[test]
fn cycles_and_conflicting_shared_definitions_are_refused() {
    let clan = Clan::new();
    clan.machine_generators(
        "web01",
        r#"{"a": {"dependencies": ["b"], "script": ""}, "b": {"dependencies": ["a"], "script": ""}}"#,
    );
    let run = clan.generate(&[], ALICE);
    // Generator definitions that fail validation: the command ran and failed (exit 1).
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("dependency cycle"), "{}", run.stderr);
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);

    clan.machine_generators("web01", r#"{"s": {"share": True, "script": "one"}}"#);
    clan.machine_generators("web02", r#"{"s": {"share": True, "script": "two"}}"#);
    let run = clan.generate(&[], ALICE);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "`web01` and `web02` define shared generator `s` differently (they differ in: script)"
        ),
        "{}",
        run.stderr
    );
    assert!(!clan.exists("vars"));
}

#[test]
fn prompts_are_required_without_a_terminal_and_never_leak() {
    let clan = Clan::new();
    let before = clan.commits();
    let run = clan.run(&["vars", "generate"], b"");
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no value for prompt `user-password`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--prompt-values"), "{}", run.stderr);
    assert!(!clan.exists("vars"));
    assert!(!clan.exists("sops/machines"));
    assert_eq!(clan.commits(), before);

    let answers = clan.dir.path().join("answers.json");
    std::fs::write(&answers, ALICE).unwrap();
    let run = clan.run(
        &[
            "vars",
            "generate",
            "--prompt-values",
            answers.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("correct horse"));
    let password = clan.run(
        &["vars", "get", "web01", "user-password-alice/user-password"],
        b"",
    );
    assert_eq!(password.stdout, "correct horse");
    let log = clan.git(&["log", "-p", "--all"]);
    assert!(!log.contains("correct horse"));
}

/// Output of a process on a terminal (util-linux `script` provides the pseudo-terminal),
/// collected while it runs.
struct Terminal {
    child: std::process::Child,
    input: std::process::ChildStdin,
    screen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Terminal {
    fn start(command: Command) -> Terminal {
        use std::io::Read;
        use std::os::unix::ffi::OsStrExt;
        let mut line = Vec::new();
        line.extend_from_slice(b"exec");
        for word in std::iter::once(command.get_program()).chain(command.get_args()) {
            line.extend_from_slice(b" '");
            for &byte in word.as_bytes() {
                match byte {
                    b'\'' => line.extend_from_slice(b"'\\''"),
                    byte => line.push(byte),
                }
            }
            line.push(b'\'');
        }
        let mut script = Command::new("script");
        script.args(["-q", "-e", "-c"]);
        script
            .arg(std::ffi::OsStr::from_bytes(&line))
            .arg("/dev/null");
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => script.env(key, value),
                None => script.env_remove(key),
            };
        }
        let mut child = script
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux) runs");
        let input = child.stdin.take().unwrap();
        let mut output = child.stdout.take().unwrap();
        let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let shown = std::sync::Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = output.read(&mut buffer) {
                shown
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Terminal {
            child,
            input,
            screen,
        }
    }

    /// Waits until the screen shows `text` `times` times (a guard against hanging, not a
    /// speed check).
    fn wait_for(&self, text: &str, times: usize) {
        for _ in 0..600 {
            if self.screen.lock().unwrap().matches(text).count() >= times {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("never showed {text:?}: {}", self.screen.lock().unwrap());
    }

    fn type_in(&mut self, keys: &[u8]) {
        self.input.write_all(keys).unwrap();
        self.input.flush().unwrap();
    }
}

#[test]
fn multiline_hidden_prompts_are_read_to_ctrl_d_without_echo() {
    let clan = Clan::new();
    clan.machine_generators(
        "web01",
        r#"{"tls": {"prompts": {"pem": {"type": "multiline-hidden", "description": "TLS key"}},
                    "files": {"key": {}},
                    "script": "cp $prompts/pem $out/key"}}"#,
    );
    let mut terminal = Terminal::start(clan.command(&["vars", "generate", "web01", "-g", "tls"]));
    let pem = b"-----BEGIN KEY-----\nc2VjcmV0IGxpbmUgb25l\n-----END KEY-----\n";
    terminal.wait_for("finish with Ctrl-D", 1);
    terminal.type_in(pem);
    terminal.type_in(b"\x04");
    terminal.wait_for("Again, to confirm", 1);
    terminal.type_in(pem);
    terminal.type_in(b"\x04");
    let status = terminal.child.wait().unwrap();
    let screen = terminal.screen.lock().unwrap().clone();
    assert!(status.success(), "{screen}");
    assert!(
        !screen.contains("c2VjcmV0"),
        "the secret was echoed: {screen}"
    );
    let stored = clan.run(&["vars", "get", "web01", "tls/key"], b"");
    assert_eq!(stored.stdout.as_bytes(), pem);
}

#[test]
fn interrupted_while_reading_prompts_changes_nothing() {
    let clan = Clan::new();
    let mut child = clan
        .command(&["vars", "generate", "--prompt-values", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The process waits for stdin; interrupt it there.
    std::thread::sleep(std::time::Duration::from_millis(300));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!clan.exists("vars"));
    assert!(!clan.exists("sops/machines"));
    assert!(clan.git(&["status", "--porcelain"]).trim().is_empty());
}

#[test]
fn killed_mid_run_leaves_every_var_old_or_new() {
    let clan = Clan::new();
    assert_eq!(clan.generate(&[], ALICE).code, 0);
    let before = clan.snapshot();
    clan.machine_generators(
        "web01",
        r#"{"slow": {"files": {"x": {"secret": False}}, "script": "echo x > $out/x; sleep 30"}}"#,
    );
    let mut child = clan
        .command(&["vars", "generate", "--regenerate", "--prompt-values", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ALICE.as_bytes())
        .unwrap();
    // Wait until the slow script runs, i.e. the other generators are staged or running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !Command::new("pgrep")
        .args(["-f", "sleep 30"])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow generator never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing was swapped in: every var is the old one.
    let after: Vec<_> = clan
        .snapshot()
        .into_iter()
        .filter(|(path, _)| !path.starts_with("vars/.staging-"))
        .collect();
    assert_eq!(after, before);
    // The next run cleans up and completes.
    let run = clan.run(
        &["vars", "generate", "--prompt-values", "-", "web02"],
        ALICE.as_bytes(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!clan
        .snapshot()
        .iter()
        .any(|(p, _)| p.starts_with("vars/.staging-")));
}

#[test]
fn set_get_export_import_and_fix() {
    let clan = Clan::new();
    assert_eq!(clan.generate(&[], ALICE).code, 0);
    let run = clan.run(
        &["vars", "set", "web02", "openssh/ssh.id_ed25519"],
        b"not really a key",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got = clan.run(&["vars", "get", "web02", "openssh/ssh.id_ed25519"], b"");
    assert_eq!(got.stdout, "not really a key");
    assert!(clan.exists("vars/per-machine/web02/openssh/ssh.id_ed25519/machines/web02"));

    let dump = clan.dir.path().join("dump");
    let run = clan.run(&["vars", "export", dump.to_str().unwrap()], b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    use std::os::unix::fs::PermissionsExt;
    let exported = dump.join("per-machine/web02/openssh/ssh.id_ed25519");
    assert_eq!(
        std::fs::read_to_string(&exported).unwrap(),
        "not really a key"
    );
    assert_eq!(
        exported.metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(dump.metadata().unwrap().permissions().mode() & 0o777, 0o700);

    std::fs::write(&exported, "imported").unwrap();
    let run = clan.run(&["vars", "import", dump.to_str().unwrap()], b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got = clan.run(&["vars", "get", "web02", "openssh/ssh.id_ed25519"], b"");
    assert_eq!(got.stdout, "imported");

    // A recipient link removed by hand: check notices, fix repairs.
    std::fs::remove_file(
        clan.root()
            .join("vars/per-machine/web01/openssh/ssh.id_ed25519/machines/web01"),
    )
    .unwrap();
    let check = clan.run(&["vars", "check", "web01"], b"");
    assert_eq!(check.code, 1);
    assert!(
        check.stderr.contains("no recipient link `machines/web01`"),
        "{}",
        check.stderr
    );
    assert_eq!(clan.run(&["vars", "fix", "web01"], b"").code, 0);
    assert_eq!(clan.run(&["vars", "check", "web01"], b"").code, 0);
}

#[test]
fn missing_bubblewrap_suggests_no_sandbox() {
    let clan = Clan::new();
    let bin = clan.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["git", "bash", "ssh-keygen", "openssl", "tr", "head"] {
        let path = Command::new("bash")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let path = String::from_utf8(path.stdout).unwrap();
        std::os::unix::fs::symlink(path.trim(), bin.join(tool)).unwrap();
    }
    let run = |extra: &[&str]| {
        let mut command = clan.command(&["vars", "generate", "--prompt-values", "-"]);
        command.args(extra).env("PATH", &bin);
        let mut child = command
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ALICE.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let output = run(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("bubblewrap (`bwrap`) is not installed"),
        "{stderr}"
    );
    assert!(stderr.contains("--no-sandbox"), "{stderr}");
    let output = run(&["--no-sandbox"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `machines delete` forgets the machine: its per-machine vars, its age key, its sops key and
/// group memberships go (in one commit), the shared secrets it could read are re-keyed
/// without it, and a machine created again under the name gets fresh keys.
#[test]
fn deleting_a_machine_forgets_its_keys_and_rekeys_what_it_could_read() {
    let clan = Clan::new();
    clan.write(
        "clan.toml",
        &format!(
            "{CLAN_TOML}\n[instances.team]\nmodule.name = \"users\"\n\
             roles.default.machines.web01 = {{}}\nroles.default.machines.web02 = {{}}\n\
             roles.default.settings.user = \"bob\"\nroles.default.settings.share = true\n"
        ),
    );
    clan.git(&["commit", "-qam", "team"]);
    let answers = r#"{"user-password-alice": {"user-password": "a"}, "user-password-bob": {"user-password": "b"}}"#;
    let generated = clan.generate(&[], answers);
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    let grouped = clan.run(&["secrets", "groups", "add-machine", "ops", "web02"], b"");
    assert_eq!(grouped.code, 0, "{}", grouped.stderr);
    let old_key = clan.read("sops/machines/web02/key.json");
    let old_public = serde_json::from_str::<serde_json::Value>(&old_key).unwrap();
    let old_public = old_public
        .pointer("/0/publickey")
        .or_else(|| old_public.get("publickey"))
        .and_then(|k| k.as_str())
        .unwrap()
        .to_owned();
    let shared = "vars/shared/user-password-bob/user-password-hash/secret";
    assert!(clan.read(shared).contains(&old_public));

    let deleted = clan.run(&["machines", "delete", "web02"], b"");
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    for gone in [
        "vars/per-machine/web02",
        "sops/machines/web02",
        "sops/secrets/web02-age.key",
        "sops/groups/ops/machines/web02",
        "vars/shared/user-password-bob/user-password-hash/machines/web02",
    ] {
        assert!(!clan.exists(gone), "{gone} is still there");
    }
    assert!(!clan.read(shared).contains(&old_public), "not re-keyed");
    assert!(clan.exists("vars/per-machine/web01"));
    assert!(!clan.read("clan.toml").contains("[machines.web02]"));
    assert_eq!(
        clan.git(&["status", "--porcelain"]),
        "",
        "not all committed"
    );
    let readable = clan.run(
        &[
            "vars",
            "get",
            "web01",
            "user-password-bob/user-password-hash",
        ],
        b"",
    );
    assert_eq!(readable.code, 0, "{}", readable.stderr);

    let created = clan.run(&["machines", "create", "web02"], b"");
    assert_eq!(created.code, 0, "{}", created.stderr);
    let secret = clan.run(&["secrets", "set", "token", "--machine", "web02"], b"t");
    assert_eq!(secret.code, 0, "{}", secret.stderr);
    assert_ne!(
        clan.read("sops/machines/web02/key.json"),
        old_key,
        "the old key came back"
    );
}

/// A second admin joins the group the machine's secrets are shared with: `vars check` names
/// what is wrong and what to run, and after `clan vars fix` the second admin reads every
/// secret var of the machine with their own key.
#[test]
fn a_second_admin_reads_every_secret_after_vars_fix() {
    let clan = Clan::new();
    let generated = clan.generate(&[], r#"{"user-password-alice": {"user-password": "a"}}"#);
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    for args in [
        ["secrets", "groups", "add-machine", "ops", "web01"].as_slice(),
        &["secrets", "groups", "add-user", "ops", "admin"],
    ] {
        let run = clan.run(args, b"");
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    let bob_key = clan.dir.path().join("bob.key");
    let bob_public = age_keygen(&bob_key);
    for args in [
        ["secrets", "users", "add", "bob", bob_public.as_str()].as_slice(),
        &["secrets", "groups", "add-user", "ops", "bob"],
    ] {
        let run = clan.run(args, b"");
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    let as_bob = |args: &[&str]| {
        let output = clan
            .command(args)
            .env("SOPS_AGE_KEY_FILE", &bob_key)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let secret_vars = [
        "openssh/ssh.id_ed25519",
        "user-password-alice/user-password-hash",
    ];

    let check = clan.run(&["vars", "check", "web01"], b"");
    assert_eq!(check.code, 1, "{}", check.stderr);
    assert!(
        check.stderr.contains("clan vars fix web01"),
        "{}",
        check.stderr
    );
    let fix = clan.run(&["vars", "fix", "web01"], b"");
    assert_eq!(fix.code, 0, "{}", fix.stderr);
    let check = clan.run(&["vars", "check", "web01"], b"");
    assert_eq!(check.code, 0, "{}", check.stderr);
    for var in secret_vars {
        let (code, stderr) = as_bob(&["vars", "get", "web01", var]);
        assert_eq!(code, Some(0), "bob cannot read {var}: {stderr}");
    }
    assert_eq!(clan.git(&["status", "--porcelain"]), "");
}

/// A machine without generators has nothing to check: `vars check` says so, it is no
/// "unknown machine".
#[test]
fn a_machine_without_generators_checks_clean() {
    let clan = Clan::new();
    let created = clan.run(&["machines", "create", "bare"], b"");
    assert_eq!(created.code, 0, "{}", created.stderr);
    let check = clan.run(&["vars", "check", "bare"], b"");
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(
        check.stderr.contains("present and valid"),
        "{}",
        check.stderr
    );
    let unknown = clan.run(&["vars", "check", "nosuch"], b"");
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("unknown machine"),
        "{}",
        unknown.stderr
    );
}

/// `vars check` and `vars fix` without machines cover every machine, and the hints name the
/// machines that need them.
#[test]
fn check_and_fix_without_machines_cover_every_machine() {
    let clan = Clan::new();
    let check_fails_hinting = |hint: &str| {
        let check = clan.run(&["vars", "check"], b"");
        assert_eq!(check.code, 1, "{}", check.stderr);
        assert!(check.stderr.contains(hint), "{}", check.stderr);
    };
    check_fails_hinting("`clan vars generate web01 web02`");
    let generated = clan.generate(&["web01"], ALICE);
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    check_fails_hinting("`clan vars generate web02`");
    let check = clan.run(&["vars", "check", "--json"], b"");
    assert_eq!(check.code, 1, "{}", check.stderr);
    let found: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    let found = found.as_object().unwrap();
    assert_eq!(found.keys().collect::<Vec<_>>(), ["web02"], "{found:?}");
    let problems = found["web02"].as_array().unwrap();
    assert!(!problems.is_empty());
    for problem in problems {
        assert_eq!(problem["remedy"], "generate", "{problem}");
        assert!(
            problem["var"].as_str().is_some_and(|v| !v.is_empty()),
            "{problem}"
        );
    }
    assert_eq!(clan.run(&["vars", "check", "web01"], b"").code, 0);
    let generated = clan.generate(&[], "");
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    let check = clan.run(&["vars", "check", "--json"], b"");
    assert_eq!(
        (check.code, check.stdout.trim()),
        (0, "{}"),
        "{}",
        check.stderr
    );
    let check = clan.run(&["vars", "check"], b"");
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(check.stderr.contains("every machine"), "{}", check.stderr);

    // A second admin joins the group both machines are in: every machine's secrets drift.
    let bob_key = clan.dir.path().join("bob.key");
    let bob_public = age_keygen(&bob_key);
    for args in [
        ["secrets", "groups", "add-machine", "ops", "web01"].as_slice(),
        &["secrets", "groups", "add-machine", "ops", "web02"],
        &["secrets", "users", "add", "bob", bob_public.as_str()],
        &["secrets", "groups", "add-user", "ops", "bob"],
    ] {
        let run = clan.run(args, b"");
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    check_fails_hinting("`clan vars fix web01 web02`");
    let fix = clan.run(&["vars", "fix"], b"");
    assert_eq!(fix.code, 0, "{}", fix.stderr);
    assert_eq!(clan.run(&["vars", "check"], b"").code, 0);
    for machine in ["web01", "web02"] {
        let output = clan
            .command(&["vars", "get", machine, "openssh/ssh.id_ed25519"])
            .env("SOPS_AGE_KEY_FILE", &bob_key)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "bob cannot read {machine}'s key: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(clan.git(&["status", "--porcelain"]), "");
}

/// Without `--user` and without `$USER`, `vars keygen` names the sops user after the passwd
/// entry of the user running it, as clan-core's `getpass.getuser()` falls back to.
#[test]
fn keygen_without_user_falls_back_to_the_passwd_entry() {
    let clan = Clan::new();
    let me = Command::new("id").arg("-un").output().unwrap();
    let me = String::from_utf8_lossy(&me.stdout).trim().to_owned();
    let new_key = clan.dir.path().join("new.key");
    let output = clan
        .command(&["vars", "keygen"])
        .env("SOPS_AGE_KEY_FILE", &new_key)
        .env_remove("USER")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("added sops user `{me}`")),
        "{stderr}"
    );
    let key = std::fs::read_to_string(clan.root().join(format!("sops/users/{me}/key.json")))
        .expect("the sops user exists");
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&new_key)
        .output()
        .unwrap();
    assert!(
        key.contains(String::from_utf8_lossy(&public.stdout).trim()),
        "{key}"
    );
}
