//! A machine's firewall as deployed state: when MachineConfig's `firewall.enable` is on, the
//! generation carries an nftables rule set for clan's own table `inet clan` and a unit that
//! loads it at boot and on every change (an atomic replace of that table alone). Inbound
//! connections are dropped unless they go to a declared port or SSH (22); loopback, ICMP and
//! traffic of established connections always pass. Tables clan did not create are never
//! touched; turning the firewall off stops the unit, which deletes the table. A rule set that
//! cuts the deployer off anyway is reverted by magic rollback, like any other generation.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use clan_config::{
    AbsolutePath, AccountName, File, FileMode, Firewall, MachineConfig, PackageName, Unit, UnitName,
};

use crate::InvalidConfig;

/// The rule set on the machine.
pub const RULES_PATH: &str = "/etc/clan/firewall.nft";
/// The unit loading it.
pub const UNIT: &str = "clan-firewall.service";
/// Always reachable, whatever the declared ports: SSH's own port.
const SSH_PORT: u16 = 22;

/// `config` with the firewall's rule set, unit and package added when it is on.
pub fn with_firewall(config: &MachineConfig) -> Result<MachineConfig, InvalidConfig> {
    let mut config = config.clone();
    if !config.firewall.enable {
        return Ok(config);
    }
    let clash = |what: String| InvalidConfig {
        subject: what,
        reason: "clan's firewall manages it; turn `firewall.enable` off to manage it yourself"
            .into(),
    };
    if config.files.contains_key(RULES_PATH) {
        return Err(clash(format!("file `{RULES_PATH}`")));
    }
    if config.units.contains_key(UNIT) {
        return Err(clash(format!("unit `{UNIT}`")));
    }
    let rules_path = AbsolutePath::parse(RULES_PATH, "firewall rules")?;
    config.files.insert(
        rules_path.clone(),
        File {
            content: rules(&config.firewall),
            template: false,
            owner: AccountName::root(),
            group: AccountName::root(),
            mode: FileMode::FILE,
        },
    );
    config.units.insert(
        UnitName::parse(UNIT, "firewall unit")?,
        Unit {
            content: unit(),
            enabled: true,
            restart_on_change: true,
            restart_triggers: Vec::new(),
            reload_triggers: vec![rules_path],
        },
    );
    // Only where the agent installs packages: elsewhere nftables must already be there.
    config
        .packages
        .entry("debian".to_owned())
        .or_default()
        .insert(PackageName::parse("nftables", "firewall package")?);
    Ok(config)
}

/// The nftables script: replaces table `inet clan` in one transaction.
fn rules(firewall: &Firewall) -> String {
    let tcp: BTreeSet<u16> = firewall.tcp.iter().copied().chain([SSH_PORT]).collect();
    let set = |ports: &BTreeSet<u16>| {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!("{{ {} }}", list.join(", "))
    };
    let mut text = String::from(
        "#!/usr/sbin/nft -f\n\
         # Written by clan: the machine's firewall. Only table inet clan is replaced.\n\
         table inet clan\n\
         delete table inet clan\n\
         table inet clan {\n\
         \tchain input {\n\
         \t\ttype filter hook input priority filter; policy drop;\n\
         \t\tiif \"lo\" accept\n\
         \t\tct state established,related accept\n\
         \t\tct state invalid drop\n\
         \t\tmeta l4proto { 1, 58 } accept comment \"icmp, ipv6-icmp (numbers: no /etc/protocols needed)\"\n",
    );
    let _ = writeln!(text, "\t\ttcp dport {} accept", set(&tcp));
    if !firewall.udp.is_empty() {
        let _ = writeln!(text, "\t\tudp dport {} accept", set(&firewall.udp));
    }
    text.push_str("\t}\n}\n");
    text
}

fn unit() -> String {
    format!(
        "# Written by clan: loads the machine's firewall (nftables table inet clan).\n\
         [Unit]\nDescription=clan firewall (nftables table inet clan)\n\
         DefaultDependencies=no\nWants=network-pre.target\nBefore=network-pre.target\n\
         After=local-fs.target\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStart=/usr/sbin/nft -f {RULES_PATH}\nExecReload=/usr/sbin/nft -f {RULES_PATH}\n\
         ExecStop=/usr/sbin/nft delete table inet clan\n\n\
         [Install]\nWantedBy=sysinit.target\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_adds_nothing_on_adds_rules_unit_and_package() {
        let mut config = MachineConfig::default();
        config.firewall.tcp.insert(80);
        assert_eq!(with_firewall(&config).unwrap(), config);
        config.firewall.enable = true;
        config.firewall.udp.insert(51820);
        let on = with_firewall(&config).unwrap();
        let rules = &on.files[RULES_PATH].content;
        assert!(rules.contains("policy drop;"), "{rules}");
        assert!(rules.contains("tcp dport { 22, 80 } accept"), "{rules}");
        assert!(rules.contains("udp dport { 51820 } accept"), "{rules}");
        assert!(rules.contains("ct state established,related accept"));
        assert!(rules.starts_with("#!/usr/sbin/nft -f\n"));
        assert!(
            !rules.contains("flush ruleset"),
            "only clan's table is touched"
        );
        assert_eq!(on.units[UNIT].reload_triggers, [RULES_PATH]);
        assert!(on.packages["debian"].contains("nftables"));
    }

    #[test]
    fn a_service_managing_the_same_file_is_refused() {
        let config: MachineConfig = serde_json::from_value(serde_json::json!({
            "firewall": {"enable": true},
            "files": {RULES_PATH: {"content": ""}},
        }))
        .unwrap();
        let error = with_firewall(&config).unwrap_err();
        assert!(error.to_string().contains(RULES_PATH), "{error}");
    }
}
