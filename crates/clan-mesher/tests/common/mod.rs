//! Test fixtures: a network (network key, admin signer, policy) whose nodes run in this process
//! on loopback, and an adversary peer that speaks raw bytes over the mesher protocol.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clan_mesher::{Certificate, FileName, Handle, Mesher, Policy, Record, SecretKey, Settings};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

/// Generous bound on how long a condition may take before the test gives up: a hang guard,
/// not a speed assertion (speed is measured by the benchmark).
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn name(text: &str) -> FileName {
    FileName::parse(text).unwrap()
}

pub struct Net {
    pub network_key: SecretKey,
    pub admin: SecretKey,
    pub policy: Policy,
    pub dir: tempfile::TempDir,
    pub interval: Duration,
}

impl Net {
    /// A network where the admin may sign `zone` and `file_0` … `file_199`, and nodes may
    /// publish under the `facts` namespace.
    pub fn new() -> Self {
        let network_key = SecretKey::generate();
        let admin = SecretKey::generate();
        let mut files = std::collections::BTreeMap::new();
        files.insert(name("zone"), [admin.public()].into());
        for i in 0..200 {
            files.insert(name(&format!("file_{i}")), [admin.public()].into());
        }
        let policy = Policy {
            network: network_key.public(),
            namespaces: [name("facts")].into(),
            files,
        };
        Self {
            network_key,
            admin,
            policy,
            dir: tempfile::tempdir().unwrap(),
            interval: Duration::from_millis(300),
        }
    }

    /// Node `index` keeps its identity and state directory across restarts.
    pub fn identity(&self, index: usize) -> SecretKey {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(index as u64 + 1).to_be_bytes());
        seed[8..].copy_from_slice(&self.network_key.public().0[..24]);
        SecretKey::from_seed(seed)
    }

    pub fn certificate(&self, key: &SecretKey) -> Certificate {
        Certificate::sign(&self.network_key, key.public(), 0, None)
    }

    pub fn state_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("node{index}"))
    }

    pub fn settings(&self, index: usize, bootstrap: &[Multiaddr]) -> Settings {
        let identity = self.identity(index);
        Settings {
            certificate: self.certificate(&identity),
            identity,
            policy: self.policy.clone(),
            state_dir: self.state_dir(index),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap: bootstrap.to_vec(),
            unresolved_bootstrap: Vec::new(),
            push_pull_interval: self.interval,
            http: Vec::new(),
        }
    }

    pub async fn spawn(&self, index: usize, bootstrap: &[Multiaddr]) -> Mesher {
        Mesher::spawn(self.settings(index, bootstrap))
            .await
            .unwrap()
    }

    pub fn update(&self, file: &str, content: &[u8], signed_at: u64) -> Record {
        Record::sign_update(
            &self.admin,
            self.network_key.public(),
            name(file),
            content,
            signed_at,
            None,
        )
    }

    /// Where node `index` keeps the content of `file`.
    pub fn content_path(&self, index: usize, file: &str) -> PathBuf {
        self.state_dir(index)
            .join("files")
            .join(self.network_key.public().to_string())
            .join(file)
    }
}

/// The node's dialable address (`…/p2p/<peer id>`).
pub async fn address(handle: &Handle) -> Multiaddr {
    let status = handle.status().await.unwrap();
    status.listen_addrs[0]
        .clone()
        .with(Protocol::P2p(status.peer_id))
}

/// Waits until `check` holds, re-checking whenever a file changes and at least every 50 ms.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let result = tokio::time::timeout(PATIENCE, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "gave up waiting for: {what}");
}

pub async fn has_content(handle: &Handle, file: &str, content: &[u8]) -> bool {
    handle
        .get(&name(file))
        .await
        .is_some_and(|(_, c)| c == content)
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Writes requests and responses verbatim, reads whatever comes back (bounded).
#[derive(Clone, Default)]
struct RawCodec;

const RAW_LIMIT: u64 = 16 * 1024 * 1024;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        io.take(RAW_LIMIT).read_to_end(&mut out).await?;
        Ok(out)
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        io.take(RAW_LIMIT).read_to_end(&mut out).await?;
        Ok(out)
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        bytes: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&bytes).await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        bytes: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&bytes).await
    }
}

type Responder = Box<dyn FnMut(&[u8]) -> Vec<u8> + Send>;
type Outgoing = (Vec<u8>, oneshot::Sender<Result<Vec<u8>, String>>);

/// A peer under the test's control: answers the node's requests with `responder` and sends
/// whatever bytes the test asks it to.
pub struct Adversary {
    pub peer_id: PeerId,
    outgoing: mpsc::Sender<Outgoing>,
    pub disconnected: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Adversary {
    pub async fn connect(key: &SecretKey, target: Multiaddr, mut responder: Responder) -> Self {
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    RawCodec,
                    [(clan_mesher::wire::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(20)),
                )
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        let target_peer = target.iter().find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        });
        swarm.dial(target).unwrap();
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => break,
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("adversary could not connect: {error}")
                }
                _ => {}
            }
        }
        let target_peer = target_peer.expect("address with /p2p");
        let (outgoing, mut outgoing_rx) = mpsc::channel::<Outgoing>(1024);
        let disconnected = Arc::new(AtomicBool::new(false));
        let flag = disconnected.clone();
        let task = tokio::spawn(async move {
            let mut waiting = std::collections::HashMap::new();
            loop {
                tokio::select! {
                    Some((bytes, reply)) = outgoing_rx.recv() => {
                        let id = swarm.behaviour_mut().send_request(&target_peer, bytes);
                        waiting.insert(id, reply);
                    }
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(request_response::Event::Message { message, .. }) => match message {
                            request_response::Message::Request { request, channel, .. } => {
                                let _ = swarm.behaviour_mut().send_response(channel, responder(&request));
                            }
                            request_response::Message::Response { request_id, response } => {
                                if let Some(reply) = waiting.remove(&request_id) {
                                    let _ = reply.send(Ok(response));
                                }
                            }
                        },
                        SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. }) => {
                            if let Some(reply) = waiting.remove(&request_id) {
                                let _ = reply.send(Err(error.to_string()));
                            }
                        }
                        SwarmEvent::ConnectionClosed { num_established: 0, .. } => flag.store(true, Ordering::SeqCst),
                        _ => {}
                    }
                }
            }
        });
        Self {
            peer_id: key.public().peer_id().unwrap(),
            outgoing,
            disconnected,
            task,
        }
    }

    /// Sends raw bytes as one request; the answer's raw bytes, or why there was none.
    pub async fn request(&self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let (reply, answer) = oneshot::channel();
        self.outgoing
            .send((bytes, reply))
            .await
            .map_err(|e| e.to_string())?;
        answer.await.map_err(|e| e.to_string())?
    }

    /// Queues a request without waiting for its answer.
    pub async fn fire(&self, bytes: Vec<u8>) {
        let (reply, _) = oneshot::channel();
        let _ = self.outgoing.send((bytes, reply)).await;
    }
}

impl Drop for Adversary {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A responder that answers `Hello` with `certificate` and everything else with `other`.
pub fn member_responder(
    certificate: Certificate,
    mut other: impl FnMut(&clan_mesher::wire::Request) -> Vec<u8> + Send + 'static,
) -> Responder {
    use clan_mesher::wire::{Request, Response};
    Box::new(move |raw: &[u8]| {
        let request = raw
            .get(4..)
            .and_then(|payload| Request::decode(payload).ok());
        match request {
            Some(Request::Hello(_)) => frame(&Response::Hello(certificate.clone()).encode()),
            Some(request) => other(&request),
            None => Vec::new(),
        }
    })
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        if entry.path().is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}
