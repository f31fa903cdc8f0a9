//! Networking against real test machines: a machine reachable at two addresses, its
//! highest-priority route black-holed (packets dropped by an nftables rule in its network
//! namespace, so connections hang rather than being refused), is deployed and reached with
//! `clan ssh` over the lower route, `clan network ping|overview` report the lower network
//! answering, and every route down gives an error naming each route and
//! why. The outcome is read on the machine. Skips with the reason when the host cannot run a
//! testbed (not root, a tool missing).

mod env;
mod support;

use std::path::PathBuf;
use std::process::Command;

use support::fixture::{nft, run, stdout, Fixture};

/// One test machine `web` answering at its testbed address (`top`, its `deploy.targetHost`)
/// and at a second address (`lower`, the `lan` network of the `internet` service), with an
/// ssh_config that logs in at both.
struct TwoRoutes {
    f: Fixture,
    top: String,
    lower: String,
    netns: String,
    ssh_config: PathBuf,
}

fn two_routes() -> Option<TwoRoutes> {
    let f = Fixture::new(&["web"], &["nft", "ip"])?;
    let top = f.address_of("web");
    let (prefix, last) = top.rsplit_once('.').unwrap();
    let lower = format!("{prefix}.{}", last.parse::<u8>().unwrap() + 100);
    let netns = f.testbed.network_namespaces()[0].clone();
    let added = run(Command::new("ip").args([
        "-n",
        &netns,
        "addr",
        "add",
        &format!("{lower}/24"),
        "dev",
        "eth0",
    ]));
    assert!(added.status.success());
    // The testbed's settings (key, known_hosts) for the second address too.
    let testbed_config = std::fs::read_to_string(f.testbed.ssh_config()).unwrap();
    let needle = format!(" {top}\n  User root");
    assert!(testbed_config.contains(&needle), "{testbed_config}");
    let ssh_config = f.work.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        testbed_config.replace(&needle, &format!(" {top} {lower}\n  User root")),
    )
    .unwrap();
    f.commit_clan_toml(
        &format!(
            "[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n\
             [machines.web]\ndeploy.targetHost = \"root@{top}\"\n\n\
             [instances.lan]\nmodule.name = \"internet\"\n\
             roles.default.machines.web.settings = {{ host = \"{lower}\" }}\n\n\
             [instances.hello]\nmodule.name = \"hello-world\"\nroles.default.tags = [\"all\"]\n"
        ),
        "init",
    );
    Some(TwoRoutes {
        f,
        top,
        lower,
        netns,
        ssh_config,
    })
}

impl TwoRoutes {
    fn clan(&self, args: &[&str]) -> Command {
        let mut command = self.f.clan(args);
        command
            .env("CLAN_SSH_CONFIG", &self.ssh_config)
            .env("CLAN_HOST_KEY_CHECK", "tofu");
        command
    }

    /// Drops every packet to `address` inside the machine's namespace.
    fn black_hole(&self, address: &str) {
        let table = format!("blackhole{}", address.replace('.', "_"));
        let rules = format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority -10;\n    ip daddr {address} drop\n  }}\n}}\n"
        );
        nft(&self.netns, &rules);
    }

    /// `command` on the machine over plain ssh to `address`: the test's way to observe it,
    /// which neither needs nor records the host key clan's own connections check.
    fn ssh(&self, address: &str, command: &str) -> std::process::Output {
        run(Command::new("ssh").arg("-F").arg(&self.ssh_config).args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=3",
            &format!("root@{address}"),
            command,
        ]))
    }

    /// [`TwoRoutes::ssh`]'s stdout.
    fn on(&self, address: &str, command: &str) -> String {
        stdout(&self.ssh(address, command))
    }
}

#[test]
fn a_black_holed_top_route_loses_the_race_and_every_route_down_names_each() {
    let Some(t) = two_routes() else { return };
    // Both routes live: the top one has the head start and carries the deploy.
    let first = run(&mut t.clan(&["machines", "update", "--confirm-timeout", "5"]));
    assert!(first.status.success(), "first deploy");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains(&format!("reached at root@{} (from targetHost)", t.top)),
        "{stderr}"
    );

    t.black_hole(&t.top);
    assert!(
        !t.ssh(&t.top, "true").status.success(),
        "the top route still answers"
    );
    // A change to deploy, over the lower route.
    let toml = std::fs::read_to_string(t.f.clan.path().join("clan.toml")).unwrap();
    t.f.commit_clan_toml(
        &toml.replace(
            "module.name = \"hello-world\"",
            "module.name = \"hello-world\"\nroles.default.settings = { greeting = \"Hi\" }",
        ),
        "greeting",
    );
    let json = run(&mut t.clan(&["machines", "update", "--confirm-timeout", "5", "--json"]));
    assert!(json.status.success(), "deploy over the lower route");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let route = events.iter().find(|e| e["event"] == "route").unwrap();
    assert_eq!(route["network"], "lan", "{route}");
    assert_eq!(route["target"], format!("root@{}", t.lower));
    assert_eq!(route["routes"], 2);
    assert_eq!(t.on(&t.lower, "cat /etc/hello"), "Hi from web");

    let ssh = run(&mut t.clan(&["ssh", "web", "--", "cat /etc/hostname; exit 4"]));
    assert_eq!(ssh.status.code(), Some(4));
    assert_eq!(stdout(&ssh), "web");
    let stderr = String::from_utf8_lossy(&ssh.stderr);
    assert!(
        stderr.contains(&format!("reached web at root@{} (network lan)", t.lower)),
        "{stderr}"
    );

    let ping = run(&mut t.clan(&["network", "ping", "web"]));
    assert!(ping.status.success(), "network ping");
    let line = stdout(&ping);
    assert!(
        line.starts_with(&format!("web (lan): reachable at root@{}, ping: ", t.lower)),
        "{line}"
    );
    let overview = run(&mut t.clan(&["network", "overview", "--json"]));
    let overview: serde_json::Value = serde_json::from_slice(&overview.stdout).unwrap();
    assert_eq!(overview[0]["network"]["name"], "lan");
    assert_eq!(overview[0]["peers"][0]["machine"], "web");
    assert!(overview[0]["peers"][0]["elapsedMs"].is_u64(), "{overview}");

    t.black_hole(&t.lower);
    let down = run(&mut t.clan(&["ssh", "web", "--", "true"]));
    assert_eq!(down.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("no route answered"), "{stderr}");
    for route in [
        format!("root@{} (targetHost): ", t.top),
        format!("root@{} (network lan): ", t.lower),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&route))
            .unwrap_or_else(|| {
                panic!("{route} is not named: {stderr}");
            });
        assert!(line.contains("timed out"), "{line}");
    }
}

/// The route carrying a deploy goes down while the machine activates: the deploy ends (it does
/// not hang on the dead connection), the machine is on the new generation confirmed over the
/// other route or back on the old one by magic rollback (never in between), and the next run
/// deploys over the other route.
#[test]
fn a_route_lost_mid_deploy_ends_cleanly_and_the_next_run_takes_another() {
    let Some(t) = two_routes() else { return };
    let first = run(&mut t.clan(&["machines", "update", "--confirm-timeout", "10"]));
    assert!(first.status.success(), "first deploy");
    assert_eq!(t.on(&t.lower, "cat /etc/hello"), "Hello from web");

    // A generation whose activation takes a few seconds (a unit slow to start).
    let service = t.f.clan.path().join("services/slow/service.star");
    std::fs::create_dir_all(service.parent().unwrap()).unwrap();
    std::fs::write(
        &service,
        r#"manifest = {"name": "slow", "description": "starts slowly"}
def _slow(ctx):
    unit = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 6\n\n[Install]\nWantedBy=multi-user.target\n"
    return {"config": {"units": {"slow.service": {"content": unit}}}}
roles = {"default": {"perInstance": _slow}}
"#,
    )
    .unwrap();
    t.f.git(&["add", "services"]);
    let toml = std::fs::read_to_string(t.f.clan.path().join("clan.toml")).unwrap();
    t.f.commit_clan_toml(
        &(toml.replace(
            "module.name = \"hello-world\"",
            "module.name = \"hello-world\"\nroles.default.settings = { greeting = \"Hi\" }",
        ) + "\n[instances.slow]\nmodule.name = \"slow\"\nroles.default.tags = [\"all\"]\n"),
        "slow",
    );

    let mut deploy = t
        .clan(&["machines", "update", "--confirm-timeout", "10", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let events = std::io::BufReader::new(deploy.stdout.take().unwrap());
    let mut seen = Vec::new();
    for line in std::io::BufRead::lines(events) {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "stage" && event["stage"] == "activate" {
            assert_eq!(
                seen.iter()
                    .find(|e: &&serde_json::Value| e["event"] == "route")
                    .unwrap()["source"],
                "targetHost",
                "the deploy does not run over the top route"
            );
            t.black_hole(&t.top);
        }
        seen.push(event);
    }
    let ended = deploy.wait_with_output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&ended.stderr));
    let outcome = seen.last().expect("events");
    eprintln!("the deploy ended: {outcome}");
    // Past the confirmation window either way: a rolled-back machine has reverted by now.
    std::thread::sleep(std::time::Duration::from_secs(12));
    let hello = t.on(&t.lower, "cat /etc/hello");
    let slow = t.on(
        &t.lower,
        "systemctl is-active slow.service; test -e /etc/systemd/system/slow.service && echo unit",
    );
    if ended.status.success() {
        assert_eq!(outcome["event"], "done", "{outcome}");
        assert_eq!(
            (hello.as_str(), slow.as_str()),
            ("Hi from web", "active\nunit")
        );
    } else {
        assert_eq!(outcome["event"], "failed", "{outcome}");
        let error = outcome["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("lost the connection to `root@{}`", t.top)),
            "{error}"
        );
        assert_eq!(hello, "Hello from web", "rolled back");
        assert!(
            !slow.ends_with("unit"),
            "the new generation's unit is still there: {slow}"
        );
    }

    let next = run(&mut t.clan(&["machines", "update", "--confirm-timeout", "10", "--json"]));
    assert!(next.status.success(), "the next run");
    let events = String::from_utf8_lossy(&next.stdout);
    assert!(
        events.contains(&format!("\"target\":\"root@{}\"", t.lower)),
        "{events}"
    );
    assert_eq!(t.on(&t.lower, "cat /etc/hello"), "Hi from web");
    assert_eq!(t.on(&t.lower, "systemctl is-active slow.service"), "active");
}

/// A machine that drops SSH from the admin but not from another machine is deployed and
/// reached through that machine as its `internet` jump host.
#[test]
fn a_jump_host_reaches_a_machine_the_admin_cannot() {
    let Some(f) = Fixture::new(&["bastion", "web"], &["nft", "ip"]) else {
        return;
    };
    let bastion = f.address_of("bastion");
    let web = f.address_of("web");
    // The namespaces come in machine order: bastion's, then web's.
    f.drop_admin_ssh(&f.testbed.network_namespaces()[1]);
    f.commit_clan_toml(
        &format!(
            "[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n\
             [machines.bastion]\ndeploy.targetHost = \"root@{bastion}\"\n\n[machines.web]\n\n\
             [instances.lan]\nmodule.name = \"internet\"\n\
             roles.default.machines.web.settings = {{ host = \"{web}\", jumphosts = [\"root@{bastion}\"] }}\n\n\
             [instances.hello]\nmodule.name = \"hello-world\"\nroles.default.machines.web = {{}}\n"
        ),
        "init",
    );
    let clan = |args: &[&str]| {
        let mut command = f.clan(args);
        command.env("CLAN_HOST_KEY_CHECK", "tofu");
        run(&mut command)
    };
    // ssh checks the jump host's key by the ssh_config's known_hosts: met once first.
    assert!(clan(&["ssh", "bastion", "--", "true"]).status.success());
    let direct = run(Command::new("ssh")
        .arg("-F")
        .arg(f.testbed.ssh_config())
        .args(["-o", "ConnectTimeout=2", "web", "true"]));
    assert!(!direct.status.success(), "the admin reaches web directly");

    let deploy = clan(&["machines", "update", "web", "--confirm-timeout", "5"]);
    assert!(deploy.status.success(), "deploy through the jump host");
    let stderr = String::from_utf8_lossy(&deploy.stderr);
    assert!(
        stderr.contains(&format!("to root@{web} (from network lan)")),
        "{stderr}"
    );
    let hello = clan(&["ssh", "web", "--", "cat /etc/hello"]);
    assert_eq!(stdout(&hello), "Hello from web");
    // Seen from web, the login came from the bastion.
    let from = clan(&["ssh", "web", "--", "echo $SSH_CLIENT"]);
    assert!(
        stdout(&from).starts_with(&format!("{bastion} ")),
        "{}",
        stdout(&from)
    );
}

/// Commits `toml` as the clan, makes the admin key and deploys every machine (fresh machines:
/// their host keys are trusted on first use).
fn keygen_and_deploy(f: &Fixture, toml: &str) {
    f.commit_clan_toml(toml, "init");
    f.clan_ok(&["vars", "keygen", "--user", "admin"]);
    let deploy = run(&mut f.clan(&[
        "machines",
        "update",
        "--host-key-check",
        "tofu",
        "--confirm-timeout",
        "5",
    ]));
    assert!(deploy.status.success(), "deploy");
}

/// `boringtun-cli` as `.ci/run` installs it (`cargo install`): on PATH or in ~/.cargo/bin.
fn boringtun() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(home.map(|home| home.join(".cargo/bin")))
        .map(|dir| dir.join("boringtun-cli"))
        .find(|path| path.is_file())
}

/// Three machines deployed with the built-in `wireguard` service (one controller, two
/// peers) reach each other over the mesh: by the names it writes into /etc/hosts and at the
/// addresses derived from their names. The test machines' kernel has no WireGuard: the
/// interfaces are boringtun's (userspace).
#[test]
fn a_wireguard_mesh_of_three_pings_over_its_addresses() {
    let Some(boringtun) = boringtun() else {
        clan_testbed::skip(
            "`boringtun-cli` is not installed (`cargo install --locked boringtun-cli`)",
        );
        return;
    };
    let machines = ["c1", "p1", "p2"];
    let Some(f) = Fixture::with_options(&machines, &["wg"], |options| {
        options.extra_packages = vec!["wireguard-tools".into(), "iputils-ping".into()];
        options.binds = vec![(boringtun, "/usr/local/bin/boringtun-cli".into())];
    }) else {
        return;
    };
    let mut toml = String::from("[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n");
    for machine in machines {
        toml.push_str(&format!(
            "[machines.{machine}]\ndeploy.targetHost = \"root@{}\"\n\n",
            f.address_of(machine)
        ));
    }
    toml.push_str(
        "[instances.mesh]\nmodule.name = \"wireguard\"\nroles.controller.machines.c1 = {}\n\
         roles.peer.machines.p1 = {}\nroles.peer.machines.p2 = {}\n",
    );
    keygen_and_deploy(&f, &toml);

    let address = |machine: &str| -> std::net::Ipv6Addr {
        hosts_address(&f.on(machine, "cat /etc/hosts"), &format!("{machine}.mesh"))
    };
    let c1 = address("c1");
    assert!(
        c1.segments()[0] >> 8 == 0xfd && c1.segments()[4..] == [0, 0, 0, 1],
        "{c1}"
    );
    let p2 = address("p2");
    // A peer's address is its controller's /56 and 64 bits of its own.
    let prefix = |a: std::net::Ipv6Addr| u128::from(a) >> 72;
    assert_eq!(prefix(p2), prefix(c1), "{p2} not in {c1}'s /56");
    assert_ne!(u128::from(p2) as u64, 0, "{p2}");
    let (c1, p2) = (c1.to_string(), p2.to_string());
    // Each machine reaches the others over the mesh (peer to peer through the controller).
    for (from, to) in [
        ("p1", p2.as_str()),
        ("p2", "p1.mesh"),
        ("c1", "p2.mesh"),
        ("p1", c1.as_str()),
    ] {
        let ping = run(f
            .testbed
            .ssh_command(from)
            .unwrap()
            .arg(format!("ping -6 -c 1 -w 10 {to}")));
        if !ping.status.success() {
            for machine in machines {
                f.on(machine, "wg show mesh; ip -6 addr show dev mesh; ip -6 route; systemctl status clan-wireguard-mesh --no-pager; ps ax | grep boringtun");
            }
        }
        assert!(
            ping.status.success(),
            "{from} cannot reach {to} over wireguard"
        );
    }
    assert_eq!(f.on("p1", "ip -br link show mesh | cut -d' ' -f1"), "mesh");
}

/// Two machines deployed with the built-in `yggdrasil` service (Debian's daemon) peer at the
/// hosts their `internet` network exports and reach each other's 200::/7 address; a third
/// machine running yggdrasil with a key of its own, told to peer with them, is refused:
/// the members admit only each other (`AllowedPublicKeys`).
#[test]
fn yggdrasil_members_reach_each_others_addresses_and_refuse_others() {
    let machines = ["y1", "y2", "outsider"];
    let Some(f) = Fixture::with_options(&machines, &["yggdrasil", "jq"], |options| {
        options.extra_packages = vec!["yggdrasil".into(), "iputils-ping".into()];
    }) else {
        return;
    };
    let mut toml = String::from("[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n");
    for machine in ["y1", "y2"] {
        toml.push_str(&format!(
            "[machines.{machine}]\ndeploy.targetHost = \"root@{}\"\n\n",
            f.address_of(machine)
        ));
    }
    toml.push_str(
        "[instances.lan]\nmodule.name = \"internet\"\nroles.default.tags = [\"all\"]\n\n\
         [instances.ygg]\nmodule.name = \"yggdrasil\"\nroles.default.tags = [\"all\"]\n\
         roles.default.settings = { multicastInterfaces = [{ Regex = \"none\", Beacon = false, Listen = false, Port = 0 }] }\n",
    );
    keygen_and_deploy(&f, &toml);
    let address = |machine: &str| {
        f.clan_ok(&["vars", "get", machine, "yggdrasil/address"])
            .trim()
            .to_owned()
    };
    let (y1, y2) = (address("y1"), address("y2"));
    assert!(y1.starts_with("2") && y1.contains(':'), "{y1}");
    // Every member names the others in /etc/hosts (`<m>.<instance>`); reached by name.
    let named = hosts_address(&f.on("y1", "cat /etc/hosts"), "y2.ygg");
    assert_eq!(named, y2.parse::<std::net::Ipv6Addr>().unwrap());
    for (from, to) in [("y1", "y2.ygg"), ("y2", y1.as_str())] {
        let ping = run(f
            .testbed
            .ssh_command(from)
            .unwrap()
            .arg(format!("ping -6 -c 1 -w 20 {to}")));
        assert!(
            ping.status.success(),
            "{from} cannot reach {to} over yggdrasil"
        );
    }

    // An outsider told to peer with y1 is refused: y1 admits only members' keys.
    let generated = run(Command::new("yggdrasil").args(["-genconf", "-json"]));
    let mut config: serde_json::Value = serde_json::from_slice(&generated.stdout).unwrap();
    config["Peers"] = serde_json::json!([format!("tcp://{}:6443", f.address_of("y1"))]);
    config["MulticastInterfaces"] = serde_json::json!([]);
    config["AdminListen"] = serde_json::json!("unix:///root/ygg.sock");
    let outsider_key = config["PublicKey"].as_str().unwrap().to_owned();
    let mut write = f.testbed.ssh_command("outsider").unwrap();
    write
        .arg("cat > /root/ygg.json && (setsid yggdrasil -useconffile /root/ygg.json -logto /root/ygg.log > /dev/null 2>&1 &)")
        .stdin(std::process::Stdio::piped());
    let mut child = write.spawn().unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        config.to_string().as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    // y1 hangs up on the outsider at once (a member would stay connected).
    let log = f.on(
        "outsider",
        "for i in $(seq 600); do grep -q 'Disconnected outbound TCP' /root/ygg.log 2>/dev/null && break; sleep 0.05; done; cat /root/ygg.log",
    );
    assert!(log.contains("Disconnected outbound TCP"), "{log}");
    let peers = f.on(
        "y1",
        "yggdrasilctl -endpoint=unix:///var/run/yggdrasil.sock -json getPeers",
    );
    assert!(
        !peers.contains(&outsider_key),
        "y1 peers with the outsider: {peers}"
    );
    let y2_key = f
        .clan_ok(&["vars", "get", "y2", "yggdrasil/publicKey"])
        .trim()
        .to_owned();
    assert!(peers.contains(&y2_key), "y1 does not peer with y2: {peers}");
}

/// The address `/etc/hosts` text gives `name`.
fn hosts_address(hosts: &str, name: &str) -> std::net::Ipv6Addr {
    let line = hosts
        .lines()
        .find(|line| line.split_whitespace().skip(1).any(|n| n == name))
        .unwrap_or_else(|| panic!("no {name} in {hosts}"));
    let address = line.split_whitespace().next().unwrap();
    address
        .parse()
        .unwrap_or_else(|_| panic!("`{address}` for {name} is not an IPv6 address"))
}
