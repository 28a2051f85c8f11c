//! The `runyard` command line: one module per subcommand, each holding its
//! arguments and its wiring from arguments to the library. Errors get their
//! user-facing context here.

mod cancel;
mod certs;
mod controller;
mod crd;
pub mod errors;
mod inject;
mod launcher;
mod logs;
mod status;
mod submit;
mod webhook;

pub use cancel::CancelArgs;
pub use certs::CertsArgs;
pub use controller::ControllerArgs;
pub use inject::InjectArgs;
pub use launcher::{InitArgs, LauncherCommand, LayoutArgs, ProbeArgs, ServeArgs};
pub use logs::LogsArgs;
pub use status::{OutputFormat, StatusArgs};
pub use submit::{SubmitArgs, SummaryFormat};
pub use webhook::WebhookArgs;

use crate::injection::{ClusterFacts, SidecarMode};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
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
    Webhook(Box<WebhookArgs>),
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
    /// Print a run's worker log: live, or the tail kept after its pod is gone.
    Logs(LogsArgs),
    /// Run inside a run pod (injected by the webhook): `init` or `serve`.
    #[command(subcommand)]
    Launcher(LauncherCommand),
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

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
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
    /// Image of run containers that name none (a Job whose container has no
    /// `image`); default: none (the API server rejects such a run).
    #[arg(long, env = "RUNYARD_DEFAULT_WORKER_IMAGE")]
    pub default_worker_image: Option<String>,
}

impl DefaultsArgs {
    pub fn engine(&self) -> crate::injection::EngineDefaults {
        crate::injection::EngineDefaults::new(
            &self.launcher_image,
            &self.default_cpu_request,
            &self.default_memory_request,
        )
        .with_worker_image(self.default_worker_image.as_deref())
    }
}

/// `--kube-version`: a supported MAJOR.MINOR (checked when the flags are read).
pub(crate) fn parse_kube_version(s: &str) -> Result<String, String> {
    ClusterFacts::for_version_string(s)
        .map(|_| s.trim().to_string())
        .map_err(|e| e.to_string())
}

/// Chooses the cluster facts from `--sidecar-mode` and, where known, the
/// Kubernetes version (`--kube-version`, or the API server's); refuses a
/// combination that cannot work (native sidecars on a version without them).
pub fn resolve_facts(mode: SidecarModeArg, version: Option<&str>) -> Result<ClusterFacts> {
    let from_version = version.map(ClusterFacts::for_version_string).transpose()?;
    let native = ClusterFacts {
        sidecar_mode: SidecarMode::Native,
    };
    Ok(match (mode, from_version) {
        (SidecarModeArg::Auto, facts) => facts.unwrap_or_default(),
        (SidecarModeArg::Native, Some(facts)) if facts.sidecar_mode != SidecarMode::Native => {
            bail!(
                "--sidecar-mode native cannot work on Kubernetes {}: native sidecars are on by default from 1.{} (1.28 has them only behind the alpha SidecarContainers feature gate), and without them run pods never start; use --sidecar-mode container, or auto",
                version.unwrap_or_default().trim(),
                crate::injection::NATIVE_SIDECAR_MINOR
            )
        }
        (SidecarModeArg::Native, _) => native,
        (SidecarModeArg::Container, _) => ClusterFacts {
            sidecar_mode: SidecarMode::Container,
        },
    })
}

/// Whether log lines get ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set to anything (<https://no-color.org>).
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The log filter: `--log-level`, and for the one-shot commands (which report
/// their own errors, once) without kube's log line for each failed request,
/// unless the filter names kube itself.
pub fn log_filter(cli: &Cli) -> String {
    let one_shot = !matches!(
        cli.command,
        Command::Webhook(_) | Command::Controller(_) | Command::Launcher(_)
    );
    if one_shot && !cli.log_level.contains("kube") {
        format!("{},kube_client=off", cli.log_level)
    } else {
        cli.log_level.clone()
    }
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: &Cli) -> Result<i32> {
    let ok = |r: Result<()>| r.map(|()| 0);
    match &cli.command {
        Command::Inject(a) => ok(inject::run(a).map(|out| print!("{out}"))),
        Command::Crd => ok(crd::run().map(|out| print!("{out}"))),
        Command::Certs(a) => ok(runtime()?.block_on(certs::run(a))),
        Command::Webhook(a) => ok(runtime()?.block_on(webhook::run(a))),
        Command::Controller(a) => ok(runtime()?.block_on(controller::run(a))),
        Command::Launcher(LauncherCommand::Init(a)) => ok(runtime()?.block_on(launcher::init(a))),
        Command::Launcher(LauncherCommand::Serve(a)) => ok(runtime()?.block_on(launcher::serve(a))),
        Command::Launcher(LauncherCommand::Probe(a)) => ok(launcher::probe(a)),
        Command::Status(a) => ok(runtime()?
            .block_on(status::run(a))
            .map(|out| print!("{out}"))),
        Command::Cancel(a) => ok(runtime()?
            .block_on(cancel::run(a))
            .map(|out| print!("{out}"))),
        Command::Logs(a) => ok(runtime()?.block_on(logs::run(a))),
        // `submit` exits with the run's exit code.
        Command::Submit(a) => runtime()?.block_on(submit::run(a)),
    }
}

/// The exit code of a command that failed before or outside its own result:
/// `submit` uses 2, distinct from any run's own exit code of 1.
pub fn failure_code(cli: &Cli) -> i32 {
    if matches!(cli.command, Command::Submit(_)) {
        2
    } else {
        1
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The cluster API and the namespace to use (`explicit`, else the
/// kubeconfig's default).
pub(crate) async fn cluster_in(
    explicit: Option<&str>,
) -> Result<(crate::cluster::KubeCluster, String)> {
    let client = client().await?;
    let ns = explicit.map_or_else(|| client.default_namespace().to_string(), str::to_string);
    Ok((crate::cluster::KubeCluster::new(client, None), ns))
}

/// How long connecting to the API server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the cluster from the kubeconfig (or the in-cluster
/// environment), with a connect timeout; calls get their own deadlines, and
/// watches kube's idle timeout.
pub(crate) async fn client() -> Result<kube::Client> {
    // kube's own message names every place it looked, each with its cause
    // repeated; say once what is missing and how to fix it instead.
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| anyhow::anyhow!(errors::no_cluster(&e)))?;
    errors::set_target(errors::ClusterTarget {
        url: config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string(),
        source: errors::config_source(),
    });
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    kube::Client::try_from(config).context("connecting to the cluster")
}

pub(crate) async fn check_server(client: &kube::Client) -> Result<()> {
    let info = client
        .apiserver_version()
        .await
        .context("reading the API server version")?;
    ClusterFacts::for_version(&info.major, &info.minor)?;
    Ok(())
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
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(log_colours(true, None));
        assert!(!log_colours(false, None), "a file or a pipe");
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(
            log_colours(true, Some(OsStr::new(""))),
            "empty NO_COLOR is unset"
        );
    }

    #[test]
    fn one_shot_commands_leave_kubes_request_errors_to_their_own_message() {
        let cli = Cli::try_parse_from(["runyard", "status"]).expect("status");
        assert_eq!(log_filter(&cli), "info,kube_client=off");
        let cli = Cli::try_parse_from(["runyard", "--log-level", "kube=debug", "status"])
            .expect("status");
        assert_eq!(log_filter(&cli), "kube=debug");
        let cli = Cli::try_parse_from(["runyard", "controller"]).expect("controller");
        assert_eq!(log_filter(&cli), "info");
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
        // Container mode works on every supported version.
        let f = resolve_facts(SidecarModeArg::Container, Some("1.27")).expect("container");
        assert_eq!(f.sidecar_mode, SidecarMode::Container);
    }

    #[test]
    fn native_sidecars_on_a_version_without_them_are_refused() {
        let err = resolve_facts(SidecarModeArg::Native, Some("1.27")).expect_err("no sidecars");
        assert_eq!(
            err.to_string(),
            "--sidecar-mode native cannot work on Kubernetes 1.27: native sidecars are on by default from 1.29 (1.28 has them only behind the alpha SidecarContainers feature gate), and without them run pods never start; use --sidecar-mode container, or auto"
        );
        assert!(resolve_facts(SidecarModeArg::Native, Some("1.28")).is_err());
        let f = resolve_facts(SidecarModeArg::Native, Some("v1.29.3-gke.1")).expect("1.29");
        assert_eq!(f.sidecar_mode, SidecarMode::Native);
        assert!(resolve_facts(SidecarModeArg::Native, None).is_ok());
    }

    #[test]
    fn kube_versions_are_checked_when_the_flags_are_read() {
        assert_eq!(
            parse_kube_version("banana").expect_err("not a version"),
            "\"banana\" is not a Kubernetes version: expected MAJOR.MINOR, e.g. 1.29 (or v1.29.3)"
        );
        for bad in ["1", "1.", "v", "1.x", "x.29", ""] {
            assert!(parse_kube_version(bad).is_err(), "{bad}");
        }
        assert!(parse_kube_version("1.26")
            .expect_err("too old")
            .starts_with("Kubernetes 1.26 is not supported"));
        for good in ["1.29", "v1.33.1", "1.29+", " 1.30 "] {
            assert!(parse_kube_version(good).is_ok(), "{good}");
        }
        let err = Cli::try_parse_from(["runyard", "inject", "-f", "x", "--kube-version", "banana"])
            .expect_err("refused");
        assert!(err.to_string().contains("--kube-version"), "{err}");
    }
}
