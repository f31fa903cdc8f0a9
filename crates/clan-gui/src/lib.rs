//! `clan gui`: the clan as a local web app. An HTTP server on loopback serves the embedded
//! page ([`assets`]) and a JSON API under `/api/` ([`api`], described by the OpenAPI document
//! at `/api/openapi.json`); every action is a call into `clan-lib`, so the GUI has no clan
//! logic of its own. Deploys run in the server as jobs ([`jobs`]) whose events stream to the
//! page and are kept on disk.
//!
//! Who may talk to it ([`security`]): the printed URL carries a one-time token, exchanged for
//! a session cookie (`HttpOnly`, `SameSite=Strict`) and a request key the page keeps in its
//! origin's storage; every API request needs both, the `Host` and `Origin` headers must name
//! the server itself, and nothing sends CORS headers. This crate never prints and never
//! reads a terminal: the `clan` binary prints the URL.

mod api;
mod assets;
mod error;
pub mod jobs;
mod openapi;
pub mod security;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use clan_deploy::deploy::AgentBinary;
use clan_deploy::ssh::SshOptions;

pub use error::Error;

/// How the server is started.
pub struct Options {
    /// The clan the GUI works on; `None` starts empty, offering to create one.
    pub clan_dir: Option<PathBuf>,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// How deploys reach machines (no terminal is at hand: host keys are never asked for).
    pub ssh: SshOptions,
    /// The agent deploys upload; `None`: deploys fail saying it is missing.
    pub agent: Option<AgentBinary>,
    /// Seconds a machine waits for the deploy's confirmation before reverting.
    pub confirm_timeout: u64,
    /// Where deploy history is kept (private, per clan below it).
    pub state_dir: PathBuf,
}

impl Options {
    /// `$XDG_STATE_HOME/clan/gui`, else `~/.local/state/clan/gui`.
    pub fn default_state_dir() -> Result<PathBuf, Error> {
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|dir| !dir.is_empty()) {
            return Ok(PathBuf::from(dir).join("clan/gui"));
        }
        let home = std::env::var_os("HOME").ok_or(Error::NoStateDir)?;
        Ok(PathBuf::from(home).join(".local/state/clan/gui"))
    }
}

/// What the handlers share.
pub(crate) struct App {
    pub clan_dir: RwLock<Option<PathBuf>>,
    pub security: security::Security,
    pub jobs: jobs::Jobs,
    pub ssh: SshOptions,
    pub agent: Option<AgentBinary>,
    pub confirm_timeout: u64,
}

impl App {
    pub fn clan_dir(&self) -> Option<PathBuf> {
        self.clan_dir
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// A bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    url: String,
}

impl Server {
    /// Binds 127.0.0.1:`port` (only loopback: other hosts cannot connect) and makes the
    /// one-time token.
    pub fn bind(options: Options) -> Result<Server, Error> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, options.port));
        let listener =
            TcpListener::bind(address).map_err(|source| Error::Bind { address, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| Error::Bind { address, source })?
            .port();
        let security = security::Security::new(port);
        let url = format!("http://127.0.0.1:{port}/?token={}", security.token());
        let jobs = jobs::Jobs::new(options.state_dir);
        if let Some(dir) = &options.clan_dir {
            jobs.load(dir)?;
        }
        let app = Arc::new(App {
            clan_dir: RwLock::new(options.clan_dir),
            security,
            jobs,
            ssh: options.ssh,
            agent: options.agent,
            confirm_timeout: options.confirm_timeout,
        });
        Ok(Server { listener, app, url })
    }

    /// The URL to open, with the one-time token.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves until the process ends.
    pub fn run(self) -> Result<(), Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime { source })?;
        runtime.block_on(async move {
            self.listener
                .set_nonblocking(true)
                .map_err(|source| Error::Runtime { source })?;
            let listener = tokio::net::TcpListener::from_std(self.listener)
                .map_err(|source| Error::Runtime { source })?;
            axum::serve(listener, api::router(self.app))
                .await
                .map_err(|source| Error::Runtime { source })
        })
    }
}
