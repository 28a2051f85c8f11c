//! `runyard cancel`.

use super::{cluster_in, parse_duration};
use crate::client::cancel::cancel;
use crate::client::parse_target;
use anyhow::Result;
use clap::Args;
use std::time::Duration;

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

/// `runyard cancel`.
pub(super) async fn run(args: &CancelArgs) -> Result<String> {
    let (cluster, ns) = cluster_in(args.namespace.as_deref()).await?;
    let target = parse_target(&args.run);
    let report = cancel(
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
