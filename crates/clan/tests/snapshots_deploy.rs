//! What a deploy prints, pinned: the dry run, the summary of a first deploy, an unchanged
//! machine (with `-v`, and on a terminal its progress bar), the JSON events, a failed unit
//! brought back, the generations, a rollback and the testbed's status, all against a real
//! test machine (skips with the reason when the host cannot run one). Ports, times, keys and
//! temporary paths are filtered (see `transcript`).

mod env;
mod support;
mod transcript;

use support::fixture::Fixture;
use transcript::{Step, Transcript};

fn unit(exec: &str) -> String {
    format!(
        "{{\"content\": \"[Unit]\\nDescription=test\\n[Service]\\n{exec}\\n[Install]\\nWantedBy=multi-user.target\\n\"}}"
    )
}

/// Sets `machines/<machine>/config.star` to return `config` (a Starlark dict literal).
fn configure(f: &Fixture, machine: &str, config: &str) {
    let dir = f.clan.path().join("machines").join(machine);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.star"),
        format!("def per_machine(ctx):\n    return {{\"config\": {config}}}\n"),
    )
    .unwrap();
}

fn clan(f: &Fixture, t: &mut Transcript, args: &[&str]) -> Step {
    let output = support::fixture::run(
        f.clan(args)
            // The machine is fresh, its host key unknown: trust it on first use.
            .env("CLAN_HOST_KEY_CHECK", "tofu")
            .env("NO_COLOR", "1"),
    );
    t.record(args, Step::from(&output))
}

#[test]
fn deploy_summary_and_events() {
    let Some(f) = Fixture::new(&["web"], &[]) else {
        return;
    };
    // `web` resolves through the testbed's ssh_config, so the target reads the same every run.
    f.commit_clan_toml(
        "[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n[machines.web]\ndeploy.targetHost = \"root@web\"\n\n\
         [instances.hello]\nmodule.name = \"hello-world\"\nroles.default.tags = [\"all\"]\n",
        "init",
    );
    let mut t = Transcript::default();
    t.hide_path(f.clan.path(), "CLAN");
    t.hide_path(f.work.path(), "WORK");
    let good = unit("ExecStart=/bin/sleep 1000");
    configure(
        &f,
        "web",
        &format!(
            "{{\"files\": {{\"/etc/app.conf\": {{\"content\": \"v=1\\n\", \"mode\": \"0600\"}}}}, \
              \"units\": {{\"app.service\": {good}}}}}"
        ),
    );
    let update = ["machines", "update", "--confirm-timeout", "5"];
    let with = |extra: &[&'static str]| [&update[..], extra].concat();
    assert_eq!(clan(&f, &mut t, &with(&["--dry-run"])).code, 0);
    assert_eq!(clan(&f, &mut t, &update).code, 0);
    assert_eq!(clan(&f, &mut t, &update).code, 0);
    t.note("unchanged again; `-v` adds each stage");
    assert_eq!(clan(&f, &mut t, &with(&["-v"])).code, 0);
    // On a terminal: a bar per machine, ending on its outcome, above the summary.
    let mut line = vec![support::clan_binary().display().to_string()];
    line.extend(update.iter().map(|word| word.to_string()));
    let mut on_terminal = f.with_clan_env("script");
    on_terminal
        .args(["-qec", &line.join(" "), "/dev/null"])
        .env("CLAN_HOST_KEY_CHECK", "tofu")
        .env("TERM", "xterm");
    let shown = String::from_utf8_lossy(&on_terminal.output().unwrap().stdout).into_owned();
    assert!(shown.contains("[web] deploying generation"), "{shown:?}");
    assert!(shown.contains("done: unchanged in"), "{shown:?}");
    assert!(
        shown.contains("\x1b[32m"),
        "the outcome is coloured: {shown:?}"
    );
    assert!(shown.contains("RESULT"), "the summary follows: {shown:?}");

    t.note("a changed file, as JSON events");
    configure(
        &f,
        "web",
        &format!(
            "{{\"files\": {{\"/etc/app.conf\": {{\"content\": \"v=2\\n\", \"mode\": \"0600\"}}}}, \
              \"units\": {{\"app.service\": {good}}}}}"
        ),
    );
    assert_eq!(clan(&f, &mut t, &with(&["--json"])).code, 0);

    t.note("a unit that fails to start: the previous generation comes back");
    configure(
        &f,
        "web",
        &format!(
            "{{\"units\": {{\"app.service\": {good}, \"bad.service\": {}}}}}",
            unit("Type=oneshot\\nExecStart=/bin/false")
        ),
    );
    assert_eq!(clan(&f, &mut t, &update).code, 1);
    assert_eq!(
        clan(&f, &mut t, &["machines", "generations", "web"]).code,
        0
    );
    assert_eq!(clan(&f, &mut t, &["machines", "rollback", "web"]).code, 0);

    t.note("the test machine itself");
    t.hide_path(f.testbed.state_dir(), "TESTBED");
    let state = f.testbed.state_dir().display().to_string();
    assert_eq!(
        clan(&f, &mut t, &["testbed", "status", "--state-dir", &state]).code,
        0
    );
    assert_transcript!("deploy_summary_and_events", t);
}
