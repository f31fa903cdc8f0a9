//! A private Tor network for tests, offline: three directory authorities (their keys made
//! with `tor-gencert` when the network starts) and two relays, every one a `tor` process of
//! this harness run inside one test network namespace at one address, with
//! `TestingTorNetwork 1`, `AssumeReachable 1` and 10 s voting intervals. Clients and onion
//! services join it with [`TorNetwork::client_config`]. Each tor exits by itself when the
//! harness process dies (`__OwningControllerProcess`); [`Drop`] stops them first.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::{self, Tool, IP};

pub(crate) const TOR: Tool = Tool {
    name: "tor",
    package: "tor",
};
pub(crate) const TOR_GENCERT: Tool = Tool {
    name: "tor-gencert",
    package: "tor",
};

const AUTHORITIES: u16 = 3;
const RELAYS: u16 = 2;
/// ORPorts from here, DirPorts from here + 100.
const FIRST_PORT: u16 = 5000;

/// What every member of the network, and every client of it, is configured with.
const TESTING: &str = "TestingTorNetwork 1\n\
    PathsNeededToBuildCircuits 0.67\n";

/// What the routers of the network add: reachability assumed, every flag voted to everyone.
const ROUTER: &str = "AssumeReachable 1\n\
    TestingDirAuthVoteExit *\n\
    TestingDirAuthVoteHSDir *\n\
    TestingDirAuthVoteGuard *\n\
    TestingMinExitFlagThreshold 0\n\
    ExitRelay 1\n\
    ExitPolicyRejectPrivate 0\n\
    ExitPolicy accept 10.233.0.0/16:*\n\
    ExitPolicy reject *:*\n\
    SocksPort 0\n\
    ShutdownWaitLength 0\n";

/// What the authorities add: votes every 10 s.
const AUTHORITY: &str = "AuthoritativeDirectory 1\n\
    V3AuthoritativeDirectory 1\n\
    V3AuthVotingInterval 10\n\
    V3AuthVoteDelay 2\n\
    V3AuthDistDelay 2\n\
    TestingV3AuthInitialVotingInterval 10\n\
    TestingV3AuthInitialVoteDelay 2\n\
    TestingV3AuthInitialDistDelay 2\n";

/// A running private Tor network.
#[derive(Debug)]
pub struct TorNetwork {
    dir: PathBuf,
    routers: Vec<(String, Child)>,
    client_config: String,
}

impl TorNetwork {
    /// Makes the authorities' keys and starts the routers in `netns` at `address` (one of
    /// the namespace's own), each with a data directory under `dir`.
    pub fn start(dir: &Path, netns: &str, address: Ipv4Addr) -> Result<TorNetwork> {
        [IP, TOR, TOR_GENCERT]
            .into_iter()
            .try_for_each(process::require)?;
        fs::create_dir_all(dir).map_err(clan_error::io("create", dir))?;
        let names: Vec<String> = (0..AUTHORITIES)
            .map(|i| format!("auth{i}"))
            .chain((0..RELAYS).map(|i| format!("relay{i}")))
            .collect();
        let mut authority_lines = String::new();
        for (index, name) in (0u16..).zip(&names).take(usize::from(AUTHORITIES)) {
            let data = router_dir(dir, name)?;
            let keys = data.join("keys");
            fs::create_dir_all(&keys).map_err(clan_error::io("create", &keys))?;
            let dir_port = FIRST_PORT + 100 + index;
            let mut gencert = process::command(TOR_GENCERT);
            gencert
                .args(["--create-identity-key", "--passphrase-fd", "0", "-m", "12"])
                .arg("-a")
                .arg(format!("{address}:{dir_port}"))
                .arg("-i")
                .arg(keys.join("authority_identity_key"))
                .arg("-s")
                .arg(keys.join("authority_signing_key"))
                .arg("-c")
                .arg(keys.join("authority_certificate"));
            run_with_input(&mut gencert, b"\n")?;
            let certificate = keys.join("authority_certificate");
            let text =
                fs::read_to_string(&certificate).map_err(clan_error::io("read", &certificate))?;
            let v3ident = text
                .lines()
                .find_map(|line| line.strip_prefix("fingerprint "))
                .map(str::trim)
                .ok_or_else(|| failed(format!("no fingerprint in {}", certificate.display())))?
                .to_owned();
            let fingerprint = relay_fingerprint(&data)?;
            let _ = writeln!(
                authority_lines,
                "DirAuthority {name} orport={} no-v2 v3ident={v3ident} {address}:{dir_port} {fingerprint}",
                FIRST_PORT + index
            );
        }
        let client_config = format!("{TESTING}{authority_lines}");
        let mut network = TorNetwork {
            dir: dir.to_owned(),
            routers: Vec::new(),
            client_config,
        };
        let owner = std::process::id();
        for (index, name) in (0u16..).zip(&names) {
            let data = router_dir(dir, name)?;
            let mut torrc = format!(
                "Nickname {name}\nDataDirectory {}\nAddress {address}\nORPort {address}:{}\n\
                 Log notice file {}\nContactInfo {name}@clan-testbed\n__OwningControllerProcess {owner}\n\
                 {}{ROUTER}",
                data.display(),
                FIRST_PORT + index,
                data.join("notice.log").display(),
                network.client_config,
            );
            if index < AUTHORITIES {
                let _ = write!(
                    torrc,
                    "DirPort {address}:{}\n{AUTHORITY}",
                    FIRST_PORT + 100 + index
                );
            }
            let torrc_path = data.join("torrc");
            fs::write(&torrc_path, torrc).map_err(clan_error::io("write", &torrc_path))?;
            let mut command = process::command(IP);
            command
                .args(["netns", "exec", netns])
                .arg(process::command(TOR).get_program())
                .arg("-f")
                .arg(&torrc_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = command.spawn().map_err(|source| clan_host::Error::Spawn {
                command: process::describe(&command),
                source,
            })?;
            network.routers.push((name.clone(), child));
        }
        Ok(network)
    }

    /// The torrc lines that put a client or an onion service on this network.
    pub fn client_config(&self) -> &str {
        &self.client_config
    }

    /// Waits until an authority has published a consensus in which every router of the
    /// network runs and can be an onion service directory: then clients can bootstrap.
    pub fn wait_for_consensus(&mut self, timeout: Duration) -> Result<()> {
        let total = usize::from(AUTHORITIES + RELAYS);
        let start = Instant::now();
        loop {
            for (name, child) in &mut self.routers {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(failed(format!(
                        "{name} exited ({status}); see {}",
                        self.dir.join(&*name).join("notice.log").display()
                    )));
                }
            }
            let ready = (0..AUTHORITIES).any(|index| {
                let consensus = self
                    .dir
                    .join(format!("auth{index}"))
                    .join("cached-microdesc-consensus");
                fs::read_to_string(consensus).is_ok_and(|text| {
                    text.lines()
                        .filter(|line| {
                            line.starts_with("s ")
                                && line.contains(" Running")
                                && line.contains(" HSDir")
                        })
                        .count()
                        >= total
                })
            });
            if ready {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(failed(format!(
                    "no consensus with all {total} routers within {} s; see the notice.log files in {}",
                    timeout.as_secs(),
                    self.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TorNetwork {
    /// SIGTERM to every router, SIGKILL to those still running 3 s later (an authority
    /// sometimes hangs on SIGTERM).
    fn drop(&mut self) {
        for (_, child) in &self.routers {
            process::signal(child.id(), rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, child) in &mut self.routers {
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The data directory of router `name` (0700, as tor demands).
fn router_dir(dir: &Path, name: &str) -> Result<PathBuf> {
    let data = dir.join(name);
    fs::create_dir_all(&data).map_err(clan_error::io("create", &data))?;
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700))
        .map_err(clan_error::io("set the mode of", &data))?;
    Ok(data)
}

/// The relay identity fingerprint of the router whose data directory is `data` (the key is
/// made there if it does not exist yet).
fn relay_fingerprint(data: &Path) -> Result<String> {
    let output = process::run(
        process::command(TOR)
            .args(["--quiet", "--ignore-missing-torrc", "-f", "/dev/null"])
            .args(["--list-fingerprint", "--orport", "1"])
            .args([
                "--dirserver",
                "x 127.0.0.1:1 ffffffffffffffffffffffffffffffffffffffff",
            ])
            .arg("--datadirectory")
            .arg(data),
    )?;
    let words: Vec<&str> = output.split_whitespace().skip(1).collect();
    let fingerprint = words.concat();
    if fingerprint.len() == 40 && fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(fingerprint)
    } else {
        Err(failed(format!("tor --list-fingerprint printed `{output}`")))
    }
}

/// Runs `command` with `input` on its stdin; fails with its stderr.
fn run_with_input(command: &mut std::process::Command, input: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| clan_host::Error::Spawn {
            command: process::describe(command),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let output = child
        .wait_with_output()
        .map_err(|source| clan_host::Error::Spawn {
            command: process::describe(command),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(clan_host::Error::Command {
            command: process::describe(command),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }
        .into())
    }
}

fn failed(reason: String) -> Error {
    Error::TorNetwork { reason }
}
