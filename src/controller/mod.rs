//! `runyard controller`: registers workers for each pool, claims queued runs
//! for idle workers, releases workers when runs finish, scales pools safely,
//! cleans up pods and reports status, Events and metrics.
//!
//! Shape: [`model`] observes and decides (pure), [`act`] reads and writes
//! through [`crate::cluster::ControllerApi`], [`runtime`] triggers reconciles
//! from watches and holds the leader Lease.

pub mod act;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod runtime;

use crate::crd::GROUP;

/// Every (API group, resource, verbs) the controller's code uses: the reads
/// and guarded writes of [`crate::cluster::KubeCluster`], the watches and resync lists
/// of [`runtime`], and Events. The Lease verbs ([`LEASE_RBAC`]) are granted in
/// the controller's own namespace only. A test checks the shipped RBAC equals
/// these tables.
pub const RBAC: &[(&str, &str, &[&str])] = &[
    (GROUP, "workerpools", &["get", "list", "watch"]),
    (GROUP, "workerpools/status", &["patch"]),
    (
        GROUP,
        "workers",
        &["get", "list", "watch", "create", "delete"],
    ),
    (GROUP, "workers/status", &["update"]),
    ("batch", "jobs", &["get", "list", "watch", "patch"]),
    ("", "pods", &["get", "list", "watch", "patch", "delete"]),
    ("", "pods/log", &["get"]),
    // Finished runs' log tails and results (`act::sweep_kept_logs` lists
    // their metadata and deletes expired ones).
    ("", "configmaps", &["list", "create", "patch", "delete"]),
    // Warning Events of a stuck run's pod (the kubelet's and scheduler's
    // reasons); runyard's own Events are written with events.k8s.io.
    ("", "events", &["list"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// The controller's Lease permissions ([`lease::LeaderLease`]).
pub const LEASE_RBAC: &[(&str, &str, &[&str])] = &[(
    "coordination.k8s.io",
    "leases",
    &["get", "create", "update"],
)];
