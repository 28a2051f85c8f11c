//! `runyard submit`.

use super::{cluster_in, parse_duration};
use crate::client::submit::{job_from_flags, submit, Progress, RunSpec, SubmitOptions};
use crate::vocab::{label, LABEL_POOL};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use k8s_openapi::api::batch::v1::Job;
use std::path::PathBuf;
use std::time::Duration;

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

fn submit_job(args: &SubmitArgs) -> Result<(Option<String>, Job)> {
    if let Some(path) = &args.filename {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let job: Job = serde_norway::from_str(&text)
            .with_context(|| format!("{} is not a Job manifest", path.display()))?;
        if label(&job.metadata, LABEL_POOL).is_none() {
            bail!(
                "{} has no {} label: it would not be a run",
                path.display(),
                LABEL_POOL
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
    let spec = RunSpec {
        pool: args.pool.clone().unwrap_or_default(),
        image: args.image.clone().unwrap_or_default(),
        command: args.command.clone(),
        env,
        priority: args.priority,
        source_url: args.source_url.clone(),
        source_sha256: args.source_sha256.clone(),
        name_prefix: String::new(),
    };
    Ok((None, job_from_flags(&spec)?))
}

/// `runyard submit`: returns the exit code for the process.
pub(super) async fn run(args: &SubmitArgs) -> Result<i32> {
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
    let opts = SubmitOptions {
        detach: args.detach,
        poll: Duration::from_secs(1),
        grace: args.grace,
        progress: if std::io::stderr().is_terminal() {
            Progress::Spinner
        } else {
            Progress::Lines
        },
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let summary = submit(&cluster, &ns, &job, &opts, &mut stdout, &mut stderr, rx).await?;
    if args.output == SummaryFormat::Json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(summary.exit_code)
}
