//! Running the host programs the runner drives (QEMU, `qemu-img`, `mkfs.ext4`, `ssh-keygen`)
//! from argv vectors; every failure names the command and carries its stderr.

use std::process::{Command, Output};

use crate::error::{Error, Result};

pub use clan_testbed::Tool;

pub const QEMU: Tool = Tool {
    name: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
pub const QEMU_IMG: Tool = Tool {
    name: "qemu-img",
    package: "qemu-utils",
};
pub const MKFS_EXT4: Tool = Tool {
    name: "mkfs.ext4",
    package: "e2fsprogs",
};
pub const SSH_KEYGEN: Tool = Tool {
    name: "ssh-keygen",
    package: "openssh-client",
};

/// Every program a VM run needs.
pub const TOOLS: &[Tool] = &[QEMU, QEMU_IMG, MKFS_EXT4, SSH_KEYGEN];

/// Where `tool` is on `PATH`. Only `PATH`, unlike the testbed's lookup: a user (and the test
/// of a host without QEMU) decides with it which QEMU runs.
fn find(tool: Tool) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool.name))
        .find(|candidate| candidate.is_file())
}

/// Fails with what to install when `tool` is missing.
pub fn require(tool: Tool) -> Result<()> {
    find(tool).map(|_| ()).ok_or(Error::ToolMissing {
        tool: tool.name,
        package: tool.package,
    })
}

pub fn command(tool: Tool) -> Command {
    Command::new(find(tool).unwrap_or_else(|| tool.name.into()))
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` to completion; a non-zero exit is an error carrying its stderr.
pub fn run(command: &mut Command) -> Result<Output> {
    let output = command.output().map_err(|source| Error::Spawn {
        command: describe(command),
        source,
    })?;
    if !output.status.success() {
        return Err(Error::Command {
            command: describe(command),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}
