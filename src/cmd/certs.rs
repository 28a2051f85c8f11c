//! `runyard certs`.

use crate::certs::{provision, service_dns_names, Provision};
use anyhow::{bail, Context, Result};
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
    /// Extra DNS names or IP addresses for the certificate (repeatable), in
    /// addition to the Service's names, `localhost` and `127.0.0.1`.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Validity in days (at least 1).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..))]
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

/// Names every certificate of `runyard certs` has besides the Service's: for
/// a webhook run locally.
pub const DEFAULT_SANS: [&str; 2] = ["localhost", "127.0.0.1"];

/// The certificate's names: the Service's, [`DEFAULT_SANS`], then `--san`s
/// (each once, in that order).
pub fn certificate_names(args: &CertsArgs) -> Vec<String> {
    let mut names = service_dns_names(&args.service, &args.namespace);
    for name in DEFAULT_SANS
        .iter()
        .map(|s| s.to_string())
        .chain(args.sans.iter().map(|s| s.trim().to_string()))
    {
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// `runyard certs`.
pub(super) async fn run(args: &CertsArgs) -> Result<()> {
    if args.secret.is_some() && !args.force && args.days <= args.renew_before_days {
        bail!(
            "--days {} is not more than --renew-before-days {}: every run would replace the Secret's certificate; raise --days or lower --renew-before-days",
            args.days,
            args.renew_before_days
        );
    }
    let names = certificate_names(args);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<CertsArgs, clap::Error> {
        let cli = Cli::try_parse_from(["runyard", "certs"].iter().chain(args))?;
        match cli.command {
            Command::Certs(a) => Ok(a),
            _ => unreachable!("certs"),
        }
    }

    #[test]
    fn sans_add_to_the_default_names() {
        let a = parse(&["--san", "webhook.example.com", "--san", "localhost"]).expect("args");
        assert_eq!(
            certificate_names(&a),
            [
                "runyard-webhook",
                "runyard-webhook.runyard",
                "runyard-webhook.runyard.svc",
                "runyard-webhook.runyard.svc.cluster.local",
                "localhost",
                "127.0.0.1",
                "webhook.example.com",
            ]
        );
    }

    #[test]
    fn days_have_a_minimum() {
        let err = parse(&["--days", "0"]).expect_err("0 days");
        assert!(err.to_string().contains("--days"), "{err}");
        assert_eq!(parse(&["--days", "1"]).expect("1 day").days, 1);
    }

    #[test]
    fn a_secret_that_would_be_replaced_on_every_run_is_refused() {
        let a = parse(&["--secret", "--days", "30"]).expect("args");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let err = rt.block_on(run(&a)).expect_err("refused before any write");
        assert!(
            err.to_string().starts_with(
                "--days 30 is not more than --renew-before-days 30: every run would replace"
            ),
            "{err}"
        );
    }
}
