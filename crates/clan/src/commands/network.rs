//! `clan network list|ping|overview`: the clan's networks with clan-core's columns, and
//! whether machines answer over them (`clan_lib::network`); and the hidden `socks-connect`,
//! the SOCKS5 connector ssh runs as its ProxyCommand for routes over tor.

use std::process::ExitCode;

use clan_inventory::{InstanceName, MachineName};

use super::machines::SshArgs;
use super::output::{print_json, print_line, print_table};
use super::{clan_dir, Context};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub clan: super::ClanArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The networks by priority: module, whether it can be used now, peers.
    #[command(after_help = "Examples:
  clan network list
  clan network list --json")]
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Which network reaches a machine, and how long its SSH handshake took: each network
    /// the machine is a peer of, highest priority first, until one answers.
    #[command(after_help = "Examples:
  clan network ping web01
  clan network ping web01 --network wireguard --json")]
    Ping {
        /// The machine to reach.
        machine: MachineName,
        /// Only this network.
        #[arg(long, short = 'n')]
        network: Option<InstanceName>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ssh: SshArgs,
    },
    /// Every network and whether each of its peers answers.
    #[command(after_help = "Examples:
  clan network overview
  clan network overview --json")]
    Overview {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ssh: SshArgs,
    },
    /// Connects this terminal's input and output to a host and port through a SOCKS5 proxy:
    /// the ProxyCommand clan gives ssh for routes over tor (the proxy is clan's Tor client).
    #[command(
        hide = true,
        after_help = "Example:
  clan network socks-connect --proxy 127.0.0.1:9050 --host example.onion --port 22"
    )]
    SocksConnect {
        /// The SOCKS5 proxy's address.
        #[arg(long)]
        proxy: std::net::SocketAddr,
        /// The host to reach, resolved by the proxy.
        #[arg(
            long,
            required_unless_present = "host_file",
            conflicts_with = "host_file"
        )]
        host: Option<String>,
        /// A file holding the host to reach (a secret host stays off the command line).
        #[arg(long)]
        host_file: Option<std::path::PathBuf>,
        /// The port to reach.
        #[arg(long)]
        port: u16,
    },
}

/// clan-core shows the first three peers and how many more.
const PEERS_SHOWN: usize = 3;

pub fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    // `socks-connect` reads no clan.
    let dir = || clan_dir(context);
    match args.command {
        Command::SocksConnect {
            proxy,
            host,
            host_file,
            port,
        } => {
            // clap requires one of the two.
            let host = match host {
                Some(host) => host,
                None => clan_network::tor::read_host_file(&host_file.unwrap_or_default())?,
            };
            clan_network::tor::connect(proxy, &host, port)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::List { json } => {
            let networks = clan_lib::network::list(&dir()?)?;
            if json {
                print_json(&networks)?;
            } else if networks.is_empty() {
                print_line("No networks found")?;
            } else {
                let mut rows = vec![["NETWORK", "PRIORITY", "MODULE", "RUNNING", "PEERS"]
                    .map(str::to_owned)
                    .to_vec()];
                for network in &networks {
                    let module = network.module.rsplit('.').next().unwrap_or_default();
                    let mut peers =
                        network.peers[..network.peers.len().min(PEERS_SHOWN)].join(", ");
                    if network.peers.is_empty() {
                        peers = "No peers".to_owned();
                    } else if network.peers.len() > PEERS_SHOWN {
                        peers
                            .push_str(&format!(" ...({} more)", network.peers.len() - PEERS_SHOWN));
                    }
                    rows.push(vec![
                        network.name.to_string(),
                        network.priority.to_string(),
                        module.to_owned(),
                        if network.running { "Yes" } else { "No" }.to_owned(),
                        peers,
                    ]);
                }
                print_table(&rows)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ping {
            machine,
            network,
            json,
            ssh,
        } => {
            let pings =
                clan_lib::network::ping(&dir()?, &machine, network.as_ref(), &ssh.options())?;
            let reached = pings.last().is_some_and(|p| p.reachable());
            if json {
                print_json(&pings)?;
            } else {
                let printer = super::output::printer();
                for ping in &pings {
                    print_line(match (&ping.elapsed_ms, &ping.target) {
                        (Some(ms), Some(target)) => format!(
                            "{} ({}): reachable at {target}, ping: {ms} ms",
                            ping.machine, ping.network
                        ),
                        _ => format!(
                            "{} ({}): not reachable: {}",
                            ping.machine,
                            ping.network,
                            ping.error.as_deref().unwrap_or("no answer")
                        ),
                    })?;
                    if let Some(hint) = &ping.hint {
                        printer.hint(hint);
                    }
                }
            }
            Ok(if reached {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Overview { json, ssh } => {
            let overview = clan_lib::network::overview(&dir()?, &ssh.options())?;
            if json {
                print_json(&overview)?;
            } else if overview.is_empty() {
                print_line("No networks found.")?;
            } else {
                for network in &overview {
                    let online =
                        network.network.running && network.peers.iter().any(|p| p.reachable());
                    print_line(format!(
                        "{} {}",
                        network.network.name,
                        if online { "[ONLINE]" } else { "[OFFLINE]" }
                    ))?;
                    for peer in &network.peers {
                        print_line(match peer.elapsed_ms {
                            Some(ms) => format!("\t{}: [{ms} ms]", peer.machine),
                            None => format!("\t{}: [OFFLINE]", peer.machine),
                        })?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
