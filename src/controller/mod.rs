//! `runyard controller`: registers workers for each pool, claims queued runs
//! for idle workers, releases workers when runs finish, scales pools safely,
//! cleans up pods and reports status, Events and metrics.
//!
//! Shape: [`model`] decides (pure), [`reconcile`] reads and writes through the
//! [`cluster::Cluster`] trait, [`runtime`] triggers reconciles from watches and
//! holds the leader Lease.

pub mod cluster;
pub mod lease;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod reconcile;
pub mod runtime;

/// Label on a Worker naming its pool.
pub const LABEL_WORKER_POOL: &str = "workers.runyard.dev/workerpool";
/// Outcome of a finished run: Succeeded, Failed, LogsTimeout, Cancelled.
pub const ANNOTATION_RESULT: &str = "runyard.dev/result";
/// Why a queued run waits (position, busy workers), kept current.
pub const ANNOTATION_QUEUE: &str = "runyard.dev/queue";
/// When the run was claimed (RFC 3339).
pub const ANNOTATION_CLAIMED_AT: &str = "runyard.dev/claimed-at";

/// Every (API group, resource, verbs) the controller's code uses: the reads
/// and guarded writes of [`cluster::KubeCluster`], the watches and resync lists
/// of [`runtime`], and Events. The Lease verbs ([`LEASE_RBAC`]) are granted in
/// the controller's own namespace only. A test checks the shipped RBAC equals
/// these tables.
pub const RBAC: &[(&str, &str, &[&str])] = &[
    (
        "workers.runyard.dev",
        "workerpools",
        &["get", "list", "watch"],
    ),
    ("workers.runyard.dev", "workerpools/status", &["patch"]),
    (
        "workers.runyard.dev",
        "workers",
        &["get", "list", "watch", "create", "delete"],
    ),
    ("workers.runyard.dev", "workers/status", &["update"]),
    ("batch", "jobs", &["get", "list", "watch", "patch"]),
    ("", "pods", &["get", "list", "watch", "patch", "delete"]),
    ("", "pods/log", &["get"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// The controller's Lease permissions ([`lease::LeaderLease`]).
pub const LEASE_RBAC: &[(&str, &str, &[&str])] = &[(
    "coordination.k8s.io",
    "leases",
    &["get", "create", "update"],
)];
