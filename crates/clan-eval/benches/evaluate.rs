//! Evaluation of a large generated clan: 1,000 machines in 10 racks and 50 instances
//! (hello-world, sshd server/client, users, internet; tags cover every machine).
//!
//! Reports the cold evaluation (median of 5, each with a fresh cache directory), the warm
//! path (open from the cache and read one machine, median of 20) and peak RSS.
//! Run with `cargo bench -p clan-eval --bench evaluate`. Targets: cold < 1 s and < 500 MiB,
//! warm < 50 ms.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use clan_eval::Fleet;

const MACHINES: usize = 1_000;
const RACKS: usize = 10;
const USERS: usize = 20;
const COLD_RUNS: usize = 5;
const WARM_RUNS: usize = 20;

fn machine_name(index: usize) -> String {
    format!("m{index:04}")
}

fn is_ssh_server(index: usize) -> bool {
    (index / RACKS) % 10 == 0
}

fn clan_toml() -> String {
    let mut toml = String::from("[meta]\nname = \"bench\"\ndomain = \"bench.example\"\n\n");
    for index in 0..MACHINES {
        let rack = index % RACKS;
        writeln!(
            toml,
            "[machines.{}]\ntags = [\"rack-{rack}\"]\ndeploy.targetHost = \"root@10.{rack}.{}.{}\"\n",
            machine_name(index),
            index / 256,
            index % 256,
        )
        .unwrap();
    }
    // 10 hello-world, one per rack (a machine can hold only one /etc/hello), with role, tag
    // and machine settings.
    for rack in 0..RACKS {
        writeln!(
            toml,
            "[instances.hello-{rack}]\nmodule.name = \"hello-world\"\n\
             roles.default.settings.greeting = \"Hi\"\n\
             roles.default.tags.rack-{rack}.settings.greeting = \"Hello rack {rack}\"\n\
             roles.default.machines.{}.settings.greeting = \"Hello first\"\n",
            machine_name(rack)
        )
        .unwrap();
    }
    // 10 sshd, one per rack: a tenth of the rack serves, every machine of the rack trusts them.
    for rack in 0..RACKS {
        writeln!(
            toml,
            "[instances.ssh-{rack}]\nmodule.name = \"sshd\"\n\
             roles.server.settings.authorizedKeys = [\"ssh-ed25519 AAAAadmin admin\"]\n\
             roles.client.tags = [\"rack-{rack}\"]\n",
        )
        .unwrap();
        for index in (rack..MACHINES)
            .step_by(RACKS)
            .filter(|&i| is_ssh_server(i))
        {
            writeln!(
                toml,
                "[instances.ssh-{rack}.roles.server.machines.{}]\n",
                machine_name(index)
            )
            .unwrap();
        }
    }
    // 20 users, each on every machine.
    for user in 0..USERS {
        writeln!(
            toml,
            "[instances.user-{user}]\nmodule.name = \"users\"\n\
             roles.default.tags = [\"all\"]\nroles.default.settings.user = \"user{user}\"\n\
             roles.default.settings.groups = [\"wheel\"]\n",
        )
        .unwrap();
    }
    // 10 internet, one per rack.
    for rack in 0..RACKS {
        writeln!(
            toml,
            "[instances.net-{rack}]\nmodule.name = \"internet\"\nroles.default.tags = [\"rack-{rack}\"]\n",
        )
        .unwrap();
    }
    toml
}

fn write_clan(dir: &Path) {
    std::fs::write(dir.join("clan.toml"), clan_toml()).unwrap();
    // Half the ssh servers have a generated host key.
    for index in (0..MACHINES).filter(|&i| is_ssh_server(i) && (i / RACKS) % 20 == 0) {
        let key_dir = dir.join(format!(
            "vars/per-machine/{}/openssh/ssh.id_ed25519.pub",
            machine_name(index)
        ));
        std::fs::create_dir_all(&key_dir).unwrap();
        std::fs::write(
            key_dir.join("value"),
            format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{index:032}\n"),
        )
        .unwrap();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    // For timing the `clan` binary on the same clan (BENCHMARKS.md): write it and stop.
    if let Some(dir) = std::env::var_os("CLAN_EVAL_BENCH_WRITE_TO") {
        std::fs::create_dir_all(&dir).unwrap();
        write_clan(Path::new(&dir));
        return;
    }
    let clan = tempfile::tempdir().unwrap();
    write_clan(clan.path());

    let mut cold = Vec::new();
    let mut fleet_stats = None;
    for _ in 0..COLD_RUNS {
        let cache = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let fleet = Fleet::open_with_cache(clan.path(), cache.path()).unwrap();
        cold.push(start.elapsed());
        assert!(!fleet.from_cache);
        let machines = fleet.machines().unwrap();
        let files: usize = machines.iter().map(|m| m.config.files.len()).sum();
        let generators: usize = machines.iter().map(|m| m.config.generators.len()).sum();
        fleet_stats = Some((
            machines.len(),
            fleet.summary.instances.len(),
            files,
            generators,
        ));
    }
    let cold_rss = peak_rss_mib();

    let cache = tempfile::tempdir().unwrap();
    Fleet::open_with_cache(clan.path(), cache.path()).unwrap();
    let mut warm = Vec::new();
    for run in 0..WARM_RUNS {
        let start = Instant::now();
        let fleet = Fleet::open_with_cache(clan.path(), cache.path()).unwrap();
        let machine = fleet.machine(&machine_name(run * 37 % MACHINES)).unwrap();
        warm.push(start.elapsed());
        assert!(fleet.from_cache);
        assert!(machine.config.files.contains_key("/etc/hello"));
    }

    let (machines, instances, files, generators) = fleet_stats.unwrap();
    println!("clan-eval evaluate: {machines} machines, {instances} instances, {files} files, {generators} generators");
    println!(
        "  cold evaluation (median of {COLD_RUNS}, fresh cache): {:>8.1} ms   [all: {}]",
        median(cold.clone()).as_secs_f64() * 1e3,
        cold.iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  warm open + machine() (median of {WARM_RUNS}):     {:>8.2} ms",
        median(warm).as_secs_f64() * 1e3
    );
    match cold_rss {
        Some(mib) => println!("  peak RSS after the cold runs:               {mib:>8.1} MiB"),
        None => println!("  peak RSS: /proc/self/status not available"),
    }
}
