//! Where to connect to a machine: `deploy.targetHost`, else the reachable network with
//! the highest priority among the fleet's exports, else `root@<machine>.<domain>`.

use serde::Serialize;
use serde_json::Value;

use crate::Error;

/// An SSH destination: `[user@]host[:port]` (IPv6 hosts in brackets: `[::1]:22`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// Where it came from: `targetHost`, `network <instance>` or `domain`.
    pub source: String,
    /// The port to try when `port` does not answer: 22, when `port` is the machine's sshd
    /// setting, which the machine may not have been deployed with yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_port: Option<u16>,
}

impl Target {
    /// Parses `[user@]host[:port]`.
    pub fn parse(machine: &str, text: &str, source: &str) -> Result<Target, Error> {
        let invalid = |reason: &str| Error::InvalidTarget {
            machine: machine.to_owned(),
            target: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (user, rest) = match text.rsplit_once('@') {
            Some((user, rest)) if !user.is_empty() => (Some(user.to_owned()), rest),
            Some(_) => return Err(invalid("empty user before `@`")),
            None => (None, text),
        };
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("missing `]`"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(invalid("unexpected text after `]`")),
            }
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        // A user or host that looks like an option would be read as one by ssh.
        if user.as_deref().is_some_and(|user| {
            user.starts_with('-') || user.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(invalid("not a user name"));
        }
        if host.starts_with('-') || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("not a host name or address"));
        }
        let port = port
            .map(|port| {
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid("port must be 1 to 65535"))
            })
            .transpose()?;
        Ok(Target {
            user,
            host: host.to_owned(),
            port,
            source: source.to_owned(),
            fallback_port: None,
        })
    }

    /// The same destination on `port`.
    pub fn on_port(&self, port: u16) -> Target {
        Target {
            port: Some(port),
            fallback_port: None,
            ..self.clone()
        }
    }

    /// `user@host` as ssh takes it (the port goes to `-p`).
    pub fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.destination())?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Resolves the target of `machine` from its `deploy.targetHost`, the fleet's network exports
/// (`instances.<i>.instance.networking.priority`, `instances.<i>.machines.<m>.peer`) and the
/// clan's domain. A target without a port gets the machine's sshd port
/// (`instances.<i>.machines.<m>.sshd.port`, exported by the sshd service).
pub fn resolve(
    machine: &str,
    target_host: Option<&str>,
    exports: &Value,
    domain: &str,
) -> Result<Target, Error> {
    let mut target = if let Some(text) = target_host.filter(|t| !t.is_empty()) {
        Target::parse(machine, text, "targetHost")?
    } else if let Some(target) = best_network(machine, exports)? {
        target
    } else if domain.is_empty() {
        return Err(Error::NoTarget {
            machine: machine.to_owned(),
        });
    } else {
        Target::parse(machine, &format!("root@{machine}.{domain}"), "domain")?
    };
    if target.port.is_none() {
        if let Some(port) = sshd_port(machine, exports).filter(|port| *port != 22) {
            target.port = Some(port);
            target.fallback_port = Some(22);
        }
    }
    Ok(target)
}

/// The port the machine's sshd listens on, as its sshd service exports it.
fn sshd_port(machine: &str, exports: &Value) -> Option<u16> {
    exports
        .get("instances")?
        .as_object()?
        .values()
        .find_map(|instance| {
            instance
                .get("machines")?
                .get(machine)?
                .pointer("/sshd/port")?
                .as_u64()
        })
        .and_then(|port| u16::try_from(port).ok())
}

/// The peer export of the network instance with the highest priority that lists `machine`.
fn best_network(machine: &str, exports: &Value) -> Result<Option<Target>, Error> {
    let Some(instances) = exports.get("instances").and_then(Value::as_object) else {
        return Ok(None);
    };
    let mut candidates: Vec<(i64, &str, &Value)> = instances
        .iter()
        .filter_map(|(name, instance)| {
            let priority = instance
                .pointer("/instance/networking/priority")?
                .as_i64()?;
            let peer = instance.get("machines")?.get(machine)?.get("peer")?;
            Some((priority, name.as_str(), peer))
        })
        .collect();
    // Highest priority first; the instance name breaks ties, so the choice is stable.
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    for (_, instance, peer) in candidates {
        let Some(host) = peer
            .get("hosts")
            .and_then(Value::as_array)
            .and_then(|hosts| hosts.iter().find_map(|h| h.get("plain")?.as_str()))
        else {
            // Hosts held in vars (tor, …) need decryption; not supported here yet.
            continue;
        };
        let mut target = Target::parse(machine, host, &format!("network {instance}"))?;
        if target.user.is_none() {
            target.user = peer.get("user").and_then(Value::as_str).map(str::to_owned);
        }
        if target.port.is_none() {
            target.port = peer
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok());
        }
        return Ok(Some(target));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_user_host_port() {
        let t = Target::parse("m", "root@10.0.0.1:2222", "x").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.host.as_str(), t.port),
            (Some("root"), "10.0.0.1", Some(2222))
        );
        let t = Target::parse("m", "[::1]:22", "x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", Some(22)));
        let t = Target::parse("m", "host", "x").unwrap();
        assert_eq!((t.user, t.port), (None, None));
        for bad in [
            "",
            "@h",
            "root@",
            "h:0",
            "h:x",
            "-oProxyCommand=x",
            "-oProxyCommand=touch /tmp/x@h",
            "a b",
            "ro ot@h",
            "[::1",
        ] {
            assert!(Target::parse("m", bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sshd_port_fills_a_target_without_one() {
        let exports = json!({"instances": {
            "ssh": {"instance": {}, "machines": {"web": {"sshd": {"port": 2222}}, "db": {"sshd": {"port": 22}}}},
        }});
        let t = resolve("web", Some("root@1.2.3.4"), &exports, "clan").unwrap();
        assert_eq!((t.port, t.fallback_port), (Some(2222), Some(22)));
        let t = resolve("web", Some("root@1.2.3.4:2200"), &exports, "clan").unwrap();
        assert_eq!((t.port, t.fallback_port), (Some(2200), None));
        let t = resolve("db", None, &exports, "clan").unwrap();
        assert_eq!((t.port, t.fallback_port), (None, None));
    }

    #[test]
    fn target_host_wins_then_network_then_domain() {
        let exports = json!({"instances": {
            "lan": {"instance": {"networking": {"priority": 1000}},
                    "machines": {"web": {"peer": {"hosts": [{"plain": "lan.web"}], "port": 22, "user": "root"}}}},
            "net": {"instance": {"networking": {"priority": 2000}},
                    "machines": {"web": {"peer": {"hosts": [{"plain": "web.example"}], "port": 2222, "user": "admin"}}}},
        }});
        let t = resolve("web", Some("root@1.2.3.4"), &exports, "clan").unwrap();
        assert_eq!(t.to_string(), "root@1.2.3.4");
        let t = resolve("web", None, &exports, "clan").unwrap();
        assert_eq!(t.to_string(), "admin@web.example:2222");
        assert_eq!(t.source, "network net");
        let t = resolve("db", None, &exports, "clan").unwrap();
        assert_eq!(t.to_string(), "root@db.clan");
        assert_eq!(t.fallback_port, None);
        assert!(matches!(
            resolve("db", None, &json!({}), ""),
            Err(Error::NoTarget { .. })
        ));
    }
}
