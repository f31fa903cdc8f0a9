//! Evaluating real clan directories on disk: role membership and settings, the built-in
//! services, exports across the two phases, per-machine modules, the errors a user sees, and
//! the cache. The worked example of docs/services.md is read from the document itself.

use std::path::{Path, PathBuf};

use clan_error::Hint as _;
use clan_eval::{Error, EvaluatedMachine, Fleet};
use serde_json::{json, Value};

/// A clan directory and a private cache directory, both removed at the end of the test.
struct Clan {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Clan {
    fn new(clan_toml: &str) -> Clan {
        let clan = Clan {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        clan.write("clan.toml", clan_toml);
        clan
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// A public var value, where `clan vars generate` stores it.
    fn write_public_var(&self, machine: &str, generator: &str, file: &str, value: &str) {
        self.write(
            &format!("vars/per-machine/{machine}/{generator}/{file}/value"),
            value,
        );
    }

    fn open(&self) -> Result<Fleet, Error> {
        Fleet::open_with_cache(self.dir.path(), self.cache.path())
    }

    fn fleet(&self) -> Fleet {
        self.open()
            .unwrap_or_else(|error| panic!("evaluation failed: {error} (hint: {:?})", error.hint()))
    }

    fn error(&self) -> Error {
        match self.open() {
            Ok(_) => panic!("evaluation succeeded but should have failed"),
            Err(error) => error,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn machine(fleet: &Fleet, name: &str) -> EvaluatedMachine {
    fleet.machine(name).unwrap()
}

/// The content of a file in a machine's configuration, if the machine has it.
fn file(fleet: &Fleet, machine_name: &str, path: &str) -> Option<String> {
    machine(fleet, machine_name)
        .config
        .files
        .get(path)
        .map(|file| file.content.clone())
}

fn members(fleet: &Fleet, instance: &str, role: &str) -> Vec<String> {
    fleet.summary.instances[instance].roles[role]
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A local service `services/<name>/service.star` with one `default` role whose
/// `perInstance` body is `body` (indented by four spaces, `ctx` in scope).
fn one_role_service(name: &str, reads_exports: bool, body: &str) -> String {
    let reads = if reads_exports { "True" } else { "False" };
    format!(
        "manifest = {{\"name\": \"{name}\", \"readsExports\": {reads}}}\n\
         \n\
         def _default(ctx):\n{body}\n\
         \n\
         roles = {{\"default\": {{\"perInstance\": _default}}}}\n"
    )
}

const ISSUE_EXAMPLE: &str = r#"[meta]
name = "home"
domain = "clan"

[machines.web01]
tags = ["web"]
deploy.targetHost = "root@203.0.113.4"

[machines.laptop]
machineClass = "linux"

[instances.hello]
module.name = "hello-world"
roles.default.tags = ["all"]
roles.default.settings.greeting = "Hi"
roles.default.machines.laptop.settings.greeting = "Hello laptop"
"#;

#[test]
fn the_issue_example_greets_the_laptop_differently() {
    let clan = Clan::new(ISSUE_EXAMPLE);
    let fleet = clan.fleet();
    assert!(!fleet.from_cache);
    assert_eq!(
        file(&fleet, "laptop", "/etc/hello").as_deref(),
        Some("Hello laptop from laptop\n")
    );
    assert_eq!(
        file(&fleet, "web01", "/etc/hello").as_deref(),
        Some("Hi from web01\n")
    );
    assert_eq!(
        machine(&fleet, "laptop").settings["hello"]["default"],
        json!({"greeting": "Hello laptop"})
    );
    let roles = &machine(&fleet, "web01").summary.roles;
    assert_eq!(roles.len(), 1);
    assert_eq!(
        (
            roles[0].instance.as_str(),
            roles[0].service.as_str(),
            roles[0].role.as_str()
        ),
        ("hello", "hello-world", "default")
    );
}

#[test]
fn machine_settings_beat_tag_settings_which_beat_role_settings() {
    let clan = Clan::new(
        r#"[meta]
name = "home"

[machines.plain]
[machines.web01]
tags = ["web"]
[machines.web02]
tags = ["web"]

[instances.hello]
module.name = "hello-world"
roles.default.settings.greeting = "Hi"
roles.default.tags.all = {}
roles.default.tags.web.settings.greeting = "Hey"
roles.default.machines.web02.settings.greeting = "Good morning"
"#,
    );
    let fleet = clan.fleet();
    let greeting = |name: &str| file(&fleet, name, "/etc/hello").unwrap();
    assert_eq!(greeting("plain"), "Hi from plain\n");
    assert_eq!(greeting("web01"), "Hey from web01\n");
    assert_eq!(greeting("web02"), "Good morning from web02\n");
}

#[test]
fn defaults_from_the_role_schema_fill_missing_settings() {
    let clan = Clan::new(
        "[meta]\nname = \"home\"\n[machines.a]\n\
         [instances.hello]\nmodule.name = \"hello-world\"\nroles.default.machines.a = {}\n",
    );
    let fleet = clan.fleet();
    assert_eq!(
        file(&fleet, "a", "/etc/hello").as_deref(),
        Some("Hello from a\n")
    );
    assert_eq!(
        machine(&fleet, "a").settings["hello"]["default"],
        json!({"greeting": "Hello"})
    );
}

#[test]
fn computed_tags_all_and_the_class_select_machines() {
    let clan = Clan::new(
        r#"[meta]
name = "home"

[machines.deb]
[machines.nix]
machineClass = "nixos"
tags = ["lab"]

[instances.everyone]
module.name = "internet"
roles.default.tags = ["all"]

[instances.nixos-only]
module.name = "internet"
roles.default.tags = ["nixos"]

[instances.linux-only]
module.name = "internet"
roles.default.tags = ["linux"]
"#,
    );
    let fleet = clan.fleet();
    assert_eq!(members(&fleet, "everyone", "default"), ["deb", "nix"]);
    assert_eq!(members(&fleet, "nixos-only", "default"), ["nix"]);
    assert_eq!(members(&fleet, "linux-only", "default"), ["deb"]);
    let nix = machine(&fleet, "nix");
    assert_eq!(nix.summary.class.as_str(), "nixos");
    // Computed tags select, but are not listed as the machine's own tags.
    assert_eq!(nix.summary.tags, ["lab"]);
}

#[test]
fn sshd_clients_trust_the_host_keys_of_the_servers() {
    let clan = Clan::new(
        r#"[meta]
name = "home"
domain = "lan"

[machines.srv1]
[machines.srv2]
[machines.desk]

[instances.ssh]
module.name = "sshd"
roles.server.machines.srv1 = {}
roles.server.machines.srv2.settings.port = 2222
roles.server.settings.authorizedKeys = ["ssh-ed25519 AAAAadmin admin"]
roles.client.tags = ["all"]
"#,
    );
    // srv1 has a generated host key; srv2's has not been generated yet.
    clan.write_public_var(
        "srv1",
        "openssh",
        "ssh.id_ed25519.pub",
        "ssh-ed25519 AAAAsrv1key\n",
    );
    let fleet = clan.fleet();
    for client in ["srv1", "srv2", "desk"] {
        assert_eq!(
            file(&fleet, client, "/etc/ssh/ssh_known_hosts").as_deref(),
            Some("srv1.lan,srv1 ssh-ed25519 AAAAsrv1key\n"),
            "known_hosts of {client}"
        );
    }
    let srv2 = machine(&fleet, "srv2");
    assert_eq!(
        srv2.config.firewall.tcp.iter().copied().collect::<Vec<_>>(),
        [2222]
    );
    assert_eq!(
        srv2.config.files["/etc/ssh/authorized_keys.d/root"].content,
        "ssh-ed25519 AAAAadmin admin\n"
    );
    let generator = &srv2.config.generators["openssh"];
    assert!(generator.files["ssh.id_ed25519"].secret);
    assert!(!generator.files["ssh.id_ed25519.pub"].secret);
    assert!(srv2.config.packages["debian"].contains("openssh-server"));
    // A client only machine runs no sshd of its own.
    let desk = machine(&fleet, "desk");
    assert!(desk.config.generators.is_empty());
    assert!(!desk
        .config
        .files
        .contains_key("/etc/ssh/sshd_config.d/00-clan.conf"));
}

#[test]
fn internet_exports_its_priority_and_each_machines_peer() {
    let clan = Clan::new(
        r#"[meta]
name = "home"
domain = "example.org"

[machines.vps]
deploy.targetHost = "203.0.113.4"
[machines.home]
[machines.nas]

[instances.net]
module.name = "internet"
roles.default.tags = ["all"]
roles.default.machines.nas.settings = { host = "nas.example.net", port = 2222, user = "admin", jumphosts = ["admin@bastion:2200"] }
"#,
    );
    let fleet = clan.fleet();
    let exports = &fleet.summary.exports["instances"]["net"];
    assert_eq!(exports["instance"]["networking"]["priority"], 2000);
    let peer = |name: &str| exports["machines"][name]["peer"].clone();
    assert_eq!(
        peer("vps"),
        json!({"hosts": [{"plain": "203.0.113.4"}], "user": "root", "SSHOptions": []})
    );
    assert_eq!(
        peer("home"),
        json!({"hosts": [{"plain": "home.example.org"}], "user": "root", "SSHOptions": []})
    );
    assert_eq!(
        peer("nas"),
        json!({"hosts": [{"plain": "nas.example.net"}], "port": 2222, "user": "admin", "SSHOptions": ["-J admin@bastion:2200"]})
    );
}

#[test]
fn a_service_that_reads_exports_sees_the_first_phase() {
    let clan = Clan::new(
        r#"[meta]
name = "home"

[machines.a]
deploy.targetHost = "10.0.0.1"
[machines.b]

[instances.net]
module.name = "internet"
roles.default.tags = ["all"]

[instances.early]
module.name = "early"
roles.default.machines.a = {}

[instances.hosts]
module.name = "hosts-file"
roles.default.machines.b = {}
"#,
    );
    clan.write(
        "services/early/service.star",
        &one_role_service(
            "early",
            false,
            "    return {\"config\": {\"files\": {\"/etc/early\": {\"content\": json.encode(ctx.exports)}}}}",
        ),
    );
    clan.write(
        "services/hosts-file/service.star",
        &one_role_service(
            "hosts-file",
            true,
            r#"    lines = []
    for instance in sorted(ctx.exports["instances"].keys()):
        machines = ctx.exports["instances"][instance].get("machines", {})
        for name in sorted(machines.keys()):
            peer = machines[name].get("peer")
            if peer:
                lines.append("%s %s" % (name, peer["hosts"][0]["plain"]))
    return {"config": {"files": {"/etc/peers": {"content": "\n".join(lines) + "\n"}}}}"#,
        ),
    );
    let fleet = clan.fleet();
    assert_eq!(
        file(&fleet, "b", "/etc/peers").as_deref(),
        Some("a 10.0.0.1\nb b.clan\n")
    );
    // A first-phase service sees no exports at all, not even its own phase's.
    let early: Value = serde_json::from_str(&file(&fleet, "a", "/etc/early").unwrap()).unwrap();
    assert_eq!(early, json!({"instances": {}}));
}

#[test]
fn a_machine_config_star_adds_to_the_machine() {
    let clan = Clan::new(ISSUE_EXAMPLE);
    clan.write(
        "machines/laptop/config.star",
        r#"def per_machine(ctx):
    return {"config": {
        "files": {"/etc/motd": {"content": "%s (%s)\n" % (ctx.machine["name"], ctx.meta["name"]), "mode": "0600"}},
        "packages": {"debian": ["htop"]},
    }}
"#,
    );
    let fleet = clan.fleet();
    let laptop = machine(&fleet, "laptop");
    assert_eq!(laptop.config.files["/etc/motd"].content, "laptop (home)\n");
    assert_eq!(laptop.config.files["/etc/motd"].mode.to_string(), "0600");
    assert!(laptop.config.packages["debian"].contains("htop"));
    // The services' files are still there, and other machines are untouched.
    assert!(laptop.config.files.contains_key("/etc/hello"));
    assert_eq!(file(&fleet, "web01", "/etc/motd"), None);
}

#[test]
fn a_machine_config_star_for_an_unknown_machine_is_refused() {
    let clan = Clan::new(ISSUE_EXAMPLE);
    clan.write(
        "machines/lapotp/config.star",
        "def per_machine(ctx):\n    return None\n",
    );
    let error = clan.error();
    let message = error.to_string();
    assert!(message.contains("machine `lapotp`"), "{message}");
    assert!(message.contains("not in the inventory"), "{message}");
}

/// The fenced code blocks of docs/services.md whose first line is `# <path>`, as
/// `(path, content)`.
fn documented_files() -> Vec<(String, String)> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    let doc_path: PathBuf = manifest_dir.join("../../docs/services.md");
    let doc = std::fs::read_to_string(&doc_path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", doc_path.display()));
    let mut files = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in doc.lines() {
        if line.starts_with("```") {
            match block.take() {
                Some(lines) => {
                    let path = lines
                        .first()
                        .and_then(|first| first.strip_prefix("# "))
                        .filter(|path| {
                            *path == "clan.toml"
                                || path.ends_with("/service.star")
                                || path.ends_with("/config.star")
                        });
                    if let Some(path) = path {
                        files.push((path.to_owned(), lines.join("\n") + "\n"));
                    }
                }
                None => block = Some(Vec::new()),
            }
        } else if let Some(lines) = &mut block {
            lines.push(line);
        }
    }
    files
}

#[test]
fn the_worked_example_of_the_services_doc_evaluates_as_documented() {
    let files = documented_files();
    let paths: Vec<&str> = files.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "services/web/service.star",
            "services/uptime/service.star",
            "machines/monitor/config.star",
            "clan.toml"
        ]
    );
    let clan = Clan::new("");
    for (path, content) in &files {
        clan.write(path, content);
    }
    let fleet = clan.fleet();

    for (name, port) in [("web1", 443), ("web2", 8443)] {
        let server = machine(&fleet, name);
        let site = &server.config.files["/etc/nginx/conf.d/site.conf"].content;
        assert!(site.contains(&format!("listen {port} ssl;")), "{site}");
        assert!(site.contains(&format!("server_name {name}.example.org;")));
        assert_eq!(
            server.config.files["/var/www/site/index.html"].content,
            "<h1>Example</h1>\n"
        );
        let key = &server.config.files["/etc/nginx/clan/site.key"];
        assert_eq!(key.content, "@clan-secret:web-tls-site/key.pem@");
        assert!(key.template);
        assert_eq!(
            (key.owner.as_str(), key.mode.to_string().as_str()),
            ("www-data", "0400")
        );
        let generator = &server.config.generators["web-tls-site"];
        assert_eq!(
            generator.validation,
            json!({"host": format!("{name}.example.org")})
        );
        assert!(!generator.files["cert.pem"].secret);
        assert!(generator.files["key.pem"].secret);
        assert_eq!(
            server
                .config
                .firewall
                .tcp
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [port]
        );
        assert_eq!(server.config.state["web-site"].folders, ["/var/www/site"]);
        assert!(server.config.packages["debian"].contains("nginx"));
        assert!(!server.config.files.contains_key("/etc/nginx/clan/site.crt"));
        assert_eq!(
            fleet.summary.exports["instances"]["site"]["machines"][name]["http"]["url"],
            format!("https://{name}.example.org:{port}/")
        );
    }
    assert_eq!(
        fleet.summary.exports["instances"]["checks"]["instance"]["uptime"]["checks"],
        2
    );

    let monitor = machine(&fleet, "monitor");
    assert_eq!(
        monitor.config.files["/etc/uptime/check.sh"].content,
        "set -e\n\
         curl --fail --silent --output /dev/null https://web1.example.org:443/\n\
         curl --fail --silent --output /dev/null https://web2.example.org:8443/\n"
    );
    assert!(!monitor.config.units["uptime-check.service"].enabled);
    assert!(monitor.config.units["uptime-check.timer"]
        .content
        .contains("OnCalendar=*:0/10\n"));
    assert!(monitor.config.packages["debian"].contains("curl"));
    assert!(!monitor.config.packages["debian"].contains("nginx"));
    assert_eq!(
        monitor.config.files["/etc/motd"].content,
        "monitor watches 2 sites\n"
    );
    assert!(!monitor
        .config
        .files
        .keys()
        .any(|path| path.starts_with("/usr/local/share/ca-certificates/")));

    // After `clan vars generate` made web1's certificate.
    let cert = "-----BEGIN CERTIFICATE-----\nMIIweb1\n-----END CERTIFICATE-----\n";
    clan.write_public_var("web1", "web-tls-site", "cert.pem", cert);
    let fleet = clan.fleet();
    assert!(!fleet.from_cache);
    assert_eq!(
        file(&fleet, "web1", "/etc/nginx/clan/site.crt").as_deref(),
        Some(cert)
    );
    assert_eq!(file(&fleet, "web2", "/etc/nginx/clan/site.crt"), None);
    assert_eq!(
        file(
            &fleet,
            "monitor",
            "/usr/local/share/ca-certificates/clan-site-web1.crt"
        )
        .as_deref(),
        Some(cert)
    );
    assert_eq!(
        file(
            &fleet,
            "monitor",
            "/usr/local/share/ca-certificates/clan-site-web2.crt"
        ),
        None
    );
}

// ---- What a user sees when something is wrong ----

#[test]
fn a_setting_that_fails_the_role_schema_names_instance_role_machine_and_key() {
    let clan = Clan::new(
        r#"[meta]
name = "home"
[machines.laptop]
[machines.desk]

[instances.hello]
module.name = "hello-world"
roles.default.tags = ["all"]
roles.default.machines.laptop.settings.greeting = 42
"#,
    );
    let error = clan.error();
    assert!(matches!(error, Error::Invalid { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("`instances.hello.roles.default.settings.greeting`"),
        "{message}"
    );
    assert!(message.contains("machine `laptop`"), "{message}");
    assert!(message.contains("\"string\""), "{message}");
    assert!(
        message.contains(&clan.path().join("clan.toml").display().to_string()),
        "{message}"
    );
}

#[test]
fn a_misspelt_setting_is_refused_with_a_did_you_mean() {
    let clan = Clan::new(
        "[meta]\nname = \"home\"\n[machines.a]\n\
         [instances.hello]\nmodule.name = \"hello-world\"\n\
         roles.default.machines.a.settings.greting = \"Hi\"\n",
    );
    let error = clan.error();
    assert!(error.to_string().contains("machine `a`"), "{error}");
    assert_eq!(error.hint().as_deref(), Some("did you mean `greeting`?"));
}

#[test]
fn an_unknown_service_is_refused_with_a_did_you_mean() {
    let clan = Clan::new(
        "[meta]\nname = \"home\"\n[machines.a]\n\
         [instances.hello]\nmodule.name = \"helo-world\"\nroles.default.machines.a = {}\n",
    );
    let error = clan.error();
    let message = error.to_string();
    assert!(
        message.contains("unknown service `helo-world`"),
        "{message}"
    );
    assert!(message.contains("instances.hello.module.name"), "{message}");
    assert_eq!(error.hint().as_deref(), Some("did you mean `hello-world`?"));
}

#[test]
fn an_unknown_role_is_refused_with_a_did_you_mean() {
    let clan = Clan::new(
        "[meta]\nname = \"home\"\n[machines.a]\n\
         [instances.ssh]\nmodule.name = \"sshd\"\nroles.servr.machines.a = {}\n",
    );
    let error = clan.error();
    let message = error.to_string();
    assert!(
        message.contains("service `sshd` has no role `servr`"),
        "{message}"
    );
    assert!(message.contains("instances.ssh.roles.servr"), "{message}");
    assert_eq!(error.hint().as_deref(), Some("did you mean `server`?"));
}

const ONE_MACHINE_USING_BROKEN: &str = "[meta]\nname = \"home\"\n[machines.a]\n\
     [instances.oops]\nmodule.name = \"broken\"\nroles.default.machines.a = {}\n";

#[test]
fn a_starlark_syntax_error_names_the_file_and_line() {
    let clan = Clan::new(ONE_MACHINE_USING_BROKEN);
    clan.write(
        "services/broken/service.star",
        "manifest = {\"name\": \"broken\"}\n\ndef _default(ctx)\n    return None\n\n\
         roles = {\"default\": {\"perInstance\": _default}}\n",
    );
    let error = clan.error();
    let message = error.to_string();
    assert!(message.contains("service `broken`"), "{message}");
    assert!(
        message.contains("services/broken/service.star:3:"),
        "{message}"
    );
    assert!(message.contains("Parse error"), "{message}");
}

#[test]
fn a_starlark_runtime_error_shows_the_call_stack() {
    let clan = Clan::new(ONE_MACHINE_USING_BROKEN);
    clan.write(
        "services/broken/service.star",
        "manifest = {\"name\": \"broken\"}\n\
         \n\
         def _port(settings):\n    return settings[\"port\"]\n\
         \n\
         def _default(ctx):\n    return {\"config\": {\"firewall\": {\"tcp\": [_port(ctx.settings)]}}}\n\
         \n\
         roles = {\"default\": {\"perInstance\": _default}}\n",
    );
    let error = clan.error();
    let message = error.to_string();
    assert!(message.contains("service `broken`"), "{message}");
    assert!(message.contains("Traceback"), "{message}");
    // The caller's frame, then where it failed.
    assert!(
        message.contains("services/broken/service.star:7, in _default"),
        "{message}"
    );
    assert!(
        message.contains("services/broken/service.star:4:"),
        "{message}"
    );
    assert!(message.contains("`\"port\"` was not found"), "{message}");
}

#[test]
fn a_looping_service_stops_at_the_step_budget() {
    let clan = Clan::new(ONE_MACHINE_USING_BROKEN);
    clan.write(
        "services/broken/service.star",
        &one_role_service(
            "broken",
            false,
            "    total = 0\n    for i in range(1000000):\n        for j in range(1000000):\n            total += j\n    return None",
        ),
    );
    let error = clan.error();
    let message = error.to_string();
    assert!(message.contains("probably loops forever"), "{message}");
    assert!(message.contains("instance `oops`"), "{message}");
    assert!(error.hint().unwrap().contains("loop"));
}

#[test]
fn two_instances_writing_one_file_differently_conflict_naming_both() {
    let motd = |text: &str| {
        format!(
            "manifest = {{\"name\": \"motd-{text}\"}}\n\
             def _default(ctx):\n    return {{\"config\": {{\"files\": {{\"/etc/motd\": {{\"content\": \"{text}\\n\"}}}}}}}}\n\
             roles = {{\"default\": {{\"perInstance\": _default}}}}\n"
        )
    };
    let clan = Clan::new(
        r#"[meta]
name = "home"
[machines.a]
[machines.b]

[instances.first]
module.name = "motd-one"
roles.default.tags = ["all"]

[instances.second]
module.name = "motd-two"
roles.default.machines.b = {}

[instances.same-again]
module.name = "motd-one"
roles.default.machines.a = {}
"#,
    );
    clan.write("services/motd-one/service.star", &motd("one"));
    clan.write("services/motd-two/service.star", &motd("two"));
    let error = clan.error();
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "machine `b`: file `/etc/motd` is set differently by \
         instance `first` (service motd-one, role default) and by \
         instance `second` (service motd-two, role default)"
    );

    // The same content from two instances is no conflict.
    clan.write(
        "clan.toml",
        "[meta]\nname = \"home\"\n[machines.a]\n[machines.b]\n\
         [instances.first]\nmodule.name = \"motd-one\"\nroles.default.tags = [\"all\"]\n\
         [instances.same-again]\nmodule.name = \"motd-one\"\nroles.default.machines.a = {}\n",
    );
    let fleet = clan.fleet();
    assert_eq!(file(&fleet, "a", "/etc/motd").as_deref(), Some("one\n"));
}

// ---- The cache ----

#[test]
fn a_second_open_comes_from_the_cache_with_identical_machines() {
    let clan = Clan::new(ISSUE_EXAMPLE);
    clan.write(
        "vars/per-machine/web01/openssh/ssh.id_ed25519.pub/value",
        "ssh-ed25519 AAAA\n",
    );
    let first = clan.fleet();
    assert!(!first.from_cache);
    let second = clan.fleet();
    assert!(second.from_cache);
    assert_eq!(first.summary, second.summary);
    assert_eq!(first.machines().unwrap(), second.machines().unwrap());
    assert_eq!(
        second.machine("laptop").unwrap(),
        first.machine("laptop").unwrap()
    );
    let unknown = second.machine("lapto").err().unwrap();
    assert_eq!(unknown.hint().as_deref(), Some("did you mean `laptop`?"));
}

#[test]
fn changing_a_service_file_invalidates_the_cache() {
    let clan = Clan::new(ONE_MACHINE_USING_BROKEN);
    let service = |text: &str| {
        one_role_service(
            "broken",
            false,
            &format!("    return {{\"config\": {{\"files\": {{\"/etc/x\": {{\"content\": \"{text}\"}}}}}}}}"),
        )
    };
    clan.write("services/broken/service.star", &service("before"));
    assert_eq!(
        file(&clan.fleet(), "a", "/etc/x").as_deref(),
        Some("before")
    );
    assert!(clan.fleet().from_cache);
    clan.write("services/broken/service.star", &service("after"));
    let fleet = clan.fleet();
    assert!(!fleet.from_cache);
    assert_eq!(file(&fleet, "a", "/etc/x").as_deref(), Some("after"));
}

#[test]
fn changing_a_public_var_invalidates_the_cache() {
    let clan = Clan::new(
        "[meta]\nname = \"home\"\n[machines.srv]\n[machines.cli]\n\
         [instances.ssh]\nmodule.name = \"sshd\"\n\
         roles.server.machines.srv = {}\nroles.client.machines.cli = {}\n",
    );
    clan.write_public_var("srv", "openssh", "ssh.id_ed25519.pub", "ssh-ed25519 OLD\n");
    assert_eq!(
        file(&clan.fleet(), "cli", "/etc/ssh/ssh_known_hosts").as_deref(),
        Some("srv.clan,srv ssh-ed25519 OLD\n")
    );
    assert!(clan.fleet().from_cache);
    clan.write_public_var("srv", "openssh", "ssh.id_ed25519.pub", "ssh-ed25519 NEW\n");
    let fleet = clan.fleet();
    assert!(!fleet.from_cache);
    assert_eq!(
        file(&fleet, "cli", "/etc/ssh/ssh_known_hosts").as_deref(),
        Some("srv.clan,srv ssh-ed25519 NEW\n")
    );
}

// ---- Built-in settings that only the machine could refuse are refused here ----

/// Each value would be accepted by clan.toml's types but fail on the machine (the mesher
/// daemon refusing dm.toml, useradd refusing the account): evaluation refuses it naming
/// instance, role, machine and setting, and says what the setting takes.
#[test]
fn built_in_settings_the_machine_would_refuse_are_errors_naming_the_setting() {
    let cases = [
        (
            "data-mesher",
            "pushPullInterval = \"fast\"",
            "pushPullInterval",
            "`ms`, `s`",
        ),
        (
            "data-mesher",
            "pushPullInterval = \"0s\"",
            "pushPullInterval",
            "positive",
        ),
        (
            "data-mesher",
            "pushPullInterval = \"5 s\"",
            "pushPullInterval",
            "`ms`, `s`",
        ),
        (
            "data-mesher",
            "interfaces = [\"eth0\"]",
            "interfaces.0",
            "not interface names",
        ),
        (
            "data-mesher",
            "extraBootstrapPeers = [\"hub\"]",
            "extraBootstrapPeers.0",
            "host:port",
        ),
        (
            "data-mesher",
            "namespaces = [\"../etc\"]",
            "namespaces.0",
            "a-z",
        ),
        (
            "data-mesher",
            "files = { \"Zone\" = [] }",
            "files",
            "File name",
        ),
        (
            "data-mesher",
            "files = { zone = [\"not-a-key\"] }",
            "files.zone.0",
            "43 characters",
        ),
        ("users", "shell = \"bash\"", "shell", "absolute path"),
        ("users", "shell = \"/bin/ba sh\"", "shell", "absolute path"),
        (
            "users",
            "groups = [\"Wheel Users\"]",
            "groups.0",
            "existing on the machine",
        ),
        (
            "users",
            "groups = [\"-oops\"]",
            "groups.0",
            "existing on the machine",
        ),
    ];
    for (service, setting, key, hint) in cases {
        let user = if service == "users" {
            "user = \"alice\"\n"
        } else {
            ""
        };
        let clan = Clan::new(&format!(
            "[meta]\nname = \"home\"\n[machines.a]\n\n[instances.it]\nmodule.name = \"{service}\"\n\
             roles.default.machines.a = {{}}\n[instances.it.roles.default.settings]\n{user}{setting}\n"
        ));
        let error = clan.error();
        let message = error.to_string();
        assert!(
            message.contains(&format!("`instances.it.roles.default.settings.{key}`")),
            "{setting}: {message}"
        );
        assert!(message.contains("machine `a`"), "{setting}: {message}");
        let given = error.hint().unwrap_or_default();
        assert!(given.contains(hint), "{setting}: hint {given:?}");
    }
}

#[test]
fn built_in_settings_in_their_documented_forms_are_accepted() {
    let clan = Clan::new(
        "[meta]\nname = \"home\"\n[machines.a]\n\n\
         [instances.mesh]\nmodule.name = \"data-mesher\"\nroles.default.machines.a = {}\n\
         [instances.mesh.roles.default.settings]\npushPullInterval = \"500ms\"\n\
         interfaces = [\"10.0.0.1\", \"fd00::1\"]\n\
         extraBootstrapPeers = [\"hub.example.org:7946\", \"/ip4/10.0.0.2/tcp/7946\"]\n\
         namespaces = [\"facts\"]\nfiles = { \"dns/zone\" = [\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"] }\n\n\
         [instances.people]\nmodule.name = \"users\"\nroles.default.machines.a = {}\n\
         roles.default.settings = { user = \"alice\", shell = \"/usr/bin/zsh\", groups = [\"adm\", \"_ssh\"] }\n",
    );
    let config = file(&clan.fleet(), "a", "/etc/data-mesher/dm.toml").unwrap();
    assert!(
        config.contains("push_pull_interval = \"500ms\""),
        "{config}"
    );
    assert!(
        config.contains("interfaces = [\"10.0.0.1\", \"fd00::1\"]"),
        "{config}"
    );
}

/// Members dial each bootstrap machine where deploys reach it: the `peer` host of the
/// highest-priority networking instance, else its deploy target's host, else
/// `<machine>.<domain>`; IPv6 addresses in brackets.
#[test]
fn data_mesher_dials_bootstrap_machines_at_their_best_address() {
    let clan = Clan::new(
        r#"[meta]
name = "home"
domain = "example.org"

[machines.hub]
deploy.targetHost = "root@203.0.113.1:2222"
[machines.relay]
deploy.targetHost = "root@[2001:db8::7]"
[machines.far]
[machines.laptop]

[instances.lan]
module.name = "internet"
roles.default.machines.hub.settings.host = "10.0.0.1"

[instances.mesh]
module.name = "data-mesher"
roles.bootstrap.machines.hub = {}
roles.bootstrap.machines.relay = {}
roles.bootstrap.machines.far.settings.port = 7000
roles.default.machines.laptop = {}
"#,
    );
    let fleet = clan.fleet();
    let config = file(&fleet, "laptop", "/etc/data-mesher/dm.toml").unwrap();
    assert!(
        config.contains(
            "bootstrap_peers = [\"far.example.org:7000\", \"10.0.0.1:7946\", \"[2001:db8::7]:7946\"]"
        ),
        "{config}"
    );
    // A bootstrap machine does not dial itself.
    let hub = file(&fleet, "hub", "/etc/data-mesher/dm.toml").unwrap();
    assert!(
        hub.contains("bootstrap_peers = [\"far.example.org:7000\", \"[2001:db8::7]:7946\"]"),
        "{hub}"
    );

    // A higher-priority network wins.
    clan.write(
        "services/overlay/service.star",
        &one_role_service(
            "overlay",
            false,
            r#"    return {"exports": {"peer": {"hosts": [{"plain": "hub.overlay"}]}}, "instanceExports": {"networking": {"priority": 3000}}}"#,
        ),
    );
    let toml = std::fs::read_to_string(clan.path().join("clan.toml")).unwrap();
    clan.write(
        "clan.toml",
        &format!("{toml}\n[instances.vpn]\nmodule.name = \"overlay\"\nroles.default.machines.hub = {{}}\n"),
    );
    let config = file(&clan.fleet(), "laptop", "/etc/data-mesher/dm.toml").unwrap();
    assert!(config.contains("\"hub.overlay:7946\""), "{config}");
}

#[test]
fn a_cache_others_can_write_is_neither_read_nor_written() {
    use std::os::unix::fs::PermissionsExt as _;
    let clan = Clan::new(ISSUE_EXAMPLE);
    assert!(!clan.fleet().from_cache);
    assert!(clan.fleet().from_cache, "a private cache is used");
    // Anyone may now write there (as in a shared temporary directory): what is there could
    // have been planted, so the clan is evaluated again and nothing is stored.
    std::fs::set_permissions(clan.cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let entries = || std::fs::read_dir(clan.cache.path()).unwrap().count();
    let before = entries();
    clan.write("clan.toml", &ISSUE_EXAMPLE.replace("\"Hi\"", "\"Hey\""));
    let fleet = clan.fleet();
    assert!(!fleet.from_cache);
    assert_eq!(
        file(&fleet, "web01", "/etc/hello").as_deref(),
        Some("Hey from web01\n")
    );
    clan.write("clan.toml", ISSUE_EXAMPLE);
    assert!(!clan.fleet().from_cache, "the earlier entry is not read");
    assert_eq!(entries(), before, "nothing stored");
}

/// A hardware report in nixos-facter's format: `virtualisation`, one CPU of `vendor`, one
/// virtio disk and two interfaces.
fn facter_json(virtualisation: &str, vendor: &str) -> String {
    json!({
        "version": 1,
        "system": "x86_64-linux",
        "virtualisation": virtualisation,
        "hardware": {
            "cpu": [{"vendor_name": vendor, "family": 6, "physical_id": 0, "siblings": 8}],
            "disk": [{"unix_device_name": "/dev/vda", "driver_modules": ["virtio_blk", "virtio_pci"],
                      "resources": [{"type": "size", "unit": "sectors", "value_1": 2097152, "value_2": 512}]}],
            "network_interface": [
                {"unix_device_name": "lo", "sub_class": {"hex": "0000", "name": "Loopback", "value": 0}},
                {"unix_device_name": "eth0", "sub_class": {"hex": "0001", "name": "Ethernet", "value": 1},
                 "driver_modules": ["virtio_net"]}
            ],
            "monitor": [{"model": "kept, not read"}]
        },
        "smbios": {"system": {"manufacturer": "kept, not read"}}
    })
    .to_string()
}

const HARDWARE_CLAN: &str = r#"[meta]
name = "hw"

[machines.metal]
[machines.amd]
[machines.vm]
[machines.box]
[machines.fresh]
[machines.nix]
machineClass = "nixos"

[instances.microcode]
module.name = "microcode"
roles.default.tags = ["all"]
"#;

fn packages(fleet: &Fleet, name: &str) -> Vec<String> {
    let config = machine(fleet, name).config;
    config
        .packages
        .get("debian")
        .map(|names| names.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn the_microcode_service_installs_the_vendors_package_on_bare_metal_only() {
    let clan = Clan::new(HARDWARE_CLAN);
    for (name, virtualisation, vendor) in [
        ("metal", "none", "GenuineIntel"),
        ("amd", "none", "AuthenticAMD"),
        ("vm", "kvm", "GenuineIntel"),
        ("box", "systemd-nspawn", "AuthenticAMD"),
        ("nix", "none", "AuthenticAMD"),
    ] {
        clan.write(
            &format!("machines/{name}/facter.json"),
            &facter_json(virtualisation, vendor),
        );
    }
    let fleet = clan.fleet();
    assert_eq!(packages(&fleet, "metal"), ["intel-microcode"]);
    assert_eq!(packages(&fleet, "amd"), ["amd64-microcode"]);
    assert!(
        packages(&fleet, "vm").is_empty(),
        "a VM's host loads microcode"
    );
    assert!(packages(&fleet, "box").is_empty(), "so does a container's");
    assert!(packages(&fleet, "fresh").is_empty(), "no report, no guess");
    assert_eq!(
        machine(&fleet, "nix").config.nixos,
        json!({"hardware": {"cpu": {"amd": {"updateMicrocode": true}}}})
    );
}

#[test]
fn services_see_the_machines_disks_interfaces_cpu_and_virtualisation() {
    let clan = Clan::new(&format!(
        "{HARDWARE_CLAN}\n[instances.probe]\nmodule.name = \"probe\"\nroles.default.tags = [\"all\"]\n"
    ));
    clan.write(
        "services/probe/service.star",
        &one_role_service(
            "probe",
            false,
            r#"    hw = ctx.machine["hardware"]
    if hw == None:
        text = "no report"
    else:
        text = "%s %s %s %d %s" % (
            hw["virtualisation"], hw["cpu"]["vendor"], hw["disks"][0]["name"],
            hw["disks"][0]["sizeBytes"],
            ",".join([i["name"] + ":" + i["kind"] for i in hw["networkInterfaces"]]))
    return {"config": {"files": {"/etc/hw": {"content": text}}}}"#,
        ),
    );
    clan.write(
        "machines/vm/facter.json",
        &facter_json("kvm", "GenuineIntel"),
    );
    let fleet = clan.fleet();
    assert_eq!(
        file(&fleet, "vm", "/etc/hw").as_deref(),
        Some("kvm GenuineIntel /dev/vda 1073741824 lo:loopback,eth0:ethernet")
    );
    assert_eq!(
        file(&fleet, "metal", "/etc/hw").as_deref(),
        Some("no report")
    );
    // `clan machines show --json` shows the same facts.
    let shown = serde_json::to_value(machine(&fleet, "vm")).unwrap();
    assert_eq!(shown["hardware"]["virtualisation"], "kvm");
    assert_eq!(
        shown["hardware"]["storageModules"],
        json!(["virtio_blk", "virtio_pci"])
    );
    assert!(serde_json::to_value(machine(&fleet, "metal"))
        .unwrap()
        .get("hardware")
        .is_none());
}

#[test]
fn a_new_report_is_evaluated_again_not_read_from_the_cache() {
    let clan = Clan::new(HARDWARE_CLAN);
    clan.write(
        "machines/metal/facter.json",
        &facter_json("none", "GenuineIntel"),
    );
    assert_eq!(packages(&clan.fleet(), "metal"), ["intel-microcode"]);
    clan.write(
        "machines/metal/facter.json",
        &facter_json("kvm", "GenuineIntel"),
    );
    let fleet = clan.fleet();
    assert!(!fleet.from_cache);
    assert!(packages(&fleet, "metal").is_empty());
}

#[test]
fn a_malformed_facter_json_names_the_file_and_what_is_wrong() {
    let clan = Clan::new(HARDWARE_CLAN);
    clan.write(
        "machines/vm/facter.json",
        r#"{"version": 1, "system": "x86_64-linux", "hardware": {"disk": [{"driver_modules": "virtio_blk"}]}}"#,
    );
    let error = clan.error();
    assert_eq!(
        error.to_string(),
        "`machines/vm/facter.json` is not a hardware report: at `hardware.disk[0].driver_modules`: \
         invalid type: string \"virtio_blk\", expected a sequence at line 1 column 94"
    );
    assert_eq!(error.exit(), clan_error::Exit::Failed);
    assert!(error.hint().unwrap().contains("update-hardware-config"));
    clan.write("machines/vm/facter.json", "{\"system\": ");
    let message = clan.error().to_string();
    assert!(
        message.starts_with("`machines/vm/facter.json` is not a hardware report: ")
            && message.contains("EOF while parsing"),
        "{message}"
    );
}

#[test]
fn a_report_checks_itself_before_it_replaces_the_old_one() {
    let clan = Clan::new(HARDWARE_CLAN);
    let vm: clan_inventory::MachineName = "vm".parse().unwrap();
    clan_eval::check_with_hardware(clan.path(), &vm, &facter_json("kvm", "AuthenticAMD")).unwrap();
    // A report the services cannot take fails the check: this one gives the CPU no vendor.
    clan.write(
        "services/probe/service.star",
        &one_role_service("probe", false, "    return {\"config\": {\"packages\": {\"debian\": [ctx.machine[\"hardware\"][\"cpu\"][\"vendor\"]]}}}"),
    );
    clan.write(
        "clan.toml",
        &format!("{HARDWARE_CLAN}\n[instances.probe]\nmodule.name = \"probe\"\nroles.default.machines.vm = {{}}\n"),
    );
    let vendorless =
        facter_json("kvm", "GenuineIntel").replace(r#""vendor_name":"GenuineIntel","#, "");
    let error = clan_eval::check_with_hardware(clan.path(), &vm, &vendorless).unwrap_err();
    assert!(error.to_string().contains("probe"), "{error}");
    let error = clan_eval::check_with_hardware(clan.path(), &vm, "[]").unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("`machines/vm/facter.json` is not a hardware report"),
        "{error}"
    );
    assert!(
        !clan.path().join("machines/vm/facter.json").exists(),
        "a check writes nothing"
    );
}

/// A committed `facter.json` that is a link (to a file outside the clan) is refused naming
/// it, and nothing of the target is read.
#[test]
fn a_facter_json_link_is_refused() {
    let clan = Clan::new(HARDWARE_CLAN);
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("report.json");
    std::fs::write(&target, facter_json("none", "GenuineIntel")).unwrap();
    std::fs::create_dir_all(clan.path().join("machines/metal")).unwrap();
    std::os::unix::fs::symlink(&target, clan.path().join("machines/metal/facter.json")).unwrap();
    let message = clan.error().to_string();
    assert!(message.contains("machines/metal/facter.json"), "{message}");
    assert!(!message.contains("GenuineIntel"), "{message}");
}

/// Services reach a peer at its address on the best network both machines are on
/// (`clan.peer_host`): an overlay (wireguard) only from its members, tor never, and the deploy
/// target's host when no network fits.
#[test]
fn services_reach_peers_on_the_best_network_both_are_on() {
    let clan = Clan::new(
        r#"[meta]
name = "home"
domain = "example.org"

[machines.hub]
deploy.targetHost = "root@203.0.113.1"
[machines.web]
[machines.outside]

[instances.wg]
module.name = "wireguard"
roles.controller.machines.hub.settings.endpoint = "203.0.113.1"
roles.peer.machines.web = {}

[instances.onion]
module.name = "onion"
roles.default.machines.hub = {}

[instances.borg]
module.name = "borgbackup"
roles.server.machines.hub = {}
roles.client.machines.web = {}
roles.client.machines.outside = {}

[instances.mesh]
module.name = "data-mesher"
roles.bootstrap.machines.hub = {}
roles.default.machines.web = {}
roles.default.machines.outside = {}

[instances.probe]
module.name = "probe"
roles.default.machines.web = {}
"#,
    );
    // A tor network with the highest priority: it needs a proxy, so services never pick it.
    clan.write(
        "services/onion/service.star",
        r#"manifest = {"name": "onion", "exports": ["networking", "peer"]}
def _peer(ctx):
    return {"exports": {"peer": {"hosts": [{"plain": "abc.onion"}]}},
            "instanceExports": {"networking": {"priority": 9000, "module": "clan_lib.network.tor"}}}
roles = {"default": {"perInstance": _peer}}
"#,
    );
    // `network =` names one network; a machine without an address there is an error.
    clan.write(
        "services/probe/service.star",
        r#"manifest = {"name": "probe", "readsExports": True}
def _probe(ctx):
    return {"config": {"files": {"/etc/probe": {"content": "%s %s" % (
        clan.peer_host(ctx, "hub", network = "onion"), clan.peer_host(ctx, "hub", network = "wg"))}}}}
roles = {"default": {"perInstance": _probe}}
"#,
    );
    let fleet = clan.fleet();
    // The borg repository a client's provider scripts name.
    let config = |name: &str| serde_json::to_string(&machine(&fleet, name).config).unwrap();
    assert!(config("web").contains("ssh://borg@hub.wg/var/lib/borgbackup/web"));
    assert!(
        config("outside").contains("ssh://borg@203.0.113.1/var/lib/borgbackup/outside"),
        "a machine outside the overlay cannot use it"
    );
    let mesher = |name: &str| file(&fleet, name, "/etc/data-mesher/dm.toml").unwrap();
    assert!(
        mesher("web").contains("bootstrap_peers = [\"hub.wg:7946\"]"),
        "{}",
        mesher("web")
    );
    assert!(
        mesher("outside").contains("bootstrap_peers = [\"203.0.113.1:7946\"]"),
        "{}",
        mesher("outside")
    );
    assert_eq!(
        file(&fleet, "web", "/etc/probe").as_deref(),
        Some("abc.onion hub.wg")
    );

    clan.write(
        "services/probe/service.star",
        r#"manifest = {"name": "probe", "readsExports": True}
def _probe(ctx):
    return {"config": {"files": {"/etc/probe": {"content": clan.peer_host(ctx, "web", network = "onion")}}}}
roles = {"default": {"perInstance": _probe}}
"#,
    );
    let message = clan.error().to_string();
    assert!(
        message.contains("machine `web` has no address on network `onion`"),
        "{message}"
    );
}

/// Two instances of one network service are two networks side by side: each its own
/// interface, unit and addresses, and both sets of names in the machines' `/etc/hosts`
/// entries, with nothing conflicting.
#[test]
fn two_wireguard_instances_are_two_meshes_side_by_side() {
    let clan = Clan::new(
        r#"[meta]
name = "home"
domain = "example.org"

[machines.c]
deploy.targetHost = "root@203.0.113.1"
[machines.p]

[instances.wga]
module.name = "wireguard"
roles.controller.machines.c = {}
roles.peer.machines.p = {}

[instances.wgb]
module.name = "wireguard"
roles.controller.machines.c = {}
roles.peer.machines.p = {}
"#,
    );
    for (instance, prefix) in [
        ("wga", "fd11:2233:4400:5500"),
        ("wgb", "fd99:8877:6600:1100"),
    ] {
        for machine in ["c", "p"] {
            clan.write_public_var(
                machine,
                &format!("wireguard-keys-{instance}"),
                "publickey",
                &format!("key-{instance}-{machine}"),
            );
        }
        let network = format!("wireguard-network-{instance}");
        clan.write_public_var("c", &network, "prefix", prefix);
        clan.write_public_var("p", &network, "suffix", "0001:0002:0003:0004");
    }
    let fleet = clan.fleet();
    for name in ["c", "p"] {
        let config = &machine(&fleet, name).config;
        for unit in ["clan-wireguard-wga.service", "clan-wireguard-wgb.service"] {
            assert!(
                config.units.keys().any(|u| u.as_str() == unit),
                "{name} lacks {unit}"
            );
        }
        let hosts: Vec<String> = config
            .hosts
            .iter()
            .map(|(address, names)| {
                let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                format!("{address} {}", names.join(" "))
            })
            .collect();
        assert_eq!(
            hosts,
            [
                "fd11:2233:4400:5500::1 c.wga",
                "fd11:2233:4400:5500:1:2:3:4 p.wga",
                "fd99:8877:6600:1100::1 c.wgb",
                "fd99:8877:6600:1100:1:2:3:4 p.wgb",
            ],
            "{name}"
        );
    }
    // Two networks, each with both machines' peer hosts on its own domain.
    for instance in ["wga", "wgb"] {
        let exports = &fleet.summary.exports["instances"][instance];
        assert_eq!(exports["instance"]["networking"]["priority"], 1000);
        assert_eq!(
            exports["machines"]["p"]["peer"]["hosts"][0]["plain"],
            format!("p.{instance}")
        );
    }
}
