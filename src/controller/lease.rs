//! Leader election with a `coordination.k8s.io/v1` Lease: lease 15 s, renew
//! every 10 s, retry every 2 s. Taking or renewing is a resourceVersion-guarded
//! write, so two replicas can never both hold it.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use std::time::Duration;

/// How long a Lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// How often a non-holder retries.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// What to do with the Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Held by someone whose lease expired (or released): take it over.
    TakeOver,
    /// Held by someone else, still valid.
    Wait,
}

/// Decides from the Lease as read.
pub fn step(current: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseStep {
    let Some(spec) = current else {
        return LeaseStep::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return LeaseStep::Renew;
    }
    if holder.is_empty() {
        return LeaseStep::TakeOver;
    }
    let duration = spec
        .lease_duration_seconds
        .map_or(LEASE_DURATION.as_secs() as i64, i64::from);
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(t) if t + SignedDuration::from_secs(duration) > now => LeaseStep::Wait,
        _ => LeaseStep::TakeOver,
    }
}

/// Where the Lease lives: the API server, or memory (tests).
pub trait LeaseStore: Send + Sync {
    fn get(&self) -> impl std::future::Future<Output = Result<Option<Lease>, kube::Error>> + Send;
    fn create(
        &self,
        lease: &Lease,
    ) -> impl std::future::Future<Output = Result<(), kube::Error>> + Send;
    /// Replaces the Lease; a stale `metadata.resourceVersion` is a 409.
    fn replace(
        &self,
        lease: &Lease,
    ) -> impl std::future::Future<Output = Result<(), kube::Error>> + Send;
}

/// The Lease through the Kubernetes API.
pub struct ApiLease {
    api: Api<Lease>,
    name: String,
}

impl LeaseStore for ApiLease {
    async fn get(&self) -> Result<Option<Lease>, kube::Error> {
        self.api.get_opt(&self.name).await
    }
    async fn create(&self, lease: &Lease) -> Result<(), kube::Error> {
        self.api
            .create(&PostParams::default(), lease)
            .await
            .map(|_| ())
    }
    async fn replace(&self, lease: &Lease) -> Result<(), kube::Error> {
        self.api
            .replace(&self.name, &PostParams::default(), lease)
            .await
            .map(|_| ())
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A Lease held (or wanted) by one replica.
pub struct LeaderLease<S = ApiLease> {
    store: S,
    name: String,
    identity: String,
}

impl LeaderLease<ApiLease> {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self::with_store(
            ApiLease {
                api: Api::namespaced(client, namespace),
                name: name.to_string(),
            },
            name,
            identity,
        )
    }
}

impl<S: LeaseStore> LeaderLease<S> {
    pub fn with_store(store: S, name: &str, identity: &str) -> Self {
        Self {
            store,
            name: name.to_string(),
            identity: identity.to_string(),
        }
    }

    /// One election round; returns whether this replica leads afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        self.round(Timestamp::now()).await
    }

    /// One round at a given time (tests move the clock).
    pub async fn round(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let current = self.store.get().await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decided = step(spec, &self.identity, now);
        let mut lease = current.clone().unwrap_or_default();
        let mut new_spec = spec.cloned().unwrap_or_default();
        match decided {
            LeaseStep::Wait => return Ok(false),
            LeaseStep::Renew => {
                new_spec.renew_time = Some(MicroTime(now));
            }
            LeaseStep::Create | LeaseStep::TakeOver => {
                new_spec.holder_identity = Some(self.identity.clone());
                new_spec.acquire_time = Some(MicroTime(now));
                new_spec.renew_time = Some(MicroTime(now));
                new_spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
                new_spec.lease_transitions = Some(
                    new_spec.lease_transitions.unwrap_or(0)
                        + i32::from(decided == LeaseStep::TakeOver),
                );
            }
        }
        lease.spec = Some(new_spec);
        let result = if decided == LeaseStep::Create {
            lease.metadata.name = Some(self.name.clone());
            self.store.create(&lease).await
        } else {
            // Guarded by the resourceVersion read above.
            self.store.replace(&lease).await
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.store.get().await? else {
            return Ok(());
        };
        let held = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !held {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        match self.store.replace(&lease).await {
            Err(e) if !conflict(&e) => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64) -> LeaseSpec {
        let now = Timestamp::now();
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn election_steps() {
        let now = Timestamp::now();
        assert_eq!(step(None, "a", now), LeaseStep::Create);
        assert_eq!(step(Some(&spec(Some("a"), 5)), "a", now), LeaseStep::Renew);
        assert_eq!(step(Some(&spec(Some("b"), 5)), "a", now), LeaseStep::Wait);
        assert_eq!(
            step(Some(&spec(Some("b"), 20)), "a", now),
            LeaseStep::TakeOver
        );
        assert_eq!(step(Some(&spec(None, 1)), "a", now), LeaseStep::TakeOver);
        let mut no_times = spec(Some("b"), 0);
        no_times.renew_time = None;
        assert_eq!(step(Some(&no_times), "a", now), LeaseStep::TakeOver);
    }
}
