//! The host programs the runner drives (QEMU, `qemu-img`, `mkfs.ext4`, `ssh-keygen`), run
//! from argv vectors through `clan-host`'s runner; only the lookup is the runner's own.

use std::process::Command;

pub use clan_host::Tool;

use crate::error::Result;

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

/// Fails with what to install when `tool` is not on `PATH`. Only `PATH`, unlike the
/// host runner's lookup: with it a user (and the test of a host without QEMU) decides which QEMU
/// runs.
pub fn require(tool: Tool) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join(tool.name).is_file()) {
        Ok(())
    } else {
        Err(clan_host::Error::ToolMissing {
            tool: tool.name,
            package: tool.package,
        }
        .into())
    }
}

pub fn command(tool: Tool) -> Command {
    clan_host::command(tool)
}

/// Runs `command` to completion; a non-zero exit is an error carrying its stderr.
pub fn run(command: &mut Command) -> Result<()> {
    clan_host::run(command)?;
    Ok(())
}
