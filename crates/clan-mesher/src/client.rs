//! The Data Mesher client: talks to a running daemon over its loopback HTTP API with typed
//! replies, and turns refusals into typed errors that carry their own hints. Here, beside the
//! daemon, so that the machine binary (`clan-agent mesher …`) has it without the operations
//! library.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{Config, FileName, Record, RejectReason};

/// How talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config `{}` has no [http] section", .config.display())]
    NoApi { config: PathBuf },
    #[error(
        "the mesher daemon is not running: nothing answers on {address} (the API of `{}`)",
        .config.display()
    )]
    NotRunning {
        address: SocketAddr,
        config: PathBuf,
        source: crate::http::ClientError,
    },
    #[error("the daemon refused the request ({status}): {}", .reason.as_deref().unwrap_or(.text))]
    Refused {
        status: u16,
        /// The refusal, when the daemon names one.
        reason: Option<Refusal>,
        /// The daemon's answer as it came.
        text: String,
    },
    #[error("the daemon sent a malformed {what}")]
    Malformed {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// A refusal the daemon names: the record broke one of the network's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub RejectReason);

impl std::ops::Deref for Refusal {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl clan_error::Hint for Error {
    fn hint(&self) -> Option<String> {
        let hint = match self {
            Error::NoApi { .. } => {
                "add `[http]` (port, interfaces on loopback) so the CLI can reach the daemon"
            }
            Error::NotRunning { .. } => {
                "on a clan machine see `systemctl status data-mesher`; elsewhere start it with \
                 `clan mesher run --config <dm.toml>`"
            }
            Error::Refused { reason, .. } => match reason.map(|r| r.0) {
                Some(RejectReason::NotAllowed) => {
                    "the signing key is not listed for this name in [network.files], and the \
                     name is not `<namespace>/<your key hex>`"
                }
                Some(RejectReason::Stale) => "a newer version of this file already exists",
                Some(RejectReason::FromFuture) => {
                    "the signing time is ahead of the daemon's clock; check both clocks"
                }
                Some(RejectReason::BadCertificate) => {
                    "signed-namespace files need `--certificate` with the signer's valid \
                     certificate"
                }
                Some(RejectReason::WrongNetwork) => "the record was signed for another network id",
                _ => "see the daemon's log for details",
            },
            Error::Malformed { .. } => return None,
        };
        Some(hint.to_owned())
    }
}

clan_error::register!(Error);

/// The running daemon's state (`GET /v1/status`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Status {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub peers: Vec<String>,
    pub files: u64,
    pub accepted: u64,
    pub fetches: u64,
    /// Refusals by reason.
    pub rejected: BTreeMap<String, u64>,
    pub bootstrap: Vec<BootstrapPeer>,
    pub unresolved_bootstrap: Vec<String>,
}

/// A configured bootstrap peer and what dialling it did.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct BootstrapPeer {
    pub address: String,
    pub connected: bool,
    pub error: Option<String>,
}

/// A current file (`GET /v1/files`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct FileEntry {
    pub name: String,
    /// `update` or `tombstone`.
    pub kind: String,
    pub signed_at: u64,
    pub size: u64,
    pub sha256: String,
    pub signer: String,
    pub valid_until: Option<u64>,
}

/// A client of the daemon configured by one `dm.toml`.
pub struct Client<'a> {
    config: &'a Config,
    address: SocketAddr,
}

impl<'a> Client<'a> {
    pub fn new(config: &'a Config) -> Result<Client<'a>, Error> {
        let address = config.api_address().ok_or_else(|| Error::NoApi {
            config: config.path.clone(),
        })?;
        Ok(Client { config, address })
    }

    fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, Error> {
        let (status, answer) =
            crate::http::call(self.address, method, path, body).map_err(|source| {
                Error::NotRunning {
                    address: self.address,
                    config: self.config.path.clone(),
                    source,
                }
            })?;
        if status >= 400 {
            let text = String::from_utf8_lossy(&answer).into_owned();
            return Err(Error::Refused {
                status,
                reason: RejectReason::parse(&text).map(Refusal),
                text,
            });
        }
        Ok(answer)
    }

    pub fn status(&self) -> Result<Status, Error> {
        let answer = self.call("GET", "/v1/status", &[])?;
        serde_json::from_slice(&answer).map_err(|source| Error::Malformed {
            what: "status",
            source,
        })
    }

    pub fn files(&self) -> Result<Vec<FileEntry>, Error> {
        let answer = self.call("GET", "/v1/files", &[])?;
        serde_json::from_slice(&answer).map_err(|source| Error::Malformed {
            what: "file list",
            source,
        })
    }

    /// The content of file `name`.
    pub fn get(&self, name: &FileName) -> Result<Vec<u8>, Error> {
        self.call("GET", &format!("/v1/files/{name}"), &[])
    }

    /// Hands a signed record (and the content it signs) to the daemon.
    pub fn publish(&self, record: &Record, content: &[u8]) -> Result<(), Error> {
        self.call(
            "POST",
            "/v1/files",
            &crate::http::encode_upload(record, content),
        )
        .map(drop)
    }

    /// Why a running daemon whose status is `status` has no peers: nothing to dial, or each
    /// bootstrap peer and what happened when dialling it.
    pub fn why_no_peers(&self, status: &Status) -> String {
        if status.bootstrap.is_empty() && status.unresolved_bootstrap.is_empty() {
            return format!(
                "no bootstrap peers are configured (`cluster.bootstrap_peers` in `{}`) and no \
                 other node has connected",
                self.config.path.display()
            );
        }
        let mut reasons: Vec<String> = status
            .unresolved_bootstrap
            .iter()
            .map(|peer| format!("{peer}: does not resolve (yet)"))
            .collect();
        for peer in &status.bootstrap {
            let state = if peer.connected {
                "connected, but it has not proved membership of this network (yet)"
            } else if let Some(error) = &peer.error {
                error
            } else {
                "not reached yet"
            };
            reasons.push(format!("{}: {state}", peer.address));
        }
        format!(
            "none of the bootstrap peers is reachable: {}",
            reasons.join("; ")
        )
    }
}
