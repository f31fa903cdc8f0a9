//! The one host setting a testbed may change: the number of inotify instances per user.
//!
//! Every container runs as host root, and systemd, journald, logind and dbus in each take
//! inotify instances from root's shared budget; Debian's default of 128 runs out at about
//! 20 machines ("Failed to allocate manager object: Too many open files"). The limit is only
//! ever raised, and the caller is told.

use std::fs;

use crate::error::Result;

const INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

/// Instances a testbed of `machines` needs, with room for the host's own.
fn instances_required(machines: usize) -> u64 {
    256 + 16 * machines as u64
}

/// Raises `fs.inotify.max_user_instances` if it is too low for `machines` more containers.
pub(crate) fn ensure_inotify_instances(machines: usize, progress: fn(&str)) -> Result<()> {
    let text = fs::read_to_string(INSTANCES).map_err(clan_error::io("read", INSTANCES))?;
    let current: u64 = text.trim().parse().unwrap_or(0);
    let required = instances_required(machines);
    if current >= required {
        return Ok(());
    }
    // Round up, so small testbeds started side by side do not each raise it a little.
    let needed = required.max(1024);
    fs::write(INSTANCES, needed.to_string())
        .map_err(clan_error::io("raise the inotify limit in", INSTANCES))?;
    progress(&format!(
        "raised fs.inotify.max_user_instances from {current} to {needed} for a testbed of {machines} machines"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_grows_with_the_fleet() {
        assert!(instances_required(3) <= 1024);
        assert_eq!(instances_required(50), 1056);
    }
}
