//! A fleet of real test machines on this host, for deploy tests, benchmarks and demos.
//!
//! Owns everything about those machines: the cached Debian root filesystem they share
//! (`clan_host::rootfs`, which micro VMs boot from too), their private network (`net`: a bridge in its own network namespace, one
//! namespace per machine, one veth from the host into the bridge namespace so the host reaches
//! each machine at its own address in `10.233.N.0/24`), their containers (`machine`:
//! `systemd-nspawn` with real systemd and sshd, writes going to a per-machine overlay), the
//! admin key and `ssh_config` (`ssh`), and a state file so another process can find and stop
//! them (`state`). Start with [`Testbed::up`]; machines are reached with
//! `ssh -F <Testbed::ssh_config> <name>`.
//!
//! It must never touch anything it did not create: no traffic to addresses outside its own
//! namespaces (machines get no default route), no host routes beyond its one interface per
//! testbed, no process killed unless its PID and command line match a machine it started, and
//! no change to the user's `~/.ssh`. The one host setting it may change is raising
//! `fs.inotify.max_user_instances` (`limits`), which large fleets need. A private Tor network
//! for the fleet (`tor`) runs in one of its namespaces. Needs root;
//! [`check_host`] says why a host cannot run it.

mod error;
mod limits;
mod machine;
mod net;
mod options;
mod process;
mod skip;
mod ssh;
mod state;
mod testbed;
mod tor;

use std::net::Ipv4Addr;

use serde::Serialize;

pub use error::{Error, Result};
pub use net::MAX_MACHINES;
pub use options::{validate_name, Options};
pub use process::HOST_TOOLS;
pub use skip::{skip, NO_SKIP};
pub use testbed::{check_host, Testbed};
pub use tor::TorNetwork;

/// One test machine as other code sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// The clan machine name, which is also its hostname and its `ssh_config` alias.
    pub name: String,
    /// Its address on the testbed network, reachable from the host.
    pub address: Ipv4Addr,
    /// Where its sshd listens.
    pub ssh_port: u16,
}

impl Machine {
    /// `root@<address>`, a deploy target host.
    pub fn ssh_target(&self) -> String {
        format!("root@{}", self.address)
    }
}
