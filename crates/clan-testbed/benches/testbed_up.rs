//! Benchmark: how long `Testbed::up` takes for fleets of several sizes (until every sshd
//! answers), how long until every machine's systemd has finished booting (asked over SSH),
//! how much memory the booted fleet uses (drop in MemAvailable; noisy below a few machines),
//! and how long `down` takes. Prints one report line per size.
//!
//! `cargo bench -p clan-testbed --bench testbed_up` (sizes from `CLAN_TESTBED_BENCH_SIZES`,
//! default `1,3,50`). Needs root; the root filesystem is built first so builds don't count.

use std::process::{ExitCode, Stdio};
use std::time::Instant;

use clan_testbed::{check_host, Options, Testbed};

fn main() -> ExitCode {
    if let Err(reason) = check_host() {
        eprintln!("testbed_up: skipped: {reason}");
        return ExitCode::SUCCESS;
    }
    let sizes = std::env::var("CLAN_TESTBED_BENCH_SIZES").unwrap_or_else(|_| "1,3,50".into());
    let sizes: Vec<usize> = match sizes.split(',').map(|s| s.trim().parse()).collect() {
        Ok(sizes) => sizes,
        Err(error) => {
            eprintln!("testbed_up: CLAN_TESTBED_BENCH_SIZES must be numbers like 1,3,50: {error}");
            return ExitCode::from(2);
        }
    };
    let state = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("testbed_up: no temporary directory: {error}");
            return ExitCode::from(2);
        }
    };
    // Warm the root filesystem cache so the first size is not charged for debootstrap.
    let mut warm = Options::numbered(state.path().join("warm"), 1);
    warm.progress = |message| eprintln!("testbed_up: {message}");
    if let Err(error) = Testbed::up(&warm).and_then(Testbed::down) {
        eprintln!("testbed_up: {error}");
        return ExitCode::from(1);
    }
    println!("machines  up_s  booted_s  memory_mib  down_s");
    for size in sizes {
        match measure(&state.path().join(format!("n{size}")), size) {
            Ok(line) => println!("{line}"),
            Err(error) => {
                eprintln!("testbed_up: {size} machines: {error}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

fn measure(state_dir: &std::path::Path, size: usize) -> Result<String, Box<dyn std::error::Error>> {
    let available_before = mem_available_kib()?;
    let start = Instant::now();
    let testbed = Testbed::up(&Options::numbered(state_dir, size))?;
    let up = start.elapsed();
    let start = Instant::now();
    let mut sessions = Vec::new();
    for machine in testbed.machines() {
        let mut command = testbed.ssh_command(&machine.name)?;
        command
            .args(["systemctl", "is-system-running", "--wait"])
            .stdout(Stdio::piped());
        sessions.push((machine.name.clone(), command.spawn()?));
    }
    for (name, session) in sessions {
        // Exits non-zero when degraded; the state word is what counts.
        let output = session.wait_with_output()?;
        let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !matches!(state.as_str(), "running" | "degraded") {
            return Err(format!("{name} finished booting as `{state}`").into());
        }
    }
    let booted = start.elapsed();
    let used_mib = available_before.saturating_sub(mem_available_kib()?) / 1024;
    let start = Instant::now();
    testbed.down()?;
    let down = start.elapsed();
    Ok(format!(
        "{size:>8}  {:>4.1}  {:>8.1}  {used_mib:>10}  {:>6.1}",
        up.as_secs_f64(),
        booted.as_secs_f64(),
        down.as_secs_f64()
    ))
}

fn mem_available_kib() -> Result<u64, Box<dyn std::error::Error>> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| "no MemAvailable in /proc/meminfo".into())
}
