//! Running generators' scripts: `bash -euo pipefail script` with a minimal environment
//! (`PATH`, `HOME`, `LANG`, `out`, `in`, `prompts`), inside bubblewrap without network, other
//! namespaces or the host file system beyond the read-only system directories — or, with
//! `--no-sandbox`, unconfined.
//!
//! Each worker of a run owns a `Runner`: private scratch space on tmpfs (so script inputs
//! and outputs, secrets among them, never reach a disk) holding one directory per job. With
//! bubblewrap, the runner starts one sandbox and runs its jobs in it one after another; between
//! jobs every process left in the sandbox is killed and its `/tmp` emptied. Setting up a
//! sandbox costs as much as a small script, so one per worker instead of one per script is
//! what keeps `vars generate` near the speed of running the scripts bare.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::Error;

/// System directories the sandbox sees read-only (when they exist).
const SYSTEM_DIRS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/nix/store",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ssl",
];

/// The program a sandbox runs: reads a job directory and its `PATH` (one line each), runs
/// the job's script with its output in files of the job directory, answers with the exit
/// status, then kills whatever the script left behind (`kill -1` spares the caller and the
/// sandbox's init) and empties `/tmp`.
const SANDBOX_LOOP: &str = r#"
shopt -s nullglob dotglob
while IFS= read -r job && IFS= read -r path; do
  (
    cd "$job" || exit 127
    export PATH="$path" out="$job/out" in="$job/in" prompts="$job/prompts"
    exec "$BASH" -euo pipefail script
  ) </dev/null >"$job/stdout" 2>"$job/stderr"
  echo "$?"
  kill -9 -1 2>/dev/null
  left=(/tmp/*)
  if ((${#left[@]})); then rm -rf -- "${left[@]}"; fi
done
"#;

/// How scripts run.
#[derive(Clone, Debug)]
pub enum Confinement {
    /// Inside bubblewrap, at this path.
    Bubblewrap(PathBuf),
    /// Unconfined (`--no-sandbox`).
    None,
}

/// Finds `program` on the process `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Where a generator's `runtimeInputs` entry is: `clan` is this very program (so generators
/// of the built-in services work however clan was started), anything else is looked up on
/// the process `PATH`.
pub(crate) fn runtime_input(tool: &str) -> Option<PathBuf> {
    if tool == "clan" {
        if let Ok(program) = std::env::current_exe() {
            return Some(program);
        }
    }
    which(tool)
}

impl Confinement {
    /// Bubblewrap when `sandbox`, after checking that it can create its namespaces here.
    pub fn detect(sandbox: bool) -> Result<Confinement, Error> {
        if !sandbox {
            return Ok(Confinement::None);
        }
        let bwrap = which("bwrap").ok_or_else(|| Error::NoSandbox {
            reason: "is not installed".into(),
        })?;
        let probe = Command::new(&bwrap)
            .args(["--unshare-all", "--ro-bind", "/", "/", "true"])
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .map_err(|error| Error::NoSandbox {
                reason: format!("cannot be started: {error}"),
            })?;
        if !probe.status.success() {
            return Err(Error::NoSandbox {
                reason: format!(
                    "cannot create namespaces here: {}",
                    String::from_utf8_lossy(&probe.stderr).trim()
                ),
            });
        }
        Ok(Confinement::Bubblewrap(bwrap))
    }
}

/// The directories of `tools` outside the system directories every sandbox sees.
pub(crate) fn extra_dirs<'a>(tools: impl IntoIterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in tools.into_iter().filter_map(|tool| tool.parent()) {
        let covered = SYSTEM_DIRS.iter().any(|system| dir.starts_with(system));
        if !covered && !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_path_buf());
        }
    }
    dirs
}

/// One job's directory: `in/`, `out/`, `prompts/` and the script. Removed when dropped.
pub(crate) struct Job {
    dir: PathBuf,
}

impl Job {
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
    pub(crate) fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
    pub(crate) fn inputs(&self) -> PathBuf {
        self.dir.join("in")
    }
    pub(crate) fn prompts(&self) -> PathBuf {
        self.dir.join("prompts")
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a script ended.
pub(crate) struct Finished {
    pub success: bool,
    /// "exit status N", or why the sandbox gave no status.
    pub status: String,
    pub stderr: String,
}

/// A long-lived bubblewrap sandbox running [`SANDBOX_LOOP`].
struct Sandbox {
    child: Child,
    requests: ChildStdin,
    replies: BufReader<ChildStdout>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one worker's scripts, one after another (see the module documentation).
pub(crate) struct Runner<'a> {
    confinement: &'a Confinement,
    bash: &'a Path,
    /// Tool directories the sandbox must see besides [`SYSTEM_DIRS`].
    extra_dirs: &'a [PathBuf],
    scratch: Option<tempfile::TempDir>,
    sandbox: Option<Sandbox>,
    jobs: usize,
}

impl<'a> Runner<'a> {
    pub(crate) fn new(
        confinement: &'a Confinement,
        bash: &'a Path,
        extra_dirs: &'a [PathBuf],
    ) -> Self {
        Runner {
            confinement,
            bash,
            extra_dirs,
            scratch: None,
            sandbox: None,
            jobs: 0,
        }
    }

    /// A fresh, empty job directory (with `in/`, `out/` and `prompts/`).
    pub(crate) fn job(&mut self) -> std::io::Result<Job> {
        let scratch = match &self.scratch {
            Some(scratch) => scratch.path(),
            None => {
                let scratch = tempfile::Builder::new()
                    .prefix("clan-vars-")
                    .tempdir_in(scratch_base())?;
                identity_files(scratch.path())?;
                self.scratch.insert(scratch).path()
            }
        };
        self.jobs += 1;
        let job = Job {
            dir: scratch.join(self.jobs.to_string()),
        };
        std::fs::create_dir(&job.dir)?;
        for dir in [job.inputs(), job.out(), job.prompts()] {
            std::fs::create_dir(dir)?;
        }
        Ok(job)
    }

    /// Runs `job`'s `script` file with `tools` (names and resolved paths) reachable on
    /// `PATH` under their names.
    pub(crate) fn run(
        &mut self,
        job: &Job,
        tools: &[(String, PathBuf)],
    ) -> std::io::Result<Finished> {
        // A tool whose file has another name (`clan` when this program is, say, a test
        // build) is reached through a link named after it.
        let scratch = job.dir().parent().expect("jobs live in the scratch dir");
        let aliases = scratch.join("tools");
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (name, tool) in tools {
            let named = tool.file_name().is_some_and(|file| file == name.as_str());
            if named || name.contains('/') {
                dirs.extend(tool.parent().map(Path::to_path_buf));
                continue;
            }
            let alias = aliases.join(name);
            if alias.symlink_metadata().is_err() {
                std::fs::create_dir_all(&aliases)?;
                std::os::unix::fs::symlink(tool, &alias)?;
            }
            dirs.insert(0, aliases.clone());
        }
        let path = search_path(&dirs);
        match self.confinement {
            Confinement::None => {
                let output = Command::new(self.bash)
                    .args(["-euo", "pipefail", "script"])
                    .current_dir(job.dir())
                    .env_clear()
                    .envs(base_env(job.dir()))
                    .env("PATH", &path)
                    .env("out", job.out())
                    .env("in", job.inputs())
                    .env("prompts", job.prompts())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .output()?;
                Ok(Finished {
                    success: output.status.success(),
                    status: output.status.to_string(),
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                })
            }
            Confinement::Bubblewrap(bwrap) => {
                let sandbox = match &mut self.sandbox {
                    Some(sandbox) => sandbox,
                    None => {
                        let scratch = job.dir().parent().expect("jobs live in the scratch dir");
                        let sandbox = self.start(bwrap, scratch)?;
                        self.sandbox.insert(sandbox)
                    }
                };
                let mut request = job.dir().as_os_str().to_owned();
                request.push("\n");
                request.push(&path);
                request.push("\n");
                let mut reply = String::new();
                let answered = sandbox
                    .requests
                    .write_all(request.as_encoded_bytes())
                    .and_then(|()| sandbox.requests.flush())
                    .and_then(|()| sandbox.replies.read_line(&mut reply));
                let stderr = std::fs::read(job.dir().join("stderr")).unwrap_or_default();
                let stderr = String::from_utf8_lossy(&stderr).into_owned();
                let code = match answered {
                    Ok(_) => reply.trim().parse::<i32>().ok(),
                    Err(_) => None,
                };
                let Some(code) = code else {
                    // The script killed the sandbox (or it died): start a new one next time.
                    self.sandbox = None;
                    return Ok(Finished {
                        success: false,
                        status: "the sandbox ended while the script ran".into(),
                        stderr,
                    });
                };
                Ok(Finished {
                    success: code == 0,
                    status: format!("exit status: {code}"),
                    stderr,
                })
            }
        }
    }

    fn start(&self, bwrap: &Path, scratch: &Path) -> std::io::Result<Sandbox> {
        let mut command = Command::new(bwrap);
        command.args(["--unshare-all", "--die-with-parent", "--new-session"]);
        for dir in SYSTEM_DIRS.iter().map(Path::new) {
            command.arg("--ro-bind-try").arg(dir).arg(dir);
        }
        command.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        // After the fresh /tmp, which would hide a tool directory below it.
        for dir in self.extra_dirs {
            command.arg("--ro-bind-try").arg(dir).arg(dir);
        }
        command
            .arg("--ro-bind")
            .arg(scratch.join("passwd"))
            .arg("/etc/passwd")
            .arg("--ro-bind")
            .arg(scratch.join("group"))
            .arg("/etc/group")
            .arg("--bind")
            .arg(scratch)
            .arg(scratch)
            .arg("--chdir")
            .arg("/tmp")
            .arg("--")
            .arg(self.bash)
            .args(["-c", SANDBOX_LOOP])
            .env_clear()
            .envs(base_env(Path::new("/tmp")))
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn()?;
        let requests = child.stdin.take().expect("piped");
        let replies = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Sandbox {
            child,
            requests,
            replies,
        })
    }
}

/// Where scratch space goes: a tmpfs when there is one, so secrets stay in memory.
fn scratch_base() -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    runtime
        .into_iter()
        .chain([PathBuf::from("/dev/shm")])
        .find(|dir| dir.is_absolute() && dir.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// `PATH` for a script: its tools' directories, then `/usr/bin` and `/bin`.
fn search_path(tool_dirs: &[PathBuf]) -> OsString {
    let mut dirs: Vec<&Path> = Vec::new();
    for dir in tool_dirs
        .iter()
        .map(PathBuf::as_path)
        .chain([Path::new("/usr/bin"), Path::new("/bin")])
    {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

fn base_env(home: &Path) -> [(&'static str, OsString); 2] {
    [("HOME", home.into()), ("LANG", "C.UTF-8".into())]
}

/// The `passwd` and `group` files the sandbox sees, naming only the current user, so that
/// tools that look themselves up (ssh-keygen) work.
fn identity_files(scratch: &Path) -> std::io::Result<()> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    std::fs::write(
        scratch.join("passwd"),
        format!("clan:x:{uid}:{gid}:clan vars:/tmp:/bin/sh\n"),
    )?;
    std::fs::write(scratch.join("group"), format!("clan:x:{gid}:\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_bash() {
        assert!(which("bash").is_some());
        assert!(which("surely-no-such-tool-here").is_none());
    }
}
