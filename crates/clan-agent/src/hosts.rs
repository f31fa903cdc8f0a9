//! The machine's `/etc/hosts` entries that a generation declares (MachineConfig `hosts`), kept
//! in a block of clan's own between two marker lines; every other line of the file stays as
//! it is. A generation without entries removes the block, so a rollback restores the previous
//! generation's names like any other state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use clan_config::HostName;

const BEGIN: &str = "# BEGIN clan: written by clan's agent on every deploy; do not edit";
const END: &str = "# END clan";

/// `current` (the file's text) with clan's block replaced by one for `hosts`, or removed when
/// there are none. A block whose end marker someone deleted loses only its begin marker, so
/// lines a person wrote after it are never dropped.
pub fn with_block(current: &str, hosts: &BTreeMap<IpAddr, BTreeSet<HostName>>) -> String {
    let lines: Vec<&str> = current.lines().collect();
    let mut kept = Vec::with_capacity(lines.len());
    let mut index = 0;
    while index < lines.len() {
        if lines[index] == BEGIN {
            match lines[index..].iter().position(|line| *line == END) {
                Some(end) => index += end + 1,
                None => index += 1,
            }
            continue;
        }
        kept.push(lines[index]);
        index += 1;
    }
    let mut text = String::new();
    for line in kept {
        text.push_str(line);
        text.push('\n');
    }
    if !hosts.is_empty() {
        text.push_str(BEGIN);
        text.push('\n');
        for (address, names) in hosts {
            let names: Vec<&str> = names.iter().map(|name| name.as_str()).collect();
            text.push_str(&format!("{address} {}\n", names.join(" ")));
        }
        text.push_str(END);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[(&str, &[&str])]) -> BTreeMap<IpAddr, BTreeSet<HostName>> {
        entries
            .iter()
            .map(|(address, names)| {
                let names = names.iter().map(|n| HostName::parse(n, "t").unwrap());
                (address.parse().unwrap(), names.collect())
            })
            .collect()
    }

    #[test]
    fn the_block_replaces_its_old_self_and_keeps_every_other_line() {
        let original = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n";
        let first = with_block(original, &hosts(&[("fd00::1", &["hub.wg", "hub"])]));
        assert_eq!(
            first,
            format!("{original}{BEGIN}\nfd00::1 hub hub.wg\n{END}\n")
        );
        // A person's line after the block stays, the block is rewritten, not repeated.
        let edited = format!("{first}10.0.0.9 printer\n");
        let second = with_block(&edited, &hosts(&[("10.1.0.2", &["web.wg"])]));
        assert_eq!(
            second,
            format!("{original}10.0.0.9 printer\n{BEGIN}\n10.1.0.2 web.wg\n{END}\n")
        );
        // No entries: the file is as the machine had it.
        assert_eq!(
            with_block(&second, &BTreeMap::new()),
            format!("{original}10.0.0.9 printer\n")
        );
    }

    #[test]
    fn a_block_without_its_end_marker_loses_only_the_marker() {
        let broken = format!("127.0.0.1 localhost\n{BEGIN}\n10.0.0.9 printer\n");
        assert_eq!(
            with_block(&broken, &BTreeMap::new()),
            "127.0.0.1 localhost\n10.0.0.9 printer\n"
        );
    }
}
