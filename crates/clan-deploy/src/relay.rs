//! Getting the agent onto every machine of a fleet run while the admin's uplink carries it
//! about once: the first machine that lacks it (the seed) gets it from the admin
//! (gzip-compressed) and serves it for the rest of the run, alive only as long as the admin's
//! SSH session to the server, and every other machine fetches it from there over the
//! machines' own network. The seed serves it while it still arrives ([`STREAM_SERVER`], with
//! systemd's `systemd-socket-activate`), so the others receive it at the pace of the seed's
//! upload rather than after it; where that tool is missing, the seed's agent serves it once
//! installed (`clan-agent agent serve-file`). Integrity does not rest on that network: each machine
//! checks the agent's SHA-256, which the admin sends over its authenticated SSH session,
//! before installing it. A machine that cannot fetch it (another network, a firewall) gets it
//! from the admin directly.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::Receiver;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::deploy::AgentBinary;
use crate::host::{Host, Input};
use crate::Error;

/// How long a machine waits for the first one to have the agent before uploading it itself.
const SEED_WAIT: Duration = Duration::from_secs(120);
/// How long a server on the seed may take to say where it listens.
const SERVER_START: Duration = Duration::from_secs(10);

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
    /// The compressed agent, once made (held while it is made, so it is made once).
    compressed: Mutex<Option<PathBuf>>,
}

/// How a machine got the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Uploaded by the admin: that many bytes left the admin.
    FromAdmin { bytes: u64 },
    /// Fetched from the machine serving it.
    FromPeer { machine: String },
}

/// Where [`install`] gets the agent from.
enum From<'a> {
    /// The admin's upload of `compressed`; on the seed, written to `stream` as it arrives
    /// (served from there).
    Admin {
        compressed: &'a Path,
        stream: Option<&'a str>,
    },
    Peer(&'a Source),
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
            compressed: Mutex::new(None),
        }
    }

    /// Compresses `agent` ahead of need (when the build is new, that takes longer than
    /// connecting to the machines, and the first upload would wait for it).
    pub fn prepare(&self, agent: &AgentBinary) {
        let _ = self.compressed(agent);
    }

    /// The compressed agent: [`AgentBinary::compressed`], once per run.
    fn compressed(&self, agent: &AgentBinary) -> Result<PathBuf, Error> {
        let mut compressed = self.compressed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &*compressed {
            return Ok(path.clone());
        }
        let path = agent.compressed()?;
        *compressed = Some(path.clone());
        Ok(path)
    }

    /// Puts `agent` on the machine behind `host`.
    pub fn deliver(&self, host: &dyn Host, agent: &AgentBinary) -> Result<Delivery, Error> {
        let upload = || {
            let compressed = self.compressed(agent)?;
            let from = From::Admin {
                compressed: &compressed,
                stream: None,
            };
            install(host, agent, from).map(|bytes| Delivery::FromAdmin { bytes })
        };
        match self.role() {
            Role::Seed => self.seed(host, agent),
            Role::Fetch(source) => match install(host, agent, From::Peer(&source)) {
                Ok(_) => Ok(Delivery::FromPeer {
                    machine: source.machine,
                }),
                // The machines may not reach each other (another network, a firewall on the
                // source): the rest of the run uploads instead of waiting to fail likewise.
                Err(_) => {
                    self.set(State::Unavailable);
                    upload()
                }
            },
            Role::Upload => upload(),
        }
    }

    /// The seed's upload, served to the others from the moment the stream server on the seed
    /// listens (they start fetching then), else by the seed's agent once it is installed.
    fn seed(&self, host: &dyn Host, agent: &AgentBinary) -> Result<Delivery, Error> {
        let path = self
            .compressed(agent)
            .inspect_err(|_| self.set(State::Unavailable))?;
        let compressed = size_and_digest(&path);
        let (machine, address) = (host.machine().to_owned(), host.address().to_owned());
        let source = |port: u16| {
            compressed.as_ref().map(|(size, digest)| Source {
                machine: machine.clone(),
                host: address.clone(),
                port,
                size: *size,
                digest: digest.clone(),
            })
        };
        let stream = stream_path(agent);
        let port = stream_port();
        let server = compressed.as_ref().and_then(|(size, _)| {
            let mut argv: Vec<String> = ["sh", "-c", STREAM_SERVER, "sh"]
                .map(str::to_owned)
                .to_vec();
            argv.extend([stream.clone(), port.to_string(), size.to_string()]);
            // systemd-socket-activate's first words: `Listening on [::]:<port> as 3.`
            self.start(host, &argv, move |line| {
                line.starts_with("Listening on").then_some(port)
            })
        });
        let (server, listening) = server.unzip();
        let (bytes, streamed) = std::thread::scope(|scope| {
            let announce = listening.map(|listening| {
                let source = &source;
                scope.spawn(move || {
                    let source = source(listening.recv_timeout(SERVER_START).ok().flatten()?)?;
                    self.set_if_seeding(State::Serving(source.clone()));
                    Some(source)
                })
            });
            let stream = server.is_some().then_some(stream.as_str());
            let from = From::Admin {
                compressed: &path,
                stream,
            };
            let bytes = install(host, agent, from);
            (bytes, announce.and_then(|a| a.join().ok().flatten()))
        });
        let stop = || {
            if let Some(index) = server {
                self.stop(index);
            }
        };
        match (&bytes, streamed) {
            (Ok(_), Some(source)) => self.set(State::Serving(source)),
            (Ok(_), None) => {
                stop();
                let served = self.serve(host, agent).and_then(source);
                self.set(served.map_or(State::Unavailable, State::Serving));
            }
            // What the others fetch would never be complete: ending the server ends their
            // fetches, and they upload instead.
            (Err(_), _) => {
                stop();
                self.set(State::Unavailable);
            }
        }
        bytes.map(|bytes| Delivery::FromAdmin { bytes })
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

    /// Sets `new` while the seed is still seeding (the seed decides what follows itself).
    fn set_if_seeding(&self, new: State) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::Seeding) {
            *state = new;
            self.changed.notify_all();
        }
    }

    /// Starts the server `argv` on the machine, kept for the run, and reads its first line in
    /// the background; `port` makes a port of that line. Returns the server's index (for
    /// [`Relay::stop`]) and where the port arrives.
    fn start(
        &self,
        host: &dyn Host,
        argv: &[String],
        port: impl FnOnce(&str) -> Option<u16> + Send + 'static,
    ) -> Option<(usize, Receiver<Option<u16>>)> {
        let mut child = host.spawn(argv).ok()?;
        let stdout = child.stdout.take()?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader
                .read_line(&mut line)
                .ok()
                .and_then(|_| port(line.trim()));
            let _ = sender.send(read);
            // Keep the pipe open (the server exits on a broken one) until the session ends.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers.push(child);
        Some((servers.len() - 1, receiver))
    }

    /// Ends the server at `index` (its SSH session, and with it the server).
    fn stop(&self, index: usize) {
        if let Some(server) = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(index)
        {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Starts `clan-agent agent serve-file` on the seed, returning the port it listens on.
    fn serve(&self, host: &dyn Host, agent: &AgentBinary) -> Option<u16> {
        let argv: Vec<String> = [
            agent.remote_path().as_str(),
            "agent",
            "serve-file",
            &compressed_remote_path(agent),
        ]
        .map(str::to_owned)
        .to_vec();
        let (_, listening) = self.start(host, &argv, |line| {
            line.strip_prefix("listening ")?.parse::<u16>().ok()
        })?;
        listening.recv_timeout(SERVER_START).ok().flatten()
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

/// Where the seed writes the compressed agent as it arrives, served from there during the
/// run: a name of this run's own, so that a run never serves another's partial file.
fn stream_path(agent: &AgentBinary) -> String {
    format!("{}.gz.stream-{}", agent.remote_path(), run_nonce())
}

/// A port for the stream server, picked by the admin (`systemd-socket-activate` says nothing
/// about a port it picks itself): one of the dynamic range, different per run. One that is
/// taken fails the server's start, and the seed's agent serves instead.
fn stream_port() -> u16 {
    49152 + (run_nonce() % 16384) as u16
}

/// A number that differs between runs (and processes).
fn run_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(20)
}

/// The compressed agent's size and SHA-256 (what a fetch checks).
fn size_and_digest(compressed: &Path) -> Option<(u64, String)> {
    let bytes = std::fs::read(compressed).ok()?;
    Some((bytes.len() as u64, clan_generation::hash(&bytes)))
}

/// The seed's stream server, for the admin's SSH session: creates the file `$1`, which the
/// seed's upload appends to as it arrives, and serves it on TCP port `$2` to every connection
/// (`tail -f` from its start, `$3` bytes), until the session (stdin) ends; then removes it. Its output is
/// systemd-socket-activate's, `Listening on …` first. A fixed script: everything variable
/// arrives as a positional parameter. The content is the compressed agent: public, and
/// checked by digest where it arrives.
pub const STREAM_SERVER: &str = r#"umask 022; mkdir -p "${1%/*}"; : >> "$1"; server=
if command -v systemd-socket-activate >/dev/null; then
  systemd-socket-activate -l "$2" -a --inetd sh -c 'tail -c +1 -f -s 0.2 --pid="$PPID" "$0" 2>/dev/null | head -c "$1"' "$1" "$3" 2>&1 &
  server=$!
else echo "no systemd-socket-activate"; fi
cat >/dev/null; [ -z "$server" ] || kill "$server"; rm -f "$1""#;

/// Installs the agent on the machine from its compressed form, read from stdin (an upload
/// from the admin, decompressed as it arrives; on the seed also written to `$8` as it
/// arrives, for [`STREAM_SERVER`]) or, given a host and port (`$4`, `$5`), fetched from the
/// machine serving it with bash's `/dev/tcp` (nothing to install for it): after a connection
/// probe of 5 s, at most `$6` bytes, whose SHA-256 must be `$7` before anything is
/// decompressed. A fetch may take as long as the seed's upload, which it follows. The
/// architecture (`$2`) and the agent's SHA-256 (`$3`) are checked before it goes to its path
/// (`$1`; temp name, then rename); an upload keeps the compressed copy, to serve it. A fixed
/// script: everything variable arrives as a positional parameter.
pub(crate) const INSTALL: &str = r#"set -e; umask 022
[ "$(uname -m)" = "$2" ] || { echo "the machine is $(uname -m) but this clan binary is $2; install clan for the machine's architecture" >&2; exit 3; }
mkdir -p "${1%/*}"; t="$1.tmp.$$"; trap 'rm -f "$t" "$t.gz"' EXIT
if [ -n "$4" ]; then
  timeout 5 bash -c ': <>"/dev/tcp/$0/$1"' "$4" "$5"
  timeout 600 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -c "$2" <&3' "$4" "$5" "$6" > "$t.gz"
  echo "$7  $t.gz" | sha256sum -c --status
  gzip -dc < "$t.gz" > "$t"
else z=${8:-$t.gz}; [ -n "$8" ] || : > "$z"; tee -a "$z" | gzip -dc > "$t"; fi
echo "$3  $t" | sha256sum -c --status || { echo "the agent arrived damaged (its SHA-256 differs)" >&2; exit 4; }
chmod 0755 "$t"; [ -n "$4" ] || ln -f "$z" "$1.gz"; mv -f "$t" "$1"; ln -sfn "$1" "${1%/*}/clan""#;

/// Runs [`INSTALL`] on the machine, from `from`; returns the bytes the admin sent.
fn install(host: &dyn Host, agent: &AgentBinary, from: From<'_>) -> Result<u64, Error> {
    let (input, sent, params) = match &from {
        From::Peer(source) => (
            Input::None,
            0,
            [
                source.host.clone(),
                source.port.to_string(),
                source.size.to_string(),
                source.digest.clone(),
                String::new(),
            ],
        ),
        From::Admin { compressed, stream } => {
            let sent = std::fs::metadata(compressed).map_or(0, |m| m.len());
            let mut params: [String; 5] = Default::default();
            params[4] = stream.unwrap_or_default().to_owned();
            (Input::File(compressed), sent, params)
        }
    };
    let mut argv: Vec<String> = ["sh", "-c", INSTALL, "sh"].map(str::to_owned).to_vec();
    argv.extend([
        agent.remote_path(),
        std::env::consts::ARCH.to_owned(),
        agent.digest.clone(),
    ]);
    argv.extend(params);
    let output = host.run(&argv, input)?;
    if output.success() {
        return Ok(sent);
    }
    Err(Error::Remote {
        machine: host.machine().to_owned(),
        command: match from {
            From::Peer(source) => format!("fetching the clan agent from {}", source.machine),
            From::Admin { .. } => "upload of the clan agent".into(),
        },
        status: output.status(),
        stderr: output.stderr,
    })
}

/// Compresses `binary` to `cache/<name>.gz` unless it is there already (written atomically,
/// so a crash leaves no half file under the final name).
pub(crate) fn compress_into(binary: &Path, cache: &Path, name: &str) -> Result<PathBuf, Error> {
    // What root uploads must not come from a place another user can write (the shared
    // temporary directory when HOME is unset): there it is made afresh, in a private
    // directory of its own for the rest of this run.
    let cache = if clan_eval::cache_usable(cache) {
        cache.to_path_buf()
    } else {
        tempfile::Builder::new()
            .prefix("clan-agent-")
            .tempdir()
            .map_err(|source| Error::Io {
                context: "creating a private directory for",
                path: std::env::temp_dir(),
                source,
            })?
            .keep()
    };
    let cache = cache.as_path();
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
