//! Decrypting 1,000 sops secrets: in-process (this crate) against spawning `age -d` once per
//! secret for the data key (what a tool shelling out per secret pays; clan-core spawns
//! `sops decrypt`, which costs at least as much). Both read every file from disk and verify
//! the MAC. Prints one table; run with `cargo bench -p clan-secrets --bench decrypt`.
//! Needs `age` on PATH.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clan_secrets::{Identities, Recipient, SopsFile};

const SECRETS: usize = 1_000;
const ROUNDS: usize = 5;

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let key_path = dir.path().join("key.txt");
    let identity = age::x25519::Identity::generate();
    let recipient: Recipient = identity.to_public().to_string().parse().expect("recipient");
    let key_text = {
        use age::secrecy::ExposeSecret;
        identity.to_string().expose_secret().to_owned()
    };
    std::fs::write(&key_path, format!("{key_text}\n")).expect("key file");
    let identities = Identities::parse(&key_text, "bench").expect("identity");

    let paths: Vec<_> = (0..SECRETS)
        .map(|i| {
            let path = dir.path().join(format!("secret-{i}"));
            let value = format!("password number {i} for the benchmark");
            let file =
                clan_secrets::encrypt(value.as_bytes(), std::slice::from_ref(&recipient)).unwrap();
            std::fs::write(&path, file.to_bytes()).unwrap();
            path
        })
        .collect();

    let in_process = || {
        let start = Instant::now();
        for path in &paths {
            let bytes = std::fs::read(path).unwrap();
            let plaintext = clan_secrets::decrypt(&bytes, &identities).unwrap();
            assert!(!plaintext.expose().is_empty());
        }
        start.elapsed()
    };

    let spawn_age = || {
        let start = Instant::now();
        for path in &paths {
            let file = SopsFile::parse(&std::fs::read(path).unwrap()).unwrap();
            let enc = &file.age_entries().unwrap()[0].enc;
            let mut child = Command::new("age")
                .arg("-d")
                .arg("-i")
                .arg(&key_path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("`age` must be on PATH (Debian package `age`)");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(enc.as_bytes())
                .unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success());
            let plaintext = file.decrypt_with_data_key(&output.stdout).unwrap();
            assert!(!plaintext.expose().is_empty());
        }
        start.elapsed()
    };

    let in_process_parallel = || {
        let start = Instant::now();
        let files: Vec<Vec<u8>> = paths
            .iter()
            .map(|path| std::fs::read(path).unwrap())
            .collect();
        for plaintext in clan_secrets::decrypt_many(&files, &identities) {
            assert!(!plaintext.unwrap().expose().is_empty());
        }
        start.elapsed()
    };

    in_process(); // warm the page cache
    let mut ours: Vec<Duration> = (0..ROUNDS).map(|_| in_process()).collect();
    let mut parallel: Vec<Duration> = (0..ROUNDS).map(|_| in_process_parallel()).collect();
    let mut theirs: Vec<Duration> = (0..ROUNDS.min(3)).map(|_| spawn_age()).collect();
    ours.sort();
    parallel.sort();
    theirs.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let (ours, parallel, theirs) = (median(&ours), median(&parallel), median(&theirs));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = |d: Duration| d.as_secs_f64() * 1e6 / SECRETS as f64;
    println!("decrypt {SECRETS} sops secrets (median of rounds, MAC verified)");
    println!(
        "  in-process (clan-secrets)   {:>9.1} ms  {:>8.1} µs/secret",
        ours.as_secs_f64() * 1e3,
        per(ours)
    );
    println!(
        "  decrypt_many ({cores} cores)       {:>9.1} ms  {:>8.1} µs/secret",
        parallel.as_secs_f64() * 1e3,
        per(parallel)
    );
    println!(
        "  spawn `age -d` per secret   {:>9.1} ms  {:>8.1} µs/secret",
        theirs.as_secs_f64() * 1e3,
        per(theirs)
    );
    println!(
        "  speed-up, sequential        {:>9.1}×",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    println!(
        "  speed-up, decrypt_many      {:>9.1}×",
        theirs.as_secs_f64() / parallel.as_secs_f64()
    );
}
