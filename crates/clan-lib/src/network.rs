//! The clan's networks (clan-core's `clan network list|ping|overview`): [`list`] them by
//! priority, [`ping`] one machine over each network it is a peer of, and [`overview`] every
//! peer of every network. A ping is a real SSH handshake over that network's routes (raced
//! as deploys race them) with the machine's own user and the clan host key trusted; it never
//! asks about host keys and never tries a made-up login.

use std::path::Path;

use clan_deploy::host::Host as _;
use clan_deploy::ssh::{ControlDir, HostKeyCheck, SshHost, SshOptions};
use clan_inventory::{InstanceName, MachineName};
use clan_network::{Network, Route};
use serde::Serialize;

use crate::Error;

/// One network, as `clan network list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    /// The instance name.
    pub name: InstanceName,
    pub service: Option<String>,
    pub priority: i64,
    /// clan-core's module name (`clan_lib.network.direct`).
    pub module: String,
    /// Whether the admin side can use it now (direct networks always can, tor ones when tor is
    /// installed).
    pub running: bool,
    pub peers: Vec<MachineName>,
}

/// One machine pinged over one network.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerPing {
    pub network: InstanceName,
    pub machine: MachineName,
    /// Where the handshake completed, when it did.
    pub target: Option<String>,
    /// How long the handshake took.
    pub elapsed_ms: Option<u64>,
    /// Why it did not, when it did not, and what to do about it.
    pub error: Option<String>,
    pub hint: Option<String>,
}

impl PeerPing {
    pub fn reachable(&self) -> bool {
        self.elapsed_ms.is_some()
    }
}

/// Every peer of one network, pinged.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkOverview {
    pub network: NetworkInfo,
    pub peers: Vec<PeerPing>,
}

/// The clan's networks, highest priority first.
pub fn list(dir: &Path) -> Result<Vec<NetworkInfo>, Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    Ok(networks(&fleet)?.iter().map(info).collect())
}

fn networks(fleet: &clan_eval::Fleet) -> Result<Vec<Network>, Error> {
    clan_network::networks(&fleet.summary)
        .map_err(|e| Error::Deploy(clan_deploy::Error::Network(e)))
}

fn info(network: &Network) -> NetworkInfo {
    NetworkInfo {
        name: network.name.clone(),
        service: network.service.clone(),
        priority: network.priority,
        module: network.module.clone(),
        // A tor network is usable once tor is installed: clan starts its client itself.
        running: network.module == clan_network::DIRECT_MODULE
            || network.module == clan_network::tor::TOR_MODULE && clan_network::tor::available(),
        peers: network.peers.keys().cloned().collect(),
    }
}

/// Pings `machine` over each network it is a peer of (only `network` when given), highest
/// priority first, until one answers (as clan-core does); the last entry says which.
pub fn ping(
    dir: &Path,
    machine: &MachineName,
    network: Option<&InstanceName>,
    ssh: &SshOptions,
) -> Result<Vec<PeerPing>, Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    let networks = networks(&fleet)?;
    let network_error = |e| Error::Deploy(clan_deploy::Error::Network(e));
    if let Some(name) = network {
        if !networks.iter().any(|n| &n.name == name) {
            return Err(network_error(clan_network::Error::UnknownNetwork {
                network: name.to_string(),
            }));
        }
    }
    let chosen: Vec<&Network> = networks
        .iter()
        .filter(|n| {
            network.is_none_or(|name| &n.name == name) && n.peers.contains_key(machine.as_str())
        })
        .collect();
    if chosen.is_empty() {
        return Err(network_error(clan_network::Error::NotAPeer {
            machine: machine.to_string(),
            network: network.map(ToString::to_string),
        }));
    }
    let route = Route::of(&fleet, dir, machine, None).map_err(network_error)?;
    let mut pings = Vec::new();
    for network in chosen {
        let ping = ping_over(&route, &network.name, ssh);
        let reachable = ping.reachable();
        pings.push(ping);
        if reachable {
            break;
        }
    }
    Ok(pings)
}

/// Every network with each of its peers pinged, all at once.
pub fn overview(dir: &Path, ssh: &SshOptions) -> Result<Vec<NetworkOverview>, Error> {
    let fleet = clan_eval::Fleet::open(dir)?;
    let networks = networks(&fleet)?;
    let mut routes = std::collections::BTreeMap::new();
    for network in &networks {
        for machine in network.peers.keys() {
            if !routes.contains_key(machine) {
                let route = Route::of(&fleet, dir, machine, None)
                    .map_err(|e| Error::Deploy(clan_deploy::Error::Network(e)))?;
                routes.insert(machine.clone(), route);
            }
        }
    }
    let routes = &routes;
    Ok(std::thread::scope(|scope| {
        let pinged: Vec<_> = networks
            .iter()
            .map(|network| {
                let peers: Vec<_> = network
                    .peers
                    .keys()
                    .map(|machine| {
                        scope.spawn(move || ping_over(&routes[machine], &network.name, ssh))
                    })
                    .collect();
                (network, peers)
            })
            .collect();
        pinged
            .into_iter()
            .map(|(network, peers)| NetworkOverview {
                network: info(network),
                peers: peers
                    .into_iter()
                    .zip(network.peers.keys())
                    .map(|(ping, machine)| {
                        ping.join().unwrap_or_else(|_| PeerPing {
                            network: network.name.clone(),
                            machine: machine.clone(),
                            target: None,
                            elapsed_ms: None,
                            error: Some("internal error while pinging".to_owned()),
                            hint: None,
                        })
                    })
                    .collect(),
            })
            .collect()
    }))
}

/// One handshake with `route`'s machine over the routes of `network` only.
fn ping_over(route: &Route, network: &InstanceName, ssh: &SshOptions) -> PeerPing {
    let mut ping = PeerPing {
        network: network.clone(),
        machine: route.machine.clone(),
        target: None,
        elapsed_ms: None,
        error: None,
        hint: None,
    };
    let routes: Vec<_> = route
        .routes
        .iter()
        .filter(|r| r.network.as_ref() == Some(network))
        .cloned()
        .collect();
    let mut options = ssh.clone();
    if options.host_key_check == HostKeyCheck::Ask {
        // A ping never asks: an unknown host key is its answer.
        options.host_key_check = HostKeyCheck::Strict;
    }
    let connected = ControlDir::new().and_then(|control_dir| {
        let mut host = SshHost::new(&route.machine, routes, options, &control_dir, 0);
        if let Some(key) = &route.host_key {
            host.trust_host_key(key);
        }
        host.connect()?;
        Ok(host.route_used())
    });
    match connected {
        Ok(Some(used)) => {
            ping.target = Some(used.target);
            ping.elapsed_ms = Some(used.elapsed_ms);
        }
        Ok(None) => ping.error = Some("no route".to_owned()),
        Err(error) => {
            ping.error = Some(error.to_string());
            ping.hint = clan_error::Hint::hint(&error);
        }
    }
    ping
}
