//! The workers of one process: a dispatcher that claims due runs for its free slots, and the
//! loop that works one claimed run step by step.
//!
//! The dispatcher polls with an interval that starts short and doubles while the queue is
//! empty, and wakes at once when this process queues a run ([`Signals::queued`]). It also
//! rescues runs whose lease ran out. On shutdown it stops claiming; each run stops after its
//! in-flight step and goes back to the queue, and what is still working when the shutdown
//! timeout ends is abandoned and given back too, so no run waits out a lease after a clean
//! stop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use entity::run;
use sea_orm::DbErr;
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::auth::TokenCache;
use super::expressions::Scope;
use super::outbound::{OutboundClient, OutboundConfig};
use super::plan::{Plan, Step};
use super::queue::{self, Event, Lease, LogWrite, Transition};
use super::step::{self, Failure, Prepared};
use super::{lock, Signals};
use crate::config::RunSettings;
use crate::credentials::Keyring;
use crate::db::Pool;
use crate::service::now;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::otlp;
use crate::telemetry::trace_context::{TraceContext, TRACEPARENT};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use std::time::SystemTime;

/// The shortest and the longest wait between two claims that found nothing.
const IDLE_POLL: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(1000));

/// After this many claims of a run in a row whose work ended in a database error, the run is
/// failed (kind `internal`) instead of being given back again: a write that the database
/// refuses for what it holds would refuse it for ever.
const MAX_STORAGE_FAILURES: u32 = 5;

/// How a worker's hold on a run stands, as the lease keeper last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseState {
    Held,
    /// Held, and someone asked (perhaps through another process) to cancel the run.
    CancelRequested,
    /// Taken over, or not renewed in time: the worker must stop writing and let go.
    Lost,
}

/// Everything a worker needs; shared by the slots of a process.
pub struct Executor {
    db: Pool,
    client: OutboundClient,
    settings: RunSettings,
    signals: Signals,
    /// Leases this process holds, by run and claim token, to give back those a shutdown
    /// abandons.
    held: Mutex<HashMap<(uuid::Uuid, String), Lease>>,
    /// Runs whose last works here ended in a database error, and how many in a row.
    storage_failures: Mutex<HashMap<uuid::Uuid, u32>>,
    /// Opens the tools' credentials for the calls.
    keyring: Arc<Keyring>,
    /// OAuth 2 access tokens by tool, fetched one at a time.
    tokens: TokenCache,
    /// Step attempts and finished runs are counted here.
    metrics: Metrics,
}

impl Executor {
    /// An executor on `db` with the process's one outbound client.
    pub fn new(
        db: Pool,
        settings: &RunSettings,
        signals: Signals,
        keyring: Arc<Keyring>,
        metrics: Metrics,
    ) -> Result<Arc<Self>, String> {
        let client = OutboundClient::new(OutboundConfig {
            allow_private: settings.allow_private,
            max_response_bytes: settings.max_response_bytes,
        })?;
        Ok(Arc::new(Self {
            db,
            client,
            settings: settings.clone(),
            signals,
            held: Mutex::new(HashMap::new()),
            storage_failures: Mutex::new(HashMap::new()),
            keyring,
            tokens: TokenCache::default(),
            metrics,
        }))
    }

    /// Works runs in `WORKERS` slots until `stop` turns true, then shuts down within
    /// `shutdown_timeout` as the module says.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, shutdown_timeout: Duration) {
        let slots = Arc::new(Semaphore::new(self.settings.workers));
        let mut working = JoinSet::new();
        let mut idle = IDLE_POLL.0;
        let mut rescued_at: Option<Instant> = None;
        tracing::info!(slots = self.settings.workers, "workers started");
        while !*stop.borrow() {
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = stop.changed() => break,
            };
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            if rescued_at.is_none_or(|at| at.elapsed() >= self.settings.lease / 2) {
                rescued_at = Some(Instant::now());
                match queue::rescue(&self.db).await {
                    Ok(0) => {}
                    Ok(count) => tracing::warn!(count, "took back runs whose lease ran out"),
                    Err(err) => tracing::warn!(error = %err, "rescuing runs failed"),
                }
            }
            let wanted = permits.len();
            let claimed = match queue::claim(
                &self.db,
                wanted as u64,
                self.settings.lease,
                self.settings.run_timeout,
            )
            .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "claiming runs failed");
                    Vec::new()
                }
            };
            let got = claimed.len();
            for ((lease, run), permit) in claimed.into_iter().zip(permits) {
                let executor = self.clone();
                let stop = stop.clone();
                // The run's log lines carry the trace of the request that started it.
                let trace = run.traceparent.as_deref().and_then(TraceContext::parse);
                let span = tracing::info_span!(
                    "run",
                    run_id = %run.id,
                    trace_id = trace.map(|trace| trace.trace_id_hex()),
                );
                working.spawn(
                    async move {
                        executor.work(lease, run, trace, stop).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            while working.try_join_next().is_some() {}
            if got == wanted {
                idle = IDLE_POLL.0;
                continue;
            }
            if got > 0 {
                idle = IDLE_POLL.0;
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => {},
                _ = self.signals.wait_queued() => {},
                _ = stop.changed() => {},
            }
            idle = (idle * 2).min(IDLE_POLL.1);
        }
        tracing::info!(working = working.len(), "workers stopping");
        let finished = tokio::time::timeout(shutdown_timeout, async {
            while working.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            // Taken before the abort: an aborted run's guard removes its lease from `held`.
            // A run that finishes in between is not given back twice: release is guarded by
            // the lease, which finishing ended.
            let abandoned: Vec<Lease> = lock(&self.held).values().cloned().collect();
            working.abort_all();
            while working.join_next().await.is_some() {}
            for lease in abandoned {
                if let Err(err) = queue::release(&self.db, &lease, now()).await {
                    tracing::warn!(run_id = %lease.run_id, error = %err, "giving back a run failed");
                }
            }
        }
        tracing::info!("workers stopped");
    }

    /// Works one claimed run until it finishes, waits for a retry, loses its lease or the
    /// process stops. A lease keeper renews the lease every third of its length meanwhile.
    async fn work(
        self: Arc<Self>,
        lease: Lease,
        run: run::Model,
        trace: Option<TraceContext>,
        stop: watch::Receiver<bool>,
    ) {
        let run_id = run.id;
        let _registered = Registered::new(&self, &lease);
        let (state, lease_state) = watch::channel(LeaseState::Held);
        let keeper = tokio::spawn(keep_lease(self.clone(), lease.clone(), state));
        let mut work = RunWork {
            executor: &self,
            lease: &lease,
            results: run.step_results.as_object().cloned().unwrap_or_default(),
            cancel_requested: run.cancel_requested,
            run,
            cancelled: self.signals.working(run_id, &lease.token),
            lease_state,
            stop,
            trace,
        };
        let worked = work.drive().await;
        keeper.abort();
        match worked {
            Ok(()) => {
                lock(&self.storage_failures).remove(&run_id);
            }
            Err(err) => self.storage_failed(&lease, err).await,
        }
    }

    /// The run's work ended in a database error: it goes back to the queue after a delay that
    /// grows with each such end in a row, and after [`MAX_STORAGE_FAILURES`] it is failed.
    async fn storage_failed(&self, lease: &Lease, err: DbErr) {
        let run_id = lease.run_id;
        let failures = {
            let mut failing = lock(&self.storage_failures);
            let count = failing.entry(run_id).or_default();
            *count += 1;
            *count
        };
        tracing::warn!(%run_id, error = %err, failures, "working a run failed on the database");
        if failures >= MAX_STORAGE_FAILURES {
            let error = json!({
                "stepId": null,
                "kind": "internal",
                "message": "the run's progress could not be stored; the server log says why",
            });
            let transition = Transition {
                finish: Some(("failed", Some(error.clone()))),
                events: vec![run_event("failed", Some(error))],
                ..Default::default()
            };
            let counted = Counted::of(&transition);
            let failed = queue::apply(&self.db, lease, transition).await;
            if let Ok(Some(_)) = failed {
                counted.record(&self.metrics);
            }
            if failed.is_ok() {
                lock(&self.storage_failures).remove(&run_id);
                self.signals.events_written();
                return;
            }
        }
        let delay = Duration::from_secs(1 << failures.min(6)).min(Duration::from_secs(60));
        if let Err(err) = queue::release(&self.db, lease, queue::later(now(), delay)).await {
            tracing::warn!(%run_id, error = %err, "giving back a run failed");
        }
    }
}

/// A run's entries in the process's maps while it is worked, removed when the work ends, even
/// by a panic.
struct Registered<'a> {
    executor: &'a Executor,
    run_id: uuid::Uuid,
    token: String,
}

impl<'a> Registered<'a> {
    fn new(executor: &'a Executor, lease: &Lease) -> Self {
        let key = (lease.run_id, lease.token.clone());
        lock(&executor.held).insert(key, lease.clone());
        Self {
            executor,
            run_id: lease.run_id,
            token: lease.token.clone(),
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.executor.signals.done(self.run_id, &self.token);
        lock(&self.executor.held).remove(&(self.run_id, std::mem::take(&mut self.token)));
    }
}

/// Renews `lease` every third of its length until the lease is lost or the task is aborted,
/// telling the run's work through `state`. A failed renewal is tried again at the next tick;
/// only when the lease would run out before that tick does the worker give up.
async fn keep_lease(executor: Arc<Executor>, lease: Lease, state: watch::Sender<LeaseState>) {
    let every = lease.length / 3;
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match queue::renew(&executor.db, &lease).await {
            Ok(None) => {
                state.send_replace(LeaseState::Lost);
                return;
            }
            Ok(Some(cancel_requested)) => {
                renewed = Instant::now();
                if cancel_requested {
                    state.send_if_modified(|now| {
                        let changed = *now == LeaseState::Held;
                        *now = LeaseState::CancelRequested;
                        changed
                    });
                }
            }
            Err(err) => {
                tracing::warn!(run_id = %lease.run_id, error = %err, "renewing a lease failed");
                if renewed.elapsed() + every >= lease.length {
                    state.send_replace(LeaseState::Lost);
                    return;
                }
            }
        }
    }
}

/// One claimed run being worked.
struct RunWork<'a> {
    executor: &'a Executor,
    lease: &'a Lease,
    run: run::Model,
    results: Map<String, Value>,
    cancel_requested: bool,
    /// Turns true when this process is asked to cancel the run.
    cancelled: watch::Receiver<bool>,
    lease_state: watch::Receiver<LeaseState>,
    stop: watch::Receiver<bool>,
    /// The run's trace: each call is a new span of it.
    trace: Option<TraceContext>,
}

/// How a step's call ended, seen from the run.
enum CallEnd {
    Answered(Result<Value, Failure>),
    Cancelled,
    LeaseLost,
}

impl RunWork<'_> {
    async fn drive(&mut self) -> Result<(), DbErr> {
        let plan = match Plan::parse(&self.run.steps) {
            Ok(plan) => plan,
            Err(err) => {
                let failure = Failure::permanent("invalid_input", err.message.clone());
                return self.finish_failed(None, &failure, None, Vec::new()).await;
            }
        };
        let mut index = self.run.step_index.max(0) as usize;
        let mut begun = self.run.step_attempt.max(0) as u32;
        if begun > 0 {
            if let Some(step) = plan.steps.get(index) {
                let lost = self.lost_attempt(step, begun).await?;
                let failure = Failure::permanent(
                    "worker_lost",
                    "the worker of this attempt stopped before it ended",
                );
                if begun >= step.max_attempts {
                    if !self.step_failed(step, index, begun, lost, &failure).await? {
                        return Ok(());
                    }
                    index += 1;
                    begun = 0;
                } else if let Some(log) = lost {
                    if !self.attempt_lost(step, begun, log, &failure).await? {
                        return Ok(());
                    }
                }
            }
        }
        loop {
            if self.lease_lost() {
                return Ok(());
            }
            if self.cancel_requested || *self.cancelled.borrow() {
                return self.finish_cancelled(None, Vec::new()).await;
            }
            let Some(step) = plan.steps.get(index) else {
                return self.finish_completed().await;
            };
            if *self.stop.borrow() {
                queue::release(&self.executor.db, self.lease, now()).await?;
                return Ok(());
            }
            if self
                .run
                .deadline_at
                .is_some_and(|deadline| Utc::now() >= deadline)
            {
                let failure = Failure::permanent(
                    "run_timeout",
                    format!(
                        "the run did not finish within RUN_TIMEOUT_SECS ({} s)",
                        self.executor.settings.run_timeout.as_secs()
                    ),
                );
                return self
                    .finish_failed(Some(&step.id), &failure, None, Vec::new())
                    .await;
            }
            let attempt = begun + 1;
            let scope = self.scope();
            let executor = self.executor;
            let prepared = step::prepare(
                &executor.db,
                &executor.keyring,
                self.lease.org_id,
                step,
                &scope,
            )
            .await?;
            let (request, auth, inputs) = match prepared {
                Prepared::Skipped => {
                    if !self.step_skipped(step, index).await? {
                        return Ok(());
                    }
                    index += 1;
                    begun = 0;
                    continue;
                }
                Prepared::Failed(failure) => {
                    if !self
                        .step_failed(step, index, attempt, None, &failure)
                        .await?
                    {
                        return Ok(());
                    }
                    index += 1;
                    begun = 0;
                    continue;
                }
                Prepared::Call {
                    request,
                    auth,
                    inputs,
                } => (request, auth, inputs),
            };
            let log = queue::log_row(&self.run, &step.id, attempt as i32, "running", inputs);
            let log_id = *log.id.as_ref();
            let began = self
                .apply(Transition {
                    step_attempt: Some(attempt as i32),
                    log: Some(LogWrite::Insert(Box::new(log))),
                    events: vec![step_event(step, attempt, "running", json!({}))],
                    ..Default::default()
                })
                .await?;
            if !began {
                return Ok(());
            }
            let started = Instant::now();
            let mut request = request;
            let call_span = self.trace.map(|trace| trace.child());
            if let Some(span) = call_span {
                // Ours wins over a traceparent the action's headers name.
                request
                    .headers
                    .retain(|(name, _)| !name.eq_ignore_ascii_case(TRACEPARENT));
                request
                    .headers
                    .push((TRACEPARENT.to_owned(), span.to_header()));
            }
            let method = request.method.clone();
            if let Some(deadline) = self.run.deadline_at {
                let left = (deadline - Utc::now()).to_std().unwrap_or_default();
                request.timeout = request.timeout.min(left.max(Duration::from_millis(1)));
            }
            let end = self.call(request, auth.as_ref()).await;
            let duration_ms = started.elapsed().as_millis() as i64;
            if let (Some(span), Some(parent)) = (call_span, self.trace) {
                self.export_call_span(span, parent.span_id, method, step, attempt, &end, started);
            }
            match end {
                CallEnd::LeaseLost => return Ok(()),
                CallEnd::Cancelled => {
                    let failure = Failure::permanent("cancelled", "the run was cancelled");
                    let log = LogWrite::Finish {
                        id: log_id,
                        status: "cancelled",
                        outputs: None,
                        error: Some(failure.to_json()),
                        duration_ms,
                    };
                    let event = step_event(
                        step,
                        attempt,
                        "cancelled",
                        json!({"durationMs": duration_ms}),
                    );
                    return self.finish_cancelled(Some(log), vec![event]).await;
                }
                CallEnd::Answered(Ok(output)) => {
                    self.results.insert(
                        step.id.clone(),
                        json!({"status": "completed", "output": output}),
                    );
                    let held = self
                        .apply(Transition {
                            step_index: Some(index as i32 + 1),
                            step_attempt: Some(0),
                            step_results: Some(Value::Object(self.results.clone())),
                            log: Some(LogWrite::Finish {
                                id: log_id,
                                status: "completed",
                                outputs: Some(step::for_log(&output)),
                                error: None,
                                duration_ms,
                            }),
                            events: vec![step_event(
                                step,
                                attempt,
                                "completed",
                                json!({"durationMs": duration_ms}),
                            )],
                            ..Default::default()
                        })
                        .await?;
                    if !held {
                        return Ok(());
                    }
                    index += 1;
                    begun = 0;
                }
                CallEnd::Answered(Err(failure)) => {
                    let finished = Some((log_id, duration_ms));
                    if failure.retryable && attempt < step.max_attempts {
                        let delay = step.retry_delay(attempt, failure.retry_after);
                        return self
                            .retry_later(step, attempt, finished, &failure, delay)
                            .await;
                    }
                    if !self
                        .step_failed(step, index, attempt, finished, &failure)
                        .await?
                    {
                        return Ok(());
                    }
                    index += 1;
                    begun = 0;
                }
            }
        }
    }

    /// The client span of one call a step made (its `traceparent` went with the call), a child
    /// of the request that started the run; failed with the error's kind, never its text.
    #[allow(clippy::too_many_arguments)]
    fn export_call_span(
        &self,
        span: TraceContext,
        parent: u64,
        method: String,
        step: &Step,
        attempt: u32,
        end: &CallEnd,
        started: Instant,
    ) {
        if !otlp::enabled() {
            return;
        }
        let (outcome, error) = match end {
            CallEnd::Answered(Ok(_)) => ("completed", None),
            CallEnd::Answered(Err(failure)) => ("failed", Some(failure.kind.to_owned())),
            CallEnd::Cancelled => ("cancelled", None),
            CallEnd::LeaseLost => ("lease_lost", None),
        };
        let finished = SystemTime::now();
        otlp::record(otlp::Finished {
            context: span,
            parent: Some((parent, false)),
            name: format!("{method} step {}", step.id).into(),
            kind: SpanKind::Client,
            start: finished.checked_sub(started.elapsed()).unwrap_or(finished),
            end: finished,
            attributes: vec![
                KeyValue::new("http.request.method", method),
                KeyValue::new("tolstoy.run.id", self.run.id.to_string()),
                KeyValue::new("tolstoy.step.id", step.id.clone()),
                KeyValue::new("tolstoy.step.attempt", i64::from(attempt)),
                KeyValue::new("tolstoy.step.outcome", outcome),
            ],
            error,
        });
    }

    /// What the step's expressions see.
    fn scope(&self) -> Scope {
        Scope {
            inputs: self.run.inputs.clone(),
            steps: Value::Object(self.results.clone()),
            run: json!({"id": self.run.id, "flowId": self.run.flow_id}),
        }
    }

    /// Whether the lease keeper saw the lease lost; a cancel request it saw is noted.
    fn lease_lost(&mut self) -> bool {
        match *self.lease_state.borrow() {
            LeaseState::Held => false,
            LeaseState::CancelRequested => {
                self.cancel_requested = true;
                false
            }
            LeaseState::Lost => true,
        }
    }

    /// Makes the call, and abandons it when the run is cancelled (here or, seen by the lease
    /// keeper, in another process) or the lease is lost.
    async fn call(
        &mut self,
        request: super::outbound::OutboundRequest,
        auth: Option<&super::auth::Auth>,
    ) -> CallEnd {
        let executor = self.executor;
        let answer = super::auth::call(&executor.client, &executor.tokens, request, auth);
        tokio::pin!(answer);
        let mut cancel_signal_open = true;
        loop {
            tokio::select! {
                result = &mut answer => return CallEnd::Answered(result),
                changed = self.lease_state.changed() => {
                    // A keeper that ended without saying so (a panic) renews nothing.
                    if changed.is_err() || self.lease_lost() {
                        return CallEnd::LeaseLost;
                    }
                    if self.cancel_requested {
                        return CallEnd::Cancelled;
                    }
                }
                changed = self.cancelled.changed(), if cancel_signal_open => match changed {
                    Ok(()) if *self.cancelled.borrow() => return CallEnd::Cancelled,
                    Ok(()) => {}
                    Err(_) => cancel_signal_open = false,
                },
            }
        }
    }

    /// The log of attempt `attempt` of `step` and how long ago it began, when it still says
    /// `running`: its worker died or was stopped mid-call.
    async fn lost_attempt(
        &self,
        step: &Step,
        attempt: u32,
    ) -> Result<Option<(uuid::Uuid, i64)>, DbErr> {
        let db = &self.executor.db;
        let log = queue::unfinished_attempt(db, self.lease, &step.id, attempt as i32).await?;
        Ok(log.map(|log| (log.id, (now() - log.created_at).num_milliseconds().max(0))))
    }

    /// Ends the log of lost attempt `attempt`, which another attempt follows. `false` when the
    /// lease is gone.
    async fn attempt_lost(
        &mut self,
        step: &Step,
        attempt: u32,
        (id, duration_ms): (uuid::Uuid, i64),
        failure: &Failure,
    ) -> Result<bool, DbErr> {
        self.apply(Transition {
            log: Some(LogWrite::Finish {
                id,
                status: "failed",
                outputs: None,
                error: Some(failure.to_json()),
                duration_ms,
            }),
            events: vec![step_event(
                step,
                attempt,
                "failed",
                json!({"error": failure.to_json()}),
            )],
            ..Default::default()
        })
        .await
    }

    async fn step_skipped(&mut self, step: &Step, index: usize) -> Result<bool, DbErr> {
        self.results.insert(
            step.id.clone(),
            json!({"status": "skipped", "output": null}),
        );
        let log = queue::log_row(&self.run, &step.id, 1, "skipped", json!({}));
        self.apply(Transition {
            step_index: Some(index as i32 + 1),
            step_attempt: Some(0),
            step_results: Some(Value::Object(self.results.clone())),
            log: Some(LogWrite::Insert(Box::new(log))),
            events: vec![step_event(step, 1, "skipped", json!({}))],
            ..Default::default()
        })
        .await
    }

    /// The step failed for good: the run goes on past it (`continueOnError`) or fails. `log`
    /// is the attempt's row and its duration when a call was made; otherwise a row is written.
    /// `true` when the run goes on to the next step.
    async fn step_failed(
        &mut self,
        step: &Step,
        index: usize,
        attempt: u32,
        log: Option<(uuid::Uuid, i64)>,
        failure: &Failure,
    ) -> Result<bool, DbErr> {
        let duration_ms = log.map_or(0, |(_, ms)| ms);
        let log = self.failed_log(step, attempt, log, failure);
        let event = step_event(
            step,
            attempt,
            "failed",
            json!({"durationMs": duration_ms, "error": failure.to_json()}),
        );
        if !step.continue_on_error {
            self.finish_failed(Some(&step.id), failure, Some(log), vec![event])
                .await?;
            return Ok(false);
        }
        self.results.insert(
            step.id.clone(),
            json!({"status": "failed", "output": failure.output}),
        );
        self.apply(Transition {
            step_index: Some(index as i32 + 1),
            step_attempt: Some(0),
            step_results: Some(Value::Object(self.results.clone())),
            log: Some(log),
            events: vec![event],
            ..Default::default()
        })
        .await
    }

    /// The failed attempt's log: the end of the row written when the call began, or a new row
    /// when no call was made.
    fn failed_log(
        &self,
        step: &Step,
        attempt: u32,
        log: Option<(uuid::Uuid, i64)>,
        failure: &Failure,
    ) -> LogWrite {
        let outputs = failure.output.as_ref().map(step::for_log);
        match log {
            Some((id, duration_ms)) => LogWrite::Finish {
                id,
                status: "failed",
                outputs,
                error: Some(failure.to_json()),
                duration_ms,
            },
            None => {
                let mut row =
                    queue::log_row(&self.run, &step.id, attempt as i32, "failed", json!({}));
                row.error = sea_orm::Set(Some(failure.to_json()));
                row.duration_ms = sea_orm::Set(Some(0));
                LogWrite::Insert(Box::new(row))
            }
        }
    }

    /// The attempt failed and another may succeed: the run goes back to the queue, due after
    /// `delay`, and a local worker is woken then.
    async fn retry_later(
        &mut self,
        step: &Step,
        attempt: u32,
        log: Option<(uuid::Uuid, i64)>,
        failure: &Failure,
        delay: Duration,
    ) -> Result<(), DbErr> {
        let duration_ms = log.map_or(0, |(_, ms)| ms);
        let log = self.failed_log(step, attempt, log, failure);
        let due = queue::later(now(), delay);
        let released = self
            .apply(Transition {
                release_at: Some(due),
                log: Some(log),
                events: vec![step_event(
                    step,
                    attempt,
                    "failed",
                    json!({
                        "durationMs": duration_ms,
                        "error": failure.to_json(),
                        "retryInMs": delay.as_millis() as u64,
                    }),
                )],
                ..Default::default()
            })
            .await?;
        if released {
            let signals = self.executor.signals.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                signals.queued();
            });
        }
        Ok(())
    }

    async fn finish_completed(&mut self) -> Result<(), DbErr> {
        self.apply(Transition {
            finish: Some(("completed", None)),
            events: vec![run_event("completed", None)],
            ..Default::default()
        })
        .await
        .map(drop)
    }

    async fn finish_failed(
        &mut self,
        step_id: Option<&str>,
        failure: &Failure,
        log: Option<LogWrite>,
        mut events: Vec<Event>,
    ) -> Result<(), DbErr> {
        let error = json!({"stepId": step_id, "message": failure.message, "kind": failure.kind});
        events.push(run_event("failed", Some(error.clone())));
        self.apply(Transition {
            finish: Some(("failed", Some(error))),
            log,
            events,
            ..Default::default()
        })
        .await
        .map(drop)
    }

    async fn finish_cancelled(
        &mut self,
        log: Option<LogWrite>,
        mut events: Vec<Event>,
    ) -> Result<(), DbErr> {
        events.push(run_event("cancelled", None));
        self.apply(Transition {
            finish: Some(("cancelled", None)),
            log,
            events,
            ..Default::default()
        })
        .await
        .map(drop)
    }

    /// Writes `transition` under the lease; `false` when the lease is gone. A cancel request
    /// that arrived meanwhile is noticed here.
    async fn apply(&mut self, transition: Transition) -> Result<bool, DbErr> {
        let counted = Counted::of(&transition);
        let applied = queue::apply(&self.executor.db, self.lease, transition).await?;
        Ok(match applied {
            Some(run) => {
                counted.record(&self.executor.metrics);
                self.executor.signals.events_written();
                self.cancel_requested = run.cancel_requested;
                true
            }
            None => false,
        })
    }
}

/// What a transition adds to the metrics once written: the step attempts it ends (status and
/// duration) and the run's final status.
struct Counted {
    attempts: Vec<(&'static str, Duration)>,
    finished: Option<&'static str>,
}

impl Counted {
    fn of(transition: &Transition) -> Self {
        let attempts = transition
            .events
            .iter()
            .filter(|event| event.kind == "step" && event.status != "running")
            .map(|event| {
                let ms = event.data["durationMs"].as_u64().unwrap_or(0);
                (event.status, Duration::from_millis(ms))
            })
            .collect();
        Self {
            attempts,
            finished: transition.finish.as_ref().map(|(status, _)| *status),
        }
    }

    fn record(self, metrics: &Metrics) {
        for (status, took) in self.attempts {
            metrics.step_attempt(status, took);
        }
        if let Some(status) = self.finished {
            metrics.run_finished(status);
        }
    }
}

fn step_event(step: &Step, attempt: u32, status: &'static str, data: Value) -> Event {
    Event {
        kind: "step",
        step_id: Some(step.id.clone()),
        attempt: Some(attempt as i32),
        status,
        data,
    }
}

fn run_event(status: &'static str, error: Option<Value>) -> Event {
    Event {
        kind: "run",
        step_id: None,
        attempt: None,
        status,
        data: json!({"error": error}),
    }
}
