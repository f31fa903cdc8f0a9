//! `clan gui` as a user starts it: the URL it prints (with `--json` too) carries a one-time
//! token that the server it runs accepts once, on 127.0.0.1.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};

/// The status line and headers of `GET path` on 127.0.0.1:`port`.
fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn gui_prints_a_one_time_url_and_serves_it_on_loopback() {
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clan"))
        .args(["gui", "--no-open", "--json"])
        .current_dir(work.path())
        .env("XDG_STATE_HOME", work.path().join("state"))
        .env_remove("CLAN_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The JSON document comes first; the server then runs until it is stopped.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let printed: serde_json::Value = loop {
        assert!(stdout.read_line(&mut text).unwrap() > 0, "no URL: {text}");
        if let Ok(printed) = serde_json::from_str(&text) {
            break printed;
        }
    };
    let url = printed["url"].as_str().unwrap().to_owned();
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .expect("a loopback URL");
    let (port, path) = rest.split_once('/').unwrap();
    let port: u16 = port.parse().unwrap();
    let first = get(port, &format!("/{path}"));
    let second = get(port, &format!("/{path}"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.starts_with("HTTP/1.1 303"), "{first}");
    assert!(
        first.to_ascii_lowercase().contains("set-cookie: clan-gui-"),
        "{first}"
    );
    assert!(
        second.starts_with("HTTP/1.1 401"),
        "the token worked twice: {second}"
    );
}

#[test]
fn gui_refuses_a_target_host() {
    let output = Command::new(env!("CARGO_BIN_EXE_clan"))
        .args(["gui", "--no-open", "--target-host", "root@203.0.113.1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--target-host"));
}
