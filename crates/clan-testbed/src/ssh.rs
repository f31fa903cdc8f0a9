//! The SSH side of a testbed: the admin key pair, each machine's host key, and the
//! `ssh_config` and `known_hosts` files that let any code run `ssh -F <config> <machine>`.
//!
//! Keys are made by `ssh-keygen` (private keys 0600). The `ssh_config` leaves host-key policy
//! to whoever connects, as a user's own `~/.ssh/config` would; its `known_hosts` is the
//! testbed's stand-in for the user's. Never touches the user's own `~/.ssh`.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::error::Result;
use crate::process::{self, SSH_KEYGEN};
use crate::Machine;

/// Generates an ed25519 key pair at `path` and `path.pub`, replacing any old one.
pub(crate) fn generate_key(path: &Path, comment: &str) -> Result<()> {
    for old in [path.to_path_buf(), public_path(path)] {
        if old.exists() {
            fs::remove_file(&old).map_err(clan_error::io("remove the old key", &old))?;
        }
    }
    process::run(
        process::command(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    )?;
    Ok(())
}

/// `path.pub`, where `ssh-keygen` puts the public half of the key at `path`.
fn public_path(path: &Path) -> std::path::PathBuf {
    let mut public = path.as_os_str().to_owned();
    public.push(".pub");
    public.into()
}

/// The public half of the key pair at `path`, as one `ssh-ed25519 … comment` line.
pub(crate) fn public_key(path: &Path) -> Result<String> {
    let public = public_path(path);
    let text = fs::read_to_string(&public).map_err(clan_error::io("read", &public))?;
    Ok(text.trim().to_owned())
}

/// An `ssh_config` for `machines`: one `Host` alias per machine name, and the shared settings
/// for those aliases and for the machines' addresses (so `root@<ip>` targets work too).
pub(crate) fn render_config(machines: &[Machine], identity: &Path, known_hosts: &Path) -> String {
    let mut text = String::from("# Written by clan-testbed. Use: ssh -F <this file> <machine>\n");
    for machine in machines {
        let _ = writeln!(
            text,
            "Host {}\n  HostName {}",
            machine.name, machine.address
        );
    }
    let patterns: Vec<String> = machines
        .iter()
        .flat_map(|m| [m.name.clone(), m.address.to_string()])
        .collect();
    let _ = write!(
        text,
        "Host {}\n  User root\n  Port 22\n  IdentityFile \"{}\"\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile \"{}\"\n  KexAlgorithms curve25519-sha256\n  ConnectTimeout 5\n  \
         LogLevel ERROR\n",
        patterns.join(" "),
        identity.display(),
        known_hosts.display(),
    );
    text
}

/// `known_hosts` lines: each machine's host key under its name and its address.
pub(crate) fn render_known_hosts(entries: &[(&Machine, String)]) -> String {
    entries
        .iter()
        .map(|(machine, host_key)| {
            // Drop the key comment: known_hosts wants `names type base64`.
            let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
            format!("{},{} {}\n", machine.name, machine.address, key.join(" "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn machine(name: &str, last: u8) -> Machine {
        Machine {
            name: name.into(),
            address: Ipv4Addr::new(10, 233, 1, last),
            ssh_port: 22,
        }
    }

    #[test]
    fn config_has_aliases_and_shared_settings() {
        let machines = [machine("web01", 2), machine("db", 3)];
        let text = render_config(
            &machines,
            Path::new("/s d/id_ed25519"),
            Path::new("/s d/known_hosts"),
        );
        assert!(text.contains("Host web01\n  HostName 10.233.1.2\n"));
        assert!(text.contains("Host db\n  HostName 10.233.1.3\n"));
        assert!(text.contains("Host web01 10.233.1.2 db 10.233.1.3\n  User root\n"));
        assert!(text.contains("  IdentityFile \"/s d/id_ed25519\"\n"));
        assert!(text.contains("  UserKnownHostsFile \"/s d/known_hosts\"\n"));
        assert!(
            !text.contains("StrictHostKeyChecking"),
            "left to the caller"
        );
        assert!(!text.contains("BatchMode"), "a prompt must stay possible");
        assert!(text.contains("  KexAlgorithms curve25519-sha256\n"));
    }

    #[test]
    fn known_hosts_lines_drop_the_comment() {
        let web = machine("web01", 2);
        let text = render_known_hosts(&[(&web, "ssh-ed25519 AAAAC3Nz root@web01".into())]);
        assert_eq!(text, "web01,10.233.1.2 ssh-ed25519 AAAAC3Nz\n");
    }
}
