//! The webhook's pool cache: a kube-rs reflector over `WorkerPool`s, read on
//! every review and never fetched per request.

use crate::crd::WorkerPool;
use crate::injection::PoolSource;
use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Pools from a reflector cache, never fetched per request.
#[derive(Clone)]
pub struct ReflectedPools(pub Store<WorkerPool>);

impl PoolSource for ReflectedPools {
    fn pool(&self, namespace: &str, name: &str) -> Option<Arc<WorkerPool>> {
        self.0.get(&ObjectRef::new(name).within(namespace))
    }
}

/// Starts a reflector over `WorkerPool`s (one namespace, or all) and returns
/// the cache; `ready` turns true once the first listing is in.
pub fn watch_pools(
    client: Client,
    namespace: Option<&str>,
    ready: Arc<AtomicBool>,
) -> ReflectedPools {
    let api: Api<WorkerPool> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|pool: &mut WorkerPool| {
            pool.managed_fields_mut().clear();
        })
        .reflect(writer)
        .applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "WorkerPool watch error; retrying with backoff");
            }
        }
    });
    let waiter = reader.clone();
    tokio::spawn(async move {
        if waiter.wait_until_ready().await.is_ok() {
            ready.store(true, Ordering::Relaxed);
            tracing::info!("WorkerPool cache synced");
        }
    });
    ReflectedPools(reader)
}
