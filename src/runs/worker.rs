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

use super::expressions::Scope;
use super::outbound::{OutboundClient, OutboundConfig};
use super::plan::{Plan, Step};
use super::queue::{self, Event, Lease, LogWrite, Transition};
use super::step::{self, Failure, Prepared};
use super::Signals;
use crate::config::RunSettings;
use crate::db::Pool;
use crate::service::now;

/// The shortest and the longest wait between two claims that found nothing.
const IDLE_POLL: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(1000));

/// Everything a worker needs; shared by the slots of a process.
pub struct Executor {
    db: Pool,
    client: OutboundClient,
    settings: RunSettings,
    signals: Signals,
    /// Leases this process holds, to give back those a shutdown abandons.
    held: Mutex<HashMap<uuid::Uuid, Lease>>,
}

impl Executor {
    /// An executor on `db` with the process's one outbound client.
    pub fn new(db: Pool, settings: &RunSettings, signals: Signals) -> Result<Arc<Self>, String> {
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
                working.spawn(async move {
                    executor.work(lease, run, stop).await;
                    drop(permit);
                });
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
            working.abort_all();
            while working.join_next().await.is_some() {}
            let abandoned: Vec<Lease> = self.lock_held().drain().map(|(_, l)| l).collect();
            for lease in abandoned {
                if let Err(err) = queue::release(&self.db, &lease, now()).await {
                    tracing::warn!(run_id = %lease.run_id, error = %err, "giving back a run failed");
                }
            }
        }
        tracing::info!("workers stopped");
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<uuid::Uuid, Lease>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Works one claimed run until it finishes, waits for a retry, loses its lease or the
    /// process stops.
    async fn work(self: Arc<Self>, lease: Lease, run: run::Model, stop: watch::Receiver<bool>) {
        let run_id = run.id;
        self.lock_held().insert(run_id, lease.clone());
        let cancelled = self.signals.working(run_id);
        let mut work = RunWork {
            executor: &self,
            lease: &lease,
            results: run.step_results.as_object().cloned().unwrap_or_default(),
            cancel_requested: run.cancel_requested,
            run,
            cancelled,
            stop,
        };
        if let Err(err) = work.drive().await {
            tracing::warn!(%run_id, error = %err, "working a run failed; giving it back");
            if let Err(err) = queue::release(&self.db, &lease, now()).await {
                tracing::warn!(%run_id, error = %err, "giving back a run failed");
            }
        }
        self.signals.done(run_id);
        self.lock_held().remove(&run_id);
    }
}

/// One claimed run being worked.
struct RunWork<'a> {
    executor: &'a Executor,
    lease: &'a Lease,
    run: run::Model,
    results: Map<String, Value>,
    cancel_requested: bool,
    cancelled: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
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
                if !self.count_lost_attempt(step, begun).await? {
                    return Ok(());
                }
                if begun >= step.max_attempts {
                    let failure = Failure::permanent(
                        "worker_lost",
                        "the worker of the step's last attempt stopped before it ended",
                    );
                    if !self.step_failed(step, index, begun, None, &failure).await? {
                        return Ok(());
                    }
                    index += 1;
                    begun = 0;
                }
            }
        }
        loop {
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
            let prepared =
                step::prepare(&self.executor.db, self.lease.org_id, step, &scope).await?;
            let (request, inputs) = match prepared {
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
                Prepared::Call { request, inputs } => (request, inputs),
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
            if let Some(deadline) = self.run.deadline_at {
                let left = (deadline - Utc::now()).to_std().unwrap_or_default();
                request.timeout = request.timeout.min(left.max(Duration::from_millis(1)));
            }
            let end = self.call(request).await?;
            let duration_ms = started.elapsed().as_millis() as i64;
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

    /// What the step's expressions see.
    fn scope(&self) -> Scope {
        Scope {
            inputs: self.run.inputs.clone(),
            steps: Value::Object(self.results.clone()),
            run: json!({"id": self.run.id, "flowId": self.run.flow_id}),
        }
    }

    /// Makes the call while renewing the lease, and abandons it when the run is cancelled (here
    /// or, seen at a renewal, in another process) or the lease is lost.
    async fn call(&mut self, request: super::outbound::OutboundRequest) -> Result<CallEnd, DbErr> {
        let client = self.executor.client.clone();
        let answer = client.send(request);
        tokio::pin!(answer);
        let length = self.executor.settings.lease;
        let mut renewal =
            tokio::time::interval_at(tokio::time::Instant::now() + length / 3, length / 3);
        loop {
            tokio::select! {
                result = &mut answer => return Ok(CallEnd::Answered(step::outcome(result))),
                _ = renewal.tick() => {
                    match queue::renew(&self.executor.db, self.lease, length).await? {
                        None => return Ok(CallEnd::LeaseLost),
                        Some(true) => return Ok(CallEnd::Cancelled),
                        Some(false) => {}
                    }
                }
                changed = self.cancelled.changed() => {
                    if changed.is_ok() && *self.cancelled.borrow() {
                        return Ok(CallEnd::Cancelled);
                    }
                }
            }
        }
    }

    /// Marks attempt `attempt` of `step` as lost when its log still says `running`: its worker
    /// died or was stopped mid-call. `false` when the lease is gone.
    async fn count_lost_attempt(&mut self, step: &Step, attempt: u32) -> Result<bool, DbErr> {
        let db = &self.executor.db;
        let Some(log) = queue::unfinished_attempt(db, self.lease, &step.id, attempt as i32).await?
        else {
            return Ok(true);
        };
        let failure = Failure::permanent(
            "worker_lost",
            "the worker of this attempt stopped before it ended",
        );
        let duration_ms = (now() - log.created_at).num_milliseconds().max(0);
        self.apply(Transition {
            log: Some(LogWrite::Finish {
                id: log.id,
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
        let applied = queue::apply(&self.executor.db, self.lease, transition).await?;
        Ok(match applied {
            Some(run) => {
                self.executor.signals.events_written();
                self.cancel_requested = run.cancel_requested;
                true
            }
            None => false,
        })
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
