//! Merging fragments into one MachineConfig. Two sources that set the same file, unit, user,
//! group, generator, state or backup provider differently conflict; the error names both. Packages,
//! firewall ports and the names of an `/etc/hosts` address are unions (and one fragment turning the firewall on turns it on); NixOS settings merge deeply, conflicting on differing leaves.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::MachineConfig;

/// A fragment of configuration and who produced it (`service sshd, instance ssh, role server`).
#[derive(Debug, Clone)]
pub struct Fragment {
    pub source: String,
    pub config: MachineConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{key}` is set differently by {first} and by {second}")]
pub struct Conflict {
    pub kind: &'static str,
    pub key: String,
    pub first: String,
    pub second: String,
}

impl MachineConfig {
    /// Merges fragments in order; the first conflict is an error.
    pub fn merge(fragments: Vec<Fragment>) -> Result<MachineConfig, Conflict> {
        let mut merged = MachineConfig::default();
        let mut owners = Owners::default();
        for fragment in fragments {
            let config = fragment.config;
            let source = fragment.source.as_str();
            owners.insert("file", &mut merged.files, config.files, source)?;
            owners.insert("unit", &mut merged.units, config.units, source)?;
            owners.insert("user", &mut merged.users, config.users, source)?;
            owners.insert("group", &mut merged.groups, config.groups, source)?;
            owners.insert(
                "generator",
                &mut merged.generators,
                config.generators,
                source,
            )?;
            owners.insert("state", &mut merged.state, config.state, source)?;
            owners.insert(
                "backup provider",
                &mut merged.backups.providers,
                config.backups.providers,
                source,
            )?;
            owners.insert("secret", &mut merged.secrets, config.secrets, source)?;
            for (family, packages) in config.packages {
                merged.packages.entry(family).or_default().extend(packages);
            }
            for (address, names) in config.hosts {
                merged.hosts.entry(address).or_default().extend(names);
            }
            merged.firewall.enable |= config.firewall.enable;
            merged.firewall.tcp.extend(&config.firewall.tcp);
            merged.firewall.udp.extend(&config.firewall.udp);
            if !config.nixos.is_null() {
                merge_json(
                    &mut merged.nixos,
                    &config.nixos,
                    "nixos",
                    source,
                    &mut owners.nixos,
                )?;
            }
        }
        Ok(merged)
    }
}

/// Who set each key so far, to name both sides of a conflict.
#[derive(Default)]
struct Owners {
    by_key: BTreeMap<(&'static str, String), String>,
    nixos: BTreeMap<String, String>,
}

impl Owners {
    fn insert<K: Ord + std::fmt::Display, T: PartialEq>(
        &mut self,
        kind: &'static str,
        merged: &mut BTreeMap<K, T>,
        incoming: BTreeMap<K, T>,
        source: &str,
    ) -> Result<(), Conflict> {
        for (key, value) in incoming {
            let name = key.to_string();
            match merged.get(&key) {
                Some(existing) if *existing != value => {
                    return Err(Conflict {
                        kind,
                        first: self.by_key[&(kind, name.clone())].clone(),
                        key: name,
                        second: source.to_owned(),
                    });
                }
                Some(_) => {}
                None => {
                    self.by_key.insert((kind, name), source.to_owned());
                    merged.insert(key, value);
                }
            }
        }
        Ok(())
    }
}

fn merge_json(
    target: &mut Value,
    incoming: &Value,
    path: &str,
    source: &str,
    owners: &mut BTreeMap<String, String>,
) -> Result<(), Conflict> {
    match (target, incoming) {
        (Value::Object(target), Value::Object(incoming)) => {
            for (key, value) in incoming {
                let child = format!("{path}.{key}");
                match target.get_mut(key) {
                    Some(existing) => merge_json(existing, value, &child, source, owners)?,
                    None => {
                        target.insert(key.clone(), value.clone());
                        owners.insert(child, source.to_owned());
                    }
                }
            }
            Ok(())
        }
        (target @ Value::Null, incoming) => {
            *target = incoming.clone();
            owners.insert(path.to_owned(), source.to_owned());
            Ok(())
        }
        (target, incoming) if *target == *incoming => Ok(()),
        (_, _) => Err(Conflict {
            kind: "NixOS option",
            key: path.to_owned(),
            first: owner_of(owners, path),
            second: source.to_owned(),
        }),
    }
}

/// Who set `path`, or the nearest enclosing object it came in with.
fn owner_of(owners: &BTreeMap<String, String>, path: &str) -> String {
    let mut path = path;
    loop {
        if let Some(owner) = owners.get(path) {
            return owner.clone();
        }
        match path.rsplit_once('.') {
            Some((parent, _)) => path = parent,
            None => return "an earlier fragment".to_owned(),
        }
    }
}

/// Two services disagreeing about one machine fail the evaluation.
impl clan_error::Hint for Conflict {
    fn hint(&self) -> Option<String> {
        Some("make the two services agree, or drop one of them from this machine".to_owned())
    }

    fn exit(&self) -> clan_error::Exit {
        clan_error::Exit::Failed
    }
}

clan_error::register!(Conflict);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fragment(source: &str, config: Value) -> Fragment {
        Fragment {
            source: source.to_owned(),
            config: serde_json::from_value(config).unwrap(),
        }
    }

    #[test]
    fn identical_definitions_merge_and_unions_accumulate() {
        let merged = MachineConfig::merge(vec![
            fragment("a", json!({"files": {"/etc/x": {"content": "x"}}, "packages": {"debian": ["vim"]}, "firewall": {"tcp": [22]}, "hosts": {"fd00::1": ["hub.wg"]}})),
            fragment("b", json!({"files": {"/etc/x": {"content": "x"}}, "packages": {"debian": ["git"]}, "firewall": {"tcp": [80]}, "hosts": {"fd00:0::1": ["hub.ygg"], "10.0.0.2": ["web"]}})),
        ])
        .unwrap();
        // One address however it is written; its names joined.
        let hosts: Vec<(String, Vec<&str>)> = merged
            .hosts
            .iter()
            .map(|(a, names)| (a.to_string(), names.iter().map(|n| n.as_str()).collect()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("10.0.0.2".to_owned(), vec!["web"]),
                ("fd00::1".to_owned(), vec!["hub.wg", "hub.ygg"])
            ]
        );
        assert_eq!(merged.files["/etc/x"].mode, crate::FileMode::FILE);
        assert_eq!(
            merged.packages["debian"].iter().collect::<Vec<_>>(),
            ["git", "vim"]
        );
        assert_eq!(
            merged.firewall.tcp.iter().copied().collect::<Vec<_>>(),
            [22, 80]
        );
    }

    #[test]
    fn two_sources_writing_one_file_differently_conflict_naming_both() {
        let conflict = MachineConfig::merge(vec![
            fragment(
                "instance a",
                json!({"files": {"/etc/x": {"content": "one"}}}),
            ),
            fragment(
                "instance b",
                json!({"units": {"u.service": {"content": "[Unit]"}}}),
            ),
            fragment(
                "instance c",
                json!({"files": {"/etc/x": {"content": "two"}}}),
            ),
        ])
        .unwrap_err();
        assert_eq!(
            conflict.to_string(),
            "file `/etc/x` is set differently by instance a and by instance c"
        );
    }

    #[test]
    fn nixos_settings_merge_deeply_and_conflict_on_leaves() {
        let merged = MachineConfig::merge(vec![
            fragment(
                "a",
                json!({"nixos": {"services": {"openssh": {"enable": true}}}}),
            ),
            fragment(
                "b",
                json!({"nixos": {"services": {"nginx": {"enable": true}}}}),
            ),
        ])
        .unwrap();
        assert_eq!(
            merged.nixos,
            json!({"services": {"openssh": {"enable": true}, "nginx": {"enable": true}}})
        );
        let conflict = MachineConfig::merge(vec![
            fragment("a", json!({"nixos": {"networking": {"hostName": "x"}}})),
            fragment("b", json!({"nixos": {"networking": {"hostName": "y"}}})),
        ])
        .unwrap_err();
        assert_eq!(
            (conflict.first.as_str(), conflict.second.as_str()),
            ("a", "b")
        );
        assert_eq!(conflict.key, "nixos.networking.hostName");
    }

    #[test]
    fn unknown_keys_in_a_fragment_are_refused() {
        let error = serde_json::from_value::<MachineConfig>(json!({"filez": {}})).unwrap_err();
        assert!(error.to_string().contains("unknown field `filez`"));
    }
}
