//! One test machine's container: the files seeded into its overlay before first boot, the
//! `systemd-nspawn` command line, and waiting until its sshd answers.
//!
//! Each machine's writes go to its own overlay upper directory in the state directory, so they
//! survive a stop/start (like a reboot) and never reach the shared root filesystem.

use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::{self, NSPAWN, SETSID};
use crate::{ssh, Machine};

/// Writes a machine's identity into its empty overlay `upper`: hostname, machine id, hosts
/// file, root's authorized key and a fresh host key. Returns the host's public key.
pub(crate) fn seed_upper(
    upper: &Path,
    name: &str,
    admin_public_key: &str,
    hosts: &str,
) -> Result<String> {
    for (dir, mode) in [
        ("", 0o755),
        ("etc", 0o755),
        ("etc/ssh", 0o755),
        ("root", 0o700),
        ("root/.ssh", 0o700),
    ] {
        let path = upper.join(dir);
        fs::create_dir_all(&path).map_err(clan_error::io("create", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(clan_error::io("set the mode of", &path))?;
    }
    let machine_id = random_hex()?;
    for (file, content, mode) in [
        ("etc/hostname", format!("{name}\n"), 0o644),
        ("etc/machine-id", format!("{machine_id}\n"), 0o444),
        ("etc/hosts", hosts.to_owned(), 0o644),
        (
            "root/.ssh/authorized_keys",
            format!("{admin_public_key}\n"),
            0o600,
        ),
    ] {
        let path = upper.join(file);
        write_with_mode(&path, &content, mode)?;
    }
    let host_key = upper.join("etc/ssh/ssh_host_ed25519_key");
    ssh::generate_key(&host_key, &format!("root@{name}"))?;
    ssh::public_key(&host_key)
}

fn write_with_mode(path: &Path, content: &str, mode: u32) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(clan_error::io("create", path))?;
    Ok(file
        .write_all(content.as_bytes())
        .map_err(clan_error::io("write", path))?)
}

/// 128 random bits as 32 lowercase hex digits (a machine id).
fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(clan_error::io("read", "/dev/urandom"))?;
    Ok(hex::encode(bytes))
}

/// `/etc/hosts` for every machine: the fleet by name, plus the host as `testbed-host`.
pub(crate) fn render_hosts(machines: &[Machine], host_address: Ipv4Addr) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let _ = writeln!(text, "{host_address}\ttestbed-host");
    for machine in machines {
        let _ = writeln!(text, "{}\t{}", machine.address, machine.name);
    }
    text
}

/// The container command: boot `rootfs` with writes going to `upper`, inside `netns`, with
/// hostname `name`, with `binds` (host path, machine path) bound read-only. `--register=no
/// --keep-unit` because the host may not run systemd; with `detach` the container gets its
/// own session so it outlives the caller and its terminal.
pub(crate) fn nspawn_command(
    rootfs: &Path,
    upper: &Path,
    netns: &str,
    name: &str,
    detach: bool,
    binds: &[(PathBuf, PathBuf)],
) -> Command {
    let mut command = if detach {
        let mut setsid = process::command(SETSID);
        setsid.arg(process::command(NSPAWN).get_program());
        setsid
    } else {
        process::command(NSPAWN)
    };
    let mut overlay = std::ffi::OsString::from("--overlay=");
    overlay.push(rootfs);
    overlay.push(":");
    overlay.push(upper);
    overlay.push(":/");
    command
        .arg("--quiet")
        .arg("--directory")
        .arg(rootfs)
        .arg(overlay)
        .args([
            "--boot",
            "--register=no",
            "--keep-unit",
            "--link-journal=no",
            "--console=read-only",
        ])
        .args(["--resolv-conf=off", "--timezone=off"])
        // A real machine's root may change its network: firewalls, tunnels, and the network
        // sysctls (IPv6 forwarding on a router); nspawn mounts /proc/sys read-only otherwise.
        .arg("--capability=CAP_NET_ADMIN")
        .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")
        .arg(format!("--network-namespace-path=/run/netns/{netns}"))
        .arg(format!("--machine={name}"));
    for (host, machine) in binds {
        let mut bind = std::ffi::OsString::from("--bind-ro=");
        bind.push(host);
        bind.push(":");
        bind.push(machine);
        command.arg(bind);
    }
    command
}

/// Markers that identify a machine's container process in `/proc/<pid>/cmdline`.
pub(crate) fn process_markers(name: &str) -> [String; 2] {
    ["systemd-nspawn".to_owned(), format!("--machine={name}")]
}

/// Starts the container, its console going to `log` (appended, so restarts keep history).
pub(crate) fn spawn(mut command: Command, log: &Path) -> Result<Child> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(clan_error::io("open", log))?;
    let stderr = file.try_clone().map_err(clan_error::io("open", log))?;
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr)
        .spawn()
        .map_err(|source| {
            clan_host::Error::Spawn {
                command: process::describe(&command),
                source,
            }
            .into()
        })
}

/// Whether an SSH server answers at `address` (it sends its `SSH-` banner first).
fn sshd_answers(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut banner = [0u8; 4];
    stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-"
}

/// Waits until every machine's sshd answers, failing early when `exited` reports that a
/// machine's container ended (it returns the exit status) and at `timeout`.
pub(crate) fn wait_for_sshd(
    machines: &[&Machine],
    timeout: Duration,
    log_dir: &Path,
    mut exited: impl FnMut(&str) -> Option<String>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut waiting: Vec<&Machine> = machines.to_vec();
    loop {
        let mut still = Vec::new();
        for machine in waiting {
            if sshd_answers(SocketAddr::from((machine.address, machine.ssh_port))) {
                continue;
            }
            if let Some(status) = exited(&machine.name) {
                return Err(Error::MachineExited {
                    name: machine.name.clone(),
                    status,
                    log: log_dir.join(format!("{}.log", machine.name)),
                });
            }
            still.push(machine);
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::BootTimeout {
                machines: still.iter().map(|m| m.name.clone()).collect(),
                seconds: timeout.as_secs(),
                log_dir: log_dir.to_path_buf(),
            });
        }
        waiting = still;
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspawn_argv_boots_an_overlay_in_the_namespace() {
        let command = nspawn_command(
            Path::new("/c/root"),
            Path::new("/s/web/upper"),
            "clantb1-m0",
            "web",
            false,
            &[("/root/.cargo/bin/tool".into(), "/usr/local/bin/tool".into())],
        );
        let argv: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(process::describe(&command).contains("systemd-nspawn"));
        for expected in [
            "--overlay=/c/root:/s/web/upper:/",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--network-namespace-path=/run/netns/clantb1-m0",
            "--machine=web",
            "--bind-ro=/root/.cargo/bin/tool:/usr/local/bin/tool",
        ] {
            assert!(
                argv.iter().any(|a| a == expected),
                "missing {expected} in {argv:?}"
            );
        }
    }

    #[test]
    fn detached_containers_run_under_setsid() {
        let command = nspawn_command(Path::new("/r"), Path::new("/u"), "ns", "web", true, &[]);
        assert!(command.get_program().to_string_lossy().ends_with("setsid"));
        let first = command
            .get_args()
            .next()
            .map(|a| a.to_string_lossy().into_owned());
        assert!(first.is_some_and(|program| program.ends_with("systemd-nspawn")));
    }

    #[test]
    fn hosts_file_names_the_fleet_and_the_host() {
        let machines = [Machine {
            name: "web".into(),
            address: Ipv4Addr::new(10, 233, 0, 2),
            ssh_port: 22,
        }];
        let text = render_hosts(&machines, Ipv4Addr::new(10, 233, 0, 1));
        assert!(text.contains("10.233.0.1\ttestbed-host\n"));
        assert!(text.contains("10.233.0.2\tweb\n"));
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
    }
}
