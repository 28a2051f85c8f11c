//! `runyard inject`.

use super::{resolve_facts, DefaultsArgs, SidecarModeArg};
use crate::injection::{load_pool_file, manifests, Injector, StaticPools};
use anyhow::{Context, Result};
use clap::Args;
use std::io::Read;
use std::path::PathBuf;

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
    #[arg(long, value_parser = super::parse_kube_version)]
    pub kube_version: Option<String>,
    /// Run id to stamp on new runs instead of a fresh ULID (reproducible output).
    #[arg(long)]
    pub run_id: Option<String>,
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
pub(super) fn run(args: &InjectArgs) -> Result<String> {
    let facts = resolve_facts(args.sidecar_mode, args.kube_version.as_deref())?;
    let injector = match args.run_id.clone() {
        Some(id) => Injector::with_run_ids(facts, move || id.clone()),
        None => Injector::new(facts),
    }
    .with_defaults(args.defaults.engine());
    let pools = match &args.pool {
        Some(path) => load_pool_file(path)?,
        None => StaticPools::default_pool(),
    };
    let input = read_input(&args.filename)?;
    let shown = if args.filename == "-" {
        "stdin"
    } else {
        args.filename.as_str()
    };
    manifests::inject_yaml(&input, &injector, &pools, &args.namespace)
        .with_context(|| shown.to_string())
}
