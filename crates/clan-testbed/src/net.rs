//! The private network of one testbed: a bridge in its own network namespace, one namespace
//! per machine joined to the bridge by a veth pair, and one veth from the host into the bridge
//! namespace so the host reaches machines directly by address.
//!
//! Testbed `N` (0–255) owns `10.233.N.0/24`: the host side is `10.233.N.1` on interface
//! `clantbN`, machine slot `s` is `10.233.N.(s+2)`. Namespaces are `clantbN-br` and
//! `clantbN-mS`. Creating the bridge namespace is the atomic claim on `N`, so concurrent
//! testbeds never share a subnet; `N` is searched from a varying start. Machines get no default route: they can reach each other
//! and the host's address on the bridge, nothing else.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::{Error, Result};
use crate::process;

/// Most machines one testbed holds: addresses `.2` to `.254` of its /24.
pub const MAX_MACHINES: usize = 253;

/// The address plan and names of testbed number `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Network {
    pub index: u8,
}

impl Network {
    pub fn bridge_netns(self) -> String {
        format!("clantb{}-br", self.index)
    }

    pub fn host_interface(self) -> String {
        format!("clantb{}", self.index)
    }

    pub fn host_address(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 233, self.index, 1)
    }

    pub fn machine_netns(self, slot: u8) -> String {
        format!("clantb{}-m{slot}", self.index)
    }

    pub fn machine_address(self, slot: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 233, self.index, slot + 2)
    }

    /// The machine's veth end inside the bridge namespace (its switch port).
    fn bridge_port(slot: u8) -> String {
        format!("m{slot}")
    }

    /// Claims a free subnet and builds the bridge and the host's link to it.
    pub fn create() -> Result<Network> {
        let taken = host_routes()?;
        // Start the search at a varying index so a subnet just freed is rarely reused at once
        // (stale known_hosts or ARP entries elsewhere would then point at a new machine).
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos() ^ std::process::id());
        for offset in 0..=u8::MAX {
            let index = (start as u8).wrapping_add(offset);
            let network = Network { index };
            if taken
                .iter()
                .any(|&(addr, len)| overlaps((addr, len), (network.host_address(), 24)))
            {
                continue;
            }
            if Path::new("/sys/class/net")
                .join(network.host_interface())
                .exists()
            {
                continue;
            }
            match process::ip(["netns", "add", &network.bridge_netns()]) {
                Ok(_) => {}
                Err(Error::Host(clan_host::Error::Command { stderr, .. }))
                    if stderr.contains("exists") =>
                {
                    continue
                }
                Err(error) => return Err(error),
            }
            if let Err(error) = network.build_bridge() {
                network.remove();
                return Err(error);
            }
            return Ok(network);
        }
        Err(Error::NoFreeSubnet)
    }

    fn build_bridge(self) -> Result<()> {
        let ns = self.bridge_netns();
        let host = self.host_interface();
        process::ip(["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        process::ip(["-n", &ns, "link", "set", "br0", "up"])?;
        process::ip([
            "link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &ns,
        ])?;
        process::ip(["-n", &ns, "link", "set", "host", "master", "br0", "up"])?;
        process::ip([
            "addr",
            "add",
            &format!("{}/24", self.host_address()),
            "dev",
            &host,
        ])?;
        process::ip(["link", "set", &host, "up"])?;
        Ok(())
    }

    /// Creates the namespace of machine `slot`, with `eth0` on the bridge and its address.
    pub fn add_machine(self, slot: u8) -> Result<()> {
        let ns = self.machine_netns(slot);
        let bridge = self.bridge_netns();
        let port = Self::bridge_port(slot);
        process::ip(["netns", "add", &ns])?;
        process::ip([
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
            &bridge,
        ])?;
        process::ip(["-n", &bridge, "link", "set", &port, "master", "br0", "up"])?;
        process::ip([
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", self.machine_address(slot)),
            "dev",
            "eth0",
        ])?;
        process::ip(["-n", &ns, "link", "set", "eth0", "up"])?;
        process::ip(["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Takes machine `slot`'s switch port down or up: the machine keeps its address but
    /// nothing reaches it, as when a cable is pulled.
    pub fn set_link(self, slot: u8, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        process::ip([
            "-n",
            &self.bridge_netns(),
            "link",
            "set",
            &Self::bridge_port(slot),
            state,
        ])?;
        Ok(())
    }

    /// Deletes machine `slot`'s namespace (and with it both ends of its veth).
    pub fn remove_machine(self, slot: u8) -> Result<()> {
        delete_netns(&self.machine_netns(slot))
    }

    /// Deletes the host's link and the bridge namespace; errors are collected by the caller
    /// through [`Network::leftovers`], so this never stops half way.
    pub fn remove(self) {
        let host = self.host_interface();
        if Path::new("/sys/class/net").join(&host).exists() {
            let _ = process::ip(["link", "del", &host]);
        }
        let _ = delete_netns(&self.bridge_netns());
    }

    /// Namespaces and interfaces of this testbed (with `slots` machines) still present.
    pub fn leftovers(self, slots: impl IntoIterator<Item = u8>) -> Vec<String> {
        let mut names: Vec<String> = slots
            .into_iter()
            .map(|slot| self.machine_netns(slot))
            .collect();
        names.push(self.bridge_netns());
        let mut left: Vec<String> = names
            .into_iter()
            .filter(|ns| netns_exists(ns))
            .map(|ns| format!("network namespace {ns}"))
            .collect();
        if Path::new("/sys/class/net")
            .join(self.host_interface())
            .exists()
        {
            left.push(format!("host interface {}", self.host_interface()));
        }
        left
    }
}

/// Whether `/run/netns/<name>` exists.
pub(crate) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn delete_netns(name: &str) -> Result<()> {
    if netns_exists(name) {
        process::ip(["netns", "del", name])?;
    }
    Ok(())
}

/// Destination prefixes of every IPv4 route on the host, in all tables.
fn host_routes() -> Result<Vec<(Ipv4Addr, u8)>> {
    let output = process::ip(["-4", "route", "show", "table", "all"])?;
    Ok(output.lines().filter_map(parse_route_destination).collect())
}

/// The destination of one `ip route` line: `10.0.0.0/8 dev …`, `local 10.1.2.3 dev …`,
/// `broadcast …`; the default route is ignored (it overlaps everything by design).
fn parse_route_destination(line: &str) -> Option<(Ipv4Addr, u8)> {
    let mut words = line.split_whitespace();
    let mut destination = words.next()?;
    if matches!(
        destination,
        "local"
            | "broadcast"
            | "unicast"
            | "multicast"
            | "anycast"
            | "blackhole"
            | "unreachable"
            | "prohibit"
            | "throw"
    ) {
        destination = words.next()?;
    }
    let (address, length) = match destination.split_once('/') {
        Some((address, length)) => (address, length.parse().ok()?),
        None => (destination, 32),
    };
    Some((address.parse().ok()?, length))
}

/// Whether two IPv4 prefixes share any address.
fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let length = a.1.min(b.1).min(32);
    let mask = if length == 0 {
        0
    } else {
        u32::MAX << (32 - length)
    };
    (u32::from(a.0) & mask) == (u32::from(b.0) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan() {
        let network = Network { index: 7 };
        assert_eq!(network.host_address(), Ipv4Addr::new(10, 233, 7, 1));
        assert_eq!(network.machine_address(0), Ipv4Addr::new(10, 233, 7, 2));
        assert_eq!(network.machine_address(252), Ipv4Addr::new(10, 233, 7, 254));
        assert_eq!(network.machine_netns(3), "clantb7-m3");
        assert!(Network { index: 255 }.host_interface().len() <= 15);
    }

    #[test]
    fn route_lines() {
        assert_eq!(
            parse_route_destination("10.233.0.0/16 dev x"),
            Some((Ipv4Addr::new(10, 233, 0, 0), 16))
        );
        assert_eq!(
            parse_route_destination("local 10.233.4.1 dev clantb4 table local"),
            Some((Ipv4Addr::new(10, 233, 4, 1), 32))
        );
        assert_eq!(
            parse_route_destination("default via 192.0.2.1 dev eth0"),
            None
        );
    }

    #[test]
    fn prefix_overlap() {
        let ours = (Ipv4Addr::new(10, 233, 4, 1), 24);
        assert!(overlaps(ours, (Ipv4Addr::new(10, 0, 0, 0), 8)));
        assert!(overlaps(ours, (Ipv4Addr::new(10, 233, 4, 200), 32)));
        assert!(!overlaps(ours, (Ipv4Addr::new(10, 233, 5, 0), 24)));
        assert!(!overlaps(ours, (Ipv4Addr::new(192, 0, 2, 0), 24)));
    }
}
