//! `runyard webhook`.

use super::{parse_duration, resolve_facts, DefaultsArgs, SidecarModeArg};
use crate::injection::trust::{DEFAULT_CONTROLLER_USER, DEFAULT_JOB_CONTROLLER_USERS};
use crate::injection::{load_pool_file, ClusterFacts, Injector, PoolSource, TrustedUsers};
use crate::shutdown::Shutdown;
use crate::webhook::{self, metrics::Metrics, AppState, Limits, ReviewLimits, ServerOptions};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub defaults: DefaultsArgs,
    /// Address of the HTTPS listener.
    #[arg(long, default_value = "0.0.0.0:8443", env = "RUNYARD_LISTEN")]
    pub listen: SocketAddr,
    /// Optional plain-HTTP listener for /metrics, /healthz and /readyz
    /// (they are also served over HTTPS on --listen).
    #[arg(long, env = "RUNYARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain; re-read when it changes (cert-manager rotation).
    #[arg(long, default_value = "certs/tls.crt", env = "RUNYARD_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key matching --tls-cert.
    #[arg(long, default_value = "certs/tls.key", env = "RUNYARD_TLS_KEY")]
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// Serve static WorkerPool definitions from this YAML file instead of
    /// watching the cluster (development, tests, benchmarks).
    #[arg(long)]
    pub pools: Option<PathBuf>,
    /// Watch WorkerPools in this namespace only (default: all namespaces).
    #[arg(long, env = "RUNYARD_NAMESPACE")]
    pub namespace: Option<String>,
    /// How the launcher sidecar is injected.
    #[arg(long, value_enum, default_value_t = SidecarModeArg::Auto)]
    pub sidecar_mode: SidecarModeArg,
    /// Kubernetes version to assume with --pools and --sidecar-mode auto
    /// (e.g. 1.28); default: a current version (native sidecars).
    #[arg(long)]
    pub kube_version: Option<String>,
    /// Reviews handled at once; beyond it requests get 429 immediately.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Open connections at most; at the limit the longest-idle one is closed
    /// to make room, and a new one is refused only when all are busy.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Open connections from one client IP at most (same eviction).
    #[arg(long, default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// A connection with no request in progress this long is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Request and response bodies held in memory at once, in MiB (a quarter
    /// of it per client IP); beyond it requests get 429.
    #[arg(long, default_value_t = 64)]
    pub body_memory_mib: usize,
    /// Reviews run through the injection engine at once (the others wait
    /// within their deadline); with --body-memory-mib, what bounds memory.
    #[arg(long, default_value_t = 2)]
    pub concurrent_reviews: usize,
    /// Time given to in-flight reviews on SIGTERM before connections are closed.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// `runyard webhook`: serves until SIGTERM/SIGINT; a second signal aborts.
pub(super) async fn run(args: &WebhookArgs) -> Result<()> {
    let shutdown = Shutdown::on_signals();
    let ready = Arc::new(AtomicBool::new(false));
    let (facts, pools): (ClusterFacts, Arc<dyn PoolSource>) = match &args.pools {
        Some(path) => {
            let pools = load_pool_file(path)?;
            ready.store(true, std::sync::atomic::Ordering::Relaxed);
            let facts = resolve_facts(args.sidecar_mode, args.kube_version.as_deref())?;
            (facts, Arc::new(pools))
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the cluster (use --pools FILE to run without one)")?;
            let info = client
                .apiserver_version()
                .await
                .context("reading the API server version")?;
            let server = ClusterFacts::for_version(&info.major, &info.minor)?;
            let facts = match args.sidecar_mode {
                SidecarModeArg::Auto => server,
                other => resolve_facts(other, None)?,
            };
            tracing::info!(version = %info.git_version, sidecar_mode = ?facts.sidecar_mode, "connected to the API server");
            let pools =
                webhook::pools::watch_pools(client, args.namespace.as_deref(), ready.clone());
            (facts, Arc::new(pools))
        }
    };
    if args.max_in_flight == 0
        || args.max_connections == 0
        || args.max_connections_per_ip == 0
        || args.concurrent_reviews == 0
        || args.body_memory_mib < 4
    {
        bail!("--max-in-flight, --max-connections, --max-connections-per-ip and --concurrent-reviews must be at least 1, --body-memory-mib at least 4");
    }
    let body_memory = args.body_memory_mib.saturating_mul(1024 * 1024);
    let state = AppState::with_limits(
        Injector::new(facts)
            .with_defaults(args.defaults.engine())
            .with_trust(args.trust.trusted()),
        pools,
        Arc::new(Metrics::new()),
        ready,
        args.max_in_flight,
        ReviewLimits {
            body_memory,
            body_memory_per_ip: (body_memory / 4).max(webhook::MAX_BODY_BYTES),
            concurrent_reviews: args.concurrent_reviews,
            ..ReviewLimits::default()
        },
    );
    let options = ServerOptions {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        cert_reload_interval: args.cert_reload_interval,
        limits: Limits {
            max_in_flight: args.max_in_flight,
            max_connections: args.max_connections,
            max_connections_per_ip: args.max_connections_per_ip,
            idle_timeout: args.idle_timeout,
            shutdown_timeout: args.shutdown_timeout,
            ..Limits::default()
        },
    };
    let running = webhook::start(options, state)
        .await
        .context("starting the webhook (generate certificates with `runyard certs`)")?;
    shutdown.requested().await;
    tracing::info!("shutting down: draining in-flight reviews");
    running.shutdown();
    running.wait().await?;
    tracing::info!("webhook stopped");
    Ok(())
}

/// The identities the webhook trusts (from the AdmissionReview's `userInfo`).
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// User name of the runyard controller: only it may claim, start and
    /// release runs (repeatable; e.g. the controller's ServiceAccount
    /// `system:serviceaccount:NS:NAME`).
    #[arg(
        long = "controller-user",
        env = "RUNYARD_CONTROLLER_USER",
        value_delimiter = ',',
        default_value = DEFAULT_CONTROLLER_USER
    )]
    pub controller_users: Vec<String>,
    /// User name of Kubernetes' Job controller, whose pods inherit their
    /// Job's (guarded) template (repeatable).
    #[arg(
        long = "job-controller-user",
        value_delimiter = ',',
        default_values_t = DEFAULT_JOB_CONTROLLER_USERS.map(String::from)
    )]
    pub job_controller_users: Vec<String>,
}

impl TrustArgs {
    pub fn trusted(&self) -> TrustedUsers {
        TrustedUsers {
            controller: self.controller_users.clone(),
            job_controller: self.job_controller_users.clone(),
        }
    }
}
