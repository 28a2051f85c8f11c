//! `runyard status`.

use super::cluster_in;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

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

/// `runyard status`.
pub(super) async fn run(args: &StatusArgs) -> Result<String> {
    let (cluster, ns) = cluster_in(args.namespace.as_deref()).await?;
    let report = crate::client::status::collect(&cluster, &ns)
        .await
        .with_context(|| format!("reading pools in namespace {ns}"))?;
    Ok(match args.output {
        OutputFormat::Table => crate::client::status::render(&report),
        OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
    })
}
