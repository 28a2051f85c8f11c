//! A Lease in memory with the API server's create/replace semantics, for
//! runyard's leader election ([`LeaseStore`]).

use k8s_openapi::api::coordination::v1::Lease;
use runyard::controller::lease::LeaseStore;
use std::sync::Arc;

/// A Lease in memory with the API server's create/replace semantics.
/// Clones share the same Lease.
#[derive(Default, Clone)]
pub struct MemoryLease(Arc<LeaseState>);

#[derive(Default)]
struct LeaseState {
    lease: std::sync::Mutex<Option<Lease>>,
    version: std::sync::atomic::AtomicU64,
}

fn conflict_error() -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure("the object has been modified", "Conflict")
            .with_code(409)
            .boxed(),
    )
}

impl LeaseStore for MemoryLease {
    async fn get(&self) -> Result<Option<Lease>, kube::Error> {
        tokio::task::yield_now().await;
        Ok(self
            .0
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone())
    }
    async fn create(&self, lease: &Lease) -> Result<(), kube::Error> {
        tokio::task::yield_now().await;
        let mut slot = self
            .0
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_some() {
            return Err(conflict_error());
        }
        let mut l = lease.clone();
        let v = self
            .0
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        l.metadata.resource_version = Some(v.to_string());
        *slot = Some(l);
        Ok(())
    }
    async fn replace(&self, lease: &Lease) -> Result<(), kube::Error> {
        tokio::task::yield_now().await;
        let mut slot = self
            .0
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = slot
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone());
        if current.is_none() || lease.metadata.resource_version != current {
            return Err(conflict_error());
        }
        let mut l = lease.clone();
        let v = self
            .0
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        l.metadata.resource_version = Some(v.to_string());
        *slot = Some(l);
        Ok(())
    }
}
