//! The running system as activation sees it: accounts read from `/etc/passwd` and
//! `/etc/group`, and the programs that change it (`useradd`, `apt-get`, `systemctl`, …), each
//! run as an argv vector; secrets only ever go to their stdin.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::store::Paths;
use crate::AgentError;

/// A line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub shell: String,
}

/// Users and groups of the machine.
#[derive(Debug, Default)]
pub struct Accounts {
    pub users: BTreeMap<String, Account>,
    /// name → (gid, members)
    pub groups: BTreeMap<String, (u32, Vec<String>)>,
}

impl Accounts {
    pub fn read(paths: &Paths) -> Accounts {
        let read = |path: &str| std::fs::read_to_string(paths.on_machine(path)).unwrap_or_default();
        let mut accounts = Accounts::default();
        for line in read("/etc/passwd").lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [name, _, uid, gid, _, _, shell] = fields[..] {
                if let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse()) {
                    accounts.users.insert(
                        name.to_owned(),
                        Account {
                            uid,
                            gid,
                            shell: shell.to_owned(),
                        },
                    );
                }
            }
        }
        for line in read("/etc/group").lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [name, _, gid, members] = fields[..] {
                if let Ok(gid) = gid.parse() {
                    let members = members
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect();
                    accounts.groups.insert(name.to_owned(), (gid, members));
                }
            }
        }
        accounts
    }

    pub fn uid(&self, name: &str) -> Option<u32> {
        self.users.get(name).map(|a| a.uid)
    }

    pub fn gid(&self, name: &str) -> Option<u32> {
        self.groups.get(name).map(|g| g.0)
    }
}

/// The password hash in `/etc/shadow` for `user`, if readable.
pub fn shadow_hash(paths: &Paths, user: &str) -> Option<String> {
    let text = std::fs::read_to_string(paths.on_machine("/etc/shadow")).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == user).then(|| fields.next().unwrap_or("").to_owned())
    })
}

/// Runs `argv`, feeding `stdin` if given; a failure is an error naming the command.
pub fn run(argv: &[&str], stdin: Option<&[u8]>) -> Result<String, AgentError> {
    let (program, args) = argv.split_first().expect("argv has a program");
    let mut command = Command::new(program);
    command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_error = |source: std::io::Error| AgentError::Command {
        command: argv.join(" "),
        detail: source.to_string(),
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).map_err(spawn_error)?;
    }
    // Both streams are passed on to the agent's stderr line by line as they come (the
    // deployer shows them while the stage runs) and kept for the error.
    let (stdout, stderr) = std::thread::scope(|scope| {
        let out = child
            .stdout
            .take()
            .map(|pipe| scope.spawn(|| pass_on(pipe)));
        let err = child.stderr.take().map(pass_on).unwrap_or_default();
        let out = out.and_then(|t| t.join().ok()).unwrap_or_default();
        (out, err)
    });
    let status = child.wait().map_err(spawn_error)?;
    let output = std::process::Output {
        status,
        stdout,
        stderr,
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let detail = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        Err(AgentError::Command {
            command: argv.join(" "),
            detail: format!("{}: {}", output.status, detail.trim()),
        })
    }
}

/// Reads `pipe` to its end, writing each line to stderr as it comes; returns all of it.
fn pass_on(pipe: impl std::io::Read) -> Vec<u8> {
    use std::io::BufRead as _;
    let mut reader = std::io::BufReader::new(pipe);
    let mut all = Vec::new();
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        // The deployer may be gone (a command that outlives its session): keep going.
        let _ = std::io::stderr().lock().write_all(&line);
        all.append(&mut line);
    }
    all
}

/// The distribution family (`debian`, `fedora`, `arch`, …) from `/etc/os-release`.
pub fn distro_family(paths: &Paths) -> String {
    let text = std::fs::read_to_string(paths.on_machine("/etc/os-release")).unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    let id = field("ID=");
    let like = field("ID_LIKE=");
    for family in ["debian", "fedora", "arch", "suse"] {
        if id == family || like.split_whitespace().any(|l| l == family) {
            return family.to_owned();
        }
    }
    if id == "rhel" || like.contains("rhel") {
        return "fedora".to_owned();
    }
    id
}

/// Whether a Debian package is installed.
pub fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"ii"))
}

/// `systemctl <verb> <units…>`.
pub fn systemctl(verb: &str, units: &[&str]) -> Result<(), AgentError> {
    let mut argv = vec!["systemctl", verb];
    argv.extend_from_slice(units);
    run(&argv, None).map(drop)
}
