//! Running generators' scripts: `bash -euo pipefail script` with a minimal environment
//! (`PATH`, `HOME`, `LANG`, `out`, `in`, `prompts`), inside bubblewrap without network, other
//! namespaces or the host file system beyond the read-only system directories — or, with
//! `--no-sandbox`, unconfined.
//!
//! Each worker of a run owns a `Runner`: private scratch space on tmpfs (so script inputs
//! and outputs, secrets among them, never reach a disk) holding one directory per job. Scratch
//! lives in a per-user `0700` directory (`$XDG_RUNTIME_DIR/clan` or `/dev/shm/clan-<uid>`,
//! refused when it is a link or someone else's); each run's space in it is `0700` and
//! `flock`ed while the run lives, so the next run removes what a killed one left. Scripts run
//! under umask `077`, and are killed when they exceed their generator's `timeout`. With
//! bubblewrap, the runner starts one sandbox and runs its jobs in it one after another; between
//! jobs every process left in the sandbox is killed and its `/tmp` emptied. Setting up a
//! sandbox costs as much as a small script, so one per worker instead of one per script is
//! what keeps `vars generate` near the speed of running the scripts bare.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use clan_fs::{Kind, Tree};
use rand::RngCore as _;

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

/// Where a sandbox sees the worker's scratch space (wherever it is on the host: below the
/// host's `/tmp` it would sit in the sandbox's `/tmp`, which is emptied between jobs).
const SANDBOX_SCRATCH: &str = "/run/clan-scratch";

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

/// A run's scratch space: `run-<pid>-<random>` (0700) in the user's scratch directory,
/// locked while this process lives. Removed when dropped.
struct Scratch {
    parent: Tree,
    name: String,
    tree: Tree,
}

impl Scratch {
    fn new() -> Result<Scratch, Error> {
        let parent = scratch_parent()?;
        remove_stale(&parent);
        let id = format!(
            "{}-{:016x}",
            std::process::id(),
            rand::rngs::OsRng.next_u64()
        );
        // Locked under a name no cleaner looks at, then given its `run-` name: another run's
        // cleanup never sees it unlocked.
        let new = format!(".new-{id}");
        let name = format!("run-{id}");
        let tree = parent.create_dir_all(Path::new(&new), 0o700)?;
        rustix::fs::flock(&tree, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|errno| clan_error::io("lock", tree.path())(errno.into()))?;
        parent.rename(Path::new(&new), Path::new(&name))?;
        let tree = tree.shown_as(parent.path().join(&name));
        identity_files(&tree)?;
        Ok(Scratch { parent, name, tree })
    }

    fn path(&self) -> &Path {
        self.tree.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.parent.remove_all(Path::new(&self.name));
    }
}

/// The user's own scratch directory (see the module documentation).
fn scratch_parent() -> Result<Tree, Error> {
    let uid = rustix::process::getuid().as_raw();
    let private_to_us = |tree: &Tree| {
        rustix::fs::fstat(tree).is_ok_and(|st| st.st_uid == uid && st.st_mode & 0o077 == 0)
    };
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .and_then(|dir| Tree::open(dir).ok())
        .filter(private_to_us);
    let (base, name) = match runtime {
        Some(base) => (base, "clan".to_owned()),
        None => {
            let shm = Tree::open("/dev/shm").or_else(|_| Tree::open(std::env::temp_dir()))?;
            (shm, format!("clan-{uid}"))
        }
    };
    let parent = base.create_dir_all(Path::new(&name), 0o700)?;
    if !private_to_us(&parent) {
        return Err(Error::UnsafeScratch {
            path: parent.path().to_path_buf(),
        });
    }
    Ok(parent)
}

/// Removes the scratch spaces of runs that died (their lock is free).
fn remove_stale(parent: &Tree) {
    let Ok(entries) = parent.list(Path::new("")) else {
        return;
    };
    for entry in entries {
        let name = Path::new(&entry.name);
        if entry.kind != Kind::Directory || !entry.name.to_string_lossy().starts_with("run-") {
            continue;
        }
        let Ok(space) = parent.subtree(name) else {
            continue;
        };
        let free = rustix::fs::flock(&space, rustix::fs::FlockOperation::NonBlockingLockExclusive);
        if free.is_ok() {
            let _ = parent.remove_all(name);
        }
    }
}

/// Sets the process umask to `077` while it lives (scripts and everything they create
/// inherit it), then restores the previous one.
pub(crate) struct PrivateUmask(rustix::fs::Mode);

impl PrivateUmask {
    pub(crate) fn set() -> PrivateUmask {
        PrivateUmask(rustix::process::umask(rustix::fs::Mode::from_raw_mode(
            0o077,
        )))
    }
}

impl Drop for PrivateUmask {
    fn drop(&mut self) {
        rustix::process::umask(self.0);
    }
}

/// One job's directory: `in/`, `out/`, `prompts/` and the script (all 0700/0600). Removed
/// when dropped.
pub(crate) struct Job {
    dir: PathBuf,
    tree: Tree,
    scratch: Tree,
    name: String,
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

    /// Writes the new file `rel` (relative to the job directory), mode 0600.
    pub(crate) fn write(&self, rel: &Path, content: &[u8]) -> Result<(), Error> {
        Ok(self.tree.write_new(rel, content, 0o600)?)
    }

    /// Creates the directory `rel` (relative to the job directory), mode 0700.
    pub(crate) fn create_dir(&self, rel: &Path) -> Result<(), Error> {
        self.tree.create_dir_all(rel, 0o700)?;
        Ok(())
    }

    /// `out/`, as the script left it: a link there (or anywhere in the job) is an error.
    pub(crate) fn outputs(&self) -> Result<Tree, clan_fs::Error> {
        self.tree.subtree(Path::new("out"))
    }

    /// The script's standard error, as much as is readable of it.
    fn stderr(&self) -> String {
        let bytes = self
            .tree
            .read(Path::new("stderr"), 1 << 20)
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.scratch.remove_all(Path::new(&self.name));
    }
}

/// How a script ended.
pub(crate) struct Finished {
    pub success: bool,
    /// It ran longer than its timeout and was killed.
    pub timed_out: bool,
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
    scratch: Option<Scratch>,
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
    pub(crate) fn job(&mut self) -> Result<Job, Error> {
        let scratch = match &self.scratch {
            Some(scratch) => scratch,
            None => self.scratch.insert(Scratch::new()?),
        };
        self.jobs += 1;
        let name = self.jobs.to_string();
        let tree = scratch.tree.create_dir_all(Path::new(&name), 0o700)?;
        let job = Job {
            dir: scratch.path().join(&name),
            tree,
            scratch: scratch.tree.try_clone()?,
            name,
        };
        for dir in ["in", "out", "prompts"] {
            job.create_dir(Path::new(dir))?;
        }
        Ok(job)
    }

    /// Runs `job`'s `script` file with `tools` (names and resolved paths) reachable on
    /// `PATH` under their names; kills it after `timeout`.
    pub(crate) fn run(
        &mut self,
        job: &Job,
        tools: &[(String, PathBuf)],
        timeout: Duration,
    ) -> std::io::Result<Finished> {
        // A tool whose file has another name (`clan` when this program is, say, a test
        // build) is reached through a link named after it.
        let aliases = Path::new("tools");
        let scratch_root = job.dir().parent().expect("jobs live in the scratch dir");
        let sandboxed = matches!(self.confinement, Confinement::Bubblewrap(_));
        // A scratch path as the script sees it.
        let seen = |path: &Path| match (sandboxed, path.strip_prefix(scratch_root)) {
            (true, Ok(relative)) => Path::new(SANDBOX_SCRATCH).join(relative),
            _ => path.to_path_buf(),
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (name, tool) in tools {
            let named = tool.file_name().is_some_and(|file| file == name.as_str());
            if named || name.contains('/') {
                dirs.extend(tool.parent().map(Path::to_path_buf));
                continue;
            }
            let scratch = &self
                .scratch
                .as_ref()
                .expect("jobs come from the scratch")
                .tree;
            let alias = aliases.join(name);
            if scratch
                .kind(&alias)
                .map_err(std::io::Error::other)?
                .is_none()
            {
                scratch
                    .create_dir_all(aliases, 0o700)
                    .and_then(|_| scratch.symlink(tool, &alias))
                    .map_err(std::io::Error::other)?;
            }
            dirs.insert(0, seen(&scratch.path().join(aliases)));
        }
        let path = search_path(&dirs);
        match self.confinement {
            Confinement::None => {
                let mut child = Command::new(self.bash)
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
                    .stderr(Stdio::piped())
                    // Its own group, so that a timeout kills what it started too.
                    .process_group(0)
                    .spawn()?;
                let mut stderr_pipe = child.stderr.take().expect("piped");
                let reader = std::thread::spawn(move || {
                    let mut stderr = Vec::new();
                    let _ = stderr_pipe.read_to_end(&mut stderr);
                    stderr
                });
                let pid = rustix::process::Pid::from_child(&child);
                let ended =
                    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
                        Ok(pidfd) => wait_readable(&pidfd, timeout)?,
                        // No pidfd (kernels before 5.3): no timeout either.
                        Err(_) => true,
                    };
                if !ended {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let status = child.wait()?;
                let stderr = reader.join().unwrap_or_default();
                Ok(Finished {
                    success: ended && status.success(),
                    timed_out: !ended,
                    status: status.to_string(),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
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
                let mut request = seen(job.dir()).into_os_string();
                request.push("\n");
                request.push(&path);
                request.push("\n");
                let mut reply = String::new();
                let sent = sandbox
                    .requests
                    .write_all(request.as_encoded_bytes())
                    .and_then(|()| sandbox.requests.flush());
                let ended = match sent {
                    Ok(()) if sandbox.replies.buffer().is_empty() => {
                        wait_readable(sandbox.replies.get_ref(), timeout)?
                    }
                    _ => true,
                };
                if !ended {
                    // Killing the sandbox kills everything in it.
                    self.sandbox = None;
                    return Ok(Finished {
                        success: false,
                        timed_out: true,
                        status: "killed after its timeout".into(),
                        stderr: job.stderr(),
                    });
                }
                let answered = sent.and_then(|()| sandbox.replies.read_line(&mut reply));
                let stderr = job.stderr();
                let code = match answered {
                    Ok(_) => reply.trim().parse::<i32>().ok(),
                    Err(_) => None,
                };
                let Some(code) = code else {
                    // The script killed the sandbox (or it died): start a new one next time.
                    self.sandbox = None;
                    return Ok(Finished {
                        success: false,
                        timed_out: false,
                        status: "the sandbox ended while the script ran".into(),
                        stderr,
                    });
                };
                Ok(Finished {
                    success: code == 0,
                    timed_out: false,
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
            .arg(SANDBOX_SCRATCH)
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

/// Waits until `fd` is readable (a reply, or a process's end on its pidfd); `false` when
/// `timeout` passed first.
fn wait_readable(fd: impl AsFd, timeout: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = rustix::event::Timespec {
            tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: left.subsec_nanos().into(),
        };
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&left)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
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
fn identity_files(scratch: &Tree) -> Result<(), Error> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let passwd = format!("clan:x:{uid}:{gid}:clan vars:/tmp:/bin/sh\n");
    scratch.write_new(Path::new("passwd"), passwd.as_bytes(), 0o600)?;
    let group = format!("clan:x:{gid}:\n");
    scratch.write_new(Path::new("group"), group.as_bytes(), 0o600)?;
    Ok(())
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
