//! The routes to one machine, in the order they are tried: `--target-host` alone when given;
//! else `deploy.targetHost` first, then every host of every network the machine is a peer of,
//! highest priority first; `root@<machine>.<domain>` only when there is nothing else. A route
//! whose host is a var is read (decrypted when secret) only when it is tried.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clan_config::{InstanceName, MachineName};
use serde::Serialize;
use serde_json::Value;

use crate::network::{HostRef, Network, VarRef};
use crate::target::Target;
use crate::Error;

/// How long a route waits for every route of a higher priority before it is tried too: long
/// enough for a live route of the higher priority to finish its handshake first on a local
/// network (≈0.2 s), short enough that a dead one costs little.
pub const HEAD_START: Duration = Duration::from_millis(150);

/// One way to reach a machine.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub machine: MachineName,
    /// `--target-host`, `targetHost`, `network <instance>` or `domain`.
    pub source: String,
    /// The network (instance) it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<InstanceName>,
    /// How the network is reached (clan-core's module name).
    pub module: String,
    /// Higher first; `targetHost` and `--target-host` above every network.
    pub priority: i64,
    pub host: HostRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The port to try as well when `port` is the machine's sshd setting, which the machine
    /// may not have been deployed with yet (22).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_port: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jump: Vec<Target>,
    /// Where a var host is stored, worked out from the var's generator.
    #[serde(skip)]
    var: Option<VarLocation>,
}

/// Where a var host's value is, or why it cannot be.
#[derive(Debug, Clone)]
enum VarLocation {
    Stored {
        clan_dir: PathBuf,
        key: clan_vars::GeneratorKey,
        secret: bool,
    },
    /// The machine declares no such generator or file.
    Undeclared,
}

/// The priority `deploy.targetHost` and `--target-host` get: above every network.
const TARGET_HOST_PRIORITY: i64 = i64::MAX;

impl Candidate {
    fn from_target(machine: &MachineName, target: Target, priority: i64) -> Candidate {
        Candidate {
            machine: machine.clone(),
            source: target.source,
            network: None,
            module: crate::network::DIRECT_MODULE.to_owned(),
            priority,
            host: HostRef::Plain(target.host),
            user: target.user,
            port: target.port,
            fallback_port: None,
            jump: target.jump,
            var: None,
        }
    }

    /// Whether it goes over a tor network (through the run's Tor client).
    pub fn is_tor(&self) -> bool {
        self.module == crate::tor::TOR_MODULE
    }

    /// Whether its host is a secret var (a tor server's onion hostname, by default).
    pub fn host_is_secret(&self) -> bool {
        matches!(self.var, Some(VarLocation::Stored { secret: true, .. }))
    }

    /// What a person reads for it: `root@10.0.0.1:2222 (network lan)`, the var's name for a
    /// var host not read yet.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.destination(), self.source)
    }

    /// `user@host[:port]`, the var's name for a var host not read yet.
    pub fn destination(&self) -> String {
        let mut text = String::new();
        if let Some(user) = &self.user {
            text.push_str(user);
            text.push('@');
        }
        text.push_str(&self.host.to_string());
        if let Some(port) = self.port {
            text.push_str(&format!(":{port}"));
        }
        text
    }

    /// The destination: a var host is read now (decrypted with the admin's keys when secret).
    pub fn target(&self) -> Result<Target, Error> {
        let host = match &self.host {
            HostRef::Plain(host) => host.clone(),
            HostRef::Var(var) => self.read_var(var)?,
        };
        let mut target = Target::parse(&self.machine, &host, &self.source).map_err(|error| {
            // A secret host is not repeated in an error; the var's name says which it is.
            match error {
                Error::InvalidTarget {
                    machine, reason, ..
                } if self.host_is_secret() => Error::InvalidTarget {
                    machine,
                    target: self.destination(),
                    reason,
                },
                other => other,
            }
        })?;
        if target.user.is_none() {
            target.user.clone_from(&self.user);
        }
        if target.port.is_none() {
            target.port = self.port;
            target.fallback_port = self.fallback_port;
        }
        target.jump.clone_from(&self.jump);
        Ok(target)
    }

    fn read_var(&self, var: &VarRef) -> Result<String, Error> {
        let missing = || Error::VarHostMissing {
            machine: self.machine.to_string(),
            network: self.network.as_deref().unwrap_or_default().to_owned(),
            var: Box::new(var.clone()),
        };
        let (clan_dir, key, secret) = match &self.var {
            Some(VarLocation::Stored {
                clan_dir,
                key,
                secret,
            }) => (clan_dir, key, secret),
            Some(VarLocation::Undeclared) => {
                return Err(Error::VarHostUndeclared {
                    machine: self.machine.to_string(),
                    network: self.network.as_deref().unwrap_or_default().to_owned(),
                    var: Box::new(var.clone()),
                })
            }
            // Not looked up (a plan made without the fleet): as if not generated.
            None => return Err(missing()),
        };
        let store = clan_vars::VarsStore::new(clan_dir);
        if !store.exists(key, &var.file, *secret) {
            return Err(missing());
        }
        let failed = |source: clan_vars::Error| Error::VarHost {
            machine: self.machine.to_string(),
            var: Box::new(var.clone()),
            source: Box::new(source),
        };
        let value = if *secret {
            let sources = clan_secrets::KeySources::from_env();
            let identities =
                clan_secrets::Identities::discover(&sources).map_err(|e| failed(e.into()))?;
            store
                .read(key, &var.file, true, &identities)
                .map_err(failed)?
                .expose()
                .to_vec()
        } else {
            store.read_public(key, &var.file).map_err(failed)?
        };
        // A host name, never the var's content, goes into errors.
        String::from_utf8(value)
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty() && !text.contains('\n'))
            .ok_or_else(|| Error::InvalidVarHost {
                machine: self.machine.to_string(),
                var: Box::new(var.clone()),
            })
    }
}

/// The routes to `machine` of `fleet` (see the module documentation); `target_override` is
/// `--target-host`. The machine's sshd port fills routes without a port.
pub fn candidates(
    fleet: &clan_eval::Fleet,
    clan_dir: &Path,
    machine: &clan_eval::EvaluatedMachine,
    target_override: Option<&str>,
) -> Result<Vec<Candidate>, Error> {
    let name = &machine.summary.name;
    let networks = crate::network::networks(&fleet.summary)?;
    let mut candidates = plan(
        name,
        target_override,
        machine.summary.target_host.as_deref(),
        &networks,
        &fleet.summary.meta.domain,
        sshd_port(name, &fleet.summary.exports),
    )?;
    for candidate in &mut candidates {
        if let HostRef::Var(var) = &candidate.host {
            candidate.var = Some(var_location(fleet, clan_dir, var));
        }
    }
    Ok(candidates)
}

/// Where `var` is stored, from the generator its machine declares.
fn var_location(fleet: &clan_eval::Fleet, clan_dir: &Path, var: &VarRef) -> VarLocation {
    let Ok(owner) = fleet.machine(&var.machine) else {
        return VarLocation::Undeclared;
    };
    let Some(definition) = owner.config.generators.get(&var.generator) else {
        return VarLocation::Undeclared;
    };
    let Some(file) = definition.files.get(&var.file) else {
        return VarLocation::Undeclared;
    };
    VarLocation::Stored {
        clan_dir: clan_dir.to_owned(),
        key: clan_vars::GeneratorKey::declared(&var.machine, &var.generator, definition),
        secret: file.secret,
    }
}

/// The routes, without looking anything up (see [`candidates`]).
fn plan(
    machine: &MachineName,
    target_override: Option<&str>,
    target_host: Option<&str>,
    networks: &[Network],
    domain: &str,
    sshd_port: Option<u16>,
) -> Result<Vec<Candidate>, Error> {
    let mut candidates = Vec::new();
    if let Some(text) = target_override {
        let target = Target::parse(machine, text, "--target-host")?;
        candidates.push(Candidate::from_target(
            machine,
            target,
            TARGET_HOST_PRIORITY,
        ));
    } else {
        if let Some(text) = target_host.filter(|t| !t.is_empty()) {
            let target = Target::parse(machine, text, "targetHost")?;
            candidates.push(Candidate::from_target(
                machine,
                target,
                TARGET_HOST_PRIORITY,
            ));
        }
        for network in networks {
            let Some(peer) = network.peers.get(machine) else {
                continue;
            };
            for host in &peer.hosts {
                candidates.push(Candidate {
                    machine: machine.clone(),
                    source: format!("network {}", network.name),
                    network: Some(network.name.clone()),
                    module: network.module.clone(),
                    priority: network.priority,
                    host: host.clone(),
                    user: peer.user.clone(),
                    port: peer.port,
                    fallback_port: None,
                    jump: peer.jump.clone(),
                    var: None,
                });
            }
        }
        if candidates.is_empty() && !domain.is_empty() {
            let target = Target::parse(machine, &format!("root@{machine}.{domain}"), "domain")?;
            candidates.push(Candidate::from_target(machine, target, i64::MIN));
        }
    }
    if candidates.is_empty() {
        return Err(Error::NoTarget {
            machine: machine.to_string(),
        });
    }
    for candidate in &mut candidates {
        if candidate.user.is_none() {
            // clan-core's default user.
            candidate.user = Some("root".to_owned());
        }
        if candidate.port.is_none() {
            if let Some(port) = sshd_port.filter(|port| *port != 22) {
                candidate.port = Some(port);
                candidate.fallback_port = Some(22);
            }
        }
    }
    // The same destination twice (an `internet` peer that is the targetHost) is tried once,
    // as the first of them.
    let mut seen = Vec::new();
    candidates.retain(|c| {
        let key = (c.host.clone(), c.user.clone(), c.port, c.jump.clone());
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    Ok(candidates)
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

/// When each route is tried, from the start of the race: every distinct priority below the
/// highest waits one more [`HEAD_START`].
pub fn head_starts(candidates: &[Candidate]) -> Vec<Duration> {
    let mut priorities: Vec<i64> = candidates.iter().map(|c| c.priority).collect();
    priorities.sort_unstable_by(|a, b| b.cmp(a));
    priorities.dedup();
    candidates
        .iter()
        .map(|c| {
            let rank = priorities
                .iter()
                .position(|p| *p == c.priority)
                .unwrap_or(0);
            HEAD_START * u32::try_from(rank).unwrap_or(u32::MAX)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn networks() -> Vec<Network> {
        crate::network::from_exports(&json!({"instances": {
            "lan": {"instance": {"networking": {"priority": 2000}},
                    "machines": {"web": {"peer": {"hosts": [{"plain": "10.0.0.1"}, {"plain": "web.lan"}]}}}},
            "wg": {"instance": {"networking": {"priority": 1500}},
                   "machines": {"web": {"peer": {"hosts": [{"plain": "fd00::1"}], "user": "admin", "port": 22}}}},
            "onion": {"instance": {"networking": {"priority": 10, "module": "clan_lib.network.tor"}},
                      "machines": {"web": {"peer": {"hosts": [{"var": {"machine": "web", "generator": "tor", "file": "hostname"}}]}}}},
        }}))
        .unwrap()
    }

    fn m(name: &str) -> MachineName {
        name.parse().unwrap()
    }

    fn described(candidates: &[Candidate]) -> Vec<String> {
        candidates.iter().map(Candidate::describe).collect()
    }

    #[test]
    fn target_host_first_then_networks_by_priority() {
        let c = plan(
            &m("web"),
            None,
            Some("root@1.2.3.4"),
            &networks(),
            "clan",
            None,
        )
        .unwrap();
        assert_eq!(
            described(&c),
            [
                "root@1.2.3.4 (targetHost)",
                "root@10.0.0.1 (network lan)",
                "root@web.lan (network lan)",
                "admin@fd00::1:22 (network wg)",
                "root@var web/tor/hostname (network onion)",
            ]
        );
        let starts = head_starts(&c);
        assert_eq!(
            starts,
            [0, 1, 1, 2, 3].map(|rank| HEAD_START * rank).to_vec()
        );
    }

    #[test]
    fn target_host_flag_alone_and_domain_only_without_anything_else() {
        let c = plan(
            &m("web"),
            Some("me@9.9.9.9:2"),
            Some("root@1.2.3.4"),
            &networks(),
            "clan",
            None,
        )
        .unwrap();
        assert_eq!(described(&c), ["me@9.9.9.9:2 (--target-host)"]);
        let c = plan(&m("db"), None, None, &networks(), "clan", None).unwrap();
        assert_eq!(described(&c), ["root@db.clan (domain)"]);
        assert!(matches!(
            plan(&m("db"), None, None, &[], "", None),
            Err(Error::NoTarget { .. })
        ));
    }

    #[test]
    fn the_sshd_port_fills_routes_without_one_and_duplicates_go() {
        let lan = crate::network::from_exports(&json!({"instances": {
            "lan": {"instance": {"networking": {"priority": 2000}},
                    "machines": {"web": {"peer": {"hosts": [{"plain": "1.2.3.4"}, {"plain": "5.6.7.8"}], "port": 22}}}},
        }}))
        .unwrap();
        let c = plan(
            &m("web"),
            None,
            Some("root@1.2.3.4"),
            &lan,
            "clan",
            Some(2222),
        )
        .unwrap();
        assert_eq!(
            described(&c),
            [
                "root@1.2.3.4:2222 (targetHost)",
                "root@1.2.3.4:22 (network lan)",
                "root@5.6.7.8:22 (network lan)"
            ]
        );
        assert_eq!((c[0].fallback_port, c[1].fallback_port), (Some(22), None));
        let c = plan(
            &m("web"),
            None,
            Some("root@1.2.3.4:22"),
            &lan,
            "clan",
            Some(2222),
        )
        .unwrap();
        assert_eq!(
            described(&c),
            [
                "root@1.2.3.4:22 (targetHost)",
                "root@5.6.7.8:22 (network lan)"
            ]
        );
    }

    #[test]
    fn a_var_host_not_generated_names_its_generator() {
        let c = plan(&m("web"), None, None, &networks(), "clan", None).unwrap();
        let onion = c
            .iter()
            .find(|c| c.network.as_deref() == Some("onion"))
            .unwrap();
        let error = onion.target().unwrap_err();
        assert!(matches!(error, Error::VarHostMissing { .. }), "{error}");
        let hint = clan_error::Hint::hint(&error).unwrap();
        assert!(
            hint.contains("clan vars generate web --generator tor"),
            "{hint}"
        );
        let plain = c[0].target().unwrap();
        assert_eq!(
            (plain.to_string(), plain.source.as_str()),
            ("root@10.0.0.1".into(), "network lan")
        );
    }
}
