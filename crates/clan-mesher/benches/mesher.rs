//! Data Mesher benchmark: N node processes on loopback (this binary re-executed in `node`
//! mode, which does what `clan mesher run` does plus printing when watched files arrive).
//!
//! ```sh
//! cargo bench -p clan-mesher --bench mesher                 # everything, as in BENCHMARKS.md
//! cargo bench -p clan-mesher --bench mesher -- latency 10   # one part
//! ```
//!
//! Parts: `latency N` (a new 1 KiB file accepted by all N nodes, 30 runs), `idle N FILES`
//! (anti-entropy payload per node while in sync, and resident memory), `catchup FILES K`
//! (anti-entropy metadata a restarted node exchanges to catch up on K updates).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clan_mesher::record::unix_micros_now;
use clan_mesher::{Certificate, Config, FileName, Mesher, Record, SecretKey};

const LATENCY_RUNS: usize = 30;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let number =
        |i: usize, default: usize| words.get(i).and_then(|w| w.parse().ok()).unwrap_or(default);
    match words.first().copied() {
        Some("node") => node(Path::new(words[1]), words.get(2) == Some(&"watch")),
        Some("latency") => latency(number(1, 10)),
        Some("idle") => idle(number(1, 10), number(2, 1000)),
        Some("catchup") => catchup(number(1, 1000), number(2, 10)),
        _ => {
            latency(10);
            latency(50);
            for files in [10, 1000, 10_000] {
                idle(10, files);
            }
            for files in [1000, 10_000] {
                for k in [1, 10, 100] {
                    catchup(files, k);
                }
            }
        }
    }
}

/// Node mode: run from a config; with `watch`, print `accepted <name> <unix µs>` for `lat_*`.
fn node(config: &Path, watch: bool) {
    let config = Config::load(config).expect("config");
    let settings = config.settings().expect("settings");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mesher = Mesher::spawn(settings).await.expect("spawn");
        let handle = mesher.handle();
        let mut changes = handle.changes();
        let mut seen = HashMap::new();
        while changes.changed().await.is_ok() {
            if !watch {
                continue;
            }
            for record in handle.list().await {
                if record.name.as_str().starts_with("lat_")
                    && seen.get(&record.name) != Some(&record.signed_at)
                {
                    println!("accepted {} {}", record.name, unix_micros_now());
                    seen.insert(record.name.clone(), record.signed_at);
                }
            }
        }
    });
}

struct Cluster {
    dir: tempfile::TempDir,
    network_key: SecretKey,
    admin: SecretKey,
    nodes: Vec<NodeProcess>,
    accepted: mpsc::Receiver<(usize, String, u64)>,
    accepted_tx: mpsc::Sender<(usize, String, u64)>,
    interval: &'static str,
    watch: bool,
}

struct NodeProcess {
    dir: PathBuf,
    child: Option<Child>,
    api: SocketAddr,
    address: String,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn new(interval: &'static str, watch: bool) -> Self {
        let base = if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let (accepted_tx, accepted) = mpsc::channel();
        Self {
            dir: tempfile::tempdir_in(base).unwrap(),
            network_key: SecretKey::generate(),
            admin: SecretKey::generate(),
            nodes: Vec::new(),
            accepted,
            accepted_tx,
            interval,
            watch,
        }
    }

    fn add_node(&mut self, files: usize) {
        let index = self.nodes.len();
        let dir = self.dir.path().join(format!("node{index}"));
        std::fs::create_dir_all(&dir).unwrap();
        let identity = SecretKey::generate();
        identity.write(&dir.join("id.key")).unwrap();
        Certificate::sign(&self.network_key, identity.public(), 0, None)
            .write(&dir.join("id.cert"))
            .unwrap();
        let mut bootstrap: Vec<String> = self
            .nodes
            .iter()
            .take(1)
            .map(|n| format!("\"{}\"", n.address))
            .collect();
        if index > 1 {
            bootstrap.push(format!("\"{}\"", self.nodes[index - 1].address));
        }
        let admin = self.admin.public();
        let names = (0..LATENCY_RUNS)
            .map(|i| format!("lat_{i}"))
            .chain((0..files).map(|i| format!("bulk_{i}")));
        let file_lines: Vec<String> = names
            .map(|name| format!("{name} = [\"{admin}\"]"))
            .collect();
        let config = format!(
            "log_level = \"warn\"\nstate_dir = \"state\"\n[cluster]\nport = 0\ninterfaces = [\"127.0.0.1\"]\n\
             bootstrap_peers = [{}]\npush_pull_interval = \"{}\"\nidentity_key = \"id.key\"\nidentity_cert = \"id.cert\"\n\
             [network]\nid = \"{}\"\n[network.files]\n{}\n[http]\nport = 0\n",
            bootstrap.join(", "),
            self.interval,
            self.network_key.public(),
            file_lines.join("\n")
        );
        std::fs::write(dir.join("dm.toml"), config).unwrap();
        let mut process = NodeProcess {
            dir,
            child: None,
            api: "127.0.0.1:0".parse().unwrap(),
            address: String::new(),
        };
        self.start(&mut process, index);
        self.nodes.push(process);
    }

    fn start(&self, process: &mut NodeProcess, index: usize) {
        let api_file = process
            .dir
            .join("state")
            .join(clan_mesher::API_ADDRESS_FILE);
        let _ = std::fs::remove_file(&api_file);
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.arg("node").arg(process.dir.join("dm.toml"));
        if self.watch {
            command.arg("watch");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let tx = self.accepted_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut words = line.split_whitespace().skip(1);
                if let (Some(name), Some(at)) =
                    (words.next(), words.next().and_then(|w| w.parse().ok()))
                {
                    let _ = tx.send((index, name.to_owned(), at));
                }
            }
        });
        process.child = Some(child);
        while !api_file.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        process.api = std::fs::read_to_string(&api_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let status = get_json(process.api, "/v1/status");
        process.address = format!(
            "{}/p2p/{}",
            status["listen_addrs"][0].as_str().unwrap(),
            status["peer_id"].as_str().unwrap()
        );
    }

    fn stop(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self, index: usize) {
        let mut process = std::mem::replace(
            &mut self.nodes[index],
            NodeProcess {
                dir: PathBuf::new(),
                child: None,
                api: "127.0.0.1:0".parse().unwrap(),
                address: String::new(),
            },
        );
        self.start(&mut process, index);
        self.nodes[index] = process;
    }

    fn publish(&self, node: usize, name: &str, content: &[u8]) {
        let record = Record::sign_update(
            &self.admin,
            self.network_key.public(),
            FileName::parse(name).unwrap(),
            content,
            unix_micros_now(),
            None,
        );
        let body = clan_mesher::http::encode_upload(&record, content);
        let (status, answer) =
            clan_mesher::http::call(self.nodes[node].api, "POST", "/v1/files", &body).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }

    fn wait_files(&self, files: usize) {
        for node in &self.nodes {
            while get_json(node.api, "/v1/status")["files"].as_u64() != Some(files as u64) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn get_json(api: SocketAddr, path: &str) -> serde_json::Value {
    let (_, body) = clan_mesher::http::call(api, "GET", path, b"").unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Metadata kinds: anti-entropy plus the announcements (and acks) it triggers.
const METADATA_KINDS: [&str; 5] = ["digest", "nodes", "in_sync", "announce", "ack"];

/// Sum of a byte counter over the given message kinds.
fn bytes_of(api: SocketAddr, metric: &str, kinds: &[&str]) -> u64 {
    let (_, body) = clan_mesher::http::call(api, "GET", "/metrics", b"").unwrap();
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with(metric))
        .filter(|line| {
            kinds
                .iter()
                .any(|kind| line.contains(&format!("kind=\"{kind}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn rss_kib(child: &Child) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn latency(n: usize) {
    let mut cluster = Cluster::new("30s", true);
    for _ in 0..n {
        cluster.add_node(0);
    }
    // Let every node finish its handshakes.
    std::thread::sleep(Duration::from_secs(2));
    let mut latencies = Vec::new();
    for run in 0..LATENCY_RUNS {
        let name = format!("lat_{run}");
        let content = vec![run as u8; 1024];
        let start = unix_micros_now();
        cluster.publish(run % n, &name, &content);
        let mut reached = std::collections::HashSet::new();
        let mut last = start;
        while reached.len() < n {
            let (node, accepted, at) = cluster
                .accepted
                .recv_timeout(Duration::from_secs(30))
                .expect("file reached every node");
            if accepted == name && reached.insert(node) {
                last = last.max(at);
            }
        }
        latencies.push((last - start) as f64 / 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "latency N={n}: 1 KiB file accepted by all nodes over {LATENCY_RUNS} runs: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pick(0.5),
        pick(0.99),
        latencies[latencies.len() - 1]
    );
}

fn idle(n: usize, files: usize) {
    let mut cluster = Cluster::new("1s", false);
    for _ in 0..n {
        cluster.add_node(files);
    }
    let load = Instant::now();
    for i in 0..files {
        cluster.publish(
            0,
            &format!("bulk_{i}"),
            format!("file {i} {}", "x".repeat(64)).as_bytes(),
        );
    }
    cluster.wait_files(files);
    let load = load.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let before: u64 = cluster
        .nodes
        .iter()
        .map(|node| {
            bytes_of(
                node.api,
                "clan_mesher_bytes_sent_total",
                &clan_mesher::metrics::ANTI_ENTROPY_KINDS,
            )
        })
        .sum();
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    let after: u64 = cluster
        .nodes
        .iter()
        .map(|node| {
            bytes_of(
                node.api,
                "clan_mesher_bytes_sent_total",
                &clan_mesher::metrics::ANTI_ENTROPY_KINDS,
            )
        })
        .sum();
    // Rounds happen once per second here; at a 30 s interval there are 2 per minute.
    let per_node_per_round = (after - before) as f64 / n as f64 / window.as_secs_f64();
    let per_node_per_minute_at_30s = per_node_per_round * 2.0;
    let rss: Vec<u64> = cluster
        .nodes
        .iter()
        .filter_map(|node| node.child.as_ref())
        .map(rss_kib)
        .collect();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "idle N={n} files={files}: anti-entropy {per_node_per_round:.0} B per node per round = {per_node_per_minute_at_30s:.0} B per node per minute at 30 s; \
         RSS {:.1} MiB on the node that took the uploads, at most {:.1} MiB on the others; initial load and replication {:.1} s",
        mib(rss[0]),
        mib(rss[1..].iter().copied().max().unwrap_or(0)),
        load.as_secs_f64()
    );
}

fn catchup(files: usize, k: usize) {
    let mut cluster = Cluster::new("1s", false);
    cluster.add_node(files.max(k));
    cluster.add_node(files.max(k));
    for i in 0..files {
        cluster.publish(0, &format!("bulk_{i}"), format!("file {i}").as_bytes());
    }
    cluster.wait_files(files);
    cluster.stop(1);
    for i in 0..k {
        cluster.publish(
            0,
            &format!("bulk_{i}"),
            format!("file {i} changed").as_bytes(),
        );
    }
    let start = Instant::now();
    cluster.restart(1);
    let target = get_json(cluster.nodes[0].api, "/v1/files");
    let want: HashMap<String, u64> = target
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["signed_at"].as_u64().unwrap(),
            )
        })
        .collect();
    loop {
        let have = get_json(cluster.nodes[1].api, "/v1/files");
        let have: HashMap<String, u64> = have
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["signed_at"].as_u64().unwrap(),
                )
            })
            .collect();
        if have == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    let api = cluster.nodes[1].api;
    let sent = bytes_of(api, "clan_mesher_bytes_sent_total", &METADATA_KINDS);
    let received = bytes_of(api, "clan_mesher_bytes_received_total", &METADATA_KINDS);
    let fetches = get_json(api, "/v1/status")["fetches"].as_u64().unwrap_or(0);
    println!(
        "catch-up files={files} K={k}: metadata (anti-entropy and announcements) {} B ({sent} sent, {received} received), {fetches} fetches, restart to caught up {:.0} ms",
        sent + received,
        elapsed.as_secs_f64() * 1000.0
    );
}
