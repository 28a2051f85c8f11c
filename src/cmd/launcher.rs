//! `runyard launcher init` and `runyard launcher serve`.

use super::parse_duration;
use crate::injection::SidecarMode;
use crate::vocab::{env, BINARIES_CACHE_PATH, BINARIES_PATH, PODINFO_PATH, WORKSPACE_PATH};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum LauncherCommand {
    /// Prepare the workspace, source and tools (the `init` container).
    Init(InitArgs),
    /// Serve the worker's local API and relay stop requests (the `launcher` sidecar).
    Serve(ServeArgs),
    /// Exit 0 if the launcher answers on its socket (the launcher's readiness
    /// probe: the run's heartbeat).
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// How long the launcher may take to answer.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Where the launcher works (the webhook sets these through the environment).
#[derive(Debug, Clone, Args)]
pub struct LayoutArgs {
    /// Workspace directory.
    #[arg(long, env = env::WORKSPACE, default_value = WORKSPACE_PATH)]
    pub workspace: PathBuf,
    /// Shared binaries cache.
    #[arg(long, env = env::BINARIES_CACHE, default_value = BINARIES_CACHE_PATH)]
    pub binaries_cache: PathBuf,
    /// Directory of the run's tool links (first on the worker's PATH).
    #[arg(long, env = env::BINARIES, default_value = BINARIES_PATH)]
    pub binaries: PathBuf,
    /// Downward-API directory with the pod's `annotations` and `labels`.
    #[arg(long, env = env::PODINFO, default_value = PODINFO_PATH)]
    pub podinfo: PathBuf,
    /// Extra CA certificates (PEM) trusted for downloads, e.g. a mirror's.
    #[arg(long, env = env::CA_FILE)]
    pub ca_file: Option<PathBuf>,
    /// Most bytes unpacked from the source tarball (init).
    #[arg(long, env = env::SOURCE_MAX_BYTES, default_value_t = crate::launcher::init::DEFAULT_MAX_SOURCE_BYTES)]
    pub max_source_bytes: u64,
    /// Most files and directories unpacked from the source tarball (init).
    #[arg(long, env = env::SOURCE_MAX_ENTRIES, default_value_t = crate::launcher::init::DEFAULT_MAX_SOURCE_ENTRIES)]
    pub max_source_entries: u64,
}

impl LayoutArgs {
    pub fn layout(&self) -> crate::launcher::Layout {
        crate::launcher::Layout {
            workspace: self.workspace.clone(),
            cache: self.binaries_cache.clone(),
            binaries: self.binaries.clone(),
            podinfo: self.podinfo.clone(),
            ca_file: self.ca_file.clone(),
            extract: crate::launcher::init::ExtractLimits {
                max_bytes: self.max_source_bytes,
                max_entries: self.max_source_entries,
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Also install the exec shim (`runyard-exec`, next to this binary) into
    /// the binaries directory, for worker commands the webhook wrapped to put
    /// tools first on PATH (the webhook sets this).
    #[arg(long, env = env::EXEC_SHIM)]
    pub exec_shim: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// How the sidecar runs; `container` watches for the worker's processes to exit.
    #[arg(long, env = env::SIDECAR_MODE, value_enum, default_value_t = SidecarMode::Native)]
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

/// `runyard launcher init`: on failure the message also goes to the
/// container's termination log, so `kubectl describe pod` shows it.
pub(super) async fn init(args: &InitArgs) -> Result<()> {
    let fail = |message: &str| {
        let log =
            std::env::var(env::TERMINATION_LOG).unwrap_or_else(|_| "/dev/termination-log".into());
        let _ = std::fs::write(log, format!("runyard launcher init: {message}"));
    };
    let layout = args.layout.layout();
    if args.exec_shim {
        use crate::launcher::shim;
        if let Err(e) = shim::install(&shim::source(), &layout.binaries) {
            fail(&e.to_string());
            return Err(e).context("preparing the run's workspace");
        }
    }
    match crate::launcher::init::run(&layout).await {
        Ok(report) => {
            tracing::info!(source = report.source_fetched, downloaded = ?report.tools_downloaded, cached = ?report.tools_cached, "workspace ready");
            Ok(())
        }
        Err(e) => {
            fail(&e.to_string());
            Err(e).context("preparing the run's workspace")
        }
    }
}

/// `runyard launcher probe`.
pub(super) fn probe(args: &ProbeArgs) -> Result<()> {
    let socket = args.layout.layout().socket();
    crate::launcher::serve::probe(&socket, args.timeout)
        .with_context(|| format!("the launcher does not answer on {}", socket.display()))
}

/// `runyard launcher serve`.
pub(super) async fn serve(args: &ServeArgs) -> Result<()> {
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
