//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does
//! it: taking or renewing is a resourceVersion-guarded write, so two replicas
//! never both hold the Lease; a standby takes an unrenewed Lease over only
//! after it has seen the same record for a whole lease duration *on its own
//! clock* (no trust in other nodes' clocks); and the holder stops acting when
//! it has not renewed for the renew deadline, which is shorter than the lease
//! duration, so a leader whose renewals hang has stopped before anyone can
//! take over.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The timings of leader election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a Lease is valid without renewal (written into the Lease).
    pub duration: Duration,
    /// The holder stops acting when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// How often holder and standbys try (each try is bounded by this too).
    pub retry: Duration,
}

impl Default for LeaseTimings {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Held by someone who has not renewed for a lease duration (or released
    /// it): take it over.
    TakeOver,
    /// Held by someone else, still valid.
    Wait,
}

/// A holder's record as a standby observed it, and when (standby's clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    holder: String,
    renewed: Option<Timestamp>,
    at: Timestamp,
}

/// Decides from the Lease as read at `now` (this replica's clock), given what
/// this replica observed before; returns the step and the new observation.
pub fn step(
    current: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    observed: Option<&Observed>,
    default_duration: Duration,
) -> (LeaseStep, Option<Observed>) {
    let Some(spec) = current else {
        return (LeaseStep::Create, None);
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return (LeaseStep::Renew, None);
    }
    if holder.is_empty() {
        return (LeaseStep::TakeOver, None);
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let seen = match observed {
        Some(o) if o.holder == holder && o.renewed == renewed => o.clone(),
        // A new record: the holder renewed (or changed) since we last looked.
        _ => Observed {
            holder: holder.to_string(),
            renewed,
            at: now,
        },
    };
    let duration = spec.lease_duration_seconds.map_or_else(
        || SignedDuration::try_from(default_duration).unwrap_or(SignedDuration::MAX),
        |s| SignedDuration::from_secs(i64::from(s)),
    );
    let step = if now.duration_since(seen.at) >= duration {
        LeaseStep::TakeOver
    } else {
        LeaseStep::Wait
    };
    (step, Some(seen))
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
    timings: LeaseTimings,
    observed: Mutex<Option<Observed>>,
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
            timings: LeaseTimings::default(),
            observed: Mutex::new(None),
        }
    }

    /// The same with other timings.
    pub fn with_timings(mut self, timings: LeaseTimings) -> Self {
        self.timings = timings;
        self
    }

    pub fn timings(&self) -> LeaseTimings {
        self.timings
    }

    /// One election round now; returns whether this replica holds the Lease
    /// afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        self.round(Timestamp::now()).await
    }

    /// One round at a given time (tests move the clock).
    pub async fn round(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let current = self.store.get().await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let (decided, observed) = {
            let previous = self
                .observed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            step(
                spec,
                &self.identity,
                now,
                previous.as_ref(),
                self.timings.duration,
            )
        };
        *self
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = observed;
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
                new_spec.lease_duration_seconds =
                    Some(i32::try_from(self.timings.duration.as_secs().max(1)).unwrap_or(i32::MAX));
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

/// Whether this replica may act now, as the elector publishes it: the
/// instant until which its last successful renewal lets it lead.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<Option<Instant>>);

impl Leadership {
    /// Always leading (leader election off: a single replica).
    pub fn always() -> Self {
        let (_tx, rx) = watch::channel(Some(far_future()));
        Self(rx)
    }

    /// Leading now.
    pub fn is_leading(&self) -> bool {
        self.0.borrow().is_some_and(|until| Instant::now() < until)
    }

    /// Resolves when leadership may have changed (never, once the elector
    /// is gone).
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// A channel for [`elect`] and the [`Leadership`] it publishes. The loop
/// runs until `stop` resolves: it tries every `retry`, each try
/// bounded by `retry`; publishes, after each successful renewal, the instant
/// `renew deadline` after the try *started*. A replica whose renewals fail or
/// hang therefore stops leading at most a renew deadline after its last
/// successful renewal, before the Lease (a longer lease duration, counted by
/// standbys from when they saw that renewal) can be taken over. Releases the
/// Lease on the way out.
pub fn elector() -> (watch::Sender<Option<Instant>>, Leadership) {
    let (tx, rx) = watch::channel(None::<Instant>);
    (tx, Leadership(rx))
}

/// The election loop (see [`elector`] for the channel it publishes on).
pub async fn elect<S: LeaseStore>(
    lease: &LeaderLease<S>,
    tx: watch::Sender<Option<Instant>>,
    on_change: impl Fn(bool) + Send,
    stop: impl std::future::Future<Output = ()>,
) {
    let leadership = Leadership(tx.subscribe());
    let mut stop = std::pin::pin!(stop);
    let timings = lease.timings();
    let mut leading = false;
    loop {
        let started = Instant::now();
        let outcome = tokio::time::timeout(timings.retry, lease.try_acquire_or_renew()).await;
        match outcome {
            Ok(Ok(true)) => {
                tx.send_replace(Some(started + timings.renew_deadline));
            }
            Ok(Ok(false)) => {
                tx.send_replace(None);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "leader election: the Lease could not be read or written")
            }
            Err(_) => tracing::warn!(
                after = ?timings.retry,
                "leader election: the Lease call did not answer in time"
            ),
        }
        let now_leading = leadership.is_leading();
        if now_leading != leading {
            leading = now_leading;
            tracing::info!(leader = leading, "leadership changed");
            on_change(leading);
        }
        // Wake up at the next try, or when the current lead runs out.
        let until = *tx.borrow();
        let next = started + timings.retry;
        let wake = match until {
            Some(u) if u < next && leading => u,
            _ => next,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = &mut stop => break,
        }
    }
    tx.send_replace(None);
    if leading {
        on_change(false);
        if let Err(e) = tokio::time::timeout(timings.retry, lease.release())
            .await
            .unwrap_or(Ok(()))
        {
            tracing::warn!(error = %e, "could not release the Lease; standbys take over when it expires");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn election_steps_use_the_standbys_own_clock() {
        let t0 = Timestamp::now();
        let d = Duration::from_secs(15);
        assert_eq!(step(None, "a", t0, None, d).0, LeaseStep::Create);
        assert_eq!(
            step(Some(&spec(Some("a"), t0)), "a", t0, None, d).0,
            LeaseStep::Renew
        );
        assert_eq!(
            step(Some(&spec(None, t0)), "a", t0, None, d).0,
            LeaseStep::TakeOver
        );
        // A renewTime far in the past (or a skewed clock) is not proof of
        // expiry: the standby first observes the record, then waits.
        let old = t0 - SignedDuration::from_secs(3600);
        let (first, seen) = step(Some(&spec(Some("b"), old)), "a", t0, None, d);
        assert_eq!(first, LeaseStep::Wait);
        let later = t0 + SignedDuration::from_secs(14);
        let (s, seen) = step(Some(&spec(Some("b"), old)), "a", later, seen.as_ref(), d);
        assert_eq!(s, LeaseStep::Wait);
        let expired = t0 + SignedDuration::from_secs(15);
        let (s, _) = step(Some(&spec(Some("b"), old)), "a", expired, seen.as_ref(), d);
        assert_eq!(s, LeaseStep::TakeOver);
        // A renewal restarts the standby's count.
        let (s, _) = step(
            Some(&spec(Some("b"), later)),
            "a",
            expired,
            seen.as_ref(),
            d,
        );
        assert_eq!(s, LeaseStep::Wait);
    }
}
