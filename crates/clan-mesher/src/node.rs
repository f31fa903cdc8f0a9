//! The running node: a libp2p swarm (TCP, Noise, Yamux, identify, ping and the mesher
//! request-response protocol) driven by one event loop that owns the store, the peer table and
//! the metrics. [`Mesher`] spawns it; [`Handle`] talks to it over a channel.
//!
//! A peer is only served after its `Hello` carried a certificate, signed by the network key,
//! for the very key it authenticated with in Noise. New versions are announced eagerly to every
//! verified peer; anti-entropy compares root summaries with one random peer per interval and
//! descends the trie only where the two differ. Content is fetched from a peer that offered it,
//! checked against the signed size and hash before it is written, and a peer that serves
//! content that does not match, frames that do not decode or records with forged signatures
//! is disconnected and never served again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{identify, ping, Multiaddr, PeerId, Swarm};
use rand::seq::SliceRandom;
use tokio::sync::{mpsc, oneshot, watch};

use crate::certificate::{Certificate, CertificateError};
use crate::index::{Prefix, Summary, LEAF_MAX, MAX_DEPTH};
use crate::keys::SecretKey;
use crate::metrics::{Direction, Metrics};
use crate::name::FileName;
use crate::policy::{Policy, RejectReason};
use crate::record::{unix_micros_now, Kind, Record};
use crate::store::{Store, StoreError};
use crate::wire::{Codec, Inbound, NodeReply, Request, Response, MAX_PREFIXES, PROTOCOL};

/// Content fetches in flight at once; the rest wait their turn.
const MAX_INFLIGHT_FETCHES: usize = 32;
/// Prefixes waiting to be compared with one peer; more are left for the next round.
const MAX_QUEUED_PREFIXES: usize = 4096;
/// Requests in flight to one peer before further announcements wait in its backlog, well
/// below the streams libp2p allows per connection (excess streams are dropped, not queued).
const MAX_PEER_INFLIGHT: usize = 64;
const MAX_STREAMS: usize = 256;
/// Announcements waiting for one peer; beyond this, anti-entropy delivers them instead.
const MAX_BACKLOG: usize = 100_000;
/// Per-peer announcement budget: burst and refill per second.
const ANNOUNCE_BURST: f64 = 2000.0;
const ANNOUNCE_RATE: f64 = 500.0;

/// Everything a node needs to run, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub identity: SecretKey,
    pub certificate: Certificate,
    pub policy: Policy,
    pub state_dir: PathBuf,
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/tcp/7946`.
    pub listen: Vec<Multiaddr>,
    /// Peers to connect to and keep reconnecting to.
    pub bootstrap: Vec<Multiaddr>,
    /// Bootstrap peers as `host:port` whose host does not resolve yet: retried until it does
    /// (name service may come up after the daemon), then dialled like the others.
    pub unresolved_bootstrap: Vec<String>,
    /// Anti-entropy interval.
    pub push_pull_interval: Duration,
    /// Loopback addresses for the HTTP API; empty for none.
    pub http: Vec<std::net::SocketAddr>,
}

/// The node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MesherError {
    #[error("the identity certificate does not admit this node to network `{network}`")]
    Certificate {
        network: crate::keys::NetworkId,
        source: Box<CertificateError>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to set up the libp2p transport")]
    Transport { detail: String },
    #[error("failed to listen on `{address}`: {detail}")]
    Listen { address: Multiaddr, detail: String },
    #[error("failed to serve the HTTP API on `{address}`")]
    Http {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("failed to write the API address to `{}`", file.display())]
    ApiAddress {
        file: std::path::PathBuf,
        source: clan_fs::Error,
    },
    #[error("the mesher task failed: {detail}")]
    Task { detail: String },
}

/// A request to the node could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("record for `{name}` rejected: {reason}")]
    Rejected {
        name: FileName,
        reason: RejectReason,
    },
    #[error("the mesher is not running")]
    Stopped,
}

/// What `status` reports.
#[derive(Debug, Clone)]
pub struct Status {
    pub peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    /// Connected peers that proved membership.
    pub peers: Vec<PeerId>,
    pub files: usize,
    pub root: Summary,
    pub metrics: Metrics,
    /// The bootstrap addresses and how dialling them goes: why a node has no peers.
    pub bootstrap: Vec<BootstrapStatus>,
    /// Bootstrap `host:port`s that have not resolved yet.
    pub unresolved_bootstrap: Vec<String>,
}

/// One bootstrap address as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapStatus {
    pub address: Multiaddr,
    /// A connection to it is open (it may not have proved membership yet).
    pub connected: bool,
    /// Why the last dial failed, until one succeeds.
    pub error: Option<String>,
}

/// A bootstrap address, the peer last reached there and the last dial failure.
struct Bootstrap {
    address: Multiaddr,
    reached: Option<PeerId>,
    error: Option<String>,
}

// Publish is the common command; boxing the record would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Command {
    Publish {
        record: Record,
        content: Vec<u8>,
        reply: oneshot::Sender<Result<(), PublishError>>,
    },
    Get {
        name: FileName,
        reply: oneshot::Sender<Option<(Record, Vec<u8>)>>,
    },
    List {
        reply: oneshot::Sender<Vec<Record>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Resolved {
        peer: String,
        addresses: Vec<Multiaddr>,
    },
    Dial {
        address: Multiaddr,
    },
}

/// A cheap, cloneable client of a running node.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    changes: watch::Receiver<u64>,
    shutdown: watch::Sender<bool>,
}

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Hands a signed record and its content to the node, which checks it like any record from
    /// a peer and, once accepted, announces it.
    pub async fn publish(&self, record: Record, content: Vec<u8>) -> Result<(), PublishError> {
        self.ask(|reply| Command::Publish {
            record,
            content,
            reply,
        })
        .await
        .unwrap_or(Err(PublishError::Stopped))
    }

    /// The current record and content of `name`, when it is a file.
    pub async fn get(&self, name: &FileName) -> Option<(Record, Vec<u8>)> {
        self.ask(|reply| Command::Get {
            name: name.clone(),
            reply,
        })
        .await
        .flatten()
    }

    /// Every current record, tombstones included.
    pub async fn list(&self) -> Vec<Record> {
        self.ask(|reply| Command::List { reply })
            .await
            .unwrap_or_default()
    }

    pub async fn status(&self) -> Option<Status> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Connects to another node (and keeps no memory of it beyond the connection).
    pub async fn dial(&self, address: Multiaddr) {
        let _ = self.commands.send(Command::Dial { address }).await;
    }

    /// A counter that increases whenever a file changes on this node.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Asks the node to stop; [`Mesher::join`] waits for it.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

/// A running node: spawn it, talk to it through [`Mesher::handle`], stop it with
/// [`Mesher::shutdown`] and wait with [`Mesher::join`].
pub struct Mesher {
    handle: Handle,
    task: tokio::task::JoinHandle<Result<(), MesherError>>,
}

impl Mesher {
    /// Opens the state, starts listening (and the HTTP API), dials the bootstrap peers and
    /// runs the event loop on the current tokio runtime.
    pub async fn spawn(settings: Settings) -> Result<Self, MesherError> {
        let now = unix_micros_now();
        settings
            .certificate
            .verify_for(&settings.policy.network, &settings.identity.public(), now)
            .map_err(|source| MesherError::Certificate {
                network: settings.policy.network,
                source: Box::new(source),
            })?;
        let store = Store::open(&settings.state_dir, &settings.policy.network)?;
        let mut swarm = build_swarm(&settings.identity)?;
        let mut listen_addrs = Vec::new();
        for address in &settings.listen {
            swarm
                .listen_on(address.clone())
                .map_err(|e| MesherError::Listen {
                    address: address.clone(),
                    detail: e.to_string(),
                })?;
        }
        while listen_addrs.len() < settings.listen.len() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => listen_addrs.push(address),
                SwarmEvent::ListenerError { error, .. }
                | SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                } => {
                    let address = settings
                        .listen
                        .first()
                        .cloned()
                        .unwrap_or(Multiaddr::empty());
                    return Err(MesherError::Listen {
                        address,
                        detail: error.to_string(),
                    });
                }
                _ => {}
            }
        }
        let (commands, command_rx) = mpsc::channel(256);
        let (changes_tx, changes) = watch::channel(0);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let handle = Handle {
            commands,
            changes,
            shutdown,
        };
        let mut helpers = Vec::new();
        for address in &settings.http {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| MesherError::Http {
                    address: *address,
                    source,
                })?;
            if helpers.is_empty() {
                let bound = listener.local_addr().map_err(|source| MesherError::Http {
                    address: *address,
                    source,
                })?;
                let file = settings.state_dir.join(crate::API_ADDRESS_FILE);
                let options = clan_fs::WriteOptions::new(0o644);
                clan_fs::write_file(&file, format!("{bound}\n").as_bytes(), options)
                    .map_err(|source| MesherError::ApiAddress { file, source })?;
            }
            helpers.push(tokio::spawn(crate::http::serve(listener, handle.clone())));
        }
        for peer in &settings.unresolved_bootstrap {
            helpers.push(tokio::spawn(resolve_later(
                peer.clone(),
                handle.commands.clone(),
            )));
        }
        let mut node = Node {
            swarm,
            store,
            policy: settings.policy,
            certificate: settings.certificate,
            metrics: Metrics::default(),
            peers: HashMap::new(),
            banned: HashSet::new(),
            pending: HashMap::new(),
            fetch_queue: VecDeque::new(),
            inflight_fetches: 0,
            outbound: HashMap::new(),
            bootstrap: settings
                .bootstrap
                .into_iter()
                .map(|address| Bootstrap {
                    address,
                    reached: None,
                    error: None,
                })
                .collect(),
            bootstrap_dials: HashMap::new(),
            unresolved: settings.unresolved_bootstrap,
            changes: changes_tx,
            listen_addrs,
        };
        node.redial();
        let interval = settings.push_pull_interval;
        let task = tokio::spawn(async move {
            let result = node.run(command_rx, shutdown_rx, interval).await;
            helpers.iter().for_each(tokio::task::JoinHandle::abort);
            result
        });
        Ok(Self { handle, task })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// Waits for the event loop to end.
    pub async fn join(self) -> Result<(), MesherError> {
        match self.task.await {
            Ok(result) => result,
            Err(error) => Err(MesherError::Task {
                detail: error.to_string(),
            }),
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    mesh: request_response::Behaviour<Codec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

fn build_swarm(identity: &SecretKey) -> Result<Swarm<Behaviour>, MesherError> {
    let transport_error = |e: &dyn std::fmt::Display| MesherError::Transport {
        detail: e.to_string(),
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(identity.to_libp2p())
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| transport_error(&e))?
        .with_behaviour(|key| Behaviour {
            mesh: request_response::Behaviour::new(
                [(PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(30))
                    .with_max_concurrent_streams(MAX_STREAMS),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                "/clan-mesher/1".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
        })
        .map_err(|e| transport_error(&e))?
        .with_swarm_config(|config| {
            config.with_idle_connection_timeout(Duration::from_secs(24 * 3600))
        })
        .build();
    Ok(swarm)
}

/// A connected peer.
struct Peer {
    verified: bool,
    /// Comparing trie prefixes with this peer right now.
    /// The peer answered our `Hello`, so it will serve us.
    admitted: bool,
    reconciling: bool,
    queue: VecDeque<Prefix>,
    inflight: usize,
    /// Names whose current record is still to be announced (sent as current when their turn comes).
    backlog: VecDeque<FileName>,
    budget: f64,
    refilled: Instant,
}

impl Peer {
    fn new() -> Self {
        Self {
            verified: false,
            admitted: false,
            reconciling: false,
            queue: VecDeque::new(),
            inflight: 0,
            backlog: VecDeque::new(),
            budget: ANNOUNCE_BURST,
            refilled: Instant::now(),
        }
    }

    fn ready(&self) -> bool {
        self.verified && self.admitted
    }

    fn take_budget(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.budget = (self.budget + elapsed * ANNOUNCE_RATE).min(ANNOUNCE_BURST);
        if self.budget < 1.0 {
            return false;
        }
        self.budget -= 1.0;
        true
    }
}

/// A version waiting for its content.
struct Pending {
    record: Record,
    /// Peers that offered it, not yet asked.
    candidates: VecDeque<PeerId>,
    inflight: bool,
}

/// What an outbound request was for.
enum Outbound {
    Hello,
    Announce,
    Reconcile(Vec<Prefix>),
    Fetch { name: FileName, digest: [u8; 32] },
}

struct Node {
    swarm: Swarm<Behaviour>,
    store: Store,
    policy: Policy,
    certificate: Certificate,
    metrics: Metrics,
    peers: HashMap<PeerId, Peer>,
    banned: HashSet<PeerId>,
    pending: HashMap<FileName, Pending>,
    fetch_queue: VecDeque<FileName>,
    inflight_fetches: usize,
    outbound: HashMap<OutboundRequestId, Outbound>,
    bootstrap: Vec<Bootstrap>,
    /// Dials in flight to bootstrap addresses (index into `bootstrap`).
    bootstrap_dials: HashMap<ConnectionId, usize>,
    unresolved: Vec<String>,
    changes: watch::Sender<u64>,
    listen_addrs: Vec<Multiaddr>,
}

type MeshEvent = request_response::Event<Inbound, Response>;

impl Node {
    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
        interval: Duration,
    ) -> Result<(), MesherError> {
        let mut anti_entropy = tokio::time::interval(interval.max(Duration::from_millis(10)));
        anti_entropy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintenance = tokio::time::interval(Duration::from_secs(1));
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return Ok(()),
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = anti_entropy.tick() => self.anti_entropy_round(),
                _ = maintenance.tick() => {
                    self.expire();
                    self.redial();
                }
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish {
                record,
                content,
                reply,
            } => {
                let name = record.name.clone();
                let result = self
                    .publish(record, content)
                    .map_err(|reason| PublishError::Rejected { name, reason });
                let _ = reply.send(result);
            }
            Command::Get { name, reply } => {
                let _ = reply.send(self.store.read_content(&name));
            }
            Command::List { reply } => {
                let _ = reply.send(self.store.index().records().cloned().collect());
            }
            Command::Status { reply } => {
                let _ = reply.send(Status {
                    peer_id: *self.swarm.local_peer_id(),
                    listen_addrs: self.listen_addrs.clone(),
                    peers: self.verified_peers(),
                    files: self.store.index().len(),
                    root: self.store.index().root(),
                    metrics: self.metrics.clone(),
                    bootstrap: self
                        .bootstrap
                        .iter()
                        .map(|entry| BootstrapStatus {
                            address: entry.address.clone(),
                            connected: entry
                                .reached
                                .is_some_and(|peer| self.swarm.is_connected(&peer)),
                            error: entry.error.clone(),
                        })
                        .collect(),
                    unresolved_bootstrap: self.unresolved.clone(),
                });
            }
            Command::Resolved { peer, addresses } => {
                tracing::info!(%peer, "bootstrap peer resolves now");
                self.unresolved.retain(|p| *p != peer);
                self.bootstrap
                    .extend(addresses.into_iter().map(|address| Bootstrap {
                        address,
                        reached: None,
                        error: None,
                    }));
                self.redial();
            }
            Command::Dial { address } => {
                if let Err(error) = self.swarm.dial(address.clone()) {
                    tracing::debug!(%address, %error, "dial failed");
                }
            }
        }
    }

    /// Peers that proved membership and admitted us.
    fn verified_peers(&self) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, peer)| peer.ready())
            .map(|(id, _)| *id)
            .collect()
    }

    fn publish(&mut self, record: Record, content: Vec<u8>) -> Result<(), RejectReason> {
        let verdict = self.admit(&record);
        if let Err(reason) = verdict {
            self.metrics.reject(reason);
            return Err(reason);
        }
        if verdict == Ok(false) {
            return Ok(());
        }
        let content = if record.kind == Kind::Tombstone {
            Vec::new()
        } else {
            content
        };
        if record.kind == Kind::Update && !record.matches_content(&content) {
            self.metrics.reject(RejectReason::ContentMismatch);
            return Err(RejectReason::ContentMismatch);
        }
        self.commit(record, &content, None)
    }

    /// Policy and freshness: `Ok(true)` to take it, `Ok(false)` when this very record is
    /// already current (a duplicate, not an error), `Err` to refuse it.
    fn admit(&self, record: &Record) -> Result<bool, RejectReason> {
        self.policy.check(record, unix_micros_now())?;
        if self
            .store
            .current(&record.name)
            .is_some_and(|current| current.digest() == record.digest())
        {
            return Ok(false);
        }
        if !self.store.is_newer(record) {
            return Err(RejectReason::Stale);
        }
        Ok(true)
    }

    fn commit(
        &mut self,
        record: Record,
        content: &[u8],
        source: Option<PeerId>,
    ) -> Result<(), RejectReason> {
        let name = record.name.clone();
        if let Err(error) = self.store.commit(record.clone(), content) {
            let reason = match error {
                StoreError::PathConflict { .. } => RejectReason::PathConflict,
                StoreError::Io(_) | StoreError::Fs(_) => {
                    tracing::error!(error = %error, "failed to store `{name}`");
                    RejectReason::Storage
                }
            };
            self.metrics.reject(reason);
            return Err(reason);
        }
        tracing::debug!(%name, signed_at = record.signed_at, "accepted");
        self.metrics.accepted += 1;
        self.changes.send_modify(|count| *count += 1);
        if self
            .pending
            .get(&name)
            .is_some_and(|pending| !record.supersedes(&pending.record) || pending.record == record)
        {
            self.pending.remove(&name);
        }
        for peer in self.verified_peers() {
            if Some(peer) != source {
                self.send(peer, Request::Announce(record.clone()), Outbound::Announce);
            }
        }
        Ok(())
    }

    /// Sends a request; announcements wait in the peer's backlog while too many are in flight.
    fn send(&mut self, peer: PeerId, request: Request, purpose: Outbound) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if let (Outbound::Announce, Request::Announce(record)) = (&purpose, &request) {
            if state.inflight >= MAX_PEER_INFLIGHT {
                if state.backlog.len() < MAX_BACKLOG {
                    state.backlog.push_back(record.name.clone());
                }
                return;
            }
        }
        state.inflight += 1;
        self.metrics.count_traffic(
            &peer,
            Direction::Sent,
            request.kind(),
            4 + request.encode().len(),
        );
        let id = self
            .swarm
            .behaviour_mut()
            .mesh
            .send_request(&peer, Ok(request));
        self.outbound.insert(id, purpose);
    }

    /// An outbound request to `peer` ended; lets a waiting announcement go.
    fn request_done(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.inflight = state.inflight.saturating_sub(1);
        if state.inflight >= MAX_PEER_INFLIGHT {
            return;
        }
        while let Some(name) = state.backlog.pop_front() {
            if let Some(record) = self.store.current(&name) {
                let request = Request::Announce(record.clone());
                self.send(peer, request, Outbound::Announce);
                return;
            }
        }
    }

    fn respond(&mut self, peer: PeerId, channel: ResponseChannel<Response>, response: Response) {
        self.metrics
            .count_traffic(&peer, Direction::Sent, response.kind(), response.wire_len());
        let _ = self
            .swarm
            .behaviour_mut()
            .mesh
            .send_response(channel, response);
    }

    fn ban(&mut self, peer: PeerId, reason: RejectReason) {
        tracing::warn!(%peer, %reason, "disconnecting misbehaving peer");
        self.banned.insert(peer);
        self.peers.remove(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                connection_id,
                ..
            } => {
                self.bootstrap_dials.remove(&connection_id);
                if self.banned.contains(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if endpoint.is_dialer() {
                    let remote = endpoint.get_remote_address();
                    for entry in &mut self.bootstrap {
                        if without_peer_id(&entry.address) == without_peer_id(remote) {
                            entry.reached = Some(peer_id);
                            entry.error = None;
                        }
                    }
                }
                if num_established.get() == 1 {
                    self.peers.insert(peer_id, Peer::new());
                    let hello = Request::Hello(self.certificate.clone());
                    self.send(peer_id, hello, Outbound::Hello);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.peers.remove(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(index) = self.bootstrap_dials.remove(&connection_id) {
                    self.bootstrap[index].error = Some(dial_failure(&error));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mesh(event)) => self.on_mesh_event(event),
            _ => {}
        }
    }

    fn on_mesh_event(&mut self, event: MeshEvent) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request: Err(error),
                    ..
                } => {
                    tracing::debug!(%peer, %error, "malformed request");
                    self.metrics.reject(RejectReason::Malformed);
                    self.ban(peer, RejectReason::Malformed);
                }
                request_response::Message::Request {
                    request: Ok(request),
                    channel,
                    ..
                } => {
                    self.metrics.count_traffic(
                        &peer,
                        Direction::Received,
                        request.kind(),
                        4 + request.encode().len(),
                    );
                    let response = self.on_request(peer, request);
                    self.respond(peer, channel, response);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.metrics.count_traffic(
                        &peer,
                        Direction::Received,
                        response.kind(),
                        response.wire_len(),
                    );
                    if let Some(purpose) = self.outbound.remove(&request_id) {
                        self.request_done(peer);
                        self.on_response(peer, purpose, response);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let purpose = self.outbound.remove(&request_id);
                if purpose.is_some() {
                    self.request_done(peer);
                }
                if let request_response::OutboundFailure::Io(io) = &error {
                    if io.kind() == std::io::ErrorKind::InvalidData {
                        self.metrics.reject(RejectReason::Malformed);
                        self.ban(peer, RejectReason::Malformed);
                    }
                }
                match purpose {
                    Some(Outbound::Fetch { name, digest }) => self.fetch_failed(&name, &digest),
                    Some(Outbound::Reconcile(_)) => {
                        if let Some(state) = self.peers.get_mut(&peer) {
                            state.reconciling = false;
                            state.queue.clear();
                        }
                    }
                    _ => {}
                }
            }
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Checks a peer's certificate against the key it authenticated with. `answered_ours`
    /// says the certificate came in the answer to our `Hello`, so the peer admitted us too.
    /// Exchanges start once both sides admitted each other.
    fn verify_peer(
        &mut self,
        peer: PeerId,
        certificate: &Certificate,
        answered_ours: bool,
    ) -> bool {
        let valid = certificate.subject.peer_id() == Some(peer)
            && certificate
                .verify(&self.policy.network, unix_micros_now())
                .is_ok();
        if !valid {
            self.metrics.reject(RejectReason::BadCertificate);
            self.ban(peer, RejectReason::BadCertificate);
            return false;
        }
        let newly_ready = self.peers.get_mut(&peer).is_some_and(|state| {
            let was_ready = state.ready();
            state.verified = true;
            state.admitted |= answered_ours;
            !was_ready && state.ready()
        });
        if newly_ready {
            tracing::debug!(%peer, "peer verified");
            self.start_round(peer);
        }
        true
    }

    fn on_request(&mut self, peer: PeerId, request: Request) -> Response {
        if let Request::Hello(certificate) = &request {
            return match self.verify_peer(peer, certificate, false) {
                true => Response::Hello(self.certificate.clone()),
                false => Response::Refused(RejectReason::BadCertificate),
            };
        }
        let Some(state) = self.peers.get_mut(&peer).filter(|state| state.verified) else {
            self.metrics.reject(RejectReason::UnverifiedPeer);
            return Response::Refused(RejectReason::UnverifiedPeer);
        };
        match request {
            Request::Hello(_) => Response::Ack,
            Request::Announce(record) => {
                if !state.take_budget() {
                    self.metrics.reject(RejectReason::RateLimited);
                    return Response::Refused(RejectReason::RateLimited);
                }
                self.offer(record, peer);
                Response::Ack
            }
            Request::Digest(summary) if summary == self.store.index().root() => Response::InSync,
            Request::Digest(_) => Response::Nodes(vec![self.node_reply(&Prefix::ROOT)]),
            Request::Nodes(prefixes) => {
                Response::Nodes(prefixes.iter().map(|p| self.node_reply(p)).collect())
            }
            Request::Fetch { name, digest } => match self.store.read_content(&name) {
                Some((record, content)) if record.digest() == digest => Response::Content(content),
                _ => Response::NotFound,
            },
        }
    }

    fn node_reply(&self, prefix: &Prefix) -> NodeReply {
        let index = self.store.index();
        if prefix.depth >= MAX_DEPTH || index.summary(prefix).count <= LEAF_MAX {
            NodeReply::Leaf(index.records_in(prefix).into_iter().cloned().collect())
        } else {
            NodeReply::Split(Box::new(index.children(prefix)))
        }
    }

    fn on_response(&mut self, peer: PeerId, purpose: Outbound, response: Response) {
        match (purpose, response) {
            (Outbound::Hello, Response::Hello(certificate)) => {
                self.verify_peer(peer, &certificate, true);
            }
            (Outbound::Reconcile(prefixes), Response::Nodes(replies))
                if replies.len() == prefixes.len() =>
            {
                for (prefix, reply) in prefixes.iter().zip(replies) {
                    self.compare(peer, prefix, reply);
                }
                self.continue_round(peer);
            }
            (Outbound::Reconcile(_), Response::InSync) => self.end_round(peer),
            (Outbound::Reconcile(_), Response::Refused(_)) => self.end_round(peer),
            (Outbound::Reconcile(_), _) => {
                self.metrics.reject(RejectReason::Malformed);
                self.end_round(peer);
            }
            (Outbound::Fetch { name, digest }, Response::Content(content)) => {
                self.fetched(peer, &name, &digest, content)
            }
            (Outbound::Fetch { name, digest }, _) => self.fetch_failed(&name, &digest),
            _ => {}
        }
    }

    /// A record a peer offered: checked now, content fetched from that peer if needed.
    fn offer(&mut self, record: Record, peer: PeerId) {
        match self.admit(&record) {
            Err(reason) => {
                self.metrics.reject(reason);
                if reason == RejectReason::BadSignature {
                    self.ban(peer, reason);
                }
            }
            Ok(false) => {}
            Ok(true) if record.kind == Kind::Tombstone || record.size == 0 => {
                let _ = self.commit(record, &[], Some(peer));
            }
            Ok(true) => {
                let name = record.name.clone();
                match self.pending.get_mut(&name) {
                    Some(pending) if pending.record == record => {
                        if !pending.candidates.contains(&peer) {
                            pending.candidates.push_back(peer);
                        }
                        return;
                    }
                    Some(pending) if !record.supersedes(&pending.record) => {
                        self.metrics.reject(RejectReason::Stale);
                        return;
                    }
                    _ => {}
                }
                let inflight = self.pending.get(&name).is_some_and(|p| p.inflight);
                self.pending.insert(
                    name.clone(),
                    Pending {
                        record,
                        candidates: VecDeque::from([peer]),
                        inflight,
                    },
                );
                if !inflight {
                    self.fetch_queue.push_back(name);
                    self.start_fetches();
                }
            }
        }
    }

    fn start_fetches(&mut self) {
        while self.inflight_fetches < MAX_INFLIGHT_FETCHES {
            let Some(name) = self.fetch_queue.pop_front() else {
                return;
            };
            let Some(pending) = self.pending.get_mut(&name) else {
                continue;
            };
            let next = std::iter::from_fn(|| pending.candidates.pop_front())
                .find(|peer| self.peers.get(peer).is_some_and(|state| state.ready()));
            let Some(peer) = next else {
                self.pending.remove(&name);
                continue;
            };
            pending.inflight = true;
            let digest = pending.record.digest();
            self.inflight_fetches += 1;
            self.metrics.fetches += 1;
            self.send(
                peer,
                Request::Fetch {
                    name: name.clone(),
                    digest,
                },
                Outbound::Fetch { name, digest },
            );
        }
    }

    /// A fetch ended; when the pending version is still `digest`, try its next candidate.
    fn fetch_done(&mut self, name: &FileName, digest: &[u8; 32], retry: bool) {
        self.inflight_fetches = self.inflight_fetches.saturating_sub(1);
        if let Some(pending) = self.pending.get_mut(name) {
            pending.inflight = false;
            if retry || pending.record.digest() != *digest {
                self.fetch_queue.push_back(name.clone());
            }
        }
        self.start_fetches();
    }

    fn fetch_failed(&mut self, name: &FileName, digest: &[u8; 32]) {
        self.fetch_done(name, digest, true);
    }

    fn fetched(&mut self, peer: PeerId, name: &FileName, digest: &[u8; 32], content: Vec<u8>) {
        let record = match self.pending.get(name) {
            Some(pending) if pending.record.digest() == *digest => pending.record.clone(),
            _ => return self.fetch_done(name, digest, false),
        };
        if !record.matches_content(&content) {
            self.metrics.reject(RejectReason::ContentMismatch);
            self.ban(peer, RejectReason::ContentMismatch);
            return self.fetch_failed(name, digest);
        }
        self.pending.remove(name);
        if self.admit(&record) == Ok(true) {
            let _ = self.commit(record, &content, Some(peer));
        }
        self.fetch_done(name, digest, false);
    }

    fn anti_entropy_round(&mut self) {
        let peers = self.verified_peers();
        if let Some(peer) = peers.choose(&mut rand::thread_rng()) {
            self.start_round(*peer);
        }
    }

    fn start_round(&mut self, peer: PeerId) {
        let Some(state) = self
            .peers
            .get_mut(&peer)
            .filter(|s| s.ready() && !s.reconciling)
        else {
            return;
        };
        state.reconciling = true;
        let root = self.store.index().root();
        self.send(
            peer,
            Request::Digest(root),
            Outbound::Reconcile(vec![Prefix::ROOT]),
        );
    }

    fn continue_round(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let take = state.queue.len().min(MAX_PREFIXES);
        if take == 0 {
            state.reconciling = false;
            return;
        }
        let prefixes: Vec<Prefix> = state.queue.drain(..take).collect();
        self.send(
            peer,
            Request::Nodes(prefixes.clone()),
            Outbound::Reconcile(prefixes),
        );
    }

    fn end_round(&mut self, peer: PeerId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.reconciling = false;
            state.queue.clear();
        }
    }

    /// Compares a peer's answer for `prefix` with the local index: takes newer records,
    /// pushes ours where the peer is behind, queues differing children.
    fn compare(&mut self, peer: PeerId, prefix: &Prefix, reply: NodeReply) {
        match reply {
            NodeReply::Split(theirs) => {
                let ours = self.store.index().children(prefix);
                let mut descend = Vec::new();
                for (nibble, (their, our)) in theirs.iter().zip(ours.iter()).enumerate() {
                    let Some(child) = prefix.child(nibble as u8) else {
                        break;
                    };
                    if their == our {
                        continue;
                    }
                    if their.count == 0 {
                        self.push_records(peer, &child, &[]);
                    } else {
                        descend.push(child);
                    }
                }
                if let Some(state) = self.peers.get_mut(&peer) {
                    let room = MAX_QUEUED_PREFIXES.saturating_sub(state.queue.len());
                    state.queue.extend(descend.into_iter().take(room));
                }
            }
            NodeReply::Leaf(records) => {
                for record in &records {
                    if self.store.is_newer(record) {
                        self.offer(record.clone(), peer);
                    }
                }
                self.push_records(peer, prefix, &records);
            }
        }
    }

    /// Announces our records under `prefix` that are newer than what the peer showed.
    fn push_records(&mut self, peer: PeerId, prefix: &Prefix, theirs: &[Record]) {
        let ours: Vec<Record> = self
            .store
            .index()
            .records_in(prefix)
            .into_iter()
            .filter(|ours| {
                theirs
                    .iter()
                    .find(|t| t.name == ours.name)
                    .is_none_or(|their| ours.supersedes(their))
            })
            .cloned()
            .collect();
        for record in ours {
            self.send(peer, Request::Announce(record), Outbound::Announce);
        }
    }

    fn expire(&mut self) {
        match self.store.expire(unix_micros_now()) {
            Ok(names) if !names.is_empty() => {
                tracing::debug!(count = names.len(), "files expired");
                self.changes.send_modify(|count| *count += 1);
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "failed to remove expired files"),
        }
    }

    /// Dials every bootstrap address whose peer is not connected.
    fn redial(&mut self) {
        for index in 0..self.bootstrap.len() {
            let entry = &self.bootstrap[index];
            let known = entry.reached.or_else(|| peer_id_of(&entry.address));
            let dialing = self.bootstrap_dials.values().any(|i| *i == index);
            if dialing
                || known.is_some_and(|peer| {
                    self.swarm.is_connected(&peer) || self.banned.contains(&peer)
                })
            {
                continue;
            }
            let options = DialOpts::unknown_peer_id()
                .address(entry.address.clone())
                .build();
            let connection = options.connection_id();
            match self.swarm.dial(options) {
                Ok(()) => {
                    self.bootstrap_dials.insert(connection, index);
                }
                Err(error) => {
                    tracing::debug!(address = %entry.address, %error, "bootstrap dial failed");
                    self.bootstrap[index].error = Some(error.to_string());
                }
            }
        }
    }
}

/// Resolves a bootstrap `host:port` that did not resolve at start, retrying with a growing
/// pause (up to half a minute), and hands its addresses to the node.
async fn resolve_later(peer: String, commands: mpsc::Sender<Command>) {
    let mut pause = Duration::from_secs(1);
    loop {
        tokio::time::sleep(pause).await;
        if let Ok(found) = tokio::net::lookup_host(peer.clone()).await {
            let addresses: Vec<Multiaddr> = found
                .map(|a| crate::config::tcp_multiaddr(a.ip(), a.port()))
                .collect();
            if !addresses.is_empty() {
                let _ = commands.send(Command::Resolved { peer, addresses }).await;
                return;
            }
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// Why a dial failed, in a few words: the innermost cause of each transport attempt
/// (`Connection refused (os error 111)`) rather than libp2p's nested rendering.
fn dial_failure(error: &DialError) -> String {
    if let DialError::Transport(attempts) = error {
        let reasons: Vec<String> = attempts
            .iter()
            .map(|(_, error)| {
                let mut cause: &dyn std::error::Error = error;
                while let Some(source) = cause.source() {
                    cause = source;
                }
                cause.to_string()
            })
            .collect();
        if !reasons.is_empty() {
            return reasons.join("; ");
        }
    }
    error.to_string()
}

fn peer_id_of(address: &Multiaddr) -> Option<PeerId> {
    address.iter().find_map(|protocol| match protocol {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

fn without_peer_id(address: &Multiaddr) -> Multiaddr {
    address
        .iter()
        .filter(|protocol| !matches!(protocol, Protocol::P2p(_)))
        .collect()
}

impl clan_error::Hint for MesherError {}
impl clan_error::Hint for PublishError {}
clan_error::register!(MesherError, PublishError);
