//! Prometheus metrics of the controller.

use super::model::Counts;
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub namespace: String,
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub namespace: String,
    pub pool: String,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EscapedLabels {
    pub namespace: String,
    pub pool: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CreateLabels {
    pub namespace: String,
    pub pool: String,
    pub result: &'static str,
}

/// The controller's metrics.
#[derive(Debug)]
pub struct ControllerMetrics {
    registry: Registry,
    workers: Family<WorkerLabels, Gauge>,
    queued: Family<PoolLabels, Gauge>,
    claims: Family<PoolLabels, Counter>,
    claim_duration: Family<PoolLabels, Histogram>,
    worker_creation: Family<CreateLabels, Histogram>,
    worker_creation_errors: Family<PoolLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Family<PoolLabels, Histogram>,
    escaped: Family<EscapedLabels, Counter>,
    pub leader: Gauge,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("runyard");
        let workers = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "workers",
            "Workers per pool and phase (idle, busy)",
            workers.clone(),
        );
        let queued = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "runs_queued",
            "Runs waiting for a worker, per pool (for autoscalers)",
            queued.clone(),
        );
        let claims = Family::<PoolLabels, Counter>::default();
        registry.register("claims", "Runs claimed by a worker", claims.clone());
        let claim_duration =
            Family::<PoolLabels, Histogram>::new_with_constructor(seconds_histogram);
        registry.register(
            "claim_duration_seconds",
            "Time to bind a run to a worker (both guarded writes)",
            claim_duration.clone(),
        );
        let worker_creation =
            Family::<CreateLabels, Histogram>::new_with_constructor(seconds_histogram);
        registry.register(
            "worker_creation_duration_seconds",
            "Time to register a worker",
            worker_creation.clone(),
        );
        let worker_creation_errors = Family::<PoolLabels, Counter>::default();
        registry.register(
            "worker_creation_errors",
            "Workers that could not be registered",
            worker_creation_errors.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reads and writes during reconciles, by kind (conflict, timeout, ...)",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<PoolLabels, Histogram>::new_with_constructor(seconds_histogram);
        registry.register(
            "reconcile_duration_seconds",
            "Time of one pool reconcile",
            reconcile_duration.clone(),
        );
        let escaped = Family::<EscapedLabels, Counter>::default();
        registry.register(
            "escaped_runs",
            "Runs found running without a claim and stopped (Jobs suspended again, Pods deleted)",
            escaped.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "controller_leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Self {
            registry,
            workers,
            queued,
            claims,
            claim_duration,
            worker_creation,
            worker_creation_errors,
            reconcile_errors,
            reconcile_duration,
            escaped,
            leader,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn pool(namespace: &str, pool: &str) -> PoolLabels {
        PoolLabels {
            namespace: namespace.to_string(),
            pool: pool.to_string(),
        }
    }

    pub fn claimed(&self, namespace: &str, pool: &str) {
        self.claims
            .get_or_create(&Self::pool(namespace, pool))
            .inc();
    }

    pub fn claim_duration(&self, namespace: &str, pool: &str, d: Duration) {
        self.claim_duration
            .get_or_create(&Self::pool(namespace, pool))
            .observe(d.as_secs_f64());
    }

    pub fn worker_created(&self, namespace: &str, pool: &str, d: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.worker_creation
            .get_or_create(&CreateLabels {
                namespace: namespace.to_string(),
                pool: pool.to_string(),
                result,
            })
            .observe(d.as_secs_f64());
        if !ok {
            self.worker_creation_errors
                .get_or_create(&Self::pool(namespace, pool))
                .inc();
        }
    }

    pub fn escaped(&self, namespace: &str, pool: &str, kind: &'static str) {
        self.escaped
            .get_or_create(&EscapedLabels {
                namespace: namespace.to_string(),
                pool: pool.to_string(),
                kind,
            })
            .inc();
    }

    pub fn reconcile_error(&self, kind: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { kind })
            .inc();
    }

    fn worker_gauge(&self, namespace: &str, pool: &str, phase: &'static str) -> WorkerLabels {
        WorkerLabels {
            namespace: namespace.to_string(),
            pool: pool.to_string(),
            phase,
        }
    }

    pub fn pool_state(&self, namespace: &str, pool: &str, c: &Counts) {
        for (phase, n) in [("idle", c.idle), ("busy", c.busy)] {
            self.workers
                .get_or_create(&self.worker_gauge(namespace, pool, phase))
                .set(n.into());
        }
        self.queued
            .get_or_create(&Self::pool(namespace, pool))
            .set(c.queued.into());
    }

    pub fn observe_reconcile(&self, namespace: &str, pool: &str, d: Duration) {
        self.reconcile_duration
            .get_or_create(&Self::pool(namespace, pool))
            .observe(d.as_secs_f64());
    }

    /// Removes every series of a pool that no longer exists.
    pub fn forget_pool(&self, namespace: &str, pool: &str) {
        let labels = Self::pool(namespace, pool);
        for phase in ["idle", "busy"] {
            self.workers
                .remove(&self.worker_gauge(namespace, pool, phase));
        }
        self.queued.remove(&labels);
        self.claims.remove(&labels);
        self.claim_duration.remove(&labels);
        self.worker_creation_errors.remove(&labels);
        self.reconcile_duration.remove(&labels);
        for result in ["ok", "error"] {
            self.worker_creation.remove(&CreateLabels {
                namespace: namespace.to_string(),
                pool: pool.to_string(),
                result,
            });
        }
        for kind in ["Job", "Pod"] {
            self.escaped.remove(&EscapedLabels {
                namespace: namespace.to_string(),
                pool: pool.to_string(),
                kind,
            });
        }
    }
}
