//! The GUI server's defences, each against the real server on loopback: the one-time token
//! and its cookie, requests without the cookie or key, `Host` and `Origin` checks, no CORS,
//! changes only by POST with the key, loopback only, and a second local user (`nobody`)
//! getting nothing.

mod support;

use std::process::Command;

use support::{clan, Gui};

fn clan_toml(gui: &Gui) -> String {
    std::fs::read_to_string(gui.clan.as_ref().unwrap().join("clan.toml")).unwrap()
}

fn started() -> (tempfile::TempDir, Gui) {
    let work = tempfile::tempdir().unwrap();
    let dir = clan(work.path(), &["web01"]);
    let gui = Gui::start(Some(dir), None);
    (work, gui)
}

#[test]
fn the_token_works_once_and_sets_a_strict_http_only_cookie() {
    let (_work, gui) = started();
    let first = gui.send("GET", &format!("/?token={}", gui.token()), &[], "");
    assert_eq!(first.status, 303);
    let cookie = first.header("set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(first.header("location").unwrap().starts_with("/#key="));
    let again = gui.send("GET", &format!("/?token={}", gui.token()), &[], "");
    assert_eq!(again.status, 401, "a token worked twice");
    assert!(again.header("set-cookie").is_none());
    let guessed = gui.send("GET", &format!("/?token={}", "0".repeat(64)), &[], "");
    assert_eq!(guessed.status, 401);
}

#[test]
fn without_cookie_and_key_nothing_is_served() {
    let (_work, gui) = started();
    let session = gui.login();
    for path in [
        "/",
        "/assets/app.js",
        "/api/fleet",
        "/api/openapi.json",
        "/api/deploys",
    ] {
        let answer = gui.send("GET", path, &[], "");
        assert_eq!(answer.status, 401, "{path} without a cookie");
        assert!(answer.body.is_empty(), "{path} said {:?}", answer.body);
    }
    // The cookie alone (as another local server on another port would receive it) opens
    // no API.
    let cookie_only = gui.send("GET", "/api/fleet", &[("Cookie", &session.cookie)], "");
    assert_eq!(cookie_only.status, 401);
    assert!(cookie_only.body.is_empty());
    let key_only = gui.send("GET", "/api/fleet", &[("X-Clan-Key", &session.key)], "");
    assert_eq!(key_only.status, 401);
    let page = gui.send("GET", "/", &[("Cookie", &session.cookie)], "");
    assert_eq!(page.status, 200);
    let fleet = gui.api(&session, "GET", "/api/fleet", "");
    assert_eq!(fleet.status, 200, "{fleet:?}");
    assert_eq!(fleet.json()["machines"][0]["name"], "web01");
}

#[test]
fn host_and_origin_must_name_the_server() {
    let (_work, gui) = started();
    let session = gui.login();
    let auth = [
        ("Cookie", session.cookie.as_str()),
        ("X-Clan-Key", &session.key),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut headers = auth.to_vec();
        headers.extend_from_slice(extra);
        gui.send("GET", "/api/fleet", &headers, "")
    };
    // DNS rebinding: a foreign name resolving to 127.0.0.1.
    for host in ["evil.example", "evil.example:80", "127.0.0.1:1"] {
        let answer = with(&[("Host", host)]);
        assert_eq!(answer.status, 421, "Host {host}");
        assert!(answer.body.is_empty());
    }
    let port = gui.port;
    for origin in [
        "http://evil.example",
        "null",
        &format!("http://127.0.0.1:{}", port + 1),
    ] {
        assert_eq!(with(&[("Origin", origin)]).status, 403, "Origin {origin}");
    }
    assert_eq!(with(&[("Sec-Fetch-Site", "cross-site")]).status, 403);
    let own = format!("http://127.0.0.1:{port}");
    assert_eq!(
        with(&[("Origin", &own), ("Sec-Fetch-Site", "same-origin")]).status,
        200
    );
    // The server's other name is another origin.
    let other_name = format!("http://localhost:{port}");
    assert_eq!(with(&[("Origin", &other_name)]).status, 403);
    // A cross-site POST changes nothing, even with every credential.
    let before = clan_toml(&gui);
    let mut headers = auth.to_vec();
    headers.push(("Origin", "http://evil.example"));
    let posted = gui.send("POST", "/api/machines", &headers, r#"{"name":"evil"}"#);
    assert_eq!(posted.status, 403);
    assert_eq!(clan_toml(&gui), before);
}

#[test]
fn no_cors_and_changes_only_by_post_with_the_key() {
    let (_work, gui) = started();
    let session = gui.login();
    let preflight = gui.send(
        "OPTIONS",
        "/api/machines",
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    );
    assert!(preflight.status >= 400, "{preflight:?}");
    let fleet = gui.api(&session, "GET", "/api/fleet", "");
    for answer in [&preflight, &fleet] {
        assert!(
            !answer
                .headers
                .iter()
                .any(|(name, _)| name.starts_with("access-control-")),
            "{answer:?}"
        );
    }
    let own = gui.send("OPTIONS", "/api/fleet", &[("Cookie", &session.cookie)], "");
    assert_eq!(own.status, 405);
    // A change by GET does not exist; by POST without the key (a form another page
    // submits with the cookie) it is refused.
    let before = clan_toml(&gui);
    assert_eq!(gui.api(&session, "GET", "/api/machines", "").status, 405);
    let no_key = gui.send(
        "POST",
        "/api/machines",
        &[("Cookie", &session.cookie)],
        r#"{"name":"web02"}"#,
    );
    assert_eq!(no_key.status, 401);
    assert_eq!(clan_toml(&gui), before);
    let created = gui.api(
        &session,
        "POST",
        "/api/machines",
        r#"{"name":"web02","tags":["db"]}"#,
    );
    assert_eq!(created.status, 200, "{created:?}");
    assert!(clan_toml(&gui).contains("[machines.web02]"));
    let log = Command::new("git")
        .arg("-C")
        .arg(gui.clan.as_ref().unwrap())
        .args(["log", "-1", "--format=%s"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.stdout).trim(),
        "machines: create web02"
    );
}

#[test]
fn the_server_listens_on_loopback_only() {
    let (_work, gui) = started();
    // The address this host's traffic leaves from (connecting a UDP socket sends nothing).
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let outside = socket
        .connect("192.0.2.1:9")
        .ok()
        .and_then(|()| socket.local_addr().ok())
        .map(|address| address.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    let Some(ip) = outside else {
        clan_testbed::skip("this host has no address besides loopback");
        return;
    };
    let refused = std::net::TcpStream::connect((ip, gui.port));
    assert!(refused.is_err(), "the GUI answers on {ip}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", gui.port)).is_ok());
}

/// `command` as user `nobody`.
fn as_nobody(command: &[&str]) -> Command {
    let mut run = Command::new("setpriv");
    run.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
    run.args(command);
    run
}

#[test]
fn a_second_local_user_gets_nothing() {
    if !rustix::process::geteuid().is_root() {
        clan_testbed::skip("needs root to run a request as `nobody`");
        return;
    }
    let (_work, gui) = started();
    let session = gui.login();
    let url = format!("http://127.0.0.1:{}/api/fleet", gui.port);
    let page = format!("http://127.0.0.1:{}/", gui.port);
    // Without anything, with a guessed token, and with the cookie (cookies reach every port
    // of a host, so another user's server may have seen it): nothing.
    let guessed = format!("http://127.0.0.1:{}/?token={}", gui.port, "1".repeat(64));
    let cookie = format!("Cookie: {}", session.cookie);
    for request in [
        vec![url.as_str()],
        vec![page.as_str()],
        vec![guessed.as_str()],
        vec!["-H", &cookie, &url],
    ] {
        let mut words = vec!["curl", "-s", "-o", "-", "-w", "\n%{http_code}"];
        words.extend(request.iter().copied());
        let output = as_nobody(&words).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(stdout, "\n401", "nobody got {stdout:?} for {request:?}");
    }
    // The deploy history on disk is private too, even below a directory anyone may enter.
    use std::os::unix::fs::PermissionsExt as _;
    let state = gui.state.path();
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        std::fs::read_dir(state).unwrap().count() > 0,
        "no history directory"
    );
    let dir = state.to_str().unwrap().to_owned();
    let listed = as_nobody(&["find", &dir, "-type", "f"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).trim().is_empty(),
        "nobody lists {:?}",
        String::from_utf8_lossy(&listed.stdout)
    );
}
