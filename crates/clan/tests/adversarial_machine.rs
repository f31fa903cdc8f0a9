//! Issue 10 on a real machine: a non-root user the deploy itself created (alice) owns the
//! directory above a managed file and swaps it for a link to a root location between deploys.
//! The agent must refuse, name the path, and write nothing where the link points; a link she
//! puts at the file itself is replaced, never written through. Skips with the reason when the
//! host cannot run a testbed (not root, a tool missing). Counted in ADVERSARIAL.md.

mod env;
mod support;

use support::fixture::{run, Fixture};

const MACHINE: &str = "box";

fn config(content: &str) -> String {
    format!(
        "def per_machine(ctx):\n    return {{\"config\": {{\
         \"users\": {{\"alice\": {{\"home\": \"/home/alice\", \"shell\": \"/bin/sh\"}}}}, \
         \"files\": {{\"/home/alice/.app/config\": {{\"content\": \"{content}\", \
         \"owner\": \"alice\", \"group\": \"alice\", \"mode\": \"0600\"}}}}}}}}\n"
    )
}

#[test]
fn a_users_link_to_cron_d_is_refused_by_the_agent() {
    let Some(f) = Fixture::new(&[MACHINE], &[]) else {
        return;
    };
    let target = f.testbed.machine(MACHINE).unwrap().ssh_target();
    std::fs::write(
        f.clan.path().join("clan.toml"),
        format!("[meta]\nname = \"t\"\ndomain = \"invalid\"\n\n[machines.{MACHINE}]\ndeploy.targetHost = \"{target}\"\n"),
    )
    .unwrap();
    let configure = |content: &str| {
        let dir = f.clan.path().join("machines").join(MACHINE);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.star"), config(content)).unwrap();
    };
    // A fresh machine: its host key is trusted on first use.
    let update = || {
        let args = [
            "machines",
            "update",
            "--confirm-timeout",
            "5",
            "--host-key-check",
            "tofu",
        ];
        run(&mut f.clan(&args))
    };
    let on = |command: &str| f.on(MACHINE, command);

    configure("one\\n");
    assert!(update().status.success(), "first deploy");
    assert_eq!(
        on("stat -c '%U %a' /home/alice/.app/config && cat /home/alice/.app/config"),
        "alice 600\none"
    );
    let cron_before = on("ls -A /etc/cron.d | sort | tr '\\n' ' '");
    // alice owns her ~/.app, as she would had she made it herself.
    on("chown alice:alice /home/alice/.app");

    // alice, as herself, swaps her directory for a link to /etc/cron.d.
    on("su -s /bin/sh alice -c 'mv ~/.app ~/.app-old && ln -s /etc/cron.d ~/.app'");
    configure("* * * * * root touch /pwned\\n");
    let refused = update();
    assert!(
        !refused.status.success(),
        "the deploy went through the link"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("/home/alice/.app"), "{stderr}");
    assert_eq!(
        on("ls -A /etc/cron.d | sort | tr '\\n' ' '"),
        cron_before,
        "something was written into /etc/cron.d"
    );
    assert_eq!(on("grep -rl pwned /etc/cron.d || echo none"), "none");

    // A link at the managed file itself (to /etc/shadow) is replaced, shadow left alone.
    let shadow_before = on("sha256sum /etc/shadow");
    on("su -s /bin/sh alice -c 'rm ~/.app && mv ~/.app-old ~/.app && rm ~/.app/config && ln -s /etc/shadow ~/.app/config'");
    configure("two\\n");
    assert!(
        update().status.success(),
        "deploy over the user's file link"
    );
    assert_eq!(on("sha256sum /etc/shadow"), shadow_before);
    assert_eq!(
        on("stat -c '%F %U' /home/alice/.app/config && cat /home/alice/.app/config"),
        "regular file alice\ntwo"
    );
}
