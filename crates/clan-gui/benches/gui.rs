//! The GUI's speed in headless Chromium (Performance API timings taken in the page), on a
//! 1,000-machine clan: first paint of the fleet map, a filter, opening a machine, a settings
//! edit's round trip (submit → clan.toml written and committed → view updated); and, as
//! root with a testbed, how long deploy events take from clan-lib's sink (where `clan
//! machines update --json` prints them) to the page. `bench/gui.sh` runs it;
//! BENCHMARKS.md has the numbers.

#[path = "../tests/support/mod.rs"]
mod support;

use clan_deploy::ssh::{HostKeyCheck, SshOptions};
use fantoccini::Client;
use serde_json::{json, Value};
use support::browser::{agent, browser, chromedriver, click, fill, find, wait_deployed};

const RUNS: usize = 5;

/// A clan of `machines` machines in ten tags, with hello-world on all of them.
fn big_clan(dir: &std::path::Path, machines: usize) -> std::path::PathBuf {
    let mut toml: String = (0..machines)
        .map(|i| {
            format!(
                "[machines.m-{i:04}]\ntags = [\"group-{}\"]\ndeploy.targetHost = \"root@10.0.{}.{}\"\n\n",
                i % 10,
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    toml.push_str(HELLO_EVERYWHERE);
    support::clan_of(dir, &toml)
}

const HELLO_EVERYWHERE: &str =
    "[instances.hello]\nmodule.name = \"hello-world\"\nroles.default.tags = [\"all\"]\n";

/// Runs `script` (an async WebDriver script: `done` is its last argument) and returns its
/// number.
async fn measure(client: &Client, script: &str) -> f64 {
    let wrapped = format!("const done = arguments[arguments.length - 1]; {script}");
    let value: Value = client.execute_async(&wrapped, vec![]).await.unwrap();
    value
        .as_f64()
        .unwrap_or_else(|| panic!("no number: {value}"))
}

/// Resolves `done` with the time since `t0` once `mark` is set.
const AFTER_MARK: &str = "const wait = (mark, t0) => { const check = () => {
      if (performance.getEntriesByName(mark).length) done(performance.now() - t0);
      else setTimeout(check, 1); }; check(); };";

fn summary(name: &str, samples: &mut [f64], target: &str) -> String {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    format!("| {name} | {median:.1} ms | {max:.1} ms | {target} |")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let machines: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let work = tempfile::tempdir().unwrap();
    std::env::set_var("XDG_CACHE_HOME", work.path().join("cache"));
    let clan = big_clan(work.path(), machines);
    let gui = support::Gui::start(Some(clan.clone()), None);
    let driver = chromedriver();
    let client = browser(&driver).await;
    client.goto(&gui.url).await.unwrap();
    find(&client, "[data-testid=fleet-list] .fleet-row.machine").await;
    let base = format!("http://127.0.0.1:{}/", gui.port);
    let mut rows = Vec::new();

    // First paint: from the navigation's start to the fleet list painted with its data.
    let mut paint = Vec::new();
    for _ in 0..RUNS {
        client.goto(&format!("{base}#/")).await.unwrap();
        client.refresh().await.unwrap();
        paint.push(measure(&client, &format!("{AFTER_MARK} wait('painted-fleet', 0);")).await);
    }
    rows.push(summary(
        &format!("fleet map, first paint ({machines} machines)"),
        &mut paint,
        "< 500 ms",
    ));

    // A filter: from the keystroke's input event to the next frame.
    let mut filter = Vec::new();
    for i in 0..RUNS {
        filter.push(
            measure(
                &client,
                &format!(
                    "const input = document.getElementById('fleet-search');
                     const t0 = performance.now();
                     input.value = 'm-0{i}';
                     input.dispatchEvent(new Event('input'));
                     requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));"
                ),
            )
            .await,
        );
    }
    rows.push(summary("filter the fleet list", &mut filter, "< 100 ms"));

    // Opening a machine: from the click to its page painted (its evaluated config and vars
    // come from the server).
    let mut open = Vec::new();
    for i in 0..RUNS {
        client.goto(&format!("{base}#/")).await.unwrap();
        client.refresh().await.unwrap();
        find(&client, "[data-testid=fleet-list] .fleet-row.machine").await;
        open.push(
            measure(
                &client,
                &format!(
                    "{AFTER_MARK}
                     performance.clearMarks('painted-machine');
                     const t0 = performance.now();
                     document.querySelectorAll('.fleet-row.machine')[{i}].click();
                     wait('painted-machine', t0);"
                ),
            )
            .await,
        );
    }
    rows.push(summary("open a machine", &mut open, "< 100 ms"));

    // A settings edit: submit → clan.toml evaluated, written and committed → "saved" shown.
    let mut edit = Vec::new();
    for i in 0..RUNS {
        client
            .goto(&format!("{base}#/instance/hello"))
            .await
            .unwrap();
        client.refresh().await.unwrap();
        fill(&client, "[data-key=greeting]", &format!("bench {i}")).await;
        edit.push(
            measure(
                &client,
                &format!(
                    "{AFTER_MARK}
                     performance.clearMarks('settings-saved');
                     const t0 = performance.now();
                     document.getElementById('save-settings').click();
                     wait('settings-saved', t0);"
                ),
            )
            .await,
        );
        let toml = std::fs::read_to_string(clan.join("clan.toml")).unwrap();
        assert!(
            toml.contains(&format!("bench {i}")),
            "the edit was not written"
        );
    }
    rows.push(summary("settings edit round trip", &mut edit, "< 150 ms"));

    if let Some(row) = deploy_delays(&client).await {
        rows.push(row);
    }
    client.close().await.unwrap();
    println!("| what | median | max | target |\n| --- | ---: | ---: | --- |");
    for row in rows {
        println!("{row}");
    }
}

/// Deploys two test machines from the page and reports how long their events took from
/// the server's sink to the page; `None` (saying why) when no testbed can run here.
async fn deploy_delays(client: &Client) -> Option<String> {
    if let Err(reason) = clan_testbed::check_host() {
        eprintln!("deploy events: skipped ({reason})");
        return None;
    }
    let state = tempfile::tempdir().unwrap();
    let testbed =
        clan_testbed::Testbed::up(&clan_testbed::Options::named(state.path(), ["b1", "b2"]))
            .expect("testbed up");
    let work = tempfile::tempdir().unwrap();
    let targets: String = testbed
        .machines()
        .iter()
        .map(|m| {
            format!(
                "[machines.{}]\ndeploy.targetHost = \"{}\"\n",
                m.name,
                m.ssh_target()
            )
        })
        .collect();
    let clan = support::clan_of(work.path(), &format!("{targets}\n{HELLO_EVERYWHERE}"));
    let gui = support::Gui::start_with(
        Some(clan),
        SshOptions {
            config: Some(testbed.ssh_config().to_path_buf()),
            host_key_check: HostKeyCheck::Tofu,
            connect_timeout: Some(20),
        },
        Some(agent()),
    );
    client.goto(&gui.url).await.unwrap();
    find(client, "[data-testid=fleet-list]").await;
    client
        .goto(&format!("http://127.0.0.1:{}/#/deploys", gui.port))
        .await
        .unwrap();
    client.refresh().await.unwrap();
    click(client, "main button").await;
    wait_deployed(client).await;
    let delays: Value = client
        .execute("return window.clanEventDelays || [];", vec![])
        .await
        .unwrap();
    let mut delays: Vec<f64> = delays
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(!delays.is_empty(), "no live events: {}", json!(delays));
    let count = delays.len();
    Some(summary(
        &format!("deploy event, sink → page ({count} events, 2 machines)"),
        &mut delays,
        "< 100 ms",
    ))
}
