//! The `runyard` command line: argument types and the glue from arguments to
//! the library. Errors get their user-facing context here.

use crate::injection::{ClusterFacts, Injector, PoolSource, SidecarMode, StaticPools};
use crate::webhook::{self, metrics::Metrics, AppState, Limits, Options};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Turn plain Kubernetes Jobs and Pods into managed runs on a worker pool.
#[derive(Debug, Parser)]
#[command(name = "runyard", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RUNYARD_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info`, `runyard=debug` (tracing EnvFilter syntax).
    #[arg(long, global = true, default_value = "info", env = "RUNYARD_LOG")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTPS mutating admission webhook.
    Webhook(WebhookArgs),
    /// Print the mutated manifest(s) of a file, as the webhook would mutate them.
    Inject(InjectArgs),
    /// Generate a CA and a serving certificate for the webhook.
    Certs(CertsArgs),
    /// Print the CustomResourceDefinitions (WorkerPool, Worker) as YAML.
    Crd,
    /// Run the controller: register workers, claim queued runs, release, scale.
    Controller(ControllerArgs),
    /// Show pools, workers and queued runs of a namespace.
    Status(StatusArgs),
    /// Submit a run, wait for it, stream its log, exit with its exit code.
    Submit(SubmitArgs),
    /// Stop a run gracefully (its result becomes Cancelled).
    Cancel(CancelArgs),
    /// Run inside a run pod (injected by the webhook): `init` or `serve`.
    #[command(subcommand)]
    Launcher(LauncherCommand),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Namespace (default: the Job file's, else the kubeconfig's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// A Job manifest to submit instead of building one from flags.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["image", "command"])]
    pub filename: Option<PathBuf>,
    /// Pool to run on (sets `runyard.dev/pool`).
    #[arg(long, env = "RUNYARD_POOL")]
    pub pool: Option<String>,
    /// Image of the worker container.
    #[arg(long)]
    pub image: Option<String>,
    /// Environment variable for the worker, `NAME=VALUE` (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Queue priority (`runyard.dev/priority`, higher first).
    #[arg(long)]
    pub priority: Option<i64>,
    /// https URL of a source tarball the init container fetches.
    #[arg(long, requires = "source_sha256")]
    pub source_url: Option<String>,
    /// SHA-256 the source tarball must have.
    #[arg(long, requires = "source_url")]
    pub source_sha256: Option<String>,
    /// Return right after submission.
    #[arg(long)]
    pub detach: bool,
    /// Summary format at the end (`json` prints a machine-readable summary on stdout).
    #[arg(short = 'o', long, value_enum, default_value_t = SummaryFormat::Text)]
    pub output: SummaryFormat,
    /// Grace period given to the worker when Ctrl-C cancels the run.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Command and arguments of the worker container (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    /// A line on stderr.
    Text,
    /// A JSON object on stdout.
    Json,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The run: `job/NAME`, `pod/NAME`, or a Job name.
    pub run: String,
    /// Namespace (default: the kubeconfig's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Reason passed to the worker with the stop request.
    #[arg(long, default_value = "cancelled by runyard cancel")]
    pub reason: String,
    /// How long the worker may take to stop before its pod is deleted.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
}

#[derive(Debug, Subcommand)]
pub enum LauncherCommand {
    /// Prepare the workspace, source and tools (the `init` container).
    Init(LayoutArgs),
    /// Serve the worker's local API and relay stop requests (the `launcher` sidecar).
    Serve(ServeArgs),
}

/// Where the launcher works (the webhook sets these through the environment).
#[derive(Debug, Clone, Args)]
pub struct LayoutArgs {
    /// Workspace directory.
    #[arg(long, env = "RUNYARD_WORKSPACE", default_value = crate::injection::WORKSPACE_PATH)]
    pub workspace: PathBuf,
    /// Shared binaries cache.
    #[arg(long, env = "RUNYARD_BINARIES_CACHE", default_value = crate::injection::BINARIES_CACHE_PATH)]
    pub binaries_cache: PathBuf,
    /// Directory of the run's tool links (first on the worker's PATH).
    #[arg(long, env = "RUNYARD_BINARIES", default_value = crate::injection::BINARIES_PATH)]
    pub binaries: PathBuf,
    /// Downward-API directory with the pod's `annotations` and `labels`.
    #[arg(long, env = "RUNYARD_PODINFO", default_value = crate::injection::pod::PODINFO_PATH)]
    pub podinfo: PathBuf,
    /// Extra CA certificates (PEM) trusted for downloads, e.g. a mirror's.
    #[arg(long, env = "RUNYARD_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl LayoutArgs {
    pub fn layout(&self) -> crate::launcher::Layout {
        crate::launcher::Layout {
            workspace: self.workspace.clone(),
            cache: self.binaries_cache.clone(),
            binaries: self.binaries.clone(),
            podinfo: self.podinfo.clone(),
            ca_file: self.ca_file.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// How the sidecar runs; `container` watches for the worker's processes to exit.
    #[arg(long, env = "RUNYARD_SIDECAR_MODE", value_enum, default_value_t = SidecarMode::Native)]
    pub sidecar_mode: SidecarMode,
    /// Exit when this process exits (instead of watching the pod's containers).
    #[arg(long)]
    pub watch_pid: Option<u32>,
    /// How long to keep serving after SIGTERM while the worker still runs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
    /// How often annotations and processes are checked.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll: Duration,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Namespace to manage (default: $POD_NAMESPACE, else the kubeconfig's).
    #[arg(
        short = 'n',
        long,
        env = "RUNYARD_NAMESPACE",
        conflicts_with = "all_namespaces"
    )]
    pub namespace: Option<String>,
    /// Manage pools in every namespace (needs the cluster-wide RBAC).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Full resync period (ghost workers are released within one resync).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub resync: Duration,
    /// Hold a coordination.k8s.io Lease before reconciling (for several replicas).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "runyard-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the controller's namespace).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Identity in the Lease (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Plain-HTTP listener for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    /// Tables.
    Table,
    /// JSON.
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Namespace (default: the kubeconfig's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// How to inject the launcher sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SidecarModeArg {
    /// Decide from the API server's version (native from Kubernetes 1.29).
    Auto,
    /// Native sidecar: an init container with `restartPolicy: Always`.
    Native,
    /// Regular container that exits when the worker containers exit.
    Container,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

/// Install-wide injection defaults (a pool's settings override them).
#[derive(Debug, Clone, Args)]
pub struct DefaultsArgs {
    /// Image of the injected init and launcher containers (e.g. a mirror for
    /// air-gapped clusters).
    #[arg(long, env = "RUNYARD_LAUNCHER_IMAGE", default_value = crate::injection::DEFAULT_LAUNCHER_IMAGE)]
    pub launcher_image: String,
    /// CPU request of containers that set none (empty: none).
    #[arg(long, default_value = crate::injection::DEFAULT_CPU_REQUEST)]
    pub default_cpu_request: String,
    /// Memory request of containers that set none (empty: none).
    #[arg(long, default_value = crate::injection::DEFAULT_MEMORY_REQUEST)]
    pub default_memory_request: String,
}

impl DefaultsArgs {
    pub fn engine(&self) -> crate::injection::EngineDefaults {
        crate::injection::EngineDefaults::new(
            &self.launcher_image,
            &self.default_cpu_request,
            &self.default_memory_request,
        )
    }
}

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
    /// Open connections at most; further connections are closed at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Time given to in-flight reviews on SIGTERM before connections are closed.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    #[command(flatten)]
    pub defaults: DefaultsArgs,
    /// Manifest file with Jobs, Pods or Lists (multi-document YAML); `-` reads stdin.
    #[arg(short = 'f', long = "filename")]
    pub filename: String,
    /// YAML file of WorkerPools to use (default: a built-in pool with default
    /// settings for whatever pool a run names).
    #[arg(long)]
    pub pool: Option<PathBuf>,
    /// Namespace of documents that set none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// How the launcher sidecar is injected (auto: decide from --kube-version).
    #[arg(long, value_enum, default_value_t = SidecarModeArg::Auto)]
    pub sidecar_mode: SidecarModeArg,
    /// Kubernetes version to inject for (e.g. 1.28); default: a current version.
    #[arg(long)]
    pub kube_version: Option<String>,
    /// Run id to stamp on new runs instead of a fresh ULID (reproducible output).
    #[arg(long)]
    pub run_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Name of the webhook's Service (used for the DNS names in the certificate).
    #[arg(long, default_value = "runyard-webhook")]
    pub service: String,
    /// Namespace of the Service and of the Secret.
    #[arg(short = 'n', long, default_value = "runyard")]
    pub namespace: String,
    /// Extra DNS names or IP addresses for the certificate.
    #[arg(long = "san", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub sans: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Directory for ca.crt, ca.key, tls.crt, tls.key.
    #[arg(long, default_value = "certs")]
    pub out_dir: PathBuf,
    /// Also write a kubernetes.io/tls Secret with this name (through the cluster API).
    #[arg(long, num_args = 0..=1, default_missing_value = "runyard-webhook-tls")]
    pub secret: Option<String>,
    /// Set caBundle on this MutatingWebhookConfiguration (through the cluster API).
    #[arg(long, num_args = 0..=1, default_missing_value = "runyard")]
    pub patch_webhook: Option<String>,
    /// With --secret: keep an existing Secret for the same names unless it
    /// expires within this many days (so upgrades do not rotate needlessly).
    #[arg(long, default_value_t = 30)]
    pub renew_before_days: u32,
    /// With --secret: always generate new certificates.
    #[arg(long)]
    pub force: bool,
}

/// Chooses the cluster facts from flags and, where known, the server version.
pub fn resolve_facts(mode: SidecarModeArg, version: Option<&str>) -> Result<ClusterFacts> {
    let from_version = match version {
        Some(v) => ClusterFacts::for_version_string(v)?,
        None => ClusterFacts::default(),
    };
    Ok(match mode {
        SidecarModeArg::Auto => from_version,
        SidecarModeArg::Native => ClusterFacts {
            sidecar_mode: SidecarMode::Native,
        },
        SidecarModeArg::Container => ClusterFacts {
            sidecar_mode: SidecarMode::Container,
        },
    })
}

fn read_input(filename: &str) -> Result<String> {
    if filename == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the manifest from stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(filename).with_context(|| format!("reading {filename}"))
    }
}

/// `runyard inject`.
pub fn inject(args: &InjectArgs) -> Result<String> {
    let facts = resolve_facts(args.sidecar_mode, args.kube_version.as_deref())?;
    let injector = match args.run_id.clone() {
        Some(id) => Injector::with_run_ids(facts, move || id.clone()),
        None => Injector::new(facts),
    }
    .with_defaults(args.defaults.engine());
    let pools = match &args.pool {
        Some(path) => crate::pools::load_pool_file(path)?,
        None => StaticPools::default_pool(),
    };
    let input = read_input(&args.filename)?;
    Ok(crate::inject::inject_yaml(
        &input,
        &injector,
        &pools,
        &args.namespace,
    )?)
}

/// `runyard crd`.
pub fn crd() -> Result<String> {
    crate::crd::crds_yaml().context("serialising the CRDs")
}

/// `runyard certs`.
pub async fn certs(args: &CertsArgs) -> Result<()> {
    let mut names = crate::certs::service_dns_names(&args.service, &args.namespace);
    names.extend(args.sans.iter().cloned());
    let client = if args.secret.is_some() || args.patch_webhook.is_some() {
        Some(
            kube::Client::try_default()
                .await
                .context("connecting to the cluster (for --secret / --patch-webhook)")?,
        )
    } else {
        None
    };
    let mut reused = None;
    if let (Some(client), Some(name), false) = (&client, &args.secret, args.force) {
        let existing = crate::certs::read_secret(client.clone(), &args.namespace, name)
            .await
            .with_context(|| format!("reading Secret {}/{name}", args.namespace))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        reused =
            existing.and_then(|s| crate::certs::reusable(&s, &names, args.renew_before_days, now));
    }
    let bundle = match reused {
        Some(b) => {
            println!(
                "reusing the valid certificate in Secret {}/{}",
                args.namespace,
                args.secret.as_deref().unwrap_or_default()
            );
            b
        }
        None => crate::certs::generate(&names, args.days)?,
    };
    for f in crate::certs::write_dir(&bundle, &args.out_dir)? {
        println!("wrote {}", f.display());
    }
    let Some(client) = client else {
        return Ok(());
    };
    if let Some(name) = &args.secret {
        // A reused bundle (no CA key in hand) is already in the Secret.
        if !bundle.ca_key.is_empty() {
            let secret = crate::certs::tls_secret(&bundle, name, &args.namespace);
            crate::certs::apply_secret(client.clone(), &secret)
                .await
                .with_context(|| format!("writing Secret {}/{name}", args.namespace))?;
            println!("applied Secret {}/{name}", args.namespace);
        }
    }
    if let Some(name) = &args.patch_webhook {
        crate::certs::patch_webhook(client, name, &bundle.ca_cert)
            .await
            .with_context(|| format!("patching caBundle of MutatingWebhookConfiguration {name}"))?;
        println!("patched caBundle of MutatingWebhookConfiguration {name}");
    }
    Ok(())
}

/// `runyard webhook`: serves until SIGTERM/SIGINT; a second signal aborts.
pub async fn webhook(args: &WebhookArgs) -> Result<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let (facts, pools): (ClusterFacts, Arc<dyn PoolSource>) = match &args.pools {
        Some(path) => {
            let pools = crate::pools::load_pool_file(path)?;
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
            let pools = crate::pools::watch_pools(client, args.namespace.as_deref(), ready.clone());
            (facts, Arc::new(pools))
        }
    };
    if args.max_in_flight == 0 || args.max_connections == 0 {
        bail!("--max-in-flight and --max-connections must be at least 1");
    }
    let state = AppState::new(
        Injector::new(facts).with_defaults(args.defaults.engine()),
        pools,
        Arc::new(Metrics::new()),
        ready,
        args.max_in_flight,
    );
    let options = Options {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        cert_reload_interval: args.cert_reload_interval,
        limits: Limits {
            max_in_flight: args.max_in_flight,
            max_connections: args.max_connections,
            shutdown_timeout: args.shutdown_timeout,
            ..Limits::default()
        },
    };
    let running = webhook::start(options, state)
        .await
        .context("starting the webhook (generate certificates with `runyard certs`)")?;
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight reviews");
    running.shutdown();
    tokio::spawn(async {
        shutdown_signal().await;
        tracing::warn!("second signal: aborting");
        std::process::exit(130);
    });
    running.wait().await?;
    tracing::info!("webhook stopped");
    Ok(())
}

async fn check_server(client: &kube::Client) -> Result<()> {
    let info = client
        .apiserver_version()
        .await
        .context("reading the API server version")?;
    ClusterFacts::for_version(&info.major, &info.minor)?;
    Ok(())
}

/// `runyard controller`: runs until SIGTERM/SIGINT, then releases the Lease.
pub async fn controller(args: &ControllerArgs) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster")?;
    check_server(&client).await?;
    let own_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let namespace = if args.all_namespaces {
        None
    } else {
        Some(
            args.namespace
                .clone()
                .unwrap_or_else(|| own_namespace.clone()),
        )
    };
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("runyard-{}", ulid::Ulid::new()))
    });
    let opts = crate::controller::runtime::Options {
        namespace: namespace.clone(),
        resync: args.resync,
        leader_election: args.leader_election,
        lease_namespace: args.lease_namespace.clone().unwrap_or(own_namespace),
        lease_name: args.lease_name.clone(),
        identity,
        metrics_listen: args.metrics_listen,
    };
    tracing::info!(namespace = ?namespace, identity = %opts.identity, "controller starting");
    let shutdown = async {
        shutdown_signal().await;
        tokio::spawn(async {
            shutdown_signal().await;
            std::process::exit(130);
        });
    };
    crate::controller::runtime::run(client, opts, shutdown).await?;
    Ok(())
}

/// The cluster API and the namespace to use (`explicit`, else the
/// kubeconfig's default).
async fn cluster_in(
    explicit: Option<&str>,
) -> Result<(crate::controller::cluster::KubeCluster, String)> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster")?;
    let ns = explicit.map_or_else(|| client.default_namespace().to_string(), str::to_string);
    Ok((
        crate::controller::cluster::KubeCluster::new(client, None),
        ns,
    ))
}

/// `runyard status`.
pub async fn status(args: &StatusArgs) -> Result<String> {
    let (cluster, ns) = cluster_in(args.namespace.as_deref()).await?;
    let report = crate::status::collect(&cluster, &ns)
        .await
        .with_context(|| format!("reading pools in namespace {ns}"))?;
    Ok(match args.output {
        OutputFormat::Table => crate::status::render(&report),
        OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
    })
}

fn submit_job(args: &SubmitArgs) -> Result<(Option<String>, k8s_openapi::api::batch::v1::Job)> {
    if let Some(path) = &args.filename {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let job: k8s_openapi::api::batch::v1::Job = serde_norway::from_str(&text)
            .with_context(|| format!("{} is not a Job manifest", path.display()))?;
        if crate::injection::label(&job.metadata, crate::injection::LABEL_POOL).is_none() {
            bail!(
                "{} has no {} label: it would not be a run",
                path.display(),
                crate::injection::LABEL_POOL
            );
        }
        return Ok((job.metadata.namespace.clone(), job));
    }
    let env = args
        .env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--env {kv:?}: expected NAME=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = crate::submit::RunSpec {
        pool: args.pool.clone().unwrap_or_default(),
        image: args.image.clone().unwrap_or_default(),
        command: args.command.clone(),
        env,
        priority: args.priority,
        source_url: args.source_url.clone(),
        source_sha256: args.source_sha256.clone(),
        name_prefix: String::new(),
    };
    Ok((None, crate::submit::job_from_flags(&spec)?))
}

/// `runyard submit`: returns the exit code for the process.
pub async fn submit(args: &SubmitArgs) -> Result<i32> {
    use std::io::IsTerminal;
    let (file_ns, job) = submit_job(args)?;
    let (cluster, ns) = cluster_in(args.namespace.as_deref().or(file_ns.as_deref())).await?;
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    let opts = crate::submit::SubmitOptions {
        detach: args.detach,
        poll: Duration::from_secs(1),
        grace: args.grace,
        progress: if std::io::stderr().is_terminal() {
            crate::submit::Progress::Spinner
        } else {
            crate::submit::Progress::Lines
        },
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let summary =
        crate::submit::submit(&cluster, &ns, &job, &opts, &mut stdout, &mut stderr, rx).await?;
    if args.output == SummaryFormat::Json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(summary.exit_code)
}

/// `runyard cancel`.
pub async fn cancel(args: &CancelArgs) -> Result<String> {
    let (cluster, ns) = cluster_in(args.namespace.as_deref()).await?;
    let target = crate::submit::parse_target(&args.run);
    let report = crate::submit::cancel(
        &cluster,
        &ns,
        &target,
        &args.reason,
        args.grace,
        Duration::from_secs(1),
    )
    .await?;
    Ok(match (report.was_running, report.stopped_in_time) {
        (false, _) => format!("{} cancelled before it started\n", report.run),
        (true, true) => format!("{} cancelled; the worker stopped\n", report.run),
        (true, false) => format!(
            "{} cancelled; the worker did not stop within {:?}, its pod was deleted\n",
            report.run, args.grace
        ),
    })
}

/// `runyard launcher init`: on failure the message also goes to the
/// container's termination log, so `kubectl describe pod` shows it.
pub async fn launcher_init(args: &LayoutArgs) -> Result<()> {
    match crate::launcher::init::run(&args.layout()).await {
        Ok(report) => {
            tracing::info!(source = report.source_fetched, downloaded = ?report.tools_downloaded, cached = ?report.tools_cached, "workspace ready");
            Ok(())
        }
        Err(e) => {
            let log = std::env::var("RUNYARD_TERMINATION_LOG")
                .unwrap_or_else(|_| "/dev/termination-log".into());
            let _ = std::fs::write(log, format!("runyard launcher init: {e}"));
            Err(e).context("preparing the run's workspace")
        }
    }
}

/// `runyard launcher serve`.
pub async fn launcher_serve(args: &ServeArgs) -> Result<()> {
    use crate::launcher::serve::{ServeOptions, WorkerWatch};
    let watch = match (args.watch_pid, args.sidecar_mode) {
        (Some(pid), _) => WorkerWatch::Pid(pid),
        (None, SidecarMode::Container) => WorkerWatch::ProcessNamespace,
        (None, SidecarMode::Native) => WorkerWatch::Kubelet,
    };
    let opts = ServeOptions {
        watch,
        grace: args.grace,
        poll: args.poll,
    };
    crate::launcher::serve::run(&args.layout.layout(), opts).await?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                assert!(
                    builtin || arg.get_help().is_some() || arg.is_positional(),
                    "{} --{} has no help",
                    cmd.get_name(),
                    arg.get_id()
                );
            }
            for sub in cmd.get_subcommands() {
                walk(sub);
            }
        }
        walk(&Cli::command());
    }

    #[test]
    fn sidecar_mode_follows_the_version() {
        let f = resolve_facts(SidecarModeArg::Auto, Some("1.28")).expect("1.28");
        assert_eq!(f.sidecar_mode, SidecarMode::Container);
        let f = resolve_facts(SidecarModeArg::Auto, Some("v1.33.1")).expect("1.33");
        assert_eq!(f.sidecar_mode, SidecarMode::Native);
        let f = resolve_facts(SidecarModeArg::Container, Some("1.33")).expect("override");
        assert_eq!(f.sidecar_mode, SidecarMode::Container);
        assert!(resolve_facts(SidecarModeArg::Auto, Some("1.26")).is_err());
    }
}
