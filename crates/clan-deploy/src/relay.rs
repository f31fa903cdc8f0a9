//! Getting the agent onto every machine of a fleet run while the admin's uplink carries it
//! about once: the first machine that lacks it gets it from the admin (gzip-compressed), then
//! serves it for the rest of the run (`clan agent serve-file`, alive only as long as the
//! admin's SSH session to it), and every other machine fetches it from there over the
//! machines' own network. Integrity does not rest on that network: each machine checks the
//! agent's SHA-256, which the admin sends over its authenticated SSH session, before
//! installing it. A machine that cannot fetch it (another network, a firewall) gets it from
//! the admin directly.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::deploy::AgentBinary;
use crate::host::{Host, Input};
use crate::Error;

/// How long a machine waits for the first one to have the agent before uploading it itself.
const SEED_WAIT: Duration = Duration::from_secs(120);

/// Where the agent is served during a run, and what the compressed agent served there is:
/// a fetch reads at most `size` bytes and checks their SHA-256 before decompressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub machine: String,
    pub host: String,
    pub port: u16,
    pub size: u64,
    pub digest: String,
}

#[derive(Debug)]
enum State {
    /// Nobody needed the agent yet.
    Idle,
    /// One machine is getting it from the admin.
    Seeding,
    Serving(Source),
    /// Serving could not be set up: everyone uploads from the admin.
    Unavailable,
}

/// The agent's distribution for one fleet run, shared by its workers.
pub struct Relay {
    state: Mutex<State>,
    changed: Condvar,
    /// The serving processes (their SSH sessions); ended with the run.
    servers: Mutex<Vec<Child>>,
}

/// How a machine got the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Uploaded by the admin: that many bytes left the admin.
    FromAdmin { bytes: u64 },
    /// Fetched from the machine serving it.
    FromPeer { machine: String },
}

impl Relay {
    /// The relay of a run deploying `machines` machines: with one, there is nobody to pass
    /// the agent on to, so it is only uploaded.
    pub fn for_run(machines: usize) -> Relay {
        Relay {
            state: Mutex::new(if machines > 1 {
                State::Idle
            } else {
                State::Unavailable
            }),
            changed: Condvar::new(),
            servers: Mutex::new(Vec::new()),
        }
    }

    /// Puts `agent` on the machine behind `host`.
    pub fn deliver(&self, host: &dyn Host, agent: &AgentBinary) -> Result<Delivery, Error> {
        match self.role() {
            Role::Seed => {
                let bytes = install(host, agent, None);
                let served = bytes.as_ref().ok().and_then(|_| self.serve(host, agent));
                self.set(match served {
                    Some(source) => State::Serving(source),
                    None => State::Unavailable,
                });
                bytes.map(|bytes| Delivery::FromAdmin { bytes })
            }
            Role::Fetch(source) => match install(host, agent, Some(&source)) {
                Ok(_) => Ok(Delivery::FromPeer {
                    machine: source.machine,
                }),
                // The machines may not reach each other (another network, a firewall on the
                // source): the rest of the run uploads instead of waiting to fail likewise.
                Err(_) => {
                    self.set(State::Unavailable);
                    install(host, agent, None).map(|bytes| Delivery::FromAdmin { bytes })
                }
            },
            Role::Upload => install(host, agent, None).map(|bytes| Delivery::FromAdmin { bytes }),
        }
    }

    /// Whether this worker seeds, fetches from a source, or uploads itself (after waiting
    /// for a seed in progress).
    fn role(&self) -> Role {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + SEED_WAIT;
        loop {
            match &*state {
                State::Idle => {
                    *state = State::Seeding;
                    return Role::Seed;
                }
                State::Serving(source) => return Role::Fetch(source.clone()),
                State::Unavailable => return Role::Upload,
                State::Seeding => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Role::Upload;
                    }
                    state = self
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    fn set(&self, new: State) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = new;
        self.changed.notify_all();
    }

    /// Starts `clan agent serve-file` on the seed, returning where it listens.
    fn serve(&self, host: &dyn Host, agent: &AgentBinary) -> Option<Source> {
        let argv: Vec<String> = [
            agent.remote_path().as_str(),
            "agent",
            "serve-file",
            &compressed_remote_path(agent),
        ]
        .map(str::to_owned)
        .to_vec();
        let mut child = host.spawn(&argv).ok()?;
        let stdout = child.stdout.take()?;
        // The server's first line is its port; nothing within a few seconds means no server.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = sender.send(read);
            // Keep the pipe open (the server exits on a broken one) until the session ends.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let port = receiver
            .recv_timeout(Duration::from_secs(10))
            .ok()
            .and_then(Result::ok)
            .and_then(|line| line.trim().strip_prefix("listening ")?.parse::<u16>().ok());
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        let compressed = agent.compressed().ok()?;
        let bytes = std::fs::read(&compressed).ok()?;
        Some(Source {
            machine: host.machine().to_owned(),
            host: host.address().to_owned(),
            port: port?,
            size: bytes.len() as u64,
            digest: crate::generation::hash(&bytes),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for mut server in self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

enum Role {
    Seed,
    Fetch(Source),
    Upload,
}

/// Where the seed keeps the compressed agent it serves.
fn compressed_remote_path(agent: &AgentBinary) -> String {
    format!("{}.gz", agent.remote_path())
}

/// Installs the agent on the machine from its compressed form, read from stdin (an upload
/// from the admin) or, given a host and port (`$4`, `$5`), fetched from the machine serving
/// it with bash's `/dev/tcp` (nothing to install for it): after a connection probe of 5 s,
/// at most `$6` bytes, whose SHA-256 must be `$7` before anything is decompressed. The
/// architecture (`$2`) and the agent's SHA-256 (`$3`) are checked before it goes to its path
/// (`$1`; temp name, then rename); an upload keeps the compressed copy, to serve it. A fixed
/// script: everything variable arrives as a positional parameter.
const INSTALL: &str = r#"set -e; umask 022
[ "$(uname -m)" = "$2" ] || { echo "the machine is $(uname -m) but this clan binary is $2; install clan for the machine's architecture" >&2; exit 3; }
mkdir -p "${1%/*}"; t="$1.tmp.$$"; trap 'rm -f "$t" "$t.gz"' EXIT
if [ -n "$4" ]; then
  timeout 5 bash -c ': <>"/dev/tcp/$0/$1"' "$4" "$5"
  timeout 60 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -c "$2" <&3' "$4" "$5" "$6" > "$t.gz"
  echo "$7  $t.gz" | sha256sum -c --status
else cat > "$t.gz"; fi
gzip -dc < "$t.gz" > "$t"
echo "$3  $t" | sha256sum -c --status || { echo "the agent arrived damaged (its SHA-256 differs)" >&2; exit 4; }
chmod 0755 "$t"; [ -n "$4" ] || mv -f "$t.gz" "$1.gz"; mv -f "$t" "$1"; ln -sfn "$1" "${1%/*}/clan""#;

/// Runs [`INSTALL`] on the machine, from `source` or else from the admin's upload; returns
/// the bytes the admin sent.
fn install(host: &dyn Host, agent: &AgentBinary, source: Option<&Source>) -> Result<u64, Error> {
    let compressed;
    let (input, sent, fetch) = match source {
        Some(source) => (
            Input::None,
            0,
            [
                source.host.clone(),
                source.port.to_string(),
                source.size.to_string(),
                source.digest.clone(),
            ],
        ),
        None => {
            compressed = agent.compressed()?;
            let sent = std::fs::metadata(&compressed).map_or(0, |m| m.len());
            (Input::File(&compressed), sent, Default::default())
        }
    };
    let mut argv: Vec<String> = ["sh", "-c", INSTALL, "sh"].map(str::to_owned).to_vec();
    argv.extend([
        agent.remote_path(),
        std::env::consts::ARCH.to_owned(),
        agent.digest.clone(),
    ]);
    argv.extend(fetch);
    let output = host.run(&argv, input)?;
    if output.success() {
        return Ok(sent);
    }
    Err(Error::Remote {
        machine: host.machine().to_owned(),
        command: match source {
            Some(source) => format!("fetching the clan agent from {}", source.machine),
            None => "upload of the clan agent".into(),
        },
        status: output.status(),
        stderr: output.stderr,
    })
}

/// Compresses `binary` to `cache/<name>.gz` unless it is there already (written atomically,
/// so a crash leaves no half file under the final name).
pub(crate) fn compress_into(binary: &Path, cache: &Path, name: &str) -> Result<PathBuf, Error> {
    let target = cache.join(format!("{name}.gz"));
    if target.is_file() {
        return Ok(target);
    }
    let io = |context: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    };
    std::fs::create_dir_all(cache).map_err(io("creating", cache))?;
    let mut input = std::fs::File::open(binary).map_err(io("reading", binary))?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    std::io::copy(&mut input, &mut encoder).map_err(io("compressing", binary))?;
    let compressed = encoder.finish().map_err(io("compressing", binary))?;
    clan_fs::write_file(&target, &compressed, clan_fs::WriteOptions::new(0o644)).map_err(
        |source| Error::Cache {
            path: target.clone(),
            source,
        },
    )?;
    Ok(target)
}

/// The machine side of the relay (`clan agent serve-file PATH`): serves `path`'s bytes to
/// every TCP connection, on a port of the system's choosing printed as `listening <port>` on
/// `out`, until `session` (the admin's SSH session, as stdin) ends or half an hour has
/// passed. The content is the compressed agent: public, and checked by digest where it
/// arrives.
pub fn serve_file(
    path: &Path,
    mut session: impl std::io::Read + Send + 'static,
    mut out: impl std::io::Write,
) -> Result<(), Error> {
    let content = std::sync::Arc::new(std::fs::read(path).map_err(|source| Error::Io {
        context: "reading",
        path: path.to_path_buf(),
        source,
    })?);
    let listener = std::net::TcpListener::bind("[::]:0")
        .or_else(|_| std::net::TcpListener::bind("0.0.0.0:0"))
        .map_err(|source| Error::Io {
            context: "listening for the agent's other machines with",
            path: path.to_path_buf(),
            source,
        })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = writeln!(out, "listening {port}");
    let _ = out.flush();
    let until = Instant::now() + Duration::from_secs(1800);
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = std::sync::Arc::clone(&ended);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut session, &mut std::io::sink());
        watcher.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let _ = listener.set_nonblocking(true);
    while Instant::now() < until && !ended.load(std::sync::atomic::Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let content = std::sync::Arc::clone(&content);
                std::thread::spawn(move || {
                    use std::io::Write as _;
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.write_all(&content);
                });
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(())
}
