//! Errors from loading or running a service; each names the service and, for Starlark
//! errors, carries the file, line and call stack starlark reports.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read service `{service}` from `{path}`")]
    Read {
        service: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("service `{service}`: {message}")]
    Starlark { service: String, message: String },
    #[error("service `{service}` ran for more than {budget} steps in {function}; it probably loops forever")]
    Budget {
        service: String,
        function: String,
        budget: u64,
    },
    #[error("service `{service}`: {message}")]
    Shape {
        service: String,
        message: String,
        hint: Option<String>,
    },
}

impl clan_error::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Self::Shape { hint, .. } => hint.clone(),
            Self::Budget { .. } => {
                Some("look for a loop that never ends, or recursion without a base case".to_owned())
            }
            Self::Starlark { .. } => Some("see docs/services.md for the service API".to_owned()),
            Self::Read { .. } => None,
        }
    }

    /// A service that fails or returns something malformed fails the evaluation.
    fn exit(&self) -> clan_error::Exit {
        match self {
            Self::Starlark { .. } | Self::Budget { .. } | Self::Shape { .. } => {
                clan_error::Exit::Failed
            }
            Self::Read { .. } => clan_error::Exit::Error,
        }
    }
}

clan_error::register!(Error);
