//! `dm.toml`, in data-mesher's vocabulary: `log_level`, `state_dir`, `[cluster]` (port,
//! interfaces, bootstrap_peers, push_pull_interval, identity_key, identity_cert), `[network]`
//! (id, namespaces, files) and `[http]` (port, interfaces; loopback only). Relative paths are
//! relative to the config file. Interfaces are IP addresses, not interface names.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use serde::Deserialize;

use crate::certificate::{Certificate, CertificateFileError};
use crate::keys::{KeyError, PublicKey, SecretKey};
use crate::name::FileName;
use crate::node::Settings;
use crate::policy::Policy;

/// The config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config `{}`", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config `{}` is invalid", path.display())]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config `{}`: `{value}` in `{field}` is invalid: {reason}", path.display())]
    Value {
        path: PathBuf,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Certificate(#[from] CertificateFileError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_log_level")]
    log_level: String,
    state_dir: PathBuf,
    cluster: RawCluster,
    network: RawNetwork,
    http: Option<RawHttp>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default = "default_cluster_port")]
    port: u16,
    #[serde(default = "default_cluster_interfaces")]
    interfaces: Vec<IpAddr>,
    #[serde(default)]
    bootstrap_peers: Vec<String>,
    #[serde(default = "default_interval")]
    push_pull_interval: String,
    identity_key: PathBuf,
    identity_cert: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    id: PublicKey,
    #[serde(default)]
    namespaces: Vec<FileName>,
    #[serde(default)]
    files: BTreeMap<FileName, Vec<PublicKey>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "default_http_port")]
    port: u16,
    #[serde(default = "default_http_interfaces")]
    interfaces: Vec<IpAddr>,
}

fn default_log_level() -> String {
    "info".into()
}
fn default_cluster_port() -> u16 {
    7946
}
fn default_cluster_interfaces() -> Vec<IpAddr> {
    vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
}
fn default_interval() -> String {
    "30s".into()
}
fn default_http_port() -> u16 {
    7331
}
fn default_http_interfaces() -> Vec<IpAddr> {
    vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
}

/// A parsed and checked `dm.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub log_level: String,
    pub state_dir: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Bootstrap peers given as `host:port` whose host did not resolve when loaded.
    pub unresolved_bootstrap: Vec<String>,
    pub push_pull_interval: Duration,
    pub identity_key: PathBuf,
    pub identity_cert: PathBuf,
    pub policy: Policy,
    pub http: Vec<SocketAddr>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (which anchors relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let value_error = |field, value: &str, reason: &str| ConfigError::Value {
            path: path.to_owned(),
            field,
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let mut bootstrap = Vec::new();
        let mut unresolved_bootstrap = Vec::new();
        for text in &raw.cluster.bootstrap_peers {
            let addresses = bootstrap_addresses(text)
                .map_err(|reason| value_error("cluster.bootstrap_peers", text, &reason))?;
            if addresses.is_empty() {
                unresolved_bootstrap.push(text.clone());
            }
            bootstrap.extend(addresses);
        }
        let push_pull_interval =
            parse_duration(&raw.cluster.push_pull_interval).ok_or_else(|| {
                value_error(
                    "cluster.push_pull_interval",
                    &raw.cluster.push_pull_interval,
                    "expected e.g. `30s`, `500ms`, `2m`",
                )
            })?;
        let listen = raw
            .cluster
            .interfaces
            .iter()
            .map(|ip| tcp_multiaddr(*ip, raw.cluster.port))
            .collect();
        let http = match raw.http {
            None => Vec::new(),
            Some(http) => {
                if let Some(ip) = http.interfaces.iter().find(|ip| !ip.is_loopback()) {
                    return Err(value_error(
                        "http.interfaces",
                        &ip.to_string(),
                        "the HTTP API listens on loopback only",
                    ));
                }
                http.interfaces
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, http.port))
                    .collect()
            }
        };
        let policy = Policy {
            network: raw.network.id,
            namespaces: raw.network.namespaces.into_iter().collect(),
            files: raw
                .network
                .files
                .into_iter()
                .map(|(name, signers)| (name, signers.into_iter().collect()))
                .collect(),
        };
        Ok(Self {
            path: path.to_owned(),
            log_level: raw.log_level,
            state_dir: base.join(raw.state_dir),
            listen,
            bootstrap,
            unresolved_bootstrap,
            push_pull_interval,
            identity_key: base.join(raw.cluster.identity_key),
            identity_cert: base.join(raw.cluster.identity_cert),
            policy,
            http,
        })
    }

    /// Reads the identity key and certificate and builds the node settings.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        Ok(Settings {
            identity: SecretKey::read(&self.identity_key)?,
            certificate: Certificate::read(&self.identity_cert)?,
            policy: self.policy.clone(),
            state_dir: self.state_dir.clone(),
            listen: self.listen.clone(),
            bootstrap: self.bootstrap.clone(),
            unresolved_bootstrap: self.unresolved_bootstrap.clone(),
            push_pull_interval: self.push_pull_interval,
            http: self.http.clone(),
        })
    }

    /// Where a client reaches the API: the address the running node recorded (it may have
    /// picked the port), else the configured one.
    pub fn api_address(&self) -> Option<SocketAddr> {
        std::fs::read_to_string(self.state_dir.join(crate::API_ADDRESS_FILE))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .or_else(|| self.http.first().copied())
    }
}

/// A bootstrap peer: a multiaddr (`/ip4/…/tcp/…[/p2p/…]`) or `host:port`, resolved now. A
/// host name that does not resolve (yet) gives no address and a warning rather than stopping
/// the node: the node keeps trying it, and the other peers still bring it up to date.
fn bootstrap_addresses(text: &str) -> Result<Vec<Multiaddr>, String> {
    if text.starts_with('/') {
        return text
            .parse::<Multiaddr>()
            .map(|a| vec![a])
            .map_err(|e| e.to_string());
    }
    if text
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err("expected a multiaddr or `host:port`".into());
    }
    match std::net::ToSocketAddrs::to_socket_addrs(text) {
        Ok(addresses) => Ok(addresses.map(|a| tcp_multiaddr(a.ip(), a.port())).collect()),
        Err(error) => {
            tracing::warn!(peer = text, %error, "bootstrap peer does not resolve (yet); trying again later");
            Ok(Vec::new())
        }
    }
}

pub(crate) fn tcp_multiaddr(ip: IpAddr, port: u16) -> Multiaddr {
    let mut address = Multiaddr::empty();
    address.push(match ip {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    });
    address.push(Protocol::Tcp(port));
    address
}

/// `30s`, `500ms`, `2m`, `1h`, `365d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "m" => Duration::from_secs(number.checked_mul(60)?),
        "h" => Duration::from_secs(number.checked_mul(3600)?),
        "d" => Duration::from_secs(number.checked_mul(86400)?),
        _ => return None,
    };
    (!duration.is_zero()).then_some(duration)
}

impl clan_error::Hint for ConfigError {}
clan_error::register!(ConfigError);

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
log_level = "debug"
state_dir = "state"

[cluster]
port = 7946
interfaces = ["127.0.0.1"]
bootstrap_peers = ["/ip4/127.0.0.1/tcp/7947", "127.0.0.1:7948"]
push_pull_interval = "500ms"
identity_key = "id.key"
identity_cert = "/etc/id.cert"

[network]
id = "ID"
namespaces = ["facts"]

[network.files]
dns_zone = ["ID"]

[http]
port = 7331
"#;

    #[test]
    fn parses_the_data_mesher_vocabulary() {
        let id = SecretKey::generate().public().to_string();
        let config =
            Config::parse(&EXAMPLE.replace("ID", &id), Path::new("/etc/dm/dm.toml")).unwrap();
        assert_eq!(config.state_dir, Path::new("/etc/dm/state"));
        assert_eq!(config.identity_cert, Path::new("/etc/id.cert"));
        assert_eq!(config.push_pull_interval, Duration::from_millis(500));
        assert_eq!(config.listen[0].to_string(), "/ip4/127.0.0.1/tcp/7946");
        assert_eq!(config.bootstrap.len(), 2);
        assert!(config.unresolved_bootstrap.is_empty());
        assert_eq!(config.http, vec!["127.0.0.1:7331".parse().unwrap()]);
        assert_eq!(config.policy.files.len(), 1);
    }

    #[test]
    fn refuses_public_http_bad_names_and_unknown_keys() {
        let id = SecretKey::generate().public().to_string();
        let example = EXAMPLE.replace("ID", &id);
        let path = Path::new("dm.toml");
        let public_http = example.replace("port = 7331", "port = 7331\ninterfaces = [\"0.0.0.0\"]");
        assert!(matches!(
            Config::parse(&public_http, path),
            Err(ConfigError::Value {
                field: "http.interfaces",
                ..
            })
        ));
        let bad_name = example.replace("dns_zone =", "\"../etc\" =");
        assert!(matches!(
            Config::parse(&bad_name, path),
            Err(ConfigError::Parse { .. })
        ));
        let unknown = example.replace("log_level", "loglevel");
        assert!(Config::parse(&unknown, path).is_err());
    }

    #[test]
    fn bootstrap_peers_are_multiaddrs_or_host_and_port() {
        assert_eq!(
            bootstrap_addresses("127.0.0.1:7946").unwrap()[0].to_string(),
            "/ip4/127.0.0.1/tcp/7946"
        );
        assert_eq!(bootstrap_addresses("/ip4/10.0.0.1/tcp/1").unwrap().len(), 1);
        assert!(bootstrap_addresses("no-port").is_err());
        assert_eq!(
            bootstrap_addresses("does-not-exist.invalid:7946").unwrap(),
            vec![]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("15"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("fast"), None);
    }
}
