//! A whole flow through the library alone, as a front end other than the CLI would drive it:
//! init → machine → instances with settings → vars generate (a prompt answered by this
//! test's own prompter) → deploy to a real test machine (a systemd-nspawn container with
//! sshd) → the result observed on the machine. Skips with the reason when the host cannot
//! run a testbed (not root, a tool missing).
//!
//! The agent a deploy uploads is the `clan-agent` binary; this test builds it (as `cargo
//! build` would) and uploads a stripped copy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use clan_deploy::deploy::{AgentBinary, DeployOptions};
use clan_deploy::events::{Event as DeployEvent, Outcome};
use clan_deploy::ssh::{HostKeyCheck, SshOptions};
use clan_inventory::{MachineClass, RoleTarget, SettingScope};
use clan_lib::deploy::UpdateRequest;
use clan_lib::instances::{Edit, RoleMember, Setting};
use clan_lib::machines::NewMachine;
use clan_lib::vars::{GenerateRequest, Prompter, Vars};
use clan_lib::{Event, Progress};
use clan_secrets::KeySources;
use clan_testbed::{check_host, Error as TestbedError, Options, Testbed};
use serde_json::json;
use zeroize::Zeroizing;

const PASSWORD: &str = "flow-password-1";

/// Answers the users service's password prompt, and records what it was asked.
struct Answers {
    asked: Vec<String>,
}

impl Prompter for Answers {
    fn interactive(&self) -> bool {
        true
    }
    fn ask(
        &mut self,
        request: &clan_vars::PromptRequest,
    ) -> Result<Zeroizing<String>, Box<dyn std::error::Error + Send + Sync>> {
        self.asked
            .push(format!("{}/{}", request.generator.name, request.name));
        Ok(Zeroizing::new(PASSWORD.to_owned()))
    }
}

/// Keeps every deploy event.
#[derive(Default)]
struct Recorder(Mutex<Vec<DeployEvent>>);

impl Progress for Recorder {
    fn event(&self, event: Event) {
        if let Event::Deploy(event) = event {
            self.0.lock().unwrap().push(*event);
        }
    }
}

/// The `clan-agent` binary, built now, and a stripped copy of it beside it (what the deploy
/// uploads; a third of the size).
fn agent() -> AgentBinary {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "clan", "--bin", "clan-agent"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the clan-agent binary failed");
    // tests run from target/<profile>/deps/; the binary is in target/<profile>/.
    let test = std::env::current_exe().unwrap();
    let binary: PathBuf = test
        .parent()
        .and_then(Path::parent)
        .expect("in the target directory")
        .join("clan-agent");
    let stripped = binary.with_file_name("clan-lib-flow-agent");
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&binary)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    AgentBinary::at(if ok { &stripped } else { &binary }).unwrap()
}

#[test]
fn init_machine_instances_vars_and_deploy_through_the_library_alone() {
    if let Err(reason) = check_host() {
        clan_testbed::skip(reason);
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let mut options = Options::named(state.path(), ["web"]);
    options.progress = |message| eprintln!("{message}");
    let testbed = match Testbed::up(&options) {
        Ok(testbed) => testbed,
        Err(error @ TestbedError::Host(clan_host::Error::ToolMissing { .. })) => {
            clan_testbed::skip(error);
            return;
        }
        Err(error) => panic!("testbed up: {error}"),
    };
    let work = tempfile::tempdir().unwrap();
    let key_file = work.path().join("admin.key");
    // The one test of this file: the environment is set before any thread starts. Parts of
    // a deploy find the admin's key and the evaluation cache through it, as the CLI does.
    std::env::set_var("SOPS_AGE_KEY_FILE", &key_file);
    std::env::remove_var("SOPS_AGE_KEY");
    std::env::set_var("XDG_CONFIG_HOME", work.path().join("config"));
    std::env::set_var("XDG_CACHE_HOME", work.path().join("cache"));
    std::env::remove_var("CLAN_NO_COMMIT");
    let dir = work.path().join("clan");
    let progress = Recorder::default();

    let created = clan_lib::init::init(
        &clan_lib::init::InitOptions {
            dir: dir.clone(),
            name: Some("flow".into()),
            domain: "invalid".into(),
            user: Some("admin".parse().unwrap()),
            keys: KeySources::from_env(),
        },
        &progress,
    )
    .unwrap();
    assert!(created.key_created.is_some(), "no admin key was created");
    assert!(dir.join("sops/users/admin/key.json").is_file());

    let web = testbed.machine("web").unwrap();
    clan_lib::machines::create(
        &dir,
        &NewMachine {
            name: "web".parse().unwrap(),
            tags: vec!["frontend".parse().unwrap()],
            class: MachineClass::Linux,
            target_host: Some(web.ssh_target()),
            description: None,
        },
        &progress,
    )
    .unwrap();
    clan_lib::instances::edit(
        &dir,
        &Edit::Create {
            name: "hello".parse().unwrap(),
            service: "hello-world".parse().unwrap(),
            roles: vec!["default=tag:frontend".parse::<RoleMember>().unwrap()],
            settings: vec![Setting {
                role: "default".parse().unwrap(),
                scope: SettingScope::Member(RoleTarget::Machine("web".parse().unwrap())),
                key: "greeting".into(),
                value: json!("Hello from the library"),
            }],
        },
        &progress,
    )
    .unwrap();
    clan_lib::instances::edit(
        &dir,
        &Edit::Create {
            name: "alice".parse().unwrap(),
            service: "users".parse().unwrap(),
            roles: vec!["default=web".parse().unwrap()],
            settings: vec!["default.user=alice".parse().unwrap()],
        },
        &progress,
    )
    .unwrap();

    let vars = Vars::open(&dir, KeySources::from_env()).unwrap();
    let mut answers = Answers { asked: Vec::new() };
    let generated = vars
        .generate(&GenerateRequest::default(), &mut answers, &progress)
        .unwrap()
        .expect("vars were missing");
    assert!(generated.failed.is_empty(), "{:?}", generated.failed);
    assert_eq!(answers.asked, ["user-password-alice/user-password"]);
    let web_name: clan_secrets::MachineName = "web".parse().unwrap();
    let password = vars
        .get(&web_name, "user-password-alice/user-password")
        .unwrap();
    assert_eq!(password.expose(), PASSWORD.as_bytes());

    let request = UpdateRequest {
        machines: Vec::new(),
        tags: vec!["frontend".parse().unwrap()],
        target_host: None,
        no_sandbox: false,
        jobs: 2,
        ssh: SshOptions {
            config: Some(testbed.ssh_config().to_path_buf()),
            // A fresh machine: its host key is trusted on first use.
            host_key_check: HostKeyCheck::Tofu,
            connect_timeout: None,
        },
        options: DeployOptions {
            agent: agent(),
            confirm_timeout: Some(Duration::from_secs(10)),
            lock_timeout: Duration::from_secs(60),
            dry_run: false,
        },
    };
    // Every var exists now: with nobody to ask, the deploy must still need no answer.
    let results =
        clan_lib::deploy::update(&dir, &request, &mut clan_lib::vars::NoPrompts, &progress)
            .unwrap();
    assert_eq!(results.len(), 1);
    let result = &results[0];
    assert_eq!(result.machine, "web");
    assert!(
        matches!(result.result, Ok(Outcome::Activated)),
        "deploy failed: {:?}",
        result
            .result
            .as_ref()
            .err()
            .map(|(stage, e)| format!("{stage}: {e}"))
    );
    let events = progress.0.lock().unwrap();
    assert!(events.iter().any(|event| matches!(
        event,
        DeployEvent::Done { machine, outcome: Outcome::Activated, .. } if machine == "web"
    )));

    let on_web = |command: &str| -> String {
        let output = testbed
            .ssh_command("web")
            .unwrap()
            .arg(command)
            .output()
            .unwrap();
        assert!(output.status.success(), "`{command}` failed on web");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    // hello-world says where it runs.
    assert_eq!(on_web("cat /etc/hello"), "Hello from the library from web");
    // alice's password hash on the machine is the hash of the answer the prompter gave.
    let hash = on_web("getent shadow alice | cut -d: -f2");
    let salt = hash.split('$').nth(2).expect("a $6$salt$hash crypt hash");
    let expected = Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, PASSWORD])
        .output()
        .unwrap();
    assert_eq!(hash, String::from_utf8_lossy(&expected.stdout).trim());

    let generations =
        clan_lib::deploy::generations(&dir, &"web".parse().unwrap(), None, &request.ssh).unwrap();
    assert_eq!(generations.current, result.generation);
    testbed.down().unwrap();
}
