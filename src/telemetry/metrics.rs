//! The numbers `/metrics` serves (OpenMetrics text, which Prometheus scrapes): counters and
//! histograms kept as things happen, and gauges read at each scrape.
//!
//! Labels name route templates (`/tools/{id}`), never raw paths: no id, name or other value a
//! caller chose ever becomes a label, so the number of series stays fixed.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::db::PoolUsage;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets, in seconds: 1 ms to 10 s.
const REQUEST_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Step durations, in seconds: 5 ms to 5 minutes.
const STEP_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    /// The route template, or `unmatched` for a path no route has.
    route: &'static str,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    /// `busy` or `idle`.
    state: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

/// The registry of one application (tests build many in one process; each has its own).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
    rate_limited: Family<RouteLabels, Counter>,
    pruned_rows: Family<TableLabels, Counter>,
    exported_rows: Family<TableLabels, Counter>,
    step_seconds: Histograms<StatusLabels>,
    step_attempts: Family<StatusLabels, Counter>,
    runs_finished: Family<StatusLabels, Counter>,
    pool_max: Gauge,
    pool_connections: Family<ConnectionLabels, Gauge>,
    pool_waiting: Gauge,
    runs: Family<StatusLabels, Gauge>,
    queue_depth: Gauge,
    queue_lag_seconds: Gauge<f64, AtomicU64>,
    database_up: Gauge,
}

/// What a scrape reads from the pool and the database.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub pool: PoolUsage,
    /// `None` when the database did not answer.
    pub queue: Option<QueueSnapshot>,
}

/// The runs that have not finished, read at a scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QueueSnapshot {
    pub queued: u64,
    pub running: u64,
    /// Queued runs that are due now.
    pub due: u64,
    /// How long the oldest due run has waited.
    pub lag: Duration,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tolstoy");
        let requests = register(
            &mut registry,
            "http_requests",
            "HTTP requests answered, by method, route template and status class",
            Family::default(),
        );
        let request_seconds: Histograms<RouteLabels> = register(
            &mut registry,
            "http_request_duration_seconds",
            "Time from a request's arrival to its response, by method and route template",
            Family::new_with_constructor(request_histogram),
        );
        let rate_limited = register(
            &mut registry,
            "rate_limited",
            "Requests refused with 429 by a rate limit, by method and route template",
            Family::default(),
        );
        let pruned_rows = register(
            &mut registry,
            "pruned_rows",
            "Rows deleted by retention, by table",
            Family::default(),
        );
        let exported_rows = register(
            &mut registry,
            "exported_rows",
            "Rows written by exports (GET …/export), by table",
            Family::default(),
        );
        let step_seconds: Histograms<StatusLabels> = register(
            &mut registry,
            "step_duration_seconds",
            "Time of one step attempt, by its outcome",
            Family::new_with_constructor(step_histogram),
        );
        let step_attempts = register(
            &mut registry,
            "step_attempts",
            "Step attempts made, by outcome",
            Family::default(),
        );
        let runs_finished = register(
            &mut registry,
            "runs_finished",
            "Runs this process finished, by final status",
            Family::default(),
        );
        let pool_max = register(
            &mut registry,
            "db_pool_max_connections",
            "The most database connections the pool opens",
            Gauge::default(),
        );
        let pool_connections = register(
            &mut registry,
            "db_pool_connections",
            "Open database connections, busy or idle",
            Family::default(),
        );
        let pool_waiting = register(
            &mut registry,
            "db_pool_waiting",
            "Requests waiting for a database connection",
            Gauge::default(),
        );
        let runs = register(
            &mut registry,
            "runs",
            "Runs that have not finished, by status, all organizations",
            Family::default(),
        );
        let queue_depth = register(
            &mut registry,
            "queue_depth",
            "Queued runs that are due now",
            Gauge::default(),
        );
        let queue_lag_seconds = register(
            &mut registry,
            "queue_lag_seconds",
            "How long the oldest due run has waited to be claimed",
            Gauge::<f64, AtomicU64>::default(),
        );
        let database_up = register(
            &mut registry,
            "database_up",
            "1 when the scrape's database queries answered, else 0",
            Gauge::default(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                request_seconds,
                rate_limited,
                pruned_rows,
                exported_rows,
                step_seconds,
                step_attempts,
                runs_finished,
                pool_max,
                pool_connections,
                pool_waiting,
                runs,
                queue_depth,
                queue_lag_seconds,
                database_up,
            }),
        }
    }

    /// Counts one answered request and its latency.
    pub fn request(&self, method: &'static str, route: &'static str, status: u16, took: Duration) {
        let status_class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let inner = &self.inner;
        inner
            .requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status: status_class,
            })
            .inc();
        let route_labels = RouteLabels { method, route };
        inner
            .request_seconds
            .get_or_create(&route_labels)
            .observe(took.as_secs_f64());
        if status == 429 {
            inner.rate_limited.get_or_create(&route_labels).inc();
        }
    }

    /// Counts rows that retention deleted from `table`.
    pub fn pruned(&self, table: &'static str, rows: u64) {
        self.inner
            .pruned_rows
            .get_or_create(&TableLabels { table })
            .inc_by(rows);
    }

    /// Counts rows that an export wrote from `table`.
    pub fn exported(&self, table: &'static str, rows: u64) {
        self.inner
            .exported_rows
            .get_or_create(&TableLabels { table })
            .inc_by(rows);
    }

    /// Counts one step attempt that ended as `outcome` (`completed`, `failed`, `skipped`…).
    pub fn step_attempt(&self, outcome: &'static str, took: Duration) {
        let labels = StatusLabels { status: outcome };
        self.inner.step_attempts.get_or_create(&labels).inc();
        self.inner
            .step_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts a run this process finished as `status`.
    pub fn run_finished(&self, status: &'static str) {
        self.inner
            .runs_finished
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    /// The text of a scrape, with the gauges set from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let inner = &self.inner;
        let pool = &snapshot.pool;
        inner.pool_max.set(gauge_value(pool.max));
        for (state, value) in [("busy", pool.busy), ("idle", pool.idle)] {
            inner
                .pool_connections
                .get_or_create(&ConnectionLabels { state })
                .set(gauge_value(value));
        }
        inner.pool_waiting.set(gauge_value(pool.waiting));
        inner.database_up.set(i64::from(snapshot.queue.is_some()));
        if let Some(queue) = &snapshot.queue {
            for (status, value) in [("queued", queue.queued), ("running", queue.running)] {
                inner
                    .runs
                    .get_or_create(&StatusLabels { status })
                    .set(gauge_value(value));
            }
            inner.queue_depth.set(gauge_value(queue.due));
            inner.queue_lag_seconds.set(queue.lag.as_secs_f64());
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &inner.registry);
        text
    }
}

/// Registers `metric` under `name` (after the `tolstoy_` prefix) and returns it.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
