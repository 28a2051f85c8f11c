//! `runyard controller`.

use super::{check_server, client, parse_duration};
use crate::controller::lease::LeaseTimings;
use crate::controller::runtime::ControllerOptions;
use crate::shutdown::Shutdown;
use anyhow::Result;
use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

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
    /// How long a Lease is valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// The leader stops acting when it could not renew for this long (less
    /// than --lease-duration, so it has stopped before a standby takes over).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub lease_renew_deadline: Duration,
    /// How often the leader renews and standbys try.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub lease_retry_period: Duration,
    /// Deadline of every API call (a hung API server is a timeout, retried).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub api_timeout: Duration,
    /// Pools reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Plain-HTTP listener for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
}

/// `runyard controller`: runs until SIGTERM/SIGINT, then releases the Lease.
pub(super) async fn run(args: &ControllerArgs) -> Result<()> {
    if args.lease_renew_deadline >= args.lease_duration
        || args.lease_retry_period >= args.lease_renew_deadline
    {
        anyhow::bail!("need --lease-retry-period < --lease-renew-deadline < --lease-duration");
    }
    let client = client().await?;
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
    let opts = ControllerOptions {
        namespace: namespace.clone(),
        resync: args.resync,
        leader_election: args.leader_election,
        lease_namespace: args.lease_namespace.clone().unwrap_or(own_namespace),
        lease_name: args.lease_name.clone(),
        identity,
        lease_timings: LeaseTimings {
            duration: args.lease_duration,
            renew_deadline: args.lease_renew_deadline,
            retry: args.lease_retry_period,
        },
        api_timeout: args.api_timeout,
        concurrency: args.concurrency.max(1),
        metrics_listen: args.metrics_listen,
    };
    tracing::info!(namespace = ?namespace, identity = %opts.identity, "controller starting");
    crate::controller::runtime::run(client, opts, Shutdown::on_signals()).await?;
    Ok(())
}
