//! Issue 10, "every edit is serialized and complete": ten editors at once — `machines
//! create`, `instances add`/`set`, `secrets set`, and a mix with `vars generate` — and every
//! edit is in the clan (and committed) in the end, or its command failed with an error; never
//! an exit 0 for a lost edit. A command waiting for the lock says who holds it.

mod crash_support;
mod env;

use crash_support::{finish, read_stderr_until, Clan, Run};

/// Starts every command at once, then waits for all.
fn all_at_once(clan: &Clan, commands: &[(Vec<String>, Vec<u8>)]) -> Vec<Run> {
    let children: Vec<_> = commands
        .iter()
        .map(|(args, stdin)| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            clan.spawn(&args, stdin)
        })
        .collect();
    children.into_iter().map(finish).collect()
}

/// Asserts that every run succeeded.
fn all_succeeded(runs: &[Run]) {
    for run in runs {
        assert_eq!(run.code, Some(0), "{run:?}");
    }
}

/// Every run either succeeded or failed saying why; returns which succeeded.
fn outcomes(runs: &[Run]) -> Vec<bool> {
    runs.iter()
        .map(|run| match run.code {
            Some(0) => true,
            Some(_) => {
                assert!(run.stderr.contains("error: "), "failed silently: {run:?}");
                false
            }
            None => panic!("killed: {run:?}"),
        })
        .collect()
}

fn words(text: &str) -> Vec<String> {
    text.split(' ').map(str::to_owned).collect()
}

#[test]
fn ten_concurrent_machine_creates_all_land() {
    let clan = Clan::new(&[]);
    let before: usize = clan
        .git(&["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .unwrap();
    let commands: Vec<_> = (0..10)
        .map(|i| {
            (
                words(&format!("machines create m{i} --tags t{i}")),
                Vec::new(),
            )
        })
        .collect();
    let succeeded = outcomes(&all_at_once(&clan, &commands));
    // Nothing makes them fail: they wait for each other.
    assert!(succeeded.iter().all(|&ok| ok), "{succeeded:?}");
    let toml = clan.read("clan.toml");
    let committed = clan.git(&["show", "HEAD:clan.toml"]);
    for i in 0..10 {
        assert!(
            toml.contains(&format!("[machines.m{i}]")),
            "m{i} lost:\n{toml}"
        );
        assert!(
            toml.contains(&format!("\"t{i}\"")),
            "tag of m{i} lost:\n{toml}"
        );
    }
    assert_eq!(toml, committed);
    let after: usize = clan
        .git(&["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(after, before + 10, "one commit per machine");
    clan.assert_consistent("after concurrent creates");
}

#[test]
fn concurrent_instance_edits_all_land() {
    let machines: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let clan = Clan::new(&[]);
    for machine in &machines {
        clan.ok(&["machines", "create", machine], b"");
    }
    let adds: Vec<_> = machines
        .iter()
        .map(|m| {
            (
                words(&format!("instances add hello default {m}")),
                Vec::new(),
            )
        })
        .collect();
    all_succeeded(&all_at_once(&clan, &adds));
    let sets: Vec<_> = machines
        .iter()
        .map(|m| {
            let setting = format!("default@{m}.greeting=hi-{m}");
            (words(&format!("instances set hello {setting}")), Vec::new())
        })
        .collect();
    all_succeeded(&all_at_once(&clan, &sets));
    let show = clan.ok(&["machines", "show", "m7", "--json"], b"");
    assert!(show.contains("hi-m7 from m7"), "{show}");
    let toml = clan.git(&["show", "HEAD:clan.toml"]);
    for machine in &machines {
        assert!(
            toml.contains(&format!("hi-{machine}")),
            "{machine} lost:\n{toml}"
        );
    }
    clan.assert_consistent("after concurrent instance edits");
}

#[test]
fn concurrent_secret_sets_all_decrypt() {
    let clan = Clan::new(&["web01"]);
    clan.ok(&["vars", "generate"], b"");
    let distinct: Vec<_> = (0..10)
        .map(|i| {
            (
                words(&format!("secrets set s{i} --machine web01")),
                format!("value-{i}").into_bytes(),
            )
        })
        .collect();
    all_succeeded(&all_at_once(&clan, &distinct));
    for i in 0..10 {
        assert_eq!(
            clan.ok(&["secrets", "get", &format!("s{i}")], b""),
            format!("value-{i}")
        );
    }
    // Ten writers of one secret: it ends as one of them, whole, and committed.
    let same: Vec<_> = (0..10)
        .map(|i| {
            (
                words("secrets set shared"),
                format!("writer-{i}").into_bytes(),
            )
        })
        .collect();
    all_succeeded(&all_at_once(&clan, &same));
    let value = clan.ok(&["secrets", "get", "shared"], b"");
    assert!((0..10).any(|i| value == format!("writer-{i}")), "{value}");
    clan.assert_consistent("after concurrent secret sets");
}

#[test]
fn a_mix_of_editors_keeps_every_edit() {
    let clan = Clan::new(&["web01", "web02"]);
    // The machines' sops keys, which `secrets set --machine` needs.
    clan.ok(&["vars", "generate"], b"");
    let mut commands = vec![
        (words("vars generate web01 --regenerate"), Vec::new()),
        (words("vars generate web02 --regenerate"), Vec::new()),
        (
            words("instances set hello default.greeting=mixed"),
            Vec::new(),
        ),
        (
            words("secrets set mixed --machine web01"),
            b"mixed-secret".to_vec(),
        ),
    ];
    for i in 0..6 {
        commands.push((words(&format!("machines create extra{i}")), Vec::new()));
    }
    all_succeeded(&all_at_once(&clan, &commands));
    let toml = clan.git(&["show", "HEAD:clan.toml"]);
    assert!(toml.contains("mixed"), "{toml}");
    for i in 0..6 {
        assert!(toml.contains(&format!("[machines.extra{i}]")), "{toml}");
    }
    assert_eq!(clan.ok(&["secrets", "get", "mixed"], b""), "mixed-secret");
    clan.assert_consistent("after mixed editors");
    clan.assert_vars_valid("after mixed editors");
}

#[test]
fn a_waiting_command_says_who_holds_the_lock() {
    let clan = Clan::new(&[]);
    let mut holder = clan.hold_lock();
    let mut waiter = clan.spawn(&["machines", "create", "web02"], b"");
    let line = read_stderr_until(&mut waiter, "waiting for the clan lock");
    assert!(line.contains(&format!("(PID {})", holder.id())), "{line}");
    assert!(line.contains("vars generate --prompt-values -`"), "{line}");
    assert!(line.contains("has held it for "), "{line}");
    use std::io::Write;
    let mut stdin = holder.stdin.take().unwrap();
    stdin.write_all(br#"{"pw": {"p": "secret"}}"#).unwrap();
    drop(stdin);
    assert!(holder.wait_with_output().unwrap().status.success());
    let waited = finish(waiter);
    assert_eq!(waited.code, Some(0), "{}", waited.stderr);
    assert!(clan.git(&["show", "HEAD:clan.toml"]).contains("web02"));
    clan.assert_consistent("after waiting");
}
