//! The built-in `data-mesher` service, evaluated as a clan would (a clan-local copy, so the
//! test does not depend on how built-ins are embedded): its generator scripts run for real with
//! this `clan` binary, and the `dm.toml` it writes is accepted by the mesher and names the
//! generated network, certificate, bootstrap peers and exported files.

use std::path::Path;
use std::process::Command;

use clan_eval::Fleet;

const SERVICE: &str = include_str!("../../clan-service/services/data-mesher.star");
const CLAN: &str = env!("CARGO_BIN_EXE_clan");

const CLAN_TOML: &str = r#"
[meta]
name = "mesh"
domain = "example.org"

[machines.hub]
[machines.laptop]

[instances.mesh]
module.name = "data-mesher"
roles.bootstrap.machines.hub = {}
roles.default.machines.laptop = {}
roles.default.settings.namespaces = ["facts"]
roles.bootstrap.settings.namespaces = ["facts"]

[instances.dns]
module.name = "zone-publisher"
roles.default.machines.hub = {}
"#;

/// A first-phase service that asks the mesher to accept a file, as dm-dns would.
const PUBLISHER: &str = r#"
manifest = {"name": "zone-publisher"}
def _publish(ctx):
    return {"instanceExports": {"dataMesher": {"files": {"dns_zone": ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]}}}}
roles = {"default": {"perInstance": _publish}}
"#;

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Runs a generator script the way `clan vars generate` does: bash, `$out`, `$in`, and the
/// `clan` binary on PATH.
fn run_generator(script: &str, out: &Path, input: &Path) {
    std::fs::create_dir_all(out).unwrap();
    let bin_dir = Path::new(CLAN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("out", out)
        .env("in", input)
        .env("PATH", path)
        .status()
        .unwrap();
    assert!(status.success(), "generator script failed: {script}");
}

#[test]
fn data_mesher_service_generates_keys_and_a_config_the_mesher_accepts() {
    let clan = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    write(&clan.path().join("clan.toml"), CLAN_TOML);
    write(
        &clan.path().join("services/data-mesher/service.star"),
        SERVICE,
    );
    write(
        &clan.path().join("services/zone-publisher/service.star"),
        PUBLISHER,
    );

    let fleet = Fleet::open_with_cache(clan.path(), cache.path()).unwrap();
    let hub = fleet.machine("hub").unwrap();
    assert!(hub.config.firewall.tcp.contains(&7946));
    assert!(hub.config.units.contains_key("data-mesher.service"));
    let network_generator = &hub.config.generators["data-mesher-network-mesh"];
    assert!(network_generator.share);
    let identity_generator = hub.config.generators["data-mesher-identity-mesh"].clone();
    assert_eq!(
        identity_generator.dependencies,
        vec!["data-mesher-network-mesh".to_owned()]
    );

    // Generate the shared network key once and an identity per machine, like `clan vars generate`.
    let network_out = work.path().join("in/data-mesher-network-mesh");
    run_generator(
        &network_generator.script,
        &network_out,
        &work.path().join("in"),
    );
    let network_id = std::fs::read_to_string(network_out.join("network.id")).unwrap();
    write(
        &clan
            .path()
            .join("vars/shared/data-mesher-network-mesh/network.id/value"),
        &network_id,
    );
    for machine in ["hub", "laptop"] {
        let out = work.path().join(format!("out-{machine}"));
        run_generator(&identity_generator.script, &out, &work.path().join("in"));
        for file in ["identity.cert", "peer-id"] {
            let value = std::fs::read_to_string(out.join(file)).unwrap();
            write(
                &clan.path().join(format!(
                    "vars/per-machine/{machine}/data-mesher-identity-mesh/{file}/value"
                )),
                &value,
            );
        }
        let verify = Command::new(CLAN)
            .args([
                "mesher",
                "certificate",
                "verify",
                "--network-id",
                network_id.trim(),
            ])
            .args(["--certificate", out.join("identity.cert").to_str().unwrap()])
            .args(["--identity-key", out.join("identity.key").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    let fleet = Fleet::open_with_cache(clan.path(), cache.path()).unwrap();
    let laptop = fleet.machine("laptop").unwrap();
    let dm_toml = &laptop.config.files["/etc/data-mesher/dm.toml"].content;
    let config =
        clan_mesher::Config::parse(dm_toml, Path::new("/etc/data-mesher/dm.toml")).unwrap();
    assert_eq!(config.policy.network.to_string(), network_id.trim());
    assert!(
        dm_toml.contains(r#"bootstrap_peers = ["hub.example.org:7946"]"#),
        "{dm_toml}"
    );
    assert!(config
        .policy
        .namespaces
        .iter()
        .any(|ns| ns.as_str() == "facts"));
    assert!(
        config
            .policy
            .files
            .keys()
            .any(|name| name.as_str() == "dns_zone"),
        "exported file missing: {dm_toml}"
    );
    assert_eq!(config.http, vec!["127.0.0.1:7331".parse().unwrap()]);
    let certificate = &laptop.config.files["/etc/data-mesher/identity.cert"].content;
    let laptop_cert =
        std::fs::read_to_string(work.path().join("out-laptop/identity.cert")).unwrap();
    assert_eq!(certificate, &laptop_cert);
    let hub_toml = &fleet.machine("hub").unwrap().config.files["/etc/data-mesher/dm.toml"].content;
    assert!(
        hub_toml.contains("bootstrap_peers = []"),
        "a bootstrap node does not dial itself: {hub_toml}"
    );
}
