//! The host tools the harness drives (`ip`, `systemd-nspawn`, `ssh-keygen`) on top of
//! `clan-host`'s runner, and looking at or signalling processes by PID.

use std::ffi::OsStr;
use std::path::Path;

pub(crate) use clan_host::{command, describe, is_root, require, run, Tool};

use crate::error::Result;

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
pub(crate) const SETSID: Tool = Tool {
    name: "setsid",
    package: "util-linux",
};

/// Every program a testbed runs on the host, building its root filesystem included.
pub const HOST_TOOLS: &[Tool] = &[IP, NSPAWN, SSH_KEYGEN, SSH, SETSID, clan_host::DEBOOTSTRAP];

/// Runs `ip ARGS…`.
pub(crate) fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Ok(run(command(IP).args(args))?)
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
