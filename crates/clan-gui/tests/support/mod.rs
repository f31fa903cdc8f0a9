//! Shared by the GUI tests: a real server on a free loopback port, over a clan directory
//! made for the test, and a plain HTTP/1.1 client that sends exactly the headers a test
//! names (a spoofed `Host`, a foreign `Origin`).

#![allow(dead_code)]

pub mod browser;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use clan_deploy::deploy::AgentBinary;
use clan_deploy::ssh::{HostKeyCheck, SshOptions};

/// A running GUI server and the directories it works in.
pub struct Gui {
    pub port: u16,
    pub url: String,
    pub state: tempfile::TempDir,
    pub clan: Option<PathBuf>,
}

/// A clan directory: a git repository with a clan.toml naming `machines` (tagged `web`).
pub fn clan(dir: &Path, machines: &[&str]) -> PathBuf {
    let mut toml = String::new();
    for machine in machines {
        toml.push_str(&format!("[machines.{machine}]\ntags = [\"web\"]\n\n"));
    }
    clan_of(dir, &toml)
}

/// A clan directory: a git repository whose clan.toml is a `meta` table and `rest`,
/// committed.
pub fn clan_of(dir: &Path, rest: &str) -> PathBuf {
    let clan = dir.join("clan");
    std::fs::create_dir_all(&clan).unwrap();
    let toml = format!("[meta]\nname = \"test\"\ndomain = \"invalid\"\n\n{rest}");
    std::fs::write(clan.join("clan.toml"), toml).unwrap();
    for args in [
        &["init", "--quiet"][..],
        &["config", "user.email", "test@localhost"],
        &["config", "user.name", "test"],
        &["add", "clan.toml"],
        &["commit", "--quiet", "-m", "start"],
    ] {
        assert!(Command::new("git")
            .arg("-C")
            .arg(&clan)
            .args(args)
            .status()
            .unwrap()
            .success());
    }
    clan
}

impl Gui {
    /// A server on `clan` (none: an empty start), with `ssh` for its deploys.
    pub fn start(clan: Option<PathBuf>, ssh: Option<SshOptions>) -> Gui {
        Gui::start_with(
            clan,
            ssh.unwrap_or(SshOptions {
                config: None,
                host_key_check: HostKeyCheck::Strict,
                connect_timeout: Some(5),
            }),
            None,
        )
    }

    /// [`Gui::start`] with the agent deploys upload.
    pub fn start_with(clan: Option<PathBuf>, ssh: SshOptions, agent: Option<AgentBinary>) -> Gui {
        let state = tempfile::tempdir().unwrap();
        let server = clan_gui::Server::bind(clan_gui::Options {
            clan_dir: clan.clone(),
            port: 0,
            ssh,
            agent,
            confirm_timeout: 10,
            state_dir: state.path().to_path_buf(),
        })
        .unwrap();
        let url = server.url().to_owned();
        let port = url
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        std::thread::spawn(move || server.run().unwrap());
        Gui {
            port,
            url,
            state,
            clan,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The one-time token of the printed URL.
    pub fn token(&self) -> &str {
        self.url.split("token=").nth(1).unwrap()
    }

    /// Sends `method path` with `headers` (a `Host` naming the server unless given) and
    /// `body`.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            request.push_str(&format!("Host: {}\r\n", self.host()));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        Answer::parse(&String::from_utf8_lossy(&raw))
    }

    /// Redeems the token: the cookie pair and the request key.
    pub fn login(&self) -> Session {
        let answer = self.send("GET", &format!("/?token={}", self.token()), &[], "");
        assert_eq!(answer.status, 303, "{answer:?}");
        let cookie = answer.header("set-cookie").unwrap();
        let key = answer
            .header("location")
            .unwrap()
            .strip_prefix("/#key=")
            .unwrap()
            .to_owned();
        Session {
            cookie: cookie.split(';').next().unwrap().to_owned(),
            key,
        }
    }

    /// `method path` with the session's cookie and key.
    pub fn api(&self, session: &Session, method: &str, path: &str, body: &str) -> Answer {
        self.send(
            method,
            path,
            &[("Cookie", &session.cookie), ("X-Clan-Key", &session.key)],
            body,
        )
    }
}

pub struct Session {
    pub cookie: String,
    pub key: String,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    fn parse(raw: &str) -> Answer {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}
