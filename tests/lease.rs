//! Leader election on an in-memory Lease with the API server's guarded
//! create/replace: two replicas never lead together.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use runyard::controller::lease::{LeaderLease, LeaseStore};
use runyard_testing::MemoryLease;

#[tokio::test]
async fn two_replicas_never_lead_together() {
    let store = MemoryLease::default();
    let a = LeaderLease::with_store(store.clone(), "l", "a");
    let b = LeaderLease::with_store(store.clone(), "l", "b");
    let t0 = Timestamp::now();
    // Both try at once: exactly one wins.
    let (ra, rb) = tokio::join!(a.round(t0), b.round(t0));
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert!(ra ^ rb, "exactly one leader: a={ra} b={rb}");
    let (leader, standby) = if ra { (&a, &b) } else { (&b, &a) };
    // Renewals keep it; the standby waits.
    let t1 = t0 + SignedDuration::from_secs(10);
    assert!(leader.round(t1).await.expect("renew"));
    assert!(!standby.round(t1).await.expect("wait"));
    // The leader stops renewing: after the lease duration the standby takes over.
    let t2 = t1 + SignedDuration::from_secs(16);
    assert!(standby.round(t2).await.expect("take over"));
    assert!(
        !leader.round(t2).await.expect("lost"),
        "the old leader does not lead again"
    );
    // Release on shutdown: the other takes over at once.
    standby.release().await.expect("release");
    assert!(leader.round(t2).await.expect("acquire"));
    let spec = store
        .get()
        .await
        .expect("get")
        .and_then(|l| l.spec)
        .expect("spec");
    assert_eq!(spec.lease_transitions, Some(2));
}
