//! Issue 10's "no path leaves its tree" and "secrets never touch a readable place", tried as an
//! attacker would with the real `clan` binary: symlinks (to a directory outside the clan, to a
//! secret file outside it, to a directory inside, dangling) at every level of `vars/`, `sops/`,
//! `machines/`, `services/`, at clan.toml and inventory.json, in a `vars import` directory, and
//! written by generator scripts (with FIFOs, directories and huge files); odd path names; a
//! generator past its timeout; `vars generate` killed mid-script.
//!
//! Every case asserts that nothing outside the clan directory was written or deleted, that the
//! outside secret's content appears in no output, file, cache entry or git commit, and (where
//! the command refuses) that the error names the culprit. Counted in ADVERSARIAL.md.

mod cli;
mod env;

use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cli::{walk, Run};

/// The outside secret's content: must never show up anywhere clan writes.
const MARKER: &str = "OUTSIDE-SECRET-7f3a9c";

const CLAN_TOML: &str = r#"[meta]
name = "hostile"

[machines.web01]
"#;

/// One public and one secret generator (the public one is read by evaluation).
const GENERATORS: &str = r#"{
    "gen": {"files": {"pub": {"secret": False}, "key": {}},
            "script": "echo public > $out/pub; echo private > $out/key"},
}"#;

/// The clan of these tests, with `cli::Workspace`'s helpers, and `outside/` next to it.
struct Clan(cli::Workspace);

impl std::ops::Deref for Clan {
    type Target = cli::Workspace;
    fn deref(&self) -> &cli::Workspace {
        &self.0
    }
}

impl Clan {
    /// A committed clan with web01's generators, the admin's key, and `outside/` next to it
    /// holding `secret`, `victim/keep` and a `clan.toml` (all with the marker).
    fn new() -> Clan {
        let clan = Clan(cli::Workspace::init(CLAN_TOML, |workspace| {
            workspace.machine_generators("web01", GENERATORS);
        }));
        std::fs::create_dir_all(clan.outside().join("victim")).unwrap();
        std::fs::write(clan.outside().join("secret"), MARKER).unwrap();
        std::fs::write(clan.outside().join("victim/keep"), MARKER).unwrap();
        std::fs::write(
            clan.outside().join("clan.toml"),
            format!("# {MARKER}\n{CLAN_TOML}"),
        )
        .unwrap();
        clan
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    fn generators(&self, generators: &str) {
        self.machine_generators("web01", generators);
    }

    /// Replaces whatever is at `rel` by a link to `target`.
    fn plant(&self, rel: &str, target: &Path) {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&path);
        symlink(target, &path).unwrap();
    }

    fn generate(&self, extra: &[&str]) -> Run {
        let mut args = vec!["vars", "generate", "--prompt-values", "-"];
        args.extend_from_slice(extra);
        self.run(&args, b"{}")
    }

    /// Nothing outside was written or deleted, and the marker is in no output, no file of the
    /// clan, the cache or scratch, and no commit.
    fn assert_contained(&self, case: &str, runs: &[&Run]) {
        let outside = walk(&self.outside());
        assert_eq!(
            outside,
            [
                ("clan.toml".to_owned(), format!("# {MARKER}\n{CLAN_TOML}")),
                ("secret".to_owned(), MARKER.to_owned()),
                ("victim".to_owned(), "<dir>".to_owned()),
                ("victim/keep".to_owned(), MARKER.to_owned()),
            ],
            "{case}: the outside changed"
        );
        for run in runs {
            let text = format!("{}\n{}", run.stdout, run.stderr);
            assert!(!text.contains(MARKER), "{case}: leaked in output");
        }
        for dir in [
            self.root(),
            self.dir.path().join("cache"),
            self.runtime_dir(),
        ] {
            for (path, content) in walk(&dir) {
                assert!(
                    !content.contains(MARKER),
                    "{case}: leaked into {}",
                    dir.join(path).display()
                );
            }
        }
        let history = self.git(&["log", "--all", "-p", "--binary"]);
        assert!(!history.contains(MARKER), "{case}: leaked into a commit");
    }
}

/// What a planted link points at.
#[derive(Clone, Copy, Debug)]
enum Target {
    OutsideDir,
    OutsideSecret,
    InsideDir,
    Dangling,
}

const TARGETS: [Target; 4] = [
    Target::OutsideDir,
    Target::OutsideSecret,
    Target::InsideDir,
    Target::Dangling,
];

impl Target {
    fn path(self, clan: &Clan) -> PathBuf {
        match self {
            Target::OutsideDir => clan.outside().join("victim"),
            Target::OutsideSecret => clan.outside().join("secret"),
            Target::InsideDir => clan.root().join("machines"),
            Target::Dangling => clan.dir.path().join("nowhere/at/all"),
        }
    }
}

/// Plants each kind of link at each of `levels`, runs `args`, and checks that the run either
/// refused naming the link or replaced the link (a generator directory swapped in whole),
/// and stayed contained. Returns how many cases were refused and how many replaced the link.
fn links_everywhere(levels: &[&str], prepare: impl Fn(&Clan), args: &[&str]) -> Cases {
    let mut cases = Cases::default();
    for level in levels {
        for target in TARGETS {
            let clan = Clan::new();
            prepare(&clan);
            clan.plant(level, &target.path(&clan));
            let run = clan.run(args, b"{}");
            let case = format!("{level} -> {target:?}, `clan {}`", args.join(" "));
            let link = clan.root().join(level);
            if run.code == 0 {
                let meta = link.symlink_metadata();
                assert!(
                    !meta.is_ok_and(|meta| meta.is_symlink()),
                    "{case}: accepted, and the link is still there"
                );
                cases.replaced += 1;
            } else {
                cases.refused += 1;
                assert!(
                    run.stderr.contains(level),
                    "{case}: the error does not name `{level}`:\n{}",
                    run.stderr
                );
            }
            assert!(!run.stderr.contains("panicked"), "{case}: {}", run.stderr);
            clan.assert_contained(&case, &[&run]);
        }
    }
    cases
}

#[derive(Debug, Default)]
struct Cases {
    refused: usize,
    replaced: usize,
}

impl std::ops::Add for Cases {
    type Output = Cases;
    fn add(self, other: Cases) -> Cases {
        Cases {
            refused: self.refused + other.refused,
            replaced: self.replaced + other.replaced,
        }
    }
}

fn generated(clan: &Clan) {
    let run = clan.generate(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn links_in_vars_are_refused_at_every_level() {
    let levels = [
        "vars",
        "vars/per-machine",
        "vars/per-machine/web01",
        "vars/per-machine/web01/gen",
        "vars/per-machine/web01/gen/pub",
        "vars/per-machine/web01/gen/pub/value",
        "vars/per-machine/web01/gen/key",
        "vars/per-machine/web01/gen/key/secret",
    ];
    let cases = links_everywhere(&levels, generated, &["vars", "generate", "--regenerate"])
        + links_everywhere(&levels[..6], generated, &["vars", "list", "web01"])
        + links_everywhere(&levels[..6], generated, &["select", "machines.web01"]);
    eprintln!("vars link cases: {cases:?}");
    // Only a regenerated generator's own directory is swapped in whole (replacing the link at
    // it, one case per target); everything else, and every reading command, refuses.
    assert_eq!(
        (cases.refused, cases.replaced),
        (76, TARGETS.len()),
        "{cases:?}"
    );
}

#[test]
fn links_in_sops_are_refused_at_every_level() {
    let levels = [
        "sops",
        "sops/users",
        "sops/users/admin",
        "sops/users/admin/key.json",
        "sops/machines/web01",
        "sops/machines/web01/key.json",
    ];
    let cases = links_everywhere(&levels, generated, &["vars", "generate", "--regenerate"])
        + links_everywhere(&levels[..4], |_| {}, &["secrets", "users", "list"]);
    eprintln!("sops link cases: {cases:?}");
    assert_eq!((cases.refused, cases.replaced), (40, 0), "{cases:?}");
}

#[test]
fn links_in_machines_services_and_the_inventory_are_refused() {
    let cases = links_everywhere(
        &[
            "machines",
            "machines/web01",
            "machines/web01/config.star",
            "services",
            "services/local",
            "services/local/service.star",
            "clan.toml",
            "inventory.json",
        ],
        |_| {},
        &["machines", "list"],
    );
    eprintln!("machines/services/inventory link cases: {cases:?}");
    assert_eq!((cases.refused, cases.replaced), (32, 0), "{cases:?}");
}

#[test]
fn a_committed_link_at_a_vars_directory_never_deletes_outside() {
    // The issue's first attack: `vars/per-machine/web01` -> a directory outside, then a
    // generate that would swap the generator directory in there and delete the old one.
    let clan = Clan::new();
    clan.plant("vars/per-machine/web01", &clan.outside().join("victim"));
    let run = clan.generate(&["--regenerate"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("vars/per-machine/web01"),
        "{}",
        run.stderr
    );
    clan.assert_contained("vars/per-machine/web01 -> victim", &[&run]);
    // Removing the link lets the next run succeed.
    std::fs::remove_file(clan.root().join("vars/per-machine/web01")).unwrap();
    let run = clan.generate(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    clan.assert_contained("after the link is gone", &[&run]);
}

/// What a generator script leaves at `$out/f`, and what the error must say about it.
const BAD_OUTPUTS: &[(&str, &str, &str)] = &[
    (
        "link to /etc/shadow",
        "ln -s /etc/shadow $out/f",
        "symbolic link",
    ),
    (
        "link to the outside secret",
        "ln -s @SECRET@ $out/f",
        "symbolic link",
    ),
    ("link to a directory", "ln -s /etc $out/f", "symbolic link"),
    (
        "dangling link",
        "ln -s /nonexistent $out/f",
        "symbolic link",
    ),
    ("FIFO", "mkfifo $out/f", "FIFO"),
    ("directory", "mkdir $out/f", "directory"),
    ("huge file", "truncate -s 65M $out/f", "larger than"),
    (
        "$out a link",
        "rm -rf $out; ln -s @OUTSIDE@ $out",
        "symbolic link",
    ),
];

#[test]
fn generator_outputs_must_be_regular_files() {
    let mut cases = 0;
    for sandbox in [true, false] {
        for (what, script, says) in BAD_OUTPUTS {
            let clan = Clan::new();
            std::fs::write(clan.outside().join("f"), MARKER).unwrap();
            let script = script
                .replace(
                    "@SECRET@",
                    &clan.outside().join("secret").display().to_string(),
                )
                .replace("@OUTSIDE@", &clan.outside().display().to_string());
            clan.generators(&format!(
                r#"{{"bad": {{"files": {{"f": {{"secret": False}}, "s": {{}}}},
                     "script": "echo ok > $out/s; {script}"}}}}"#
            ));
            let extra: &[&str] = if sandbox { &[] } else { &["--no-sandbox"] };
            let run = clan.generate(extra);
            std::fs::remove_file(clan.outside().join("f")).unwrap();
            let case = format!("{what} (sandbox: {sandbox})");
            assert_ne!(run.code, 0, "{case}: accepted");
            assert!(run.stderr.contains("`bad`"), "{case}: {}", run.stderr);
            assert!(run.stderr.contains(says), "{case}: {}", run.stderr);
            assert!(
                !clan.root().join("vars/per-machine/web01/bad").exists(),
                "{case}: something was stored"
            );
            clan.assert_contained(&case, &[&run]);
            cases += 1;
        }
    }
    eprintln!("generator output cases: {cases}");
}

#[test]
fn vars_import_reads_no_links() {
    let mut cases = 0;
    for level in [
        "per-machine",
        "per-machine/web01/gen",
        "per-machine/web01/gen/pub",
    ] {
        for target in TARGETS {
            let clan = Clan::new();
            let input = clan.dir.path().join("import");
            std::fs::create_dir_all(input.join("per-machine/web01/gen")).unwrap();
            std::fs::write(input.join("per-machine/web01/gen/key"), "imported").unwrap();
            let at = input.join(level);
            let _ = std::fs::remove_dir_all(&at);
            let _ = std::fs::remove_file(&at);
            symlink(target.path(&clan), &at).unwrap();
            let run = clan.run(&["vars", "import", &input.display().to_string()], b"");
            let case = format!("import with {level} -> {target:?}");
            assert_ne!(run.code, 0, "{case}: accepted\n{}", run.stderr);
            assert!(run.stderr.contains(level), "{case}: {}", run.stderr);
            clan.assert_contained(&case, &[&run]);
            cases += 1;
        }
    }
    eprintln!("import cases: {cases}");
}

#[test]
fn odd_names_are_only_names() {
    let clan = Clan::new();
    // Names may hold newlines, unicode and shell metacharacters; `..`, `/` and a leading dot
    // are refused.
    for name in ["..", "a/b", ".hidden"] {
        clan.generators(&format!(
            r#"{{"g": {{"files": {{"{name}": {{"secret": False}}}}, "script": "true"}}}}"#
        ));
        let run = clan.generate(&[]);
        assert_ne!(run.code, 0, "`{name}` accepted");
        assert!(run.stderr.contains("invalid"), "{}", run.stderr);
    }
    let names = [
        "new\\nline",
        "$(touch pwned)",
        "ünïcødé ✓",
        "a;b|c&d`e`",
        "-rf *",
    ];
    let files: Vec<String> = names
        .iter()
        .map(|name| format!(r#""{name}": {{"secret": False}}"#))
        .collect();
    let writes: Vec<String> = names
        .iter()
        .map(|name| format!(r#"printf %s ok > "$out"/'{}'"#, name.replace("\\n", "\n")))
        .collect();
    clan.generators(&format!(
        r#"{{"odd $(touch pwned2)": {{"files": {{{}}}, "script": {:?}}}}}"#,
        files.join(", "),
        writes.join("\n"),
    ));
    let run = clan.generate(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for name in names {
        let name = name.replace("\\n", "\n");
        let value = clan
            .root()
            .join("vars/per-machine/web01/odd $(touch pwned2)")
            .join(&name)
            .join("value");
        assert_eq!(std::fs::read_to_string(&value).unwrap(), "ok", "{name:?}");
    }
    for dir in [clan.root(), clan.dir.path().to_path_buf()] {
        assert!(!dir.join("pwned").exists() && !dir.join("pwned2").exists());
    }
    clan.assert_contained("odd names", &[&run]);
}

#[test]
fn a_generator_past_its_timeout_is_killed_and_named() {
    let clan = Clan::new();
    clan.generators(
        r#"{"slow": {"files": {"f": {"secret": False}}, "timeout": 1, "script": "sleep 600"},
            "quick": {"files": {"f": {"secret": False}}, "script": "echo ok > $out/f"}}"#,
    );
    for extra in [&[][..], &["--no-sandbox"][..]] {
        let run = clan.generate(extra);
        assert_ne!(run.code, 0);
        assert!(
            run.stderr.contains("`slow`") && run.stderr.contains("within 1 s"),
            "{}",
            run.stderr
        );
        assert!(
            clan.root()
                .join("vars/per-machine/web01/quick/f/value")
                .is_file(),
            "{}",
            run.stderr
        );
    }
}

/// Every directory and file left below `dir` (links have no mode of their own), with its mode.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    walk(dir)
        .into_iter()
        .filter_map(|(path, _)| {
            let meta = dir.join(&path).symlink_metadata().unwrap();
            let mode = meta.permissions().mode() & 0o777;
            (!meta.is_symlink()).then(|| (PathBuf::from(path), mode))
        })
        .collect()
}

#[test]
fn a_killed_generate_leaves_nothing_readable_and_the_next_run_cleans_up() {
    for sandbox in [true, false] {
        let clan = Clan::new();
        let started = clan.dir.path().join("started");
        // The script tells (through a file next to its outputs) that it runs, then waits.
        clan.generators(
            r#"{"gen": {"files": {"pub": {"secret": False}, "key": {}},
                "script": "echo private > $out/key; echo $$ > $out/../started; exec sleep 600"}}"#,
        );
        let mut args = vec!["vars", "generate", "--prompt-values", "-"];
        if !sandbox {
            args.push("--no-sandbox");
        }
        let mut child = clan
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"{}").unwrap();
        let scratch = clan.runtime_dir().join("clan");
        let marker = loop {
            let found = walk(&scratch)
                .into_iter()
                .find(|(path, _)| path.ends_with("/started"));
            if let Some((path, _)) = found {
                if std::fs::read_to_string(scratch.join(&path)).is_ok_and(|pid| pid.ends_with('\n'))
                {
                    break scratch.join(path);
                }
            }
            assert!(child.try_wait().unwrap().is_none(), "generate ended early");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let script_pid = std::fs::read_to_string(&marker).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        if !sandbox {
            // Unconfined, the script outlives clan (bubblewrap's die with it).
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{}", script_pid.trim())])
                .status();
        }
        let left = modes(&scratch);
        assert!(!left.is_empty(), "the kill left the run's scratch");
        for (path, mode) in &left {
            assert_eq!(mode & 0o077, 0, "{} is readable by others", path.display());
        }
        let scratch_mode = std::fs::metadata(&scratch).unwrap().permissions().mode() & 0o777;
        assert_eq!(scratch_mode, 0o700);
        let _ = std::fs::remove_file(&started);

        clan.generators(GENERATORS);
        let run = clan.generate(if sandbox { &[] } else { &["--no-sandbox"] });
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(modes(&scratch), [], "the next run removed the leftovers");
    }
}

#[test]
fn scratch_planted_by_someone_else_is_refused() {
    let clan = Clan::new();
    // A link where the per-user scratch directory goes: never followed.
    symlink(
        clan.outside().join("victim"),
        clan.runtime_dir().join("clan"),
    )
    .unwrap();
    let run = clan.generate(&[]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("run/clan"), "{}", run.stderr);
    clan.assert_contained("scratch link", &[&run]);
    // A directory others can read.
    std::fs::remove_file(clan.runtime_dir().join("clan")).unwrap();
    std::fs::create_dir(clan.runtime_dir().join("clan")).unwrap();
    std::fs::set_permissions(
        clan.runtime_dir().join("clan"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let run = clan.generate(&[]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("not private"), "{}", run.stderr);
}
