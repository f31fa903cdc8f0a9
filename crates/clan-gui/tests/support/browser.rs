//! Headless Chromium through chromedriver (W3C WebDriver, driven with fantoccini).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clan_deploy::deploy::AgentBinary;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, ended with the test.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port }
}

pub async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                     "--disable-dev-shm-usage"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session")
}

/// The `clan-agent` binary of this build: built now for a test build (as `cargo build`
/// would; up to date it costs nothing), as `bench/gui.sh` builds it for the benchmark.
pub fn agent() -> AgentBinary {
    let test = std::env::current_exe().unwrap();
    let build_dir: PathBuf = test
        .parent()
        .and_then(Path::parent)
        .expect("in the target directory")
        .to_path_buf();
    if build_dir.ends_with("debug") {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "clan", "--bin", "clan-agent"])
            .status()
            .unwrap();
        assert!(status.success(), "building clan-agent failed");
    }
    AgentBinary::at(&build_dir.join("clan-agent")).unwrap()
}

/// Says what the page showed when a test step failed (the screenshot is left in the
/// temporary directory).
pub async fn failed(client: &Client, what: String) -> ! {
    let shot = std::env::temp_dir().join("clan-gui-failure.png");
    if let Ok(png) = client.screenshot().await {
        let _ = std::fs::write(&shot, png);
    }
    let text = match client.find(Locator::Css("main")).await {
        Ok(main) => main.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    panic!(
        "{what}; the page shows:\n{text}\n(screenshot: {})",
        shot.display()
    )
}

pub async fn find(client: &Client, css: &str) -> fantoccini::elements::Element {
    match client
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(error) => failed(client, format!("no `{css}`: {error}")).await,
    }
}

pub async fn fill(client: &Client, css: &str, text: &str) {
    let element = find(client, css).await;
    element.clear().await.unwrap();
    element.send_keys(text).await.unwrap();
}

pub async fn click(client: &Client, css: &str) {
    find(client, css).await.click().await.unwrap();
}

/// Waits until `css` shows `text` (within `limit`: a deploy uploads the agent first).
pub async fn wait_text(client: &Client, css: &str, text: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(found) = element.text().await {
                if found.contains(text) {
                    return found;
                }
                if Instant::now() > deadline {
                    failed(client, format!("`{css}` shows {found:?}, not {text:?}")).await;
                }
            }
        }
        if Instant::now() > deadline {
            failed(client, format!("no `{css}` showing {text:?}")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the deploy page now shown to say the deploy succeeded (a first deploy
/// uploads the agent: minutes on a loaded machine).
pub async fn wait_deployed(client: &Client) {
    find(client, "#deploy-status").await;
    wait_text(
        client,
        "#deploy-status",
        "succeeded",
        Duration::from_secs(300),
    )
    .await;
}
