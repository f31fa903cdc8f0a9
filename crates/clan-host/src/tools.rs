//! Running the host tools clan drives (`debootstrap`, `qemu-img`, `ip`, …) from argv vectors,
//! and the Debian packages that provide them. Never builds shell strings; every failure names
//! the command and carries its stderr.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// A host program clan needs, and the Debian package providing it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

/// What builds the root filesystem.
pub const DEBOOTSTRAP: Tool = Tool {
    name: "debootstrap",
    package: "debootstrap",
};

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
pub fn require(tool: Tool) -> Result<()> {
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
pub fn describe(command: &Command) -> String {
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

/// Whether the current process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
