//! `runyard webhook`.

use super::{parse_duration, resolve_facts, DefaultsArgs, SidecarModeArg};
use crate::injection::trust::{DEFAULT_CONTROLLER_USER, DEFAULT_JOB_CONTROLLER_USERS};
use crate::injection::{load_pool_file, ClusterFacts, Injector, PoolSource, TrustedUsers};
use crate::shutdown::Shutdown;
use crate::webhook::rotator::{Rotator, RotatorConfig, SystemClock};
use crate::webhook::tls::CertStore;
use crate::webhook::{
    self, metrics::Metrics, AppState, Limits, ReviewLimits, ServerOptions, TlsSource, WebhookError,
};
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
    /// How often the certificate files (or, with --cert-secret, the Secret
    /// and the webhook configuration) are checked for changes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// Manage the serving certificate in this Secret instead of reading
    /// --tls-cert/--tls-key: create or reuse a CA and certificate, set the
    /// caBundle of --webhook-config, rotate at 2/3 of the lifetime.
    #[arg(long, env = "RUNYARD_CERT_SECRET", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub cert_secret: Option<String>,
    /// Namespace of --cert-secret and of the webhook's Service (default: the
    /// pod's namespace, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    pub cert_namespace: Option<String>,
    /// The webhook's Service, whose DNS names the certificate holds.
    #[arg(long, default_value = "runyard-webhook")]
    pub cert_service: String,
    /// The MutatingWebhookConfiguration whose caBundle --cert-secret sets.
    #[arg(long, default_value = "runyard")]
    pub webhook_config: String,
    /// Lifetime of self-managed certificates (renewed at 2/3 of it).
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    pub cert_validity: Duration,
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
    #[arg(long, value_parser = super::parse_kube_version)]
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
    let client = if args.pools.is_none() || args.cert_secret.is_some() {
        Some(
            super::client()
                .await
                .context("connecting to the cluster (use --pools FILE and --tls-cert/--tls-key to run without one)")?,
        )
    } else {
        None
    };
    let (facts, pools): (ClusterFacts, Arc<dyn PoolSource>) = match (&args.pools, &client) {
        (Some(path), _) => {
            let pools = load_pool_file(path)?;
            ready.store(true, std::sync::atomic::Ordering::Relaxed);
            let facts = resolve_facts(args.sidecar_mode, args.kube_version.as_deref())?;
            (facts, Arc::new(pools))
        }
        (None, Some(client)) => {
            let info = client
                .apiserver_version()
                .await
                .context("reading the API server version")?;
            let server = format!("{}.{}", info.major, info.minor);
            let facts = resolve_facts(args.sidecar_mode, Some(&server))?;
            tracing::info!(version = %info.git_version, sidecar_mode = ?facts.sidecar_mode, "connected to the API server");
            let pools = webhook::pools::watch_pools(
                client.clone(),
                args.namespace.as_deref(),
                ready.clone(),
            );
            (facts, Arc::new(pools))
        }
        (None, None) => bail!("no pools: give --pools FILE or run with a cluster"),
    };
    if args.max_in_flight == 0
        || args.max_connections == 0
        || args.max_connections_per_ip == 0
        || args.concurrent_reviews == 0
        || args.body_memory_mib < 4
    {
        bail!("--max-in-flight, --max-connections, --max-connections-per-ip and --concurrent-reviews must be at least 1, --body-memory-mib at least 4");
    }
    let metrics = Arc::new(Metrics::new());
    let body_memory = args.body_memory_mib.saturating_mul(1024 * 1024);
    let state = AppState::with_limits(
        Injector::new(facts)
            .with_defaults(args.defaults.engine())
            .with_trust(args.trust.trusted()),
        pools,
        metrics.clone(),
        ready,
        args.max_in_flight,
        ReviewLimits {
            body_memory,
            body_memory_per_ip: (body_memory / 4).max(webhook::MAX_BODY_BYTES),
            concurrent_reviews: args.concurrent_reviews,
            ..ReviewLimits::default()
        },
    );
    let tls = match (&args.cert_secret, client) {
        (Some(secret), Some(client)) => {
            if args.cert_validity < Duration::from_secs(3600) {
                bail!("--cert-validity must be at least 1h");
            }
            let namespace = args
                .cert_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let config = RotatorConfig::for_service(
                &args.cert_service,
                &namespace,
                &[],
                secret,
                &args.webhook_config,
                args.cert_validity,
            );
            tracing::info!(secret = %format!("{namespace}/{secret}"), webhook_config = %args.webhook_config, "managing the serving certificate");
            let store = Arc::new(CertStore::empty());
            let rotator = Rotator::new(
                client,
                config,
                store.clone(),
                state.certificate_trusted(),
                Arc::new(SystemClock),
            )
            .with_metrics(metrics);
            tokio::spawn(rotator.run(args.cert_reload_interval, shutdown.clone()));
            TlsSource::Store(store)
        }
        _ => TlsSource::Files {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
            reload_interval: args.cert_reload_interval,
        },
    };
    let options = ServerOptions {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        tls,
        limits: Limits {
            max_in_flight: args.max_in_flight,
            max_connections: args.max_connections,
            max_connections_per_ip: args.max_connections_per_ip,
            idle_timeout: args.idle_timeout,
            shutdown_timeout: args.shutdown_timeout,
            ..Limits::default()
        },
    };
    let running = webhook::start(options, state).await.map_err(|e| {
        let hint = match &e {
            WebhookError::Tls(_) => {
                "; the webhook serves --tls-cert/--tls-key: generate them with `runyard certs` (it writes certs/), or let it manage its certificate with --cert-secret"
            }
            WebhookError::Bind { .. } => {
                "; another process is listening there: stop it, or choose another --listen (or --metrics-listen)"
            }
            WebhookError::Join(_) => "",
        };
        anyhow::anyhow!(
            "starting the webhook: {}{hint}",
            super::errors::chain_line(&e)
        )
    })?;
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
