//! An SSH destination, `[user@]host[:port]`, parsed so that nothing in it can be read by ssh
//! as an option, with the jump hosts ssh goes through to reach it.

use serde::Serialize;

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
    /// Hosts ssh jumps through, in order (`-J`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jump: Vec<Target>,
    /// The SOCKS proxy ssh goes through (the run's Tor client, for a route over tor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socks: Option<std::net::SocketAddr>,
    /// Where the host is for the SOCKS connector (a route over tor); `host` is then an alias
    /// when the real one is a secret (an onion hostname) that no command line or output shows.
    #[serde(skip)]
    pub host_file: Option<std::path::PathBuf>,
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
        if host.starts_with('-')
            || host.contains(',')
            || host.chars().any(|c| c.is_whitespace() || c.is_control())
        {
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
            jump: Vec::new(),
            socks: None,
            host_file: None,
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

    /// The `-J` argument: the jump hosts, comma-separated; `None` without any.
    pub fn proxy_jump(&self) -> Option<String> {
        (!self.jump.is_empty()).then(|| {
            let hops: Vec<String> = self.jump.iter().map(Target::jump_hop).collect();
            hops.join(",")
        })
    }

    /// `[user@]host[:port]` as `-J` takes it (IPv6 in brackets when a port follows).
    fn jump_hop(&self) -> String {
        let host = match self.port {
            Some(port) if self.host.contains(':') => format!("[{}]:{port}", self.host),
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        };
        match &self.user {
            Some(user) => format!("{user}@{host}"),
            None => host,
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut t = Target::parse("m", "root@10.0.0.1", "x").unwrap();
        assert_eq!(t.proxy_jump(), None);
        t.jump = vec![
            Target::parse("m", "a@j1:2222", "x").unwrap(),
            Target::parse("m", "[fd00::1]:22", "x").unwrap(),
        ];
        assert_eq!(t.proxy_jump().as_deref(), Some("a@j1:2222,[fd00::1]:22"));
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
}
