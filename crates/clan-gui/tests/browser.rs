//! The GUI end to end in a real Chromium (Debian's `chromium`, driven through `chromedriver`
//! with fantoccini), against a real test machine (a systemd-nspawn container with sshd):
//! from an empty start, create a clan, add machines, create instances through their
//! schema forms (fixing a validation error shown at its field), answer a hidden prompt,
//! deploy and watch it succeed, change a setting, dry-run and deploy again, roll back; each outcome
//! observed on the machine. Then what the browser's own rules add to the server's checks:
//! another origin can neither read the API nor post to it. The screenshots of
//! docs/gui.md are taken here (`CLAN_GUI_SCREENSHOTS=docs` writes them into docs/gui).
//!
//! Skips with the reason when the host cannot run it (not root, no testbed tools, no
//! chromium or chromedriver).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clan_deploy::ssh::{HostKeyCheck, SshOptions};
use clan_testbed::{check_host, Options, Testbed};
use fantoccini::Client;
use serde_json::{json, Value};
use support::browser::{
    agent, browser, chromedriver, click, fill, find, wait_deployed, wait_text, CHROMEDRIVER,
    CHROMIUM,
};

const PASSWORD: &str = "browser-password-7";

/// Where screenshots go: docs/gui with `CLAN_GUI_SCREENSHOTS=docs` (to refresh the docs'
/// images), else the target directory, so a test run leaves the checkout as it was.
fn screenshots() -> PathBuf {
    let dir = if std::env::var_os("CLAN_GUI_SCREENSHOTS").is_some_and(|v| v == "docs") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/gui")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("gui-screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    // Every view renders to an image (a blank page would be a few hundred bytes).
    assert!(
        png.len() > 2000,
        "{name}: screenshot of {} bytes",
        png.len()
    );
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn goto(client: &Client, gui: &support::Gui, hash: &str) {
    client
        .goto(&format!("http://127.0.0.1:{}/{hash}", gui.port))
        .await
        .unwrap();
    // A visit to the same page with another fragment only fires hashchange.
    client.refresh().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clan_from_empty_to_deployed_and_rolled_back_in_the_browser() {
    if let Err(reason) = check_host() {
        clan_testbed::skip(reason);
        return;
    }
    for tool in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(tool).is_file() {
            clan_testbed::skip(format!(
                "{tool} is missing (apt-get install chromium chromium-driver)"
            ));
            return;
        }
    }
    let state = tempfile::tempdir().unwrap();
    let mut options = Options::named(state.path(), ["web"]);
    options.progress = |message| eprintln!("{message}");
    let testbed = Testbed::up(&options).expect("testbed up");
    let work = tempfile::tempdir().unwrap();
    // The one test of this file: the environment is set before the server's threads start.
    std::env::set_var("SOPS_AGE_KEY_FILE", work.path().join("admin.key"));
    std::env::remove_var("SOPS_AGE_KEY");
    std::env::set_var("XDG_CONFIG_HOME", work.path().join("config"));
    std::env::set_var("XDG_CACHE_HOME", work.path().join("cache"));
    std::env::set_var("USER", "admin");
    std::env::remove_var("CLAN_NO_COMMIT");
    let gui = support::Gui::start_with(
        None,
        SshOptions {
            config: Some(testbed.ssh_config().to_path_buf()),
            host_key_check: HostKeyCheck::Tofu,
            connect_timeout: Some(20),
        },
        Some(agent()),
    );
    let clan_dir = work.path().join("clan");
    let on_web = |command: &str| -> String {
        let mut ssh = testbed.ssh_command("web").unwrap();
        let stdout = ssh.arg(command).output().unwrap().stdout;
        String::from_utf8_lossy(&stdout).trim().to_owned()
    };

    let driver = chromedriver();
    let client = browser(&driver).await;

    // The printed URL: the token is exchanged and leaves the address bar.
    client.goto(&gui.url).await.unwrap();
    find(&client, "#create-clan").await;
    let address = client.current_url().await.unwrap();
    assert!(!address.as_str().contains("token"), "{address}");
    assert!(!address.as_str().contains("key="), "{address}");
    fill(&client, "#clan-directory", clan_dir.to_str().unwrap()).await;
    fill(&client, "#clan-new-name", "browser").await;
    click(&client, "#create-clan").await;
    wait_text(&client, "h1", "browser", Duration::from_secs(30)).await;
    assert!(clan_dir.join("clan.toml").is_file());

    // Two machines: one deployed to the test machine, one without a target.
    let web_target = testbed.machine("web").unwrap().ssh_target();
    for (name, tags, target) in [
        ("web", "frontend", web_target.as_str()),
        ("spare", "backend", ""),
    ] {
        click(&client, "[data-nav=new-machine]").await;
        fill(&client, "#machine-name", name).await;
        fill(&client, "#machine-tags", tags).await;
        if !target.is_empty() {
            fill(&client, "#machine-target", target).await;
        }
        click(&client, "#create-machine").await;
        wait_text(&client, "h1", name, Duration::from_secs(30)).await;
    }

    // hello-world through its schema form, on every frontend machine.
    goto(&client, &gui, "#/services/hello-world/new").await;
    fill(&client, "#instance-name", "hello").await;
    fill(&client, "[data-members=default]", "tag:frontend").await;
    fill(&client, "[data-key=greeting]", "Hello from the browser").await;
    click(&client, "#create-instance").await;
    find(&client, "#save-settings").await;
    wait_text(&client, "h1", "hello hello-world", Duration::from_secs(30)).await;

    // users: a login name the schema refuses is shown at its field; fixed, it is created.
    goto(&client, &gui, "#/services/users/new").await;
    fill(&client, "#instance-name", "alice").await;
    fill(&client, "[data-members=default]", "web").await;
    fill(&client, "[data-key=user]", "Alice Smith").await;
    click(&client, "#create-instance").await;
    let error = wait_text(
        &client,
        "[data-role=default] .field-error:not([hidden])",
        "does not match",
        Duration::from_secs(30),
    )
    .await;
    assert!(error.contains("Alice Smith"), "{error}");
    let invalid = find(&client, "[data-key=user]").await;
    assert_eq!(
        invalid.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    screenshot(&client, "instance-form").await;
    let clan_toml = std::fs::read_to_string(clan_dir.join("clan.toml")).unwrap();
    assert!(
        !clan_toml.contains("Alice Smith"),
        "a refused setting was written"
    );
    fill(&client, "[data-key=user]", "alice").await;
    click(&client, "#create-instance").await;
    find(&client, "#save-settings").await;
    wait_text(&client, "h1", "alice users", Duration::from_secs(30)).await;

    goto(&client, &gui, "#/").await;
    find(&client, "[data-machine=spare]").await;
    find(&client, "[data-instance=alice]").await;
    screenshot(&client, "fleet").await;
    goto(&client, &gui, "#/services").await;
    find(&client, "[data-service=hello-world]").await;
    screenshot(&client, "services").await;

    // Deploy web: the password prompt is answered in the page.
    goto(&client, &gui, "#/machine/web").await;
    find(&client, "#deploy").await;
    screenshot(&client, "machine").await;
    click(&client, "#deploy").await;
    let prompt = find(&client, "#prompts-fields input").await;
    assert_eq!(
        prompt.attr("type").await.unwrap().as_deref(),
        Some("password")
    );
    prompt.send_keys(PASSWORD).await.unwrap();
    click(&client, "#prompts-ok").await;
    wait_deployed(&client).await;
    find(&client, "[data-deploy-machine=web] .outcome.ok").await;
    screenshot(&client, "deploy").await;
    assert_eq!(on_web("cat /etc/hello"), "Hello from the browser from web");
    assert_eq!(on_web("id -un alice"), "alice");
    // The hidden answer never came back: not in the page, not in the kept history.
    let page = client.source().await.unwrap();
    assert!(!page.contains(PASSWORD), "the page shows the password");
    for entry in walk(gui.state.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PASSWORD),
            "{} holds the password",
            entry.display()
        );
    }

    // A setting edited in the form, for the one machine, then deployed.
    goto(&client, &gui, "#/instance/hello").await;
    let scope = find(&client, "[data-scope=default]").await;
    scope.select_by_value("web").await.unwrap();
    fill(&client, "[data-key=greeting]", "Second greeting").await;
    click(&client, "#save-settings").await;
    wait_text(&client, "#saved", "committed", Duration::from_secs(30)).await;
    let log = Command::new("git")
        .arg("-C")
        .arg(&clan_dir)
        .args(["log", "-1", "--format=%s"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.stdout).trim(),
        "instances: set settings of hello"
    );
    // A dry run shows what would change, and changes nothing.
    goto(&client, &gui, "#/machine/web").await;
    click(&client, "#dry-run").await;
    wait_deployed(&client).await;
    wait_text(
        &client,
        "[data-deploy-machine=web]",
        "/etc/hello",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(on_web("cat /etc/hello"), "Hello from the browser from web");
    goto(&client, &gui, "#/machine/web").await;
    click(&client, "#deploy").await;
    wait_deployed(&client).await;
    assert_eq!(on_web("cat /etc/hello"), "Second greeting from web");
    // The fleet page shows each machine's live status, asked from the machine.
    goto(&client, &gui, "#/").await;
    wait_text(
        &client,
        "[data-machine=web] .status",
        "in sync",
        Duration::from_secs(60),
    )
    .await;

    // Roll back to the first deploy's generation.
    goto(&client, &gui, "#/machine/web").await;
    click(&client, "#generations button").await;
    click(&client, "[data-rollback='1']").await;
    wait_text(
        &client,
        "#rolled-back",
        "Rolled back",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(on_web("cat /etc/hello"), "Hello from the browser from web");
    // Rolled back, web runs an older generation than the clan builds.
    goto(&client, &gui, "#/").await;
    wait_text(
        &client,
        "[data-machine=web] .status",
        "out of sync",
        Duration::from_secs(60),
    )
    .await;

    // The history survives a reload (and is what a second browser sees).
    goto(&client, &gui, "#/deploys").await;
    let history = wait_text(&client, "main table", "succeeded", Duration::from_secs(30)).await;
    assert_eq!(history.matches("succeeded").count(), 3, "{history}");
    assert_eq!(history.matches("dry-run").count(), 1, "{history}");
    screenshot(&client, "deploys").await;

    // Another origin (the same server under another name is another site for the
    // browser): it can neither read the API nor change the clan with a form post.
    client
        .goto(&format!("http://localhost:{}/", gui.port))
        .await
        .unwrap();
    let read: Value = client
        .execute_async(
            &format!(
                "const done = arguments[0];
                 fetch('http://127.0.0.1:{}/api/fleet', {{credentials: 'include'}})
                   .then(r => r.text().then(t => done('read ' + r.status + ' ' + t)))
                   .catch(e => done('blocked'));",
                gui.port
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(read, json!("blocked"));
    client
        .execute(
            &format!(
                "const form = document.createElement('form');
                 form.method = 'POST';
                 form.action = 'http://127.0.0.1:{}/api/machines';
                 form.enctype = 'text/plain';
                 const field = document.createElement('input');
                 field.name = '{{\"name\":\"evil\",\"x\":\"';
                 field.value = '\"}}';
                 form.append(field);
                 document.body.append(form);
                 form.submit();",
                gui.port
            ),
            vec![],
        )
        .await
        .unwrap();
    // The browser shows the server's answer to the post once it came.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .ends_with("/api/machines")
    {
        assert!(Instant::now() < deadline, "the form post never happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let clan_toml = std::fs::read_to_string(clan_dir.join("clan.toml")).unwrap();
    assert!(
        !clan_toml.contains("evil"),
        "a cross-site form added a machine"
    );

    client.close().await.unwrap();
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
