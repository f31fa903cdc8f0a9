//! Running a generator's script: `bash -euo pipefail script` with a cleared environment
//! (`PATH`, `HOME`, `out`, `in`, `prompts` only), inside bubblewrap without network, other
//! namespaces or the host file system beyond the read-only system directories — or, with
//! `--no-sandbox`, unconfined. The work directory holds the script's inputs and `$out`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

    /// Runs `bash -euo pipefail <work>/script` with `env`, with `tools` (resolved paths)
    /// reachable on `PATH`. `work` must contain `passwd` and `group` files for the sandbox.
    pub(crate) fn run(
        &self,
        bash: &Path,
        work: &Path,
        tools: &[PathBuf],
        env: &[(&str, OsString)],
    ) -> std::io::Result<Output> {
        let mut path_dirs: Vec<PathBuf> = Vec::new();
        for tool in tools {
            if let Some(dir) = tool.parent() {
                if !path_dirs.iter().any(|d| d == dir) {
                    path_dirs.push(dir.to_path_buf());
                }
            }
        }
        for dir in ["/usr/bin", "/bin"] {
            if !path_dirs.iter().any(|d| d == Path::new(dir)) {
                path_dirs.push(dir.into());
            }
        }
        let path = std::env::join_paths(&path_dirs).unwrap_or_default();
        let script = work.join("script");
        let (mut command, home) = match self {
            Confinement::None => (Command::new(bash), work),
            Confinement::Bubblewrap(bwrap) => {
                let mut command = Command::new(bwrap);
                command.args(["--unshare-all", "--die-with-parent", "--new-session"]);
                let covered = |dir: &Path| SYSTEM_DIRS.iter().any(|s| dir.starts_with(s));
                let extra = path_dirs.iter().filter(|dir| !covered(dir));
                for dir in SYSTEM_DIRS
                    .iter()
                    .map(Path::new)
                    .chain(extra.map(PathBuf::as_path))
                {
                    command.arg("--ro-bind-try").arg(dir).arg(dir);
                }
                command
                    .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
                    .arg("--ro-bind")
                    .arg(work.join("passwd"))
                    .arg("/etc/passwd")
                    .arg("--ro-bind")
                    .arg(work.join("group"))
                    .arg("/etc/group")
                    .arg("--bind")
                    .arg(work)
                    .arg(work)
                    .arg("--chdir")
                    .arg(work)
                    .arg("--")
                    .arg(bash);
                (command, Path::new("/tmp"))
            }
        };
        command
            .env_clear()
            .env("HOME", home)
            .args(["-euo", "pipefail"])
            .arg(&script)
            .current_dir(work)
            .env("PATH", path)
            .env("LANG", "C.UTF-8")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        command.output()
    }
}

/// The `passwd` and `group` files the sandbox sees, naming only the current user, so that
/// tools that look themselves up (ssh-keygen) work.
pub(crate) fn identity_files(work: &Path) -> std::io::Result<()> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    std::fs::write(
        work.join("passwd"),
        format!("clan:x:{uid}:{gid}:clan vars:/tmp:/bin/sh\n"),
    )?;
    std::fs::write(work.join("group"), format!("clan:x:{gid}:\n"))
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
