//! The executor: runs queued in the database, claimed under a lease by workers in any number
//! of processes, worked step by step, every step attempt written as an execution log.
//!
//! - [`queue`]: the statements of the queue: claim, renew, release, rescue, and every guarded
//!   write of a run (a worker that lost its lease changes nothing).
//! - [`worker`]: the slots of one process, and the loop that works one run.
//! - [`step`]: one step attempt: condition, templates, the call, its outcome.
//! - [`plan`]: a flow's steps parsed and checked, before queueing and before working.
//! - [`expressions`]: CEL conditions and `{{ }}` templates.
//! - [`outbound`]: the one HTTP client, with the address guard.
//! - [`auth`]: a tool's credentials on its calls, OAuth 2 tokens, and their redaction.

pub mod auth;
pub mod expressions;
pub mod outbound;
pub mod plan;
pub mod queue;
pub mod step;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// In-process signals between the API and the local workers. They only make things sooner:
/// the database stays the truth, and workers and event streams in other processes find the
/// same changes by polling.
#[derive(Clone, Default)]
pub struct Signals {
    inner: Arc<SignalsInner>,
}

#[derive(Default)]
struct SignalsInner {
    /// A run was queued (or became due): a waiting worker claims at once.
    queued: Notify,
    /// Events were written: waiting event streams read at once.
    events: Notify,
    /// Runs this process works, by run and claim token, each with the signal that cancels it.
    /// The token is part of the key because one process may hold a run twice for a moment: a
    /// claim that took it over after its old lease ran out, while the old work winds down.
    working: Mutex<HashMap<(Uuid, String), watch::Sender<bool>>>,
}

impl Signals {
    /// Tells the local workers that a run can be claimed.
    pub fn queued(&self) {
        self.inner.queued.notify_one();
    }

    /// Waits until [`Self::queued`] is called (a call made before the wait counts too).
    pub async fn wait_queued(&self) {
        self.inner.queued.notified().await;
    }

    /// Tells the local event streams that events were written.
    pub fn events_written(&self) {
        self.inner.events.notify_waiters();
    }

    /// The signal of the next [`Self::events_written`]; create it before reading, so that
    /// nothing written in between is missed.
    pub fn next_events(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.events.notified()
    }

    /// Asks this process's worker of `run_id`, if it has one, to stop the run now, abandoning
    /// its in-flight call.
    pub fn cancel(&self, run_id: Uuid) {
        for ((id, _), signal) in self.lock_working().iter() {
            if *id == run_id {
                signal.send_replace(true);
            }
        }
    }

    /// Registers a run this process works under the claim `token`; the receiver turns true on
    /// [`Self::cancel`].
    pub(crate) fn working(&self, run_id: Uuid, token: &str) -> watch::Receiver<bool> {
        let (signal, cancelled) = watch::channel(false);
        self.lock_working()
            .insert((run_id, token.to_owned()), signal);
        cancelled
    }

    /// The run is no longer worked here under `token`.
    pub(crate) fn done(&self, run_id: Uuid, token: &str) {
        self.lock_working().remove(&(run_id, token.to_owned()));
    }

    fn lock_working(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(Uuid, String), watch::Sender<bool>>> {
        lock(&self.inner.working)
    }
}

/// Locks `map`; a panic while it was held leaves it usable: the executor's maps only have
/// entries added and removed, never half-changed.
pub(crate) fn lock<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
