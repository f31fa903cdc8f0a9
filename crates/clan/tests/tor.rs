//! The `tor` network against real test machines and a private Tor network, offline: three
//! directory authorities and two relays (`clan_testbed::TorNetwork`, in the namespace of the
//! test machine `relays`), onion services deployed on `web` and `web2` by the built-in `tor`
//! service, and the Tor client clan starts itself on the admin side. With their direct routes
//! black-holed, `clan ssh`, `clan network ping` and a deploy of both (through one client)
//! reach them over tor, and the client is gone once clan is. Without tor on the admin machine the error says what to install. Skips with
//! the reason when the host cannot run a testbed or has no tor.

mod env;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::fixture::{run, stdout, Fixture};

/// The clan of the tests: `web` and `web2`, deployed at their testbed addresses, each with
/// an onion service of network `onion` joined to the private Tor network `tor_config`
/// describes.
fn clan_toml(web: &str, web2: &str, tor_config: &str) -> String {
    format!(
        "[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n\
         [machines.web]\ndeploy.targetHost = \"root@{web}\"\n\n\
         [machines.web2]\ndeploy.targetHost = \"root@{web2}\"\n\n\
         [instances.onion]\nmodule.name = \"tor\"\nroles.server.tags = [\"all\"]\n\
         roles.server.settings = {{ extraConfig = '''\n{tor_config}''' }}\n"
    )
}

/// How many Tor clients clan runs now (its own torrc, in the cache or a temporary directory).
fn tor_clients() -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let cmdline = String::from_utf8_lossy(cmdline);
            cmdline.contains("tor\0-f\0")
                && (cmdline.contains("/clan/tor/torrc") || cmdline.contains("/clan-tor-"))
        })
        .count()
}

/// Whether a process whose command line mentions `needle` runs.
fn process_running(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
}

#[test]
fn a_machine_reachable_only_over_tor_is_reached_by_clan_ssh_and_ping() {
    let Some(f) = Fixture::with_options(
        &["relays", "web", "web2"],
        &["tor", "tor-gencert", "nft"],
        |o| {
            o.extra_packages = vec!["tor".into()];
        },
    ) else {
        return;
    };
    let relays_netns = f.testbed.network_namespaces()[0].clone();
    let web_netns = f.testbed.network_namespaces()[1].clone();
    let web2_netns = f.testbed.network_namespaces()[2].clone();
    let relays = f.testbed.machine("relays").unwrap().address;
    let web = f.address_of("web");
    let web2 = f.address_of("web2");
    let mut network =
        clan_testbed::TorNetwork::start(&f.work.path().join("tor-network"), &relays_netns, relays)
            .expect("private Tor network");
    let client_config = f.work.path().join("tor-client.conf");
    std::fs::write(&client_config, network.client_config()).unwrap();
    // The testbed's login settings for onion hosts too.
    let testbed_config = std::fs::read_to_string(f.testbed.ssh_config()).unwrap();
    let ssh_config = f.work.path().join("ssh_config");
    assert_eq!(testbed_config.matches("\n  User root\n").count(), 1);
    std::fs::write(
        &ssh_config,
        testbed_config.replace("\n  User root\n", " *.onion\n  User root\n"),
    )
    .unwrap();
    let clan = |args: &[&str]| {
        let mut command = f.clan(args);
        command
            .env("CLAN_SSH_CONFIG", &ssh_config)
            .env("CLAN_HOST_KEY_CHECK", "tofu")
            .env("CLAN_TOR_CONFIG", &client_config);
        run(&mut command)
    };

    // The onion service logs each upload of its descriptor (info, `rend` domain only).
    let service_config = format!("{}Log [rend]info stdout\n", network.client_config());
    f.commit_clan_toml(&clan_toml(&web, &web2, &service_config), "init");
    f.clan_ok(&["vars", "keygen", "--user", "admin"]);
    let deploy = clan(&["machines", "update", "--confirm-timeout", "5"]);
    assert!(deploy.status.success(), "deploy");
    let onion = f
        .clan_ok(&["vars", "get", "web", "tor_onion/hostname"])
        .trim()
        .to_owned();
    assert!(
        onion.ends_with(".onion") && onion.len() == 62,
        "not an onion v3 hostname: {onion}"
    );
    // The machine's own tor serves the generated key: its hostname is the var's.
    assert_eq!(
        f.on("web", "cat /var/lib/clan-tor/onion/onion/hostname"),
        onion
    );
    assert_eq!(
        f.on("web", "systemctl is-active clan-tor-onion.service"),
        "active"
    );

    network
        .wait_for_consensus(Duration::from_secs(180))
        .expect("consensus");
    // A client asks the network's directories for the service only once per run: the test
    // waits until they all have it (one upload to each of the 5 relays, as its log says).
    for machine in ["web", "web2"] {
        let uploads = f.on(
            machine,
            "for _ in $(seq 900); do n=$(journalctl -u clan-tor-onion -o cat | grep -c 'Uploaded hidden service descriptor (status 200'); \
             [ \"$n\" -ge 5 ] && break; sleep 0.2; done; echo $n",
        );
        assert!(
            uploads.parse::<u32>().is_ok_and(|n| n >= 5),
            "{machine}'s onion service published its descriptor {uploads} times"
        );
    }

    // From here on the admin reaches web and web2 over tor only.
    f.drop_admin_ssh(&web_netns);
    f.drop_admin_ssh(&web2_netns);
    let direct = run(Command::new("ssh").arg("-F").arg(&ssh_config).args([
        "-o",
        "ConnectTimeout=2",
        &format!("root@{web}"),
        "true",
    ]));
    assert!(
        !direct.status.success(),
        "the admin still reaches web directly"
    );
    network
        .wait_for_consensus(Duration::from_secs(180))
        .expect("consensus");

    let ssh = clan(&["ssh", "web", "--", "cat /etc/hostname; exit 3"]);
    assert_eq!(ssh.status.code(), Some(3), "clan ssh over tor");
    assert_eq!(stdout(&ssh), "web");
    let stderr = String::from_utf8_lossy(&ssh.stderr);
    assert!(
        stderr.contains("reached web at root@web.onion.onion (network onion)"),
        "{stderr}"
    );
    // The onion hostname is a secret: on no command line and in no message.
    assert!(!stderr.contains(&onion), "{stderr}");
    // Nor in any process's argv while a session runs (ssh, its ProxyCommand, tor).
    let mut session = f.clan(&["ssh", "web", "--", "sleep 5"]);
    session
        .env("CLAN_SSH_CONFIG", &ssh_config)
        .env("CLAN_HOST_KEY_CHECK", "tofu")
        .env("CLAN_TOR_CONFIG", &client_config);
    let mut session = session.spawn().unwrap();
    let mut seen = false;
    for _ in 0..600 {
        if process_running("socks-connect") {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen, "no SOCKS connector ran");
    assert!(
        !process_running(&onion),
        "the onion hostname is in a command line"
    );
    assert!(session.wait().unwrap().success());
    let tor_dir = f.work.path().join("cache/clan/tor");
    assert!(
        tor_dir.join("torrc").is_file(),
        "the client's data directory"
    );
    assert!(
        !process_running(&tor_dir.join("torrc").display().to_string()),
        "the Tor client outlived clan"
    );

    let ping = clan(&["network", "ping", "web"]);
    assert!(ping.status.success(), "network ping over tor");
    let line = stdout(&ping);
    assert!(
        line.starts_with("web (onion): reachable at root@web.onion.onion, ping: "),
        "{line}"
    );
    // A deploy races its routes the same way: over tor, confirmed over a new connection.
    let toml = std::fs::read_to_string(f.clan.path().join("clan.toml")).unwrap();
    f.commit_clan_toml(
        &format!("{toml}\n[instances.hello]\nmodule.name = \"hello-world\"\nroles.default.machines.web = {{}}\n"),
        "hello",
    );
    // Both machines in one run, through one Tor client.
    let most_clients = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let deploy = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                most_clients.fetch_max(tor_clients(), std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let deploy = clan(&["machines", "update", "--confirm-timeout", "30", "--json"]);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        deploy
    });
    assert!(deploy.status.success(), "deploy over tor");
    assert_eq!(most_clients.into_inner(), 1, "Tor clients in one run");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&deploy.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let mut targets: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "route")
        .inspect(|route| assert_eq!(route["network"], "onion", "{route}"))
        .filter_map(|route| route["target"].as_str())
        .collect();
    targets.sort_unstable();
    assert_eq!(targets, ["root@web.onion.onion", "root@web2.onion.onion"]);
    assert!(!String::from_utf8_lossy(&deploy.stdout).contains(&onion));
    let hello = clan(&["ssh", "web", "--", "cat /etc/hello"]);
    assert_eq!(stdout(&hello), "Hello from web");

    let list = clan(&["network", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["module"], "clan_lib.network.tor");
    assert_eq!(list[0]["priority"], 10);
    assert_eq!(list[0]["running"], true);
}

/// A directory holding only the programs `clan ssh` runs besides tor (links to them): as
/// `PATH`, the admin machine as if tor were not installed.
fn bin_without_tor(dir: &Path) -> Option<std::path::PathBuf> {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["ssh", "ssh-keygen", "git"] {
        let found = clan_vars::sandbox::which(tool)?;
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    Some(bin)
}

/// Without tor on the admin machine, reaching a machine over a tor network fails saying
/// what to install; `clan network list` says the network cannot be used. A torrc fragment
/// tor refuses fails quoting tor.
#[test]
fn without_tor_on_the_admin_machine_the_error_says_what_to_install() {
    if Command::new("tor").arg("--version").output().is_err() {
        // The onion key is made by tor itself: this test needs it to make one first.
        clan_testbed::skip("`tor` is not installed (apt-get install tor)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(bin) = bin_without_tor(work.path()) else {
        clan_testbed::skip("ssh or git is not installed");
        return;
    };
    let path = bin.display().to_string();
    let dir = work.path().join("clan");
    std::fs::create_dir(&dir).unwrap();
    let clan = |args: &[&str], path: Option<&str>| {
        let mut command = Command::new(support::clan_binary());
        env::clan_env(
            command.args(args),
            &work.path().join("admin.age"),
            work.path(),
            &work.path().join("cache"),
        )
        .env("CLAN_DIR", &dir);
        if let Some(path) = path {
            command.env("PATH", path);
        }
        run(&mut command)
    };
    std::fs::write(
        dir.join("clan.toml"),
        "[meta]\nname = \"test\"\n\n[machines.web]\n\n\
         [instances.onion]\nmodule.name = \"tor\"\nroles.server.machines.web = {}\n",
    )
    .unwrap();
    git(&dir, &["init", "-q"]);
    git(&dir, &["add", "clan.toml"]);
    git(&dir, &["commit", "-q", "-m", "init"]);
    assert!(clan(&["vars", "keygen", "--user", "admin"], None)
        .status
        .success());
    assert!(clan(&["vars", "generate", "web"], None).status.success());

    let ssh = clan(&["ssh", "web", "--", "true"], Some(&path));
    assert_eq!(ssh.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&ssh.stderr);
    assert!(
        stderr.contains("`tor` is not installed (a route over network `onion` needs a Tor client)"),
        "{stderr}"
    );
    assert!(stderr.contains("apt install tor"), "{stderr}");
    // With tor, a torrc fragment it refuses: the error quotes tor.
    let fragment = work.path().join("bad.conf");
    std::fs::write(&fragment, "NoSuchTorOption 1\n").unwrap();
    let mut bad = Command::new(support::clan_binary());
    env::clan_env(
        bad.args(["ssh", "web", "--", "true"]),
        &work.path().join("admin.age"),
        work.path(),
        &work.path().join("cache"),
    )
    .env("CLAN_DIR", &dir)
    .env("CLAN_TOR_CONFIG", &fragment);
    let bad = run(&mut bad);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("machine `web`: tor exited (last said: ")
            && stderr.contains("NoSuchTorOption"),
        "{stderr}"
    );

    let list = clan(&["network", "list", "--json"], Some(&path));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["running"], false, "{list}");
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}
