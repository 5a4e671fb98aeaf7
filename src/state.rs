//! What every handler and extractor can reach, in a module of its own so that `api`,
//! `identity` and `startup` all import it and none imports another for it.

use std::sync::Arc;

use crate::credentials::Keyring;
use crate::db::Pool;
use crate::identity::IdentityConfig;
use crate::runs::Signals;
use crate::telemetry::metrics::Metrics;

/// The shared state of the server.
#[derive(Clone)]
pub struct AppState {
    pub db: Pool,
    pub max_body_bytes: usize,
    /// How callers are identified and limited.
    pub identity: Arc<IdentityConfig>,
    /// Signals between the API and this process's workers.
    pub runs: Signals,
    /// The keys that seal tool credentials (none: storing credentials is refused).
    pub keyring: Arc<Keyring>,
    /// What `/metrics` serves.
    pub metrics: Metrics,
}
