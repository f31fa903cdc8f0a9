//! The fleet's networks as clan-core builds them from exports: every service instance that
//! exports `networking {priority, module}` is a network, and each machine it exports a `peer
//! {hosts, port, user, SSHOptions}` for is reachable over it. Hosts are plain names or
//! references to a var (an onion hostname, an overlay address), read only when used.

use std::collections::BTreeMap;

use clan_config::{InstanceName, MachineName};
use serde::Serialize;
use serde_json::Value;

use crate::target::Target;
use crate::Error;

/// clan-core's default `networking.priority`.
pub const DEFAULT_PRIORITY: i64 = 1000;
/// clan-core's default `networking.module`: plain SSH to the peer's hosts.
pub const DIRECT_MODULE: &str = "clan_lib.network.direct";

/// One network: a service instance exporting `networking`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// The instance name, which names the network (as in clan-core).
    pub name: InstanceName,
    /// The instance's service (`internet`, `wireguard`, `tor`, …).
    pub service: Option<String>,
    pub priority: i64,
    /// How it is reached (`clan_lib.network.direct`, `clan_lib.network.tor`).
    pub module: String,
    pub peers: BTreeMap<MachineName, Peer>,
}

impl Network {
    /// The module's last word (`direct`, `tor`), as clan-core's `network list` shows it.
    pub fn module_short(&self) -> &str {
        self.module.rsplit('.').next().unwrap_or(&self.module)
    }
}

/// How one machine is reached over a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    pub hosts: Vec<HostRef>,
    /// The SSH port; `None`: the machine's sshd port.
    pub port: Option<u16>,
    /// The SSH user; `None`: root (clan-core's default).
    pub user: Option<String>,
    /// Jump hosts, in order (`SSHOptions` `-J …`).
    pub jump: Vec<Target>,
}

/// A peer host: a name or address, or a var holding one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HostRef {
    Plain(String),
    Var(VarRef),
}

/// The var `<generator>/<file>` of `machine`, holding a host name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VarRef {
    pub machine: MachineName,
    pub generator: String,
    pub file: String,
}

impl std::fmt::Display for HostRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostRef::Plain(host) => f.write_str(host),
            HostRef::Var(var) => write!(f, "var {}/{}/{}", var.machine, var.generator, var.file),
        }
    }
}

/// The networks of an evaluated clan, highest priority first (ties: by name).
pub fn networks(fleet: &clan_eval::FleetSummary) -> Result<Vec<Network>, Error> {
    let mut networks = from_exports(&fleet.exports)?;
    for network in &mut networks {
        network.service = fleet
            .instances
            .get(network.name.as_str())
            .map(|instance| instance.service.to_string());
    }
    Ok(networks)
}

/// The networks of `exports` (`instances.<i>.instance.networking`,
/// `instances.<i>.machines.<m>.peer`), highest priority first (ties: by name).
pub fn from_exports(exports: &Value) -> Result<Vec<Network>, Error> {
    let Some(instances) = exports.get("instances").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let mut networks = Vec::new();
    for (name, instance) in instances {
        let Some(networking) = instance.pointer("/instance/networking") else {
            continue;
        };
        let invalid = |reason: String| Error::InvalidExport {
            instance: name.clone(),
            machine: None,
            reason,
        };
        let instance_name: InstanceName = name
            .parse()
            .map_err(|_| invalid("not an instance name".into()))?;
        let priority = match networking.get("priority") {
            None | Some(Value::Null) => DEFAULT_PRIORITY,
            Some(value) => value
                .as_i64()
                .ok_or_else(|| invalid("`networking.priority` must be an integer".into()))?,
        };
        let module = match networking.get("module") {
            None | Some(Value::Null) => DIRECT_MODULE.to_owned(),
            Some(Value::String(module)) => module.clone(),
            Some(_) => return Err(invalid("`networking.module` must be a string".into())),
        };
        let mut peers = BTreeMap::new();
        if let Some(machines) = instance.get("machines").and_then(Value::as_object) {
            for (machine, exports) in machines {
                if let Some(peer) = exports.get("peer").filter(|p| !p.is_null()) {
                    let machine_name: MachineName =
                        machine.parse().map_err(|_| Error::InvalidExport {
                            instance: name.clone(),
                            machine: Some(machine.clone()),
                            reason: "not a machine name".into(),
                        })?;
                    peers.insert(machine_name, parse_peer(name, machine, peer)?);
                }
            }
        }
        networks.push(Network {
            name: instance_name,
            service: None,
            priority,
            module,
            peers,
        });
    }
    networks.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
    Ok(networks)
}

fn parse_peer(instance: &str, machine: &str, peer: &Value) -> Result<Peer, Error> {
    let invalid = |reason: String| Error::InvalidExport {
        instance: instance.to_owned(),
        machine: Some(machine.to_owned()),
        reason,
    };
    let string = |value: &Value, what: &str| {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("`{what}` must be a string")))
    };
    let mut hosts = Vec::new();
    for host in peer
        .get("hosts")
        .map(|h| {
            h.as_array()
                .ok_or_else(|| invalid("`peer.hosts` must be a list".into()))
        })
        .transpose()?
        .into_iter()
        .flatten()
    {
        if let Some(plain) = host.get("plain") {
            hosts.push(HostRef::Plain(string(plain, "peer.hosts[].plain")?));
        } else if let Some(var) = host.get("var") {
            let field = |key: &str| {
                var.get(key)
                    .ok_or_else(|| invalid(format!("`peer.hosts[].var.{key}` is missing")))
                    .and_then(|v| string(v, &format!("peer.hosts[].var.{key}")))
            };
            hosts.push(HostRef::Var(VarRef {
                machine: field("machine")?.parse().map_err(|_| {
                    invalid("`peer.hosts[].var.machine` is not a machine name".into())
                })?,
                generator: field("generator")?,
                file: field("file")?,
            }));
        } else {
            return Err(invalid(
                "each of `peer.hosts` must be `{plain = …}` or `{var = …}`".into(),
            ));
        }
    }
    let port = match peer.get("port") {
        None | Some(Value::Null) => None,
        Some(port) => Some(
            port.as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("`peer.port` must be 1 to 65535".into()))?,
        ),
    };
    let user = match peer.get("user") {
        None | Some(Value::Null) => None,
        Some(user) => Some(string(user, "peer.user")?),
    };
    let mut jump = Vec::new();
    let options = match peer.get("SSHOptions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(options)) => options
            .iter()
            .map(|o| string(o, "peer.SSHOptions[]"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("`peer.SSHOptions` must be a list".into())),
    };
    for option in &options {
        for hop in proxy_jump(option).ok_or_else(|| Error::UnsupportedSshOption {
            instance: instance.to_owned(),
            machine: machine.to_owned(),
            option: option.clone(),
        })? {
            jump.push(Target::parse(
                machine,
                hop,
                &format!("jump host of {instance}"),
            )?);
        }
    }
    Ok(Peer {
        hosts,
        port,
        user,
        jump,
    })
}

/// The jump hosts of an `SSHOptions` entry: `-J a[,b]`, `-oProxyJump=a`, `ProxyJump=a`.
/// Anything else is refused: options come from the clan's services, which may be hostile
/// (`-oProxyCommand=…` would run a command on the admin's machine).
fn proxy_jump(option: &str) -> Option<Vec<&str>> {
    let option = option.trim();
    let value = option
        .strip_prefix("-J")
        .or_else(|| {
            option
                .strip_prefix("-o")
                .map(str::trim_start)
                .and_then(proxy_jump_setting)
        })
        .or_else(|| proxy_jump_setting(option))?
        .trim();
    let hops: Vec<&str> = value.split(',').map(str::trim).collect();
    (!value.is_empty() && hops.iter().all(|h| !h.is_empty())).then_some(hops)
}

fn proxy_jump_setting(option: &str) -> Option<&str> {
    let (key, value) = option.split_once(['=', ' '])?;
    key.eq_ignore_ascii_case("ProxyJump").then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn networks_come_from_exports_highest_priority_first() {
        let exports = json!({"instances": {
            "ssh": {"instance": {}, "machines": {"a": {"sshd": {"port": 22}}}},
            "lan": {"service": "internet", "instance": {"networking": {"priority": 2000}},
                    "machines": {"a": {"peer": {"hosts": [{"plain": "10.0.0.1"}], "user": "admin", "SSHOptions": ["-J root@bastion:2222"]}}}},
            "onion": {"instance": {"networking": {"priority": 10, "module": "clan_lib.network.tor"}},
                      "machines": {"a": {"peer": {"hosts": [{"var": {"machine": "a", "generator": "tor_onion", "file": "hostname"}}], "port": 22}}}},
            "mesh": {"instance": {"networking": {}}, "machines": {}},
        }});
        let networks = from_exports(&exports).unwrap();
        let names: Vec<_> = networks
            .iter()
            .map(|n| (n.name.as_str(), n.priority))
            .collect();
        assert_eq!(names, [("lan", 2000), ("mesh", 1000), ("onion", 10)]);
        assert_eq!(networks[1].module, DIRECT_MODULE);
        assert_eq!(networks[2].module_short(), "tor");
        let lan = &networks[0].peers["a"];
        assert_eq!(lan.hosts, [HostRef::Plain("10.0.0.1".into())]);
        assert_eq!((lan.user.as_deref(), lan.port), (Some("admin"), None));
        assert_eq!(lan.jump[0].to_string(), "root@bastion:2222");
        let onion = &networks[2].peers["a"];
        assert!(matches!(&onion.hosts[0], HostRef::Var(v) if v.generator == "tor_onion"));
        assert_eq!(onion.port, Some(22));
    }

    #[test]
    fn only_jump_hosts_are_accepted_as_ssh_options() {
        assert_eq!(proxy_jump("-J a,b@c:22"), Some(vec!["a", "b@c:22"]));
        assert_eq!(proxy_jump("-oProxyJump=a"), Some(vec!["a"]));
        assert_eq!(proxy_jump("-o ProxyJump a"), Some(vec!["a"]));
        assert_eq!(proxy_jump("proxyjump=a"), Some(vec!["a"]));
        for bad in [
            "-oProxyCommand=touch /tmp/x",
            "-J",
            "-J a,,b",
            "-v",
            "LocalCommand=x",
        ] {
            assert_eq!(proxy_jump(bad), None, "{bad}");
        }
        let exports = |option: &str| {
            json!({"instances": {"lan": {"instance": {"networking": {"priority": 1}},
                "machines": {"a": {"peer": {"hosts": [], "SSHOptions": [option]}}}}}})
        };
        assert!(matches!(
            from_exports(&exports("-oProxyCommand=sh")),
            Err(Error::UnsupportedSshOption { .. })
        ));
        // A jump host that ssh would read as an option is refused too.
        assert!(from_exports(&exports("-J -oProxyCommand=sh")).is_err());
    }

    #[test]
    fn malformed_exports_name_the_instance_and_machine() {
        let exports = json!({"instances": {"lan": {"instance": {"networking": {"priority": 1}},
            "machines": {"a": {"peer": {"hosts": [{"other": 1}]}}}}}});
        let error = from_exports(&exports).unwrap_err().to_string();
        assert!(error.contains("`lan`") && error.contains("`a`"), "{error}");
    }
}
