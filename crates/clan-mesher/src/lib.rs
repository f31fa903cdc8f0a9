//! Data Mesher: small signed files replicated to every machine of a network, with no server and
//! no quorum.
//!
//! This crate owns the whole mesher: names and their grammar, keys and membership certificates,
//! signed records and the rule that decides which version wins, the on-disk state under
//! `<state>/files/<network>/<name>`, the peer protocol over libp2p (TCP, Noise, Yamux) with
//! eager announcements and digest-based anti-entropy, the loopback HTTP API and `dm.toml`.
//! It must never trust a peer: every record from anywhere is checked against the signature,
//! the allowed signers, the clock and the size limit before it becomes visible, and content
//! is verified against its signed hash before it is written. It never logs secret keys and
//! never needs a file signing key to run: records are signed by their authors, not by nodes.

pub mod bytes;
pub mod certificate;
pub mod client;
pub mod config;
pub mod http;
pub mod index;
pub mod keys;
pub mod metrics;
pub mod name;
mod node;
pub mod policy;
pub mod record;
pub mod store;
pub mod wire;

pub use certificate::Certificate;
pub use config::Config;
pub use keys::{NetworkId, PublicKey, SecretKey};
pub use name::FileName;
pub use node::{Handle, Mesher, MesherError, PublishError, Settings, Status};
pub use policy::{Policy, RejectReason};
pub use record::{Kind, Record};

/// File in the state directory where a running node records its HTTP API address.
pub const API_ADDRESS_FILE: &str = "api.addr";
