//! `clan mesher` as separate processes on loopback: keys and certificates from the CLI, a file
//! reaching ten daemons, catch-up after a restart, refusals that explain themselves, a status
//! that says why a node has no peers, and kill -9 in the middle of writes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CLAN: &str = env!("CARGO_BIN_EXE_clan");
/// A hang guard for waits, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(90);

fn clan(args: &[&str]) -> Output {
    Command::new(CLAN).args(args).output().expect("run clan")
}

fn clan_ok(args: &[&str]) -> String {
    let output = clan(args);
    assert!(
        output.status.success(),
        "clan {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Fleet {
    dir: tempfile::TempDir,
    network_id: String,
    admin_key: PathBuf,
}

struct Node {
    dir: PathBuf,
    child: Option<Child>,
}

impl Fleet {
    fn node(&self, index: usize, bootstrap: &[&str], admin_public: &str) -> Node {
        let dir = self.dir.path().join(format!("node{index}"));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("id.key");
        let cert = dir.join("id.cert");
        clan_ok(&[
            "mesher",
            "generate",
            "identity-key",
            "--out",
            key.to_str().unwrap(),
        ]);
        let network_key = self.dir.path().join("network.key");
        clan_ok(&[
            "mesher",
            "certificate",
            "sign",
            "--network-key",
            network_key.to_str().unwrap(),
            "--identity-key",
            key.to_str().unwrap(),
            "--out",
            cert.to_str().unwrap(),
        ]);
        let files: Vec<String> = std::iter::once("zone".to_owned())
            .chain((0..20).map(|i| format!("file_{i}")))
            .map(|name| format!("{name} = [\"{admin_public}\"]"))
            .collect();
        let bootstrap = bootstrap
            .iter()
            .map(|address| format!("\"{address}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "log_level = \"info\"\nstate_dir = \"state\"\n\n[cluster]\nport = 0\ninterfaces = [\"127.0.0.1\"]\n\
             bootstrap_peers = [{bootstrap}]\npush_pull_interval = \"500ms\"\nidentity_key = \"id.key\"\nidentity_cert = \"id.cert\"\n\n\
             [network]\nid = \"{}\"\nnamespaces = [\"facts\"]\n\n[network.files]\n{}\n\n[http]\nport = 0\n",
            self.network_id,
            files.join("\n")
        );
        std::fs::write(dir.join("dm.toml"), config).unwrap();
        let mut node = Node { dir, child: None };
        node.start();
        node
    }
}

impl Node {
    fn config(&self) -> String {
        self.dir.join("dm.toml").to_str().unwrap().to_owned()
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("state").join("api.addr"));
        let log = std::fs::File::create(self.dir.join("daemon.log")).unwrap();
        let child = Command::new(CLAN)
            .args(["mesher", "run", "--config", &self.config()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let config = self.config();
        wait_for("daemon answers", || {
            clan(&["mesher", "status", "--config", &config])
                .status
                .success()
        });
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&clan_ok(&[
            "mesher",
            "status",
            "--json",
            "--config",
            &self.config(),
        ]))
        .unwrap()
    }

    fn address(&self) -> String {
        let status = self.status();
        format!(
            "{}/p2p/{}",
            status["listen_addrs"][0].as_str().unwrap(),
            status["peer_id"].as_str().unwrap()
        )
    }

    /// `mesher file list --json`.
    fn files(&self) -> serde_json::Value {
        serde_json::from_str(&clan_ok(&[
            "mesher",
            "file",
            "list",
            "--json",
            "--config",
            &self.config(),
        ]))
        .unwrap()
    }

    fn get(&self, name: &str) -> Option<Vec<u8>> {
        let output = clan(&["mesher", "file", "get", name, "--config", &self.config()]);
        output.status.success().then_some(output.stdout)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let status = child.wait().unwrap();
            assert!(status.success(), "daemon exited with {status}");
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `clan mesher status` says why a node has no peers: nothing to dial; bootstrap peers that
/// do not resolve or refuse, each named; no daemon answering at all.
#[test]
fn status_says_why_a_node_has_no_peers() {
    let (fleet, admin) = fleet();
    let mut lonely = fleet.node(0, &[], &admin);
    let text = clan_ok(&["mesher", "status", "--config", &lonely.config()]);
    assert!(text.contains("peers: 0\n"), "{text}");
    assert!(
        text.contains("no peers: no bootstrap peers are configured (`cluster.bootstrap_peers`"),
        "{text}"
    );

    // A port nothing listens on (bound, then released) and a name that cannot resolve.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stranded = fleet.node(1, &[&closed.to_string(), "nowhere.invalid:7946"], &admin);
    let dialled = format!("/ip4/127.0.0.1/tcp/{}", closed.port());
    wait_for("the failed dial is reported", || {
        stranded.status()["bootstrap"][0]["error"].is_string()
    });
    let status = stranded.status();
    assert_eq!(status["bootstrap"][0]["address"], dialled.as_str());
    assert_eq!(status["bootstrap"][0]["connected"], false);
    assert_eq!(status["unresolved_bootstrap"][0], "nowhere.invalid:7946");
    let text = clan_ok(&["mesher", "status", "--config", &stranded.config()]);
    let reason = text
        .lines()
        .find_map(|line| line.strip_prefix("no peers: "))
        .unwrap_or_else(|| panic!("no reason given: {text}"));
    assert!(
        reason.starts_with("none of the bootstrap peers is reachable: "),
        "{reason}"
    );
    assert!(
        reason.contains("nowhere.invalid:7946: does not resolve"),
        "{reason}"
    );
    assert!(reason.contains(&format!("{dialled}: ")), "{reason}");
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
    assert_eq!(
        status["no_peers"].as_str(),
        Some(reason),
        "--json gives the same reason"
    );

    // Once a bootstrap peer answers, there is nothing to explain.
    let seed = lonely.address();
    let joined = fleet.node(2, &[&seed], &admin);
    wait_for("the seed is a peer", || {
        joined.status()["peers"]
            .as_array()
            .is_some_and(|p| p.len() == 1)
    });
    assert!(joined.status()["no_peers"].is_null());

    lonely.stop();
    let output = clan(&["mesher", "status", "--config", &lonely.config()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: the mesher daemon is not running: nothing answers on 127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("systemctl status data-mesher"), "{stderr}");
}

/// `file list` shows when a file was signed as a date in the zone `TZ` names, as `date`
/// shows it; `--json` keeps the microseconds.
#[test]
fn file_list_shows_local_dates() {
    let (fleet, admin) = fleet();
    let mut node = fleet.node(0, &[], &admin);
    let published = publish(&node, &fleet, "zone", b"example.org. IN A 10.0.0.1\n");
    assert!(published.status.success(), "{published:?}");
    let list = node.files();
    let seconds = list[0]["signed_at"].as_u64().unwrap() / 1_000_000;
    let mut shown = Vec::new();
    for zone in ["UTC0", "XYZ-5:30", "ABC+9"] {
        let output = Command::new(CLAN)
            .args(["mesher", "file", "list", "--config", &node.config()])
            .env("TZ", zone)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        let date = Command::new("date")
            .args([
                format!("--date=@{seconds}"),
                "+%Y-%m-%d %H:%M:%S %z".to_owned(),
            ])
            .env("TZ", zone)
            .output()
            .unwrap();
        let date = String::from_utf8(date.stdout).unwrap();
        assert!(
            text.contains(&format!("\tsigned {}\n", date.trim())),
            "TZ={zone}: {text}"
        );
        shown.push(text);
    }
    assert!(
        shown[0].contains(" +0000\n") && shown[1].contains(" +0530\n"),
        "{shown:?}"
    );
    assert!(shown[2].contains(" -0900\n"), "{shown:?}");
    node.stop();
}

fn publish(node: &Node, fleet: &Fleet, name: &str, content: &[u8]) -> Output {
    let path = fleet.dir.path().join(format!("content-{name}"));
    std::fs::write(&path, content).unwrap();
    clan(&[
        "mesher",
        "file",
        "update",
        name,
        path.to_str().unwrap(),
        "--signing-key",
        fleet.admin_key.to_str().unwrap(),
        "--config",
        &node.config(),
    ])
}

fn fleet() -> (Fleet, String) {
    let dir = tempfile::tempdir().unwrap();
    let network_key = dir.path().join("network.key");
    let network_id = clan_ok(&[
        "mesher",
        "generate",
        "network",
        "--out",
        network_key.to_str().unwrap(),
    ])
    .trim()
    .to_owned();
    let admin_key = dir.path().join("admin.key");
    let admin_public = clan_ok(&[
        "mesher",
        "generate",
        "signing-key",
        "--out",
        admin_key.to_str().unwrap(),
    ])
    .trim()
    .to_owned();
    (
        Fleet {
            dir,
            network_id,
            admin_key,
        },
        admin_public,
    )
}

#[test]
fn a_file_published_from_the_cli_reaches_ten_daemons() {
    let (fleet, admin) = fleet();
    let first = fleet.node(0, &[], &admin);
    let seed = first.address();
    let mut nodes = vec![first];
    for i in 1..10 {
        nodes.push(fleet.node(i, &[&seed], &admin));
    }
    let output = publish(&nodes[4], &fleet, "zone", b"example.org. IN A 10.0.0.1\n");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (i, node) in nodes.iter().enumerate() {
        wait_for(&format!("node {i} has the zone"), || {
            node.get("zone").as_deref() == Some(b"example.org. IN A 10.0.0.1\n")
        });
        let on_disk = node
            .dir
            .join("state/files")
            .join(&fleet.network_id)
            .join("zone");
        assert_eq!(
            std::fs::read(on_disk).unwrap(),
            b"example.org. IN A 10.0.0.1\n"
        );
    }
    let list = nodes[9].files();
    assert_eq!(list[0]["name"], "zone");
    assert_eq!(list[0]["signer"], admin.as_str());
    let metrics = clan_mesher_metrics(&nodes[0]);
    assert!(
        metrics.contains("clan_mesher_records_accepted_total 1"),
        "{metrics}"
    );
    for node in &mut nodes {
        node.stop();
    }
}

fn clan_mesher_metrics(node: &Node) -> String {
    let address = std::fs::read_to_string(node.dir.join("state/api.addr")).unwrap();
    let (status, body) =
        clan_mesher::http::call(address.trim().parse().unwrap(), "GET", "/metrics", b"").unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

#[test]
fn a_restarted_daemon_catches_up_with_one_fetch_per_changed_file() {
    let (fleet, admin) = fleet();
    let a = fleet.node(0, &[], &admin);
    let seed = a.address();
    let mut b = fleet.node(1, &[&seed], &admin);
    for i in 0..10 {
        assert!(publish(
            &a,
            &fleet,
            &format!("file_{i}"),
            format!("v1 {i}").as_bytes()
        )
        .status
        .success());
    }
    wait_for("b has ten files", || b.status()["files"] == 10);
    b.stop();
    for round in 2..4 {
        for i in 0..4 {
            let output = publish(
                &a,
                &fleet,
                &format!("file_{i}"),
                format!("v{round} {i}").as_bytes(),
            );
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    b.start();
    wait_for("b caught up", || {
        b.get("file_3").as_deref() == Some(b"v3 3")
    });
    wait_for("b has all files", || {
        (0..4).all(|i| b.get(&format!("file_{i}")) == Some(format!("v3 {i}").into_bytes()))
    });
    assert_eq!(b.status()["fetches"], 4, "one fetch per changed file");
}

#[test]
fn refused_uploads_say_why_and_what_to_do() {
    let (fleet, admin) = fleet();
    let node = fleet.node(0, &[], &admin);
    let stranger = fleet.dir.path().join("stranger.key");
    clan_ok(&[
        "mesher",
        "generate",
        "signing-key",
        "--out",
        stranger.to_str().unwrap(),
    ]);
    let content = fleet.dir.path().join("content");
    std::fs::write(&content, b"x").unwrap();
    let output = clan(&[
        "mesher",
        "file",
        "update",
        "zone",
        content.to_str().unwrap(),
        "--signing-key",
        stranger.to_str().unwrap(),
        "--config",
        &node.config(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: the daemon refused the request (403): not_allowed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the signing key is not listed"),
        "{stderr}"
    );

    let output = clan(&[
        "mesher",
        "file",
        "get",
        "Bad/Name",
        "--config",
        &node.config(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid file name `Bad/Name`"));

    let other_network = clan_ok(&[
        "mesher",
        "generate",
        "network",
        "--out",
        fleet.dir.path().join("other.key").to_str().unwrap(),
    ]);
    let cert = node.dir.join("id.cert");
    let verify = |network: &str| {
        clan(&[
            "mesher",
            "certificate",
            "verify",
            "--network-id",
            network.trim(),
            "--certificate",
            cert.to_str().unwrap(),
        ])
    };
    assert!(verify(&fleet.network_id).status.success());
    let wrong = verify(&other_network);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("belongs to network"));
}

#[test]
fn kill_9_during_writes_never_leaves_a_partial_file() {
    let (fleet, admin) = fleet();
    let mut node = fleet.node(0, &[], &admin);
    let files_dir = node.dir.join("state/files").join(&fleet.network_id);
    let mut written: Vec<Vec<u8>> = Vec::new();
    for round in 0..4u8 {
        // 4 MiB uploads in flight while the daemon is killed at a varying moment.
        let contents: Vec<Vec<u8>> = (0..6u8)
            .map(|i| vec![round.wrapping_mul(16).wrapping_add(i); 4 * 1024 * 1024])
            .collect();
        written.extend(contents.iter().cloned());
        let uploads = {
            let config = node.config();
            let key = fleet.admin_key.clone();
            let dir = fleet.dir.path().to_owned();
            let contents = contents.clone();
            std::thread::spawn(move || {
                for (i, content) in contents.iter().enumerate() {
                    let path = dir.join(format!("upload-{round}-{i}"));
                    std::fs::write(&path, content).unwrap();
                    let _ = Command::new(CLAN)
                        .args([
                            "mesher",
                            "file",
                            "update",
                            &format!("file_{i}"),
                            path.to_str().unwrap(),
                        ])
                        .args(["--signing-key", key.to_str().unwrap(), "--config", &config])
                        .output();
                }
            })
        };
        std::thread::sleep(Duration::from_millis(150 + 100 * u64::from(round)));
        node.kill();
        uploads.join().unwrap();
        for path in walk(&files_dir) {
            let content = std::fs::read(&path).unwrap();
            assert!(
                written.contains(&content),
                "partial or foreign content in {}",
                path.display()
            );
        }
        node.start();
        let list = node.files();
        for entry in list.as_array().unwrap() {
            let name = entry["name"].as_str().unwrap();
            let content = node.get(name).expect("listed file is readable");
            assert!(
                written.contains(&content),
                "{name} does not hold a complete upload"
            );
        }
    }
    node.stop();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}
