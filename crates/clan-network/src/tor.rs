//! The admin's side of networks of module `clan_lib.network.tor`: one Tor client per clan
//! process, started the first time a route over tor is tried ([`socks_proxy`]), shared by
//! every machine the process reaches over tor, and stopped when the process is done
//! ([`stop`]; tor also exits by itself when this process dies, `__OwningControllerProcess`).
//! It counts as ready only once it reports `Bootstrapped 100%`. Its data directory is the
//! user's cache (`$XDG_CACHE_HOME/clan/tor`, so a later run starts from what it learnt) while
//! no other clan process holds that, else a temporary directory. Its SocksPort is a free
//! loopback port tor picks itself (`auto`); it has no control port. `$CLAN_TOR_CONFIG` names
//! a torrc fragment it includes (bridges, a private Tor network's authorities). ssh reaches an
//! onion through it with clan's own SOCKS5 connector ([`proxy_command`], [`connect`]), so no
//! netcat is needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// clan-core's module name of the tor network.
pub const TOR_MODULE: &str = "clan_lib.network.tor";

/// How long the client may take to bootstrap: minutes on a slow link to the public network.
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(180);

/// What the connector prints before a SOCKS failure, so that the ssh error shows it.
pub const SOCKS_FAILURE: &str = "tor: ";

/// The environment variable naming a torrc fragment for the client.
pub const CONFIG_ENV: &str = "CLAN_TOR_CONFIG";

/// Why the Tor client could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TorError {
    #[error("`tor` is not installed (a route over network `{network}` needs a Tor client)")]
    NotInstalled { network: String },
    #[error("cannot start tor: {0}")]
    Start(String),
    #[error("tor exited{}", last_words(.last))]
    Exited { last: String },
    #[error("tor did not finish bootstrapping within {seconds} s{}", last_words(.last))]
    Bootstrap { seconds: u64, last: String },
}

fn last_words(last: &str) -> String {
    if last.is_empty() {
        String::new()
    } else {
        format!(" (last said: {last})")
    }
}

impl clan_error::Hint for TorError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            TorError::NotInstalled { .. } => "install Tor: `apt install tor` (Debian, Ubuntu), `dnf install tor` (Fedora), `pacman -S tor` (Arch), `brew install tor` (macOS); clan starts it itself when a machine is reached over tor".to_owned(),
            TorError::Start(_) | TorError::Exited { .. } => format!(
                "check the torrc fragment `${CONFIG_ENV}` names, if any; `tor --verify-config` shows tor's own complaints"
            ),
            TorError::Bootstrap { .. } => "the Tor network is not reachable from here: check the connection, or configure bridges in a torrc fragment named by $CLAN_TOR_CONFIG".to_owned(),
        })
    }

    fn exit(&self) -> clan_error::Exit {
        clan_error::Exit::Failed
    }
}

/// What the client has reported so far.
#[derive(Debug, Default)]
struct Progress {
    socks: Option<SocketAddr>,
    percent: u8,
    /// The last bootstrap status or complaint, for errors.
    last: String,
    exited: bool,
}

#[derive(Debug, Default)]
struct Status {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// Where the client keeps its state.
#[derive(Debug)]
enum DataDir {
    /// The user's cache, held by an exclusive lock on `clan.lock` in it.
    Cache {
        path: PathBuf,
        _lock: std::fs::File,
    },
    Temp(tempfile::TempDir),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Cache { path, .. } => path,
            DataDir::Temp(dir) => dir.path(),
        }
    }
}

#[derive(Debug)]
struct Client {
    child: Child,
    status: Arc<Status>,
    started: Instant,
    _dir: DataDir,
}

/// The process's client, once started.
static CLIENT: Mutex<Option<Client>> = Mutex::new(None);

/// The SOCKS address of the process's Tor client, starting it if it is not running, once it
/// has bootstrapped; `None` when `cancel` was set first (another route won). `network` names
/// the network for the error when tor is not installed.
pub fn socks_proxy(network: &str, cancel: &AtomicBool) -> Result<Option<SocketAddr>, TorError> {
    let (status, started) = {
        let mut slot = CLIENT.lock().unwrap_or_else(|p| p.into_inner());
        let client = match &mut *slot {
            Some(client) => client,
            None => slot.insert(Client::start(network)?),
        };
        (client.status.clone(), client.started)
    };
    let mut progress = status.progress.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if progress.exited {
            return Err(TorError::Exited {
                last: progress.last.clone(),
            });
        }
        if let (100, Some(socks)) = (progress.percent, progress.socks) {
            return Ok(Some(socks));
        }
        if cancel.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if started.elapsed() > BOOTSTRAP_TIMEOUT {
            return Err(TorError::Bootstrap {
                seconds: BOOTSTRAP_TIMEOUT.as_secs(),
                last: progress.last.clone(),
            });
        }
        progress = status
            .changed
            .wait_timeout(progress, Duration::from_millis(20))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Whether a Tor client can be started here (`tor` is installed).
pub fn available() -> bool {
    clan_vars::sandbox::which("tor").is_some()
}

/// Stops the process's Tor client, if one runs (a clean exit first, so its cache is saved).
pub fn stop() {
    let client = CLIENT.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(mut client) = client {
        if let Some(pid) = i32::try_from(client.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if client.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = client.child.kill();
        let _ = client.child.wait();
    }
}

impl Client {
    fn start(network: &str) -> Result<Client, TorError> {
        let tor = clan_vars::sandbox::which("tor").ok_or_else(|| TorError::NotInstalled {
            network: network.to_owned(),
        })?;
        let dir = data_dir()?;
        let data = dir.path().join("data");
        let failed =
            |what: &str, error: std::io::Error| TorError::Start(format!("{what}: {error}"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data)
            .map_err(|e| failed(&format!("creating {}", data.display()), e))?;
        let mut torrc = format!(
            "# Written by clan: its own Tor client, for this run.\n\
             DataDirectory {}\n\
             SocksPort 127.0.0.1:auto ExtendedErrors\n\
             ControlPort 0\n\
             ClientOnly 1\n\
             Log notice stdout\n\
             __OwningControllerProcess {}\n",
            torrc_value(&data)?,
            std::process::id()
        );
        if let Some(extra) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            let extra = PathBuf::from(extra);
            if !extra.is_file() {
                return Err(TorError::Start(format!(
                    "${CONFIG_ENV} names {}, which is not a file",
                    extra.display()
                )));
            }
            torrc.push_str(&format!("%include {}\n", torrc_value(&extra)?));
        }
        let torrc_path = dir.path().join("torrc");
        clan_fs::write_file(
            &torrc_path,
            torrc.as_bytes(),
            clan_fs::WriteOptions::new(0o600),
        )
        .map_err(|e| TorError::Start(e.to_string()))?;
        let mut child = Command::new(&tor)
            .arg("-f")
            .arg(&torrc_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed(&format!("running {}", tor.display()), e))?;
        let status = Arc::new(Status::default());
        let reader = status.clone();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || follow(BufReader::new(stdout), &reader));
        }
        Ok(Client {
            child,
            status,
            started: Instant::now(),
            _dir: dir,
        })
    }
}

/// `path` as a torrc value: one line, cut neither by a comment (`#`) nor continued (`\`),
/// so that it cannot add settings of its own or name another directory.
fn torrc_value(path: &Path) -> Result<String, TorError> {
    let text = path.display().to_string();
    if text
        .chars()
        .any(|c| c.is_control() || c == '#' || c == '\\')
    {
        return Err(TorError::Start(format!(
            "{text:?}: a path with control characters, `#` or `\\` cannot go into a torrc"
        )));
    }
    Ok(text)
}

/// The user's cache directory for the client when it is usable and free, else a new
/// temporary directory.
fn data_dir() -> Result<DataDir, TorError> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
    if let Some(path) = base.map(|base| base.join("clan").join("tor")) {
        let created = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .is_ok();
        if created && clan_fs::private_ancestry(&path) {
            if let Ok(lock) = std::fs::File::create(path.join("clan.lock")) {
                let locked =
                    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                        .is_ok();
                if locked {
                    return Ok(DataDir::Cache { path, _lock: lock });
                }
            }
        }
    }
    tempfile::Builder::new()
        .prefix("clan-tor-")
        .tempdir()
        .map(DataDir::Temp)
        .map_err(|e| TorError::Start(format!("creating a temporary directory: {e}")))
}

/// Reads tor's log lines into `status` until tor closes its output.
fn follow(lines: impl BufRead, status: &Status) {
    for line in lines.lines() {
        let Ok(line) = line else { break };
        let mut progress = status.progress.lock().unwrap_or_else(|p| p.into_inner());
        read_log_line(&line, &mut progress);
        status.changed.notify_all();
    }
    let mut progress = status.progress.lock().unwrap_or_else(|p| p.into_inner());
    progress.exited = true;
    status.changed.notify_all();
}

/// One line of tor's notice log: the SOCKS listener's address, bootstrap progress, complaints.
fn read_log_line(line: &str, progress: &mut Progress) {
    let message = line.split_once("] ").map_or(line, |(_, message)| message);
    if let Some(address) = message.strip_prefix("Opened Socks listener connection (ready) on ") {
        progress.socks = address.trim().parse().ok();
    } else if let Some(rest) = message.strip_prefix("Bootstrapped ") {
        if let Some(percent) = rest.split('%').next().and_then(|p| p.parse().ok()) {
            progress.percent = percent;
        }
        progress.last = message.to_owned();
    } else if (line.contains("[warn]") || line.contains("[err]"))
        && !message.contains("see warnings above")
    {
        progress.last = message.to_owned();
    }
}

/// ssh's `ProxyCommand` reaching the host in `host_file`, port `%p`, through the SOCKS proxy
/// at `socks`: this very program's `network socks-connect`. The host is read from the file
/// rather than given as ssh's `%h`, which ssh would put into the shell command unquoted.
pub fn proxy_command(socks: SocketAddr, host_file: &Path) -> String {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("clan"));
    format!(
        "{} network socks-connect --proxy {socks} --host-file {} --port %p",
        shell_word(&program),
        shell_word(host_file)
    )
}

/// `path` as one word for /bin/sh, with ssh's `%` tokens escaped.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string().replace('%', "%%");
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The host a connector was given: on its command line, or in a file.
pub fn read_host_file(file: &Path) -> Result<String, SocksError> {
    std::fs::read_to_string(file)
        .map(|text| text.trim().to_owned())
        .map_err(|source| SocksError::HostFile {
            file: file.to_owned(),
            source,
        })
}

/// Why the SOCKS5 connector could not connect.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    #[error("{SOCKS_FAILURE}cannot reach the Tor client at {proxy}: {source}")]
    Proxy {
        proxy: SocketAddr,
        source: std::io::Error,
    },
    #[error("{SOCKS_FAILURE}the proxy at {proxy} does not speak SOCKS5 without authentication")]
    Protocol { proxy: SocketAddr },
    /// The host is left out: it may be a secret.
    #[error("{SOCKS_FAILURE}{reason}")]
    Refused { reason: &'static str },
    #[error("{SOCKS_FAILURE}cannot read the host to reach from {}", file.display())]
    HostFile {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{SOCKS_FAILURE}the host name is longer than 255 bytes")]
    HostTooLong,
}

impl clan_error::Hint for SocksError {
    fn hint(&self) -> Option<String> {
        match self {
            SocksError::Refused { .. } => Some(
                "an onion service is reachable a minute or so after its machine's tor started; `clan network ping` tries again".to_owned(),
            ),
            _ => None,
        }
    }

    fn exit(&self) -> clan_error::Exit {
        clan_error::Exit::Failed
    }
}

clan_error::register!(TorError, SocksError);

/// Connects to `host:port` through the SOCKS5 proxy at `proxy` (tor resolves the name) and
/// relays this process's stdin and stdout to it until both sides are done: ssh's
/// `ProxyCommand`.
pub fn connect(proxy: SocketAddr, host: &str, port: u16) -> Result<(), SocksError> {
    let io = |source| SocksError::Proxy { proxy, source };
    let mut stream = TcpStream::connect(proxy).map_err(io)?;
    handshake(&mut stream, proxy, host, port)?;
    let mut upstream = stream.try_clone().map_err(io)?;
    let to_proxy = std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    // Each chunk flushed as it comes: stdout is line-buffered, and ssh's packets are binary.
    let mut stdout = std::io::stdout().lock();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if stdout.write_all(&buffer[..read]).is_err() || stdout.flush().is_err() {
                    break;
                }
            }
        }
    }
    // The far side is done: so is ssh's side of the link.
    drop(to_proxy);
    Ok(())
}

/// The SOCKS5 greeting and CONNECT (RFC 1928) for `host:port`, by name.
fn handshake(
    stream: &mut (impl Read + Write),
    proxy: SocketAddr,
    host: &str,
    port: u16,
) -> Result<(), SocksError> {
    let io = |source| SocksError::Proxy { proxy, source };
    let name = u8::try_from(host.len()).map_err(|_| SocksError::HostTooLong)?;
    stream.write_all(&[5, 1, 0]).map_err(io)?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).map_err(io)?;
    if choice != [5, 0] {
        return Err(SocksError::Protocol { proxy });
    }
    let mut request = vec![5, 1, 0, 3, name];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).map_err(io)?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).map_err(io)?;
    if reply[0] != 5 {
        return Err(SocksError::Protocol { proxy });
    }
    if reply[1] != 0 {
        return Err(SocksError::Refused {
            reason: socks_reason(reply[1]),
        });
    }
    // The bound address, which nothing here needs.
    let length = match reply[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut length = [0u8; 1];
            stream.read_exact(&mut length).map_err(io)?;
            usize::from(length[0])
        }
        _ => return Err(SocksError::Protocol { proxy }),
    };
    let mut bound = vec![0u8; length + 2];
    stream.read_exact(&mut bound).map_err(io)?;
    Ok(())
}

/// A SOCKS5 reply code as a person reads it, with tor's onion-service codes (`ExtendedErrors`).
fn socks_reason(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "not allowed by the proxy",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "timed out",
        7 => "command not supported",
        8 => "address type not supported",
        0xF0 => "onion service descriptor not found (the machine's tor has not published it, or is not running)",
        0xF1 => "onion service descriptor is invalid",
        0xF2 => "onion service introduction failed",
        0xF3 => "onion service rendezvous failed",
        0xF4 => "onion service needs client authorization",
        0xF5 => "onion service client authorization is wrong",
        0xF6 => "not a valid onion address",
        0xF7 => "onion service introduction timed out",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_would_cut_or_continue_a_torrc_line_is_refused() {
        assert_eq!(
            torrc_value(Path::new("/root/.cache/clan/tor")).unwrap(),
            "/root/.cache/clan/tor"
        );
        for bad in ["/home/a#b/tor", "/home/a\\/tor", "/home/a\nSocksPort 9050"] {
            assert!(torrc_value(Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn log_lines_give_the_socks_port_and_progress() {
        let mut progress = Progress::default();
        for line in [
            "Dec 02 01:42:00.000 [notice] Opened Socks listener connection (ready) on 127.0.0.1:40123",
            "Dec 02 01:42:00.000 [notice] Bootstrapped 10% (conn_done): Connected to a relay",
            "Dec 02 01:42:01.000 [warn] Problem bootstrapping.",
        ] {
            read_log_line(line, &mut progress);
        }
        assert_eq!(progress.socks, Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(progress.percent, 10);
        assert_eq!(progress.last, "Problem bootstrapping.");
        read_log_line(
            "Dec 02 01:42:02.000 [notice] Bootstrapped 100% (done): Done",
            &mut progress,
        );
        assert_eq!(progress.percent, 100);
    }

    /// A SOCKS5 server's side of one exchange: what it reads, then `answer`.
    struct Scripted {
        input: std::io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_handshake_asks_by_name_and_reads_tor_refusals() {
        let proxy: SocketAddr = "127.0.0.1:9050".parse().unwrap();
        let mut ok = Scripted {
            input: std::io::Cursor::new(vec![5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0, 22]),
            written: Vec::new(),
        };
        handshake(&mut ok, proxy, "abc.onion", 22).unwrap();
        let mut expected = vec![5, 1, 0, 5, 1, 0, 3, 9];
        expected.extend_from_slice(b"abc.onion");
        expected.extend_from_slice(&[0, 22]);
        assert_eq!(ok.written, expected);
        let mut refused = Scripted {
            input: std::io::Cursor::new(vec![5, 0, 5, 0xF0, 0, 1, 0, 0, 0, 0, 0, 0]),
            written: Vec::new(),
        };
        let error = handshake(&mut refused, proxy, "abc.onion", 22).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("tor: onion service descriptor not found"),
            "{error}"
        );
        let mut auth = Scripted {
            input: std::io::Cursor::new(vec![5, 2]),
            written: Vec::new(),
        };
        assert!(matches!(
            handshake(&mut auth, proxy, "h", 1),
            Err(SocksError::Protocol { .. })
        ));
    }

    #[test]
    fn the_proxy_command_quotes_this_program_and_the_host_file() {
        let socks = "127.0.0.1:9050".parse().unwrap();
        let command = proxy_command(socks, Path::new("/tmp/a b/it's 100%"));
        assert!(command.starts_with('\''), "{command}");
        assert!(
            command.ends_with(
                "' network socks-connect --proxy 127.0.0.1:9050 --host-file '/tmp/a b/it'\\''s 100%%' --port %p"
            ),
            "{command}"
        );
    }
}
