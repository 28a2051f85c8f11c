//! `runyard certs`.

use crate::certs::{provision, service_dns_names, Provision};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

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

/// `runyard certs`.
pub(super) async fn run(args: &CertsArgs) -> Result<()> {
    let mut names = service_dns_names(&args.service, &args.namespace);
    names.extend(args.sans.iter().cloned());
    let p = Provision {
        names,
        days: args.days,
        out_dir: args.out_dir.clone(),
        namespace: args.namespace.clone(),
        secret: args.secret.clone(),
        patch_webhook: args.patch_webhook.clone(),
        renew_before_days: args.renew_before_days,
        force: args.force,
    };
    let client = if p.needs_cluster() {
        Some(
            super::client()
                .await
                .context("connecting to the cluster (for --secret / --patch-webhook)")?,
        )
    } else {
        None
    };
    for line in provision(&p, client).await? {
        println!("{line}");
    }
    Ok(())
}
