//! What can stop the GUI server from starting or keeping its deploy history.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the GUI server failed")]
    Runtime {
        #[source]
        source: std::io::Error,
    },
    #[error("neither XDG_STATE_HOME nor HOME is set: no place for the deploy history")]
    NoStateDir,
    #[error("cannot {context} `{}`", path.display())]
    State {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: clan_fs::Error,
    },
}

impl clan_error::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Bind { .. } => {
                Some("another program uses the port: pick one with --port".into())
            }
            Error::NoStateDir => Some("set XDG_STATE_HOME to a private directory".into()),
            _ => None,
        }
    }
}

clan_error::register!(Error);
