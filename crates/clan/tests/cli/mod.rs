//! A clan in a temporary git repository and the real `clan` binary run against it, with an
//! environment of its own (the admin's age key, `HOME`, caches, a private runtime directory for
//! scratch, a git identity): shared by the CLI tests of vars and the adversarial suite.

use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How a `clan` run ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `clan/` (the clan, committed), `admin.key`, `home/`, `cache/` and `run/` (0700) in a
/// temporary directory.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// A clan whose `clan.toml` is `clan_toml` plus what `prepare` writes, committed, with
    /// the admin's key and sops user `admin`.
    pub fn init(clan_toml: &str, prepare: impl FnOnce(&Workspace)) -> Workspace {
        let workspace = Workspace {
            dir: tempfile::tempdir().unwrap(),
        };
        for sub in ["clan", "home", "cache", "run"] {
            std::fs::create_dir(workspace.dir.path().join(sub)).unwrap();
        }
        let runtime = workspace.runtime_dir();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        workspace.write("clan.toml", clan_toml);
        prepare(&workspace);
        workspace.git(&["init", "-q"]);
        workspace.git(&["add", "-A"]);
        workspace.git(&["commit", "-q", "-m", "init"]);
        let keygen = workspace.run(&["vars", "keygen", "--user", "admin"], b"");
        assert_eq!(keygen.code, 0, "{}", keygen.stderr);
        workspace
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("clan")
    }

    /// `XDG_RUNTIME_DIR` of the runs: where their scratch space goes.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn write(&self, path: &str, content: &str) {
        let path = self.root().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// `machines/<machine>/config.star` declaring `generators` (a Starlark dict literal).
    pub fn machine_generators(&self, machine: &str, generators: &str) {
        self.write(
            &format!("machines/{machine}/config.star"),
            &format!("def per_machine(ctx):\n    return {{\"config\": {{\"generators\": {generators}}}}}\n"),
        );
    }

    pub fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        let dir = self.dir.path();
        crate::env::clan_env(
            command,
            &dir.join("admin.key"),
            &dir.join("home"),
            &dir.join("cache"),
        )
        .env("XDG_RUNTIME_DIR", self.runtime_dir())
    }

    pub fn git(&self, args: &[&str]) -> String {
        let output = self
            .env(Command::new("git").args(args))
            .current_dir(self.root())
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `clan args…` with `CLAN_DIR` naming the clan, started outside the clan directory (the
    /// commands that read no clan ignore `CLAN_DIR`, where they would refuse `--flake`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clan"));
        self.env(&mut command)
            .env("CLAN_DIR", self.root())
            .current_dir(self.dir.path());
        command.args(args);
        command
    }

    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that reads no input may be gone before it is written.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let output = child.wait_with_output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// `(path, content)` of everything below `dir`, not following links (a link shows as
/// `-> target`, a directory as `<dir>`), sorted.
pub fn walk(dir: &Path) -> Vec<(String, String)> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let meta = path.symlink_metadata().unwrap();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            if meta.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push((name, format!("-> {}", target.display())));
            } else if meta.is_dir() {
                out.push((name, "<dir>".to_owned()));
                go(root, &path, out);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.push((name, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}
