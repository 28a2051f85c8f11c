//! The self-managed serving certificate (`runyard webhook --cert-secret`),
//! as Kueue's and Gatekeeper's internal cert rotators do it, without a
//! leader: every replica reads its Secret and the MutatingWebhookConfiguration
//! every interval, serves the Secret's current certificate, is ready only once
//! every webhook's caBundle trusts it, and writes the next step of
//! [`managed::plan`] (create, begin a rotation, patch the caBundle, promote).
//!
//! Every write is guarded: a create fails when another replica created the
//! Secret first, an update when anyone wrote since the read
//! (resourceVersion). The replica that loses re-reads and adopts what won, so
//! replicas never write conflicting Secrets and all serve the same
//! certificate. No Secret volume and no Helm hook are needed.

use super::metrics::Metrics;
use super::tls::CertStore;
use crate::certs::managed::{self, Managed, Policy, Step};
use crate::certs::{service_dns_names, with_ca_bundle, CertError};
use crate::shutdown::Shutdown;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Resource;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// Seconds since the epoch, injectable so tests control time.
pub trait Clock: Send + Sync {
    fn now(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }
}

/// One permission the rotator needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// Limited to the one object by `resourceNames` (a create cannot be:
    /// its name is not known when it is authorized).
    pub named: bool,
}

/// Exactly the verbs the rotator uses: the Secret in the webhook's own
/// namespace (a Role), the MutatingWebhookConfiguration (a ClusterRole).
/// Tests check the chart and `webhook-config/` grant exactly these.
pub const RBAC: &[Permission] = &[
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["create"],
        named: false,
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get", "update"],
        named: true,
    },
    Permission {
        group: "admissionregistration.k8s.io",
        resource: "mutatingwebhookconfigurations",
        verbs: &["get", "update"],
        named: true,
    },
];

/// How long the caBundle must have trusted a new certificate before it is
/// served: time for every API server to pick up the changed configuration.
pub const DEFAULT_TRUST_DELAY: Duration = Duration::from_secs(60);

/// What the rotator manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatorConfig {
    /// Namespace of the Secret (the webhook's own).
    pub namespace: String,
    pub secret: String,
    /// The MutatingWebhookConfiguration whose caBundle is set.
    pub webhook_config: String,
    pub policy: Policy,
}

impl RotatorConfig {
    /// For the webhook's Service `service` in `namespace`: certificates for
    /// its DNS names (plus `extra_names`), checked as the API server connects
    /// (`SERVICE.NAMESPACE.svc`).
    pub fn for_service(
        service: &str,
        namespace: &str,
        extra_names: &[String],
        secret: &str,
        webhook_config: &str,
        validity: Duration,
    ) -> Self {
        let mut names = service_dns_names(service, namespace);
        names.extend(extra_names.iter().cloned());
        Self {
            namespace: namespace.to_string(),
            secret: secret.to_string(),
            webhook_config: webhook_config.to_string(),
            policy: Policy {
                names,
                server_name: format!("{service}.{namespace}.svc"),
                validity: i64::try_from(validity.as_secs()).unwrap_or(i64::MAX),
                trust_delay: i64::try_from(DEFAULT_TRUST_DELAY.as_secs()).unwrap_or(60),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotatorError {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        source: Box<kube::Error>,
    },
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("Secret {0} cannot be used: {1}")]
    Unusable(String, String),
}

/// What one read of the cluster found.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub secret: Option<Secret>,
    pub config: Option<MutatingWebhookConfiguration>,
}

impl Observed {
    /// The caBundle of each webhook (`None`: no configuration).
    pub fn bundles(&self) -> Option<Vec<Option<Vec<u8>>>> {
        let config = self.config.as_ref()?;
        Some(
            config
                .webhooks
                .iter()
                .flatten()
                .map(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()))
                .collect(),
        )
    }
}

/// The result of applying one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// This write landed.
    Wrote(&'static str),
    /// Someone wrote first (a conflict, or the object is gone): read again.
    Lost,
    /// The step writes nothing.
    Nothing,
}

/// What one [`Rotator::tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The writes that landed, in order.
    pub writes: Vec<&'static str>,
    /// Writes another replica (or anyone) beat.
    pub lost: usize,
    /// The step the tick ended on (one that writes nothing).
    pub last: Option<Step>,
    /// Whether a certificate is served, and whether the caBundle trusts it.
    pub serving: bool,
    pub trusted: bool,
}

/// The self-managed certificate of one webhook replica.
pub struct Rotator {
    secrets: Api<Secret>,
    configs: Api<MutatingWebhookConfiguration>,
    config: RotatorConfig,
    store: Arc<CertStore>,
    trusted: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    metrics: Option<Arc<Metrics>>,
    /// The next certificate the caBundle was first seen trusting, and when.
    trusted_since: Mutex<Option<(String, i64)>>,
}

fn kube_err(what: String) -> impl FnOnce(kube::Error) -> RotatorError {
    move |source| RotatorError::Kube {
        what,
        source: Box::new(source),
    }
}

fn is_lost(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

impl Rotator {
    /// A rotator feeding `store` and the readiness switch `trusted` (set to
    /// false now, true whenever the served certificate is trusted).
    pub fn new(
        client: kube::Client,
        config: RotatorConfig,
        store: Arc<CertStore>,
        trusted: Arc<AtomicBool>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        trusted.store(false, Ordering::Relaxed);
        Self {
            secrets: Api::namespaced(client.clone(), &config.namespace),
            configs: Api::all(client),
            config,
            store,
            trusted,
            clock,
            metrics: None,
            trusted_since: Mutex::new(None),
        }
    }

    /// Counts certificate changes and failed ticks.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn secret_ref(&self) -> String {
        format!("Secret {}/{}", self.config.namespace, self.config.secret)
    }

    /// Reads the Secret and the MutatingWebhookConfiguration.
    pub async fn observe(&self) -> Result<Observed, RotatorError> {
        let secret = self
            .secrets
            .get_opt(&self.config.secret)
            .await
            .map_err(kube_err(format!("reading {}", self.secret_ref())))?;
        let config = self
            .configs
            .get_opt(&self.config.webhook_config)
            .await
            .map_err(kube_err(format!(
                "reading MutatingWebhookConfiguration {}",
                self.config.webhook_config
            )))?;
        Ok(Observed { secret, config })
    }

    /// Serves the Secret's current certificate and sets readiness: trusted
    /// when every webhook's caBundle accepts what is served. Returns
    /// (serving, trusted).
    pub fn serve(&self, observed: &Observed) -> (bool, bool) {
        let managed = observed
            .secret
            .as_ref()
            .and_then(|s| Managed::from_secret(s).ok());
        if let Some(m) = &managed {
            let from = Path::new(&self.config.secret);
            let had = self.store.served_cert().is_some();
            match self.store.set(
                m.served.cert.as_bytes(),
                m.served.key.as_bytes(),
                &from.join("tls.crt"),
                &from.join("tls.key"),
            ) {
                Ok(true) => {
                    info!(secret = %self.secret_ref(), not_after = m.served.not_after, "serving the Secret's certificate");
                    if had {
                        if let Some(metrics) = &self.metrics {
                            metrics.cert_reloads.inc();
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.cert_reload_errors.inc();
                    }
                    warn!(error = %e, "the Secret's certificate is unusable; still serving the previous one");
                }
            }
        }
        let served = self.store.served_cert();
        let trusted = match (&served, observed.bundles()) {
            (Some(chain), Some(bundles)) => managed::trusted_by_all(
                &bundles,
                chain,
                &self.config.policy.server_name,
                self.clock.now(),
            ),
            _ => false,
        };
        self.trusted.store(trusted, Ordering::Relaxed);
        (served.is_some(), trusted)
    }

    /// The next step for what was observed (and when the caBundle was first
    /// seen trusting a waiting next certificate).
    pub fn plan(&self, observed: &Observed) -> Step {
        let now = self.clock.now();
        let bundles = observed.bundles();
        let managed = observed
            .secret
            .as_ref()
            .and_then(|s| Managed::from_secret(s).ok());
        let mut since = self
            .trusted_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let trusted_since = match (&managed, &bundles) {
            (Some(m), Some(b)) if m.next.is_some() && managed::bundles_are(b, &m.ca_bundle) => {
                let next = m.next.as_ref().map(|n| n.cert.clone()).unwrap_or_default();
                match &*since {
                    Some((cert, at)) if *cert == next => Some(*at),
                    _ => {
                        *since = Some((next, now));
                        Some(now)
                    }
                }
            }
            _ => {
                *since = None;
                None
            }
        };
        managed::plan(
            observed.secret.as_ref(),
            bundles.as_deref(),
            trusted_since,
            &self.config.policy,
            now,
        )
    }

    fn managed(&self, observed: &Observed) -> Result<(Secret, Managed), RotatorError> {
        let secret = observed
            .secret
            .clone()
            .ok_or_else(|| RotatorError::Unusable(self.secret_ref(), "it is gone".into()))?;
        let m = Managed::from_secret(&secret)
            .map_err(|why| RotatorError::Unusable(self.secret_ref(), why))?;
        Ok((secret, m))
    }

    async fn replace_secret(
        &self,
        mut secret: Secret,
        m: &Managed,
        what: &'static str,
    ) -> Result<Applied, RotatorError> {
        m.write_to(&mut secret);
        match self
            .secrets
            .replace(&self.config.secret, &PostParams::default(), &secret)
            .await
        {
            Ok(_) => Ok(Applied::Wrote(what)),
            Err(e) if is_lost(&e) => Ok(Applied::Lost),
            Err(e) => Err(kube_err(format!("updating {}", self.secret_ref()))(e)),
        }
    }

    /// Writes `step` (guarded by what was observed).
    pub async fn apply(&self, observed: &Observed, step: &Step) -> Result<Applied, RotatorError> {
        let now = self.clock.now();
        let policy = &self.config.policy;
        let applied = match step {
            Step::Issue(why) => {
                let m = Managed::issue(&policy.names, now, policy.validity)?;
                match observed.secret.clone() {
                    Some(existing) => {
                        warn!(secret = %self.secret_ref(), reason = %why, "replacing the certificate");
                        self.replace_secret(existing, &m, "replaced the Secret")
                            .await?
                    }
                    None => {
                        let mut secret = Secret {
                            metadata: ObjectMeta {
                                name: Some(self.config.secret.clone()),
                                namespace: Some(self.config.namespace.clone()),
                                // Deleted with the webhook configuration (uninstall).
                                owner_references: observed
                                    .config
                                    .as_ref()
                                    .and_then(owner_of)
                                    .map(|o| vec![o]),
                                ..Default::default()
                            },
                            ..Default::default()
                        };
                        m.write_to(&mut secret);
                        match self.secrets.create(&PostParams::default(), &secret).await {
                            Ok(_) => Applied::Wrote("created the Secret"),
                            Err(e) if is_lost(&e) => Applied::Lost,
                            Err(e) => {
                                return Err(kube_err(format!("creating {}", self.secret_ref()))(e))
                            }
                        }
                    }
                }
            }
            Step::BeginRotation => {
                let (secret, m) = self.managed(observed)?;
                let next =
                    m.begin_rotation(&policy.names, &policy.server_name, now, policy.validity)?;
                self.replace_secret(secret, &next, "added the next certificate")
                    .await?
            }
            Step::Promote => {
                let (secret, m) = self.managed(observed)?;
                match m.promote() {
                    Some(promoted) => {
                        self.replace_secret(secret, &promoted, "promoted the next certificate")
                            .await?
                    }
                    None => Applied::Nothing,
                }
            }
            Step::PatchCaBundle => {
                let (_, m) = self.managed(observed)?;
                let Some(config) = observed.config.clone() else {
                    return Ok(Applied::Lost);
                };
                let name = &self.config.webhook_config;
                let updated = with_ca_bundle(config, &m.ca_bundle)?;
                match self
                    .configs
                    .replace(name, &PostParams::default(), &updated)
                    .await
                {
                    Ok(_) => Applied::Wrote("patched the caBundle"),
                    Err(e) if is_lost(&e) => Applied::Lost,
                    Err(e) => {
                        return Err(kube_err(format!(
                            "setting caBundle of MutatingWebhookConfiguration {name}"
                        ))(e))
                    }
                }
            }
            Step::AwaitTrust { .. } | Step::NoWebhookConfig | Step::Steady => Applied::Nothing,
        };
        if let Applied::Wrote(what) = applied {
            info!(secret = %self.secret_ref(), webhook_config = %self.config.webhook_config, "{what}");
        }
        Ok(applied)
    }

    /// Reads, serves, and writes steps until one writes nothing (at most a
    /// few rounds: a fresh start creates and patches in one tick).
    pub async fn tick(&self) -> Result<Report, RotatorError> {
        let mut report = Report::default();
        for _ in 0..6 {
            let observed = self.observe().await?;
            (report.serving, report.trusted) = self.serve(&observed);
            let step = self.plan(&observed);
            match self.apply(&observed, &step).await? {
                Applied::Wrote(what) => report.writes.push(what),
                Applied::Lost => report.lost += 1,
                Applied::Nothing => {
                    report.last = Some(step);
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Ticks every `interval` (every second or two while nothing trusted is
    /// served) until shutdown.
    pub async fn run(self, interval: Duration, shutdown: Shutdown) {
        loop {
            let wait = match self.tick().await {
                Ok(report) => {
                    debug!(?report, "certificate tick");
                    if let Some(Step::NoWebhookConfig) = report.last {
                        warn!(webhook_config = %self.config.webhook_config, "the MutatingWebhookConfiguration does not exist (or has no webhooks); not ready");
                    }
                    if report.trusted {
                        interval
                    } else {
                        interval.min(Duration::from_secs(2))
                    }
                }
                Err(e) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.cert_reload_errors.inc();
                    }
                    warn!(error = %e, "managing the webhook certificate failed; retrying");
                    interval.min(Duration::from_secs(2))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.requested() => return,
            }
        }
    }
}

fn owner_of(config: &MutatingWebhookConfiguration) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: MutatingWebhookConfiguration::api_version(&()).to_string(),
        kind: MutatingWebhookConfiguration::kind(&()).to_string(),
        name: config.metadata.name.clone()?,
        uid: config.metadata.uid.clone()?,
        ..Default::default()
    })
}
