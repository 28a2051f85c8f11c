//! `runyard logs`.

use super::cluster_in;
use crate::client::logs::{show, LogSource};
use anyhow::{Context, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run: `job/NAME`, `pod/NAME`, or a name (a Job, else a bare Pod).
    pub run: String,
    /// Namespace (default: the kubeconfig's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Follow the live log until the run's pod ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// `runyard logs`: the log on stdout; where it came from (and a finished
/// run's result) on stderr.
pub(super) async fn run(args: &LogsArgs) -> Result<()> {
    let (cluster, ns) = cluster_in(args.namespace.as_deref()).await?;
    let mut out = std::io::stdout();
    let source = show(&cluster, &ns, &args.run, args.follow, &mut out)
        .await
        .with_context(|| format!("reading the log of {}", args.run))?;
    if let LogSource::Kept { result } = source {
        let mut note =
            "runyard: the run's pod is gone; this is the log tail kept with its result".to_string();
        if let Some(r) = result {
            note.push_str(&format!(": {}", r.outcome));
            if let Some(reason) = r.reason {
                note.push_str(&format!(" ({reason})"));
            }
            if let Some(code) = r.exit_code {
                note.push_str(&format!(", exit code {code}"));
            }
            if let Some(m) = r.message {
                note.push_str(&format!(": {m}"));
            }
        }
        eprintln!("{note}");
    }
    Ok(())
}
