//! The controller process: metadata watches on WorkerPools, Workers, run Jobs
//! and run Pods turn into "reconcile pool (namespace, name)" requests; a
//! periodic resync also finds runs whose pool no longer exists. Only the
//! holder of the leader Lease reconciles. Probes and metrics are served on a
//! plain-HTTP port.

use super::act::reconcile_pool;
use super::lease::{LeaderLease, RENEW_INTERVAL, RETRY_INTERVAL};
use super::metrics::ControllerMetrics;
use crate::cluster::KubeCluster;
use crate::crd::{Worker, WorkerPool};
use crate::http::{metrics_response, readiness};
use crate::shutdown::Shutdown;
use crate::vocab::{label, LABEL_POOL, LABEL_WORKER_POOL};
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A pool to reconcile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolKey {
    pub namespace: String,
    pub name: String,
}

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Watch one namespace (`None`: all namespaces, needs a ClusterRole).
    pub namespace: Option<String>,
    /// Full resync period.
    pub resync: Duration,
    /// Hold a Lease before reconciling (off: a single replica).
    pub leader_election: bool,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// Plain-HTTP listener for /metrics, /healthz, /readyz.
    pub metrics_listen: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches object metadata (cheap, and a malformed object cannot break
/// deserialisation) and sends the pool each object belongs to.
fn watch_keys<K>(
    client: &Client,
    namespace: Option<&str>,
    selector: Option<&str>,
    tx: mpsc::UnboundedSender<PoolKey>,
    pool_of: fn(&ObjectMeta) -> Option<String>,
) where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut config = watcher::Config::default();
    if let Some(s) = selector {
        config = config.labels(s);
    }
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff().touched_objects();
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(obj) => {
                    if let (Some(ns), Some(name)) = (obj.namespace(), pool_of(&obj.metadata)) {
                        let _ = tx.send(PoolKey {
                            namespace: ns,
                            name,
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch error; retrying with backoff")
                }
            }
        }
    });
}

/// Every pool and every pool a run names, in scope.
async fn all_keys(
    client: &Client,
    namespace: Option<&str>,
) -> Result<BTreeSet<PoolKey>, kube::Error> {
    let mut keys = BTreeSet::new();
    let runs = ListParams::default().labels(LABEL_POOL);
    for p in api::<WorkerPool>(client, namespace)
        .list_metadata(&ListParams::default())
        .await?
    {
        keys.insert(PoolKey {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
        });
    }
    for j in api::<Job>(client, namespace).list_metadata(&runs).await? {
        if let Some(pool) = label(&j.metadata, LABEL_POOL) {
            keys.insert(PoolKey {
                namespace: j.namespace().unwrap_or_default(),
                name: pool.to_string(),
            });
        }
    }
    for p in api::<Pod>(client, namespace).list_metadata(&runs).await? {
        if let Some(pool) = label(&p.metadata, LABEL_POOL) {
            keys.insert(PoolKey {
                namespace: p.namespace().unwrap_or_default(),
                name: pool.to_string(),
            });
        }
    }
    Ok(keys)
}

#[derive(Clone)]
struct Probe {
    metrics: Arc<ControllerMetrics>,
    ready: Arc<AtomicBool>,
}

fn probes(probe: Probe) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(p): State<Probe>| async move {
                readiness((!p.ready.load(Ordering::Relaxed)).then_some("not synced"))
            }),
        )
        .route(
            "/metrics",
            get(|State(p): State<Probe>| async move { metrics_response(p.metrics.encode()) }),
        )
        .with_state(probe)
}

/// Runs until `shutdown` is requested; then stops reconciling and releases the Lease.
pub async fn run(
    client: Client,
    opts: ControllerOptions,
    shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    let metrics = Arc::new(ControllerMetrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let leader = Arc::new(AtomicBool::new(!opts.leader_election));
    let (stop_tx, stop_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(opts.metrics_listen)
        .await
        .map_err(|source| RuntimeError::Bind {
            addr: opts.metrics_listen,
            source,
        })?;
    let http = tokio::spawn(crate::http::serve(
        listener,
        None,
        probes(Probe {
            metrics: metrics.clone(),
            ready: ready.clone(),
        }),
        crate::http::Limits::default(),
        None,
        stop_rx.clone(),
    ));

    let lease = opts.leader_election.then(|| {
        Arc::new(LeaderLease::new(
            client.clone(),
            &opts.lease_namespace,
            &opts.lease_name,
            &opts.identity,
        ))
    });
    if let Some(lease) = lease.clone() {
        let leader = leader.clone();
        let metrics = metrics.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                let leads = match lease.try_acquire_or_renew().await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "leader election failed");
                        false
                    }
                };
                if leads != leader.swap(leads, Ordering::SeqCst) {
                    tracing::info!(leader = leads, "leadership changed");
                }
                metrics.leader.set(i64::from(leads));
                let wait = if leads {
                    RENEW_INTERVAL
                } else {
                    RETRY_INTERVAL
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<PoolKey>();
    let ns = opts.namespace.as_deref();
    fn run_pool(m: &ObjectMeta) -> Option<String> {
        label(m, LABEL_POOL).map(str::to_string)
    }
    fn worker_pool(m: &ObjectMeta) -> Option<String> {
        label(m, LABEL_WORKER_POOL).map(str::to_string)
    }
    fn pool_name(m: &ObjectMeta) -> Option<String> {
        m.name.clone()
    }
    watch_keys::<Job>(&client, ns, Some(LABEL_POOL), tx.clone(), run_pool);
    watch_keys::<Pod>(&client, ns, Some(LABEL_POOL), tx.clone(), run_pool);
    watch_keys::<Worker>(
        &client,
        ns,
        Some(LABEL_WORKER_POOL),
        tx.clone(),
        worker_pool,
    );
    watch_keys::<WorkerPool>(&client, ns, None, tx.clone(), pool_name);

    // Periodic resync (also finds runs of deleted pools, and ghosts).
    {
        let client = client.clone();
        let tx = tx.clone();
        let ready = ready.clone();
        let namespace = opts.namespace.clone();
        let period = opts.resync;
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                match all_keys(&client, namespace.as_deref()).await {
                    Ok(keys) => {
                        ready.store(true, Ordering::Relaxed);
                        for k in keys {
                            let _ = tx.send(k);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "resync listing failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }

    let cluster = KubeCluster::new(client.clone(), Some(opts.identity.clone()));
    let mut pending: BTreeSet<PoolKey> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = shutdown.requested() => break,
            key = rx.recv() => match key {
                Some(k) => { pending.insert(k); }
                None => break,
            },
        }
        while let Ok(k) = rx.try_recv() {
            pending.insert(k);
        }
        if !leader.load(Ordering::SeqCst) {
            pending.clear();
            continue;
        }
        for key in std::mem::take(&mut pending) {
            match reconcile_pool(&cluster, &metrics, &key.namespace, &key.name).await {
                Ok(report) => {
                    tracing::debug!(pool = %key.name, namespace = %key.namespace, claims = report.claims, releases = report.releases, "reconciled");
                    if report.needs_retry() {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let _ = tx.send(key);
                        });
                    }
                }
                Err(e) => {
                    metrics.reconcile_error(e.label());
                    tracing::warn!(pool = %key.name, namespace = %key.namespace, error = %e, "reconcile failed; retrying");
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let _ = tx.send(key);
                    });
                }
            }
        }
    }

    tracing::info!("controller stopping");
    let _ = stop_tx.send(true);
    leader.store(false, Ordering::SeqCst);
    if let Some(lease) = lease {
        if let Err(e) = lease.release().await {
            tracing::warn!(error = %e, "could not release the Lease; standbys take over when it expires");
        }
    }
    let _ = http.await;
    Ok(())
}
