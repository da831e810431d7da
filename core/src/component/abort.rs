//! How a receiver ends the whole run with an error.

use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use super::ComponentError;
use crate::config::ComponentId;

/// Ends the run with an error. For a receiver whose input went wrong in a way its config says
/// must not be skipped, such as a malformed line in a replayed file with `on_error = "stop"`.
/// The engine then stops as it does on a signal (what was sent before is delivered) and the run
/// returns the first error reported.
#[derive(Clone)]
pub struct Abort {
    id: ComponentId,
    failures: Arc<Failures>,
}

impl Abort {
    /// Reports `error` and asks the engine to stop. Only the first report of a run is kept.
    pub fn fail(&self, error: ComponentError) {
        self.failures.report(self.id.clone(), error);
    }
}

/// The first failure reported by any receiver of one running topology.
pub(crate) struct Failures {
    first: Mutex<Option<(ComponentId, ComponentError)>>,
    reported: CancellationToken,
}

impl Failures {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            first: Mutex::new(None),
            reported: CancellationToken::new(),
        })
    }

    /// The handle a receiver gets.
    pub(crate) fn handle(self: &Arc<Self>, id: ComponentId) -> Abort {
        Abort {
            id,
            failures: self.clone(),
        }
    }

    fn report(&self, id: ComponentId, error: ComponentError) {
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some((id, error));
        }
        self.reported.cancel();
    }

    /// Resolves once a failure has been reported. Cancel safe.
    pub(crate) async fn reported(&self) {
        self.reported.cancelled().await;
    }

    /// The first failure, taken out.
    pub(crate) fn take(&self) -> Option<(ComponentId, ComponentError)> {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
