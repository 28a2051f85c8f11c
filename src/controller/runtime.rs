//! The controller process, on kube-runtime: reflector caches of WorkerPools,
//! Workers, run Jobs and run Pods (trimmed before they are stored; a
//! malformed object cannot break a watch: `DeserializeGuard`), and a
//! `kube::runtime::Controller` keyed by pool whose reconciles read only from
//! the caches. Jobs, Pods and Workers map to their pool; pools are reconciled
//! concurrently, each at most once at a time, with backoff on errors; a
//! periodic resync also reconciles the runs of pools that no longer exist.
//! Only the holder of the leader Lease acts. Probes and metrics are served on
//! a plain-HTTP port. One shutdown signal drains it all and releases the Lease.

use super::act::{reconcile_pool, Kind, Written};
use super::lease::{elect, elector, LeaderLease, Leadership, LeaseTimings};
use super::metrics::ControllerMetrics;
use super::model::JobSummary;
use crate::cluster::{KubeCluster, PoolObjects, DEFAULT_CALL_TIMEOUT};
use crate::crd::{Worker, WorkerPool};
use crate::http::{metrics_response, readiness};
use crate::shutdown::Shutdown;
use crate::vocab::{label, LABEL_POOL, LABEL_WORKER_POOL};
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

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
    pub lease_timings: LeaseTimings,
    /// Deadline of every API call the reconciles make.
    pub api_timeout: Duration,
    /// Pools reconciled at once.
    pub concurrency: u16,
    /// Plain-HTTP listener for /metrics, /healthz, /readyz.
    pub metrics_listen: SocketAddr,
}

impl ControllerOptions {
    /// Defaults for everything but where to listen and who this is.
    pub fn new(identity: &str, lease_namespace: &str, metrics_listen: SocketAddr) -> Self {
        Self {
            namespace: None,
            resync: Duration::from_secs(30),
            leader_election: true,
            lease_namespace: lease_namespace.to_string(),
            lease_name: "runyard-controller".to_string(),
            identity: identity.to_string(),
            lease_timings: LeaseTimings::default(),
            api_timeout: DEFAULT_CALL_TIMEOUT,
            concurrency: 16,
            metrics_listen,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A pool to reconcile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolKey {
    pub namespace: String,
    pub name: String,
}

type Guarded<K> = DeserializeGuard<K>;

fn meta_of<K: Resource>(obj: &K) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    obj.meta()
}

/// The controller's caches, fed by watches.
#[derive(Clone)]
pub struct Caches {
    pools: Store<Guarded<WorkerPool>>,
    workers: Store<Guarded<Worker>>,
    jobs: Store<Guarded<Job>>,
    pods: Store<Guarded<Pod>>,
}

impl Caches {
    /// One pool's objects, from the caches only.
    pub fn objects(&self, namespace: &str, pool: &str) -> PoolObjects {
        let in_pool =
            |key: &str, m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                m.namespace.as_deref() == Some(namespace) && label(m, key) == Some(pool)
            };
        PoolObjects {
            name: pool.to_string(),
            pool: self
                .pools
                .get(&ObjectRef::new(pool).within(namespace))
                .and_then(|p| p.0.as_ref().ok().cloned()),
            workers: self
                .workers
                .state_filter(|w| in_pool(LABEL_WORKER_POOL, meta_of(w)))
                .iter()
                .filter_map(|w| w.0.as_ref().ok().cloned())
                .collect(),
            jobs: self
                .jobs
                .state_filter(|j| in_pool(LABEL_POOL, meta_of(j)))
                .iter()
                .filter_map(|j| j.0.as_ref().ok().map(JobSummary::of))
                .collect(),
            pods: self
                .pods
                .state_filter(|p| in_pool(LABEL_POOL, meta_of(p)))
                .iter()
                .filter_map(|p| p.0.as_ref().ok().cloned())
                .collect(),
        }
    }

    /// The namespaces that have pools.
    fn pool_namespaces(&self) -> BTreeSet<String> {
        self.pools
            .state()
            .iter()
            .filter_map(|p| p.0.as_ref().ok()?.metadata.namespace.clone())
            .collect()
    }

    /// Pools that runs name but that do not exist (deleted pools).
    fn missing_pools(&self) -> BTreeSet<PoolKey> {
        let mut keys = BTreeSet::new();
        let metas = self
            .jobs
            .state()
            .into_iter()
            .map(|j| meta_of(&*j).clone())
            .chain(self.pods.state().into_iter().map(|p| meta_of(&*p).clone()));
        for m in metas {
            if let (Some(ns), Some(pool)) = (m.namespace.as_deref(), label(&m, LABEL_POOL)) {
                if self.pools.get(&ObjectRef::new(pool).within(ns)).is_none() {
                    keys.insert(PoolKey {
                        namespace: ns.to_string(),
                        name: pool.to_string(),
                    });
                }
            }
        }
        keys
    }

    /// The resourceVersion the cache holds for an object (`None`: absent).
    fn version(&self, ns: &str, kind: Kind, name: &str) -> Option<String> {
        fn rv<K>(store: &Store<Guarded<K>>, ns: &str, name: &str) -> Option<String>
        where
            K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
        {
            let obj = store.get(&ObjectRef::new(name).within(ns))?;
            Some(meta_of(&*obj).resource_version.clone().unwrap_or_default())
        }
        match kind {
            Kind::Worker => rv(&self.workers, ns, name),
            Kind::Job => rv(&self.jobs, ns, name),
            Kind::Pod => rv(&self.pods, ns, name),
        }
    }

    async fn ready(&self) {
        let _ = futures::join!(
            self.pools.wait_until_ready(),
            self.workers.wait_until_ready(),
            self.jobs.wait_until_ready(),
            self.pods.wait_until_ready()
        );
    }
}

/// How long an expectation of a pool's own write waits for the cache.
const EXPECTATION_TTL: Duration = Duration::from_secs(10);
/// How soon a pool whose cache lags behind its own writes is tried again.
const CACHE_LAG_RETRY: Duration = Duration::from_millis(50);

/// A pass's own writes that the caches have not shown yet ("expectations"):
/// the next pass of that pool waits for them instead of deciding on a view
/// older than its own writes (which would only produce conflicts).
#[derive(Default)]
struct Expectations(Mutex<BTreeMap<PoolKey, Vec<(Instant, Written)>>>);

impl Expectations {
    fn record(&self, key: &PoolKey, written: Vec<Written>) {
        if written.is_empty() {
            return;
        }
        let now = Instant::now();
        self.lock()
            .entry(key.clone())
            .or_default()
            .extend(written.into_iter().map(|w| (now, w)));
    }

    /// Whether the caches still lag behind the pool's own writes; drops the
    /// expectations that are met or too old.
    fn lagging(&self, key: &PoolKey, caches: &Caches) -> bool {
        let mut all = self.lock();
        let Some(list) = all.get_mut(key) else {
            return false;
        };
        list.retain(|(at, w)| {
            if at.elapsed() > EXPECTATION_TTL {
                return false;
            }
            let ns = &key.namespace;
            match w {
                Written::Changed { kind, name, from } => {
                    caches.version(ns, *kind, name).as_deref() == Some(from.as_str())
                }
                Written::Created { kind, name } => caches.version(ns, *kind, name).is_none(),
                Written::Deleted { kind, name } => caches.version(ns, *kind, name).is_some(),
            }
        });
        let lagging = !list.is_empty();
        if !lagging {
            all.remove(key);
        }
        lagging
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PoolKey, Vec<(Instant, Written)>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Context {
    cluster: KubeCluster,
    metrics: Arc<ControllerMetrics>,
    caches: Caches,
    leadership: Leadership,
    expectations: Expectations,
    /// Consecutive failed passes per pool (for backoff).
    failures: Mutex<BTreeMap<PoolKey, u32>>,
    resync: Duration,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("{0}")]
    Writes(String),
}

fn key_of<K: Resource>(obj: &K) -> PoolKey {
    PoolKey {
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name: obj.meta().name.clone().unwrap_or_default(),
    }
}

/// Backoff after `n` consecutive failures: 100 ms doubling, up to 30 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1u64 << n.min(9))).min(Duration::from_secs(30))
}

async fn reconcile_key(key: &PoolKey, ctx: &Context) -> Result<Action, ReconcileError> {
    if !ctx.leadership.is_leading() {
        return Ok(Action::await_change());
    }
    if ctx.expectations.lagging(key, &ctx.caches) {
        return Ok(Action::requeue(CACHE_LAG_RETRY));
    }
    let objects = ctx.caches.objects(&key.namespace, &key.name);
    let report = reconcile_pool(&ctx.cluster, &ctx.metrics, &key.namespace, objects).await;
    tracing::debug!(pool = %key.name, namespace = %key.namespace, claims = report.claims, releases = report.releases, conflicts = report.conflicts, "reconciled");
    let retry = report.needs_retry();
    let summary = report.errors.join("; ");
    ctx.expectations.record(key, report.written);
    let mut failures = ctx
        .failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if retry {
        *failures.entry(key.clone()).or_default() += 1;
        return Err(ReconcileError::Writes(if summary.is_empty() {
            "conflicting writes".into()
        } else {
            summary
        }));
    }
    failures.remove(key);
    Ok(Action::requeue(ctx.resync))
}

async fn reconcile(
    pool: Arc<Guarded<WorkerPool>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if let Err(invalid) = &pool.0 {
        tracing::warn!(pool = ?invalid.metadata.name, namespace = ?invalid.metadata.namespace, error = %invalid.error, "malformed WorkerPool ignored");
        return Ok(Action::await_change());
    }
    reconcile_key(&key_of(&*pool), &ctx).await
}

fn error_policy(
    pool: Arc<Guarded<WorkerPool>>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let key = key_of(&*pool);
    let n = ctx
        .failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
        .copied()
        .unwrap_or(1);
    let wait = backoff(n);
    tracing::debug!(pool = %key.name, namespace = %key.namespace, %error, retry_in = ?wait, "reconcile incomplete; retrying");
    Action::requeue(wait)
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

/// Keeps of a run Job what the controller reads: metadata, `suspend`, status.
/// Expired run logs are swept every this many resyncs.
const SWEEP_EVERY: u64 = 10;

fn trim_job(job: &mut Guarded<Job>) {
    if let Ok(j) = job.0.as_mut() {
        j.metadata.managed_fields = None;
        if let Some(spec) = j.spec.as_mut() {
            spec.template = Default::default();
        }
    }
}

/// Keeps of a run Pod what the controller reads: metadata, container names,
/// scheduling gates, status.
fn trim_pod(pod: &mut Guarded<Pod>) {
    if let Ok(p) = pod.0.as_mut() {
        p.metadata.managed_fields = None;
        if let Some(spec) = p.spec.take() {
            p.spec = Some(PodSpec {
                containers: spec
                    .containers
                    .into_iter()
                    .map(|c| Container {
                        name: c.name,
                        ..Container::default()
                    })
                    .collect(),
                scheduling_gates: spec.scheduling_gates,
                active_deadline_seconds: spec.active_deadline_seconds,
                ..PodSpec::default()
            });
        }
    }
}

fn strip_managed<K: Resource>(obj: &mut Guarded<K>) {
    if let Ok(o) = obj.0.as_mut() {
        o.meta_mut().managed_fields = None;
    }
}

fn pool_of<K: Resource>(
    key: &'static str,
) -> impl Fn(Guarded<K>) -> Option<ObjectRef<Guarded<WorkerPool>>> + Send + Sync + 'static {
    move |obj| {
        let m = obj.meta();
        Some(ObjectRef::new(label(m, key)?).within(m.namespace.as_deref()?))
    }
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
                readiness((!p.ready.load(Ordering::Relaxed)).then_some("caches not synced"))
            }),
        )
        .route(
            "/metrics",
            get(|State(p): State<Probe>| async move { metrics_response(p.metrics.encode()) }),
        )
        .with_state(probe)
}

/// A started controller.
pub struct Running {
    /// Where probes and metrics are served.
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<ControllerMetrics>,
    /// Whether this replica leads.
    pub leadership: Leadership,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the controller has stopped (after shutdown was requested).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Runs until `shutdown` is requested; then stops reconciling and releases
/// the Lease.
pub async fn run(
    client: Client,
    opts: ControllerOptions,
    shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    start(client, opts, shutdown).await?.wait().await;
    Ok(())
}

/// Starts the controller's tasks.
pub async fn start(
    client: Client,
    opts: ControllerOptions,
    shutdown: Shutdown,
) -> Result<Running, RuntimeError> {
    let metrics = Arc::new(ControllerMetrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(opts.metrics_listen)
        .await
        .map_err(|source| RuntimeError::Bind {
            addr: opts.metrics_listen,
            source,
        })?;
    let metrics_addr = listener.local_addr().map_err(|source| RuntimeError::Bind {
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
        shutdown.receiver(),
    ));

    // Leader election: reconciles act only while this replica leads.
    let (gained_tx, gained_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (leadership, election) = if opts.leader_election {
        let (tx, leadership) = elector();
        let lease = LeaderLease::new(
            client.clone(),
            &opts.lease_namespace,
            &opts.lease_name,
            &opts.identity,
        )
        .with_timings(opts.lease_timings);
        let m = metrics.clone();
        let stop = shutdown.clone();
        let election = tokio::spawn(async move {
            elect(
                &lease,
                tx,
                |leading| {
                    m.leader.set(i64::from(leading));
                    if leading {
                        let _ = gained_tx.send(());
                    }
                },
                async move { stop.requested().await },
            )
            .await;
        });
        (leadership, Some(election))
    } else {
        metrics.leader.set(1);
        (Leadership::always(), None)
    };

    let ns = opts.namespace.as_deref();
    let wc = watcher::Config::default().any_semantic();
    let (pools, pools_w) = reflector::store::<Guarded<WorkerPool>>();
    let (workers, workers_w) = reflector::store::<Guarded<Worker>>();
    let (jobs, jobs_w) = reflector::store::<Guarded<Job>>();
    let (pods, pods_w) = reflector::store::<Guarded<Pod>>();
    let pool_stream = watcher(api::<Guarded<WorkerPool>>(&client, ns), wc.clone())
        .default_backoff()
        .modify(strip_managed)
        .reflect(pools_w)
        .applied_objects();
    let worker_stream = watcher(
        api::<Guarded<Worker>>(&client, ns),
        wc.clone().labels(LABEL_WORKER_POOL),
    )
    .default_backoff()
    .modify(strip_managed)
    .reflect(workers_w)
    .touched_objects();
    let job_stream = watcher(
        api::<Guarded<Job>>(&client, ns),
        wc.clone().labels(LABEL_POOL),
    )
    .default_backoff()
    .modify(trim_job)
    .reflect(jobs_w)
    .touched_objects();
    let pod_stream = watcher(api::<Guarded<Pod>>(&client, ns), wc.labels(LABEL_POOL))
        .default_backoff()
        .modify(trim_pod)
        .reflect(pods_w)
        .touched_objects();
    let caches = Caches {
        pools: pools.clone(),
        workers,
        jobs,
        pods,
    };
    let ctx = Arc::new(Context {
        cluster: KubeCluster::new(client.clone(), Some(opts.identity.clone()))
            .with_timeout(opts.api_timeout),
        metrics: metrics.clone(),
        caches: caches.clone(),
        leadership: leadership.clone(),
        expectations: Expectations::default(),
        failures: Mutex::new(BTreeMap::new()),
        resync: opts.resync,
    });

    // Everything again on every resync and whenever this replica gains the lead.
    let resync = opts.resync;
    let ticks = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(resync).await;
        Some(((), ()))
    });
    let gained = futures::stream::unfold(gained_rx, |mut rx| async move {
        rx.recv().await.map(|()| ((), rx))
    });
    let reconcile_all = futures::stream::select(ticks, gained);

    let stop = shutdown.clone();
    let controller = Controller::for_stream(pool_stream, pools)
        .with_config(ControllerConfig::default().concurrency(opts.concurrency))
        .watches_stream(worker_stream, pool_of::<Worker>(LABEL_WORKER_POOL))
        .watches_stream(job_stream, pool_of::<Job>(LABEL_POOL))
        .watches_stream(pod_stream, pool_of::<Pod>(LABEL_POOL))
        .reconcile_all_on(reconcile_all)
        .graceful_shutdown_on(async move { stop.requested().await })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                match e {
                    kube::runtime::controller::Error::ObjectNotFound(_) => {}
                    other => tracing::debug!(error = %other, "controller"),
                }
            }
        });

    // Readiness, then the runs of pools that no longer exist, on every resync.
    let orphans = {
        let ctx = ctx.clone();
        let ready = ready.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = ctx.caches.ready() => {}
                _ = stop.requested() => return,
            }
            ready.store(true, Ordering::Relaxed);
            tracing::info!("controller caches synced");
            let mut round: u64 = 0;
            loop {
                for key in ctx.caches.missing_pools() {
                    if let Err(e) = reconcile_key(&key, &ctx).await {
                        tracing::debug!(pool = %key.name, namespace = %key.namespace, error = %e, "runs of a deleted pool: retried on the next resync");
                    }
                }
                // Expired logs of bare runs, every SWEEP_EVERY resyncs.
                if round.is_multiple_of(SWEEP_EVERY) && ctx.leadership.is_leading() {
                    for ns in ctx.caches.pool_namespaces() {
                        match super::act::sweep_kept_logs(&ctx.cluster, &ns).await {
                            Ok(0) => {}
                            Ok(n) => {
                                tracing::info!(namespace = %ns, deleted = n, "expired run logs deleted")
                            }
                            Err(e) => {
                                tracing::debug!(namespace = %ns, error = %e, "expired run logs: retried later")
                            }
                        }
                    }
                }
                round += 1;
                tokio::select! {
                    _ = tokio::time::sleep(ctx.resync) => {}
                    _ = stop.requested() => return,
                }
            }
        })
    };

    let task = tokio::spawn(async move {
        controller.await;
        let _ = orphans.await;
        tracing::info!("controller stopping");
        if let Some(election) = election {
            let _ = election.await;
        }
        let _ = http.await;
    });
    Ok(Running {
        metrics_addr,
        metrics,
        leadership,
        task,
    })
}
