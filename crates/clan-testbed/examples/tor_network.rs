//! A private Tor network for benchmarks and demos (`bench/tor.sh`): starts
//! [`clan_testbed::TorNetwork`] in network namespace NETNS at ADDRESS with its data under DIR,
//! writes the torrc lines that join it to DIR/client.conf, waits for its consensus, prints
//! `ready`, and runs until its standard input closes.
//!
//! Usage (as root): `cargo run -p clan-testbed --example tor_network -- NETNS ADDRESS DIR`

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [netns, address, dir] = args.as_slice() else {
        return Err("usage: tor_network NETNS ADDRESS DIR".into());
    };
    let dir = PathBuf::from(dir);
    let mut network = clan_testbed::TorNetwork::start(&dir, netns, address.parse()?)?;
    std::fs::write(dir.join("client.conf"), network.client_config())?;
    network.wait_for_consensus(Duration::from_secs(180))?;
    println!("ready");
    // Until the caller is done: EOF (or an error) on stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}
