use std::io;

/// A boxed error from a component's own typed error enum.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong while a component starts, runs or stops.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// A listener could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address from the config.
        address: String,
        /// Why the bind failed.
        #[source]
        source: io::Error,
    },
    /// A file or socket operation failed.
    #[error("cannot {action}")]
    Io {
        /// What was being done, naming the thing: "write /var/lib/tracescale/out.jsonl".
        action: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The shutdown deadline passed before the component finished.
    #[error("deadline passed before {0} finished")]
    Deadline(&'static str),
    /// A component-specific error.
    #[error(transparent)]
    Other(BoxError),
}

impl ComponentError {
    /// Wraps an I/O error with what was being done.
    pub fn io(action: impl Into<String>, source: io::Error) -> Self {
        ComponentError::Io {
            action: action.into(),
            source,
        }
    }

    /// Wraps a component's own error.
    pub fn other(err: impl Into<BoxError>) -> Self {
        ComponentError::Other(err.into())
    }
}
