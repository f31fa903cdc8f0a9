//! Running the host tools the harness drives (`ip`, `ssh-keygen`, `debootstrap`) from argv
//! vectors, and looking at or signalling processes by PID.
//!
//! Never builds shell strings; every failure names the command and carries its stderr.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// A host program the harness needs, and the Debian package providing it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

pub(crate) const IP: Tool = Tool {
    name: "ip",
    package: "iproute2",
};
pub(crate) const NSPAWN: Tool = Tool {
    name: "systemd-nspawn",
    package: "systemd-container",
};
pub(crate) const SSH_KEYGEN: Tool = Tool {
    name: "ssh-keygen",
    package: "openssh-client",
};
pub(crate) const SSH: Tool = Tool {
    name: "ssh",
    package: "openssh-client",
};
pub(crate) const DEBOOTSTRAP: Tool = Tool {
    name: "debootstrap",
    package: "debootstrap",
};
pub(crate) const SETSID: Tool = Tool {
    name: "setsid",
    package: "util-linux",
};

/// Every program a testbed runs on the host, building its root filesystem included.
pub const HOST_TOOLS: &[Tool] = &[IP, NSPAWN, SSH_KEYGEN, SSH, SETSID, DEBOOTSTRAP];

/// Where `debian-archive-keyring` puts the key `debootstrap` checks the archive with.
const ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The Debian packages that would provide the missing ones among `tools` (and the archive
/// keyring a root filesystem build needs), each once, in order.
pub fn missing_packages(tools: &[Tool]) -> Vec<&'static str> {
    let mut packages = Vec::new();
    let keyring = (!Path::new(ARCHIVE_KEYRING).is_file()).then_some("debian-archive-keyring");
    let missing = tools.iter().filter(|tool| find(tool.name).is_none());
    for package in missing.map(|tool| tool.package).chain(keyring) {
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    packages
}

/// Installs `packages` from the distribution's archive with `apt-get` (root only).
pub fn install_packages(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(Error::NotRoot);
    }
    run(Command::new("apt-get")
        .args(["-qq", "update"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["-qq", "install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// Fails with an install hint when `tool` is not on `PATH` (or in the sbin directories, which
/// a non-login root shell may lack).
pub(crate) fn require(tool: Tool) -> Result<()> {
    if find(tool.name).is_some() {
        Ok(())
    } else {
        Err(Error::ToolMissing {
            tool: tool.name,
            package: tool.package,
        })
    }
}

fn find(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A `Command` for `tool`, by absolute path when found (so sbin tools work from any `PATH`).
pub fn command(tool: Tool) -> Command {
    match find(tool.name) {
        Some(path) => Command::new(path),
        None => Command::new(tool.name),
    }
}

/// Renders a command for error messages.
pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` to completion; a non-zero exit is an error carrying its stderr.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: describe(command),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: describe(command),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs `ip ARGS…`.
pub(crate) fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(command(IP).args(args))
}

/// Whether `pid` is a live (not zombie) process whose command line contains every one of
/// `markers`; guards against signalling a recycled PID.
pub(crate) fn is_alive(pid: u32, markers: &[String]) -> bool {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // The state letter follows the parenthesised command name, which may itself hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X") | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    let words: Vec<String> = cmdline
        .split(|byte| *byte == 0)
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    markers
        .iter()
        .all(|marker| words.iter().any(|word| word.contains(marker)))
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub(crate) fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // ESRCH only means it exited meanwhile, which is what the caller wants anyway.
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Whether the current process runs as root.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
