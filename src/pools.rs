//! Pool sources with I/O: a kube-rs reflector over `WorkerPool`s, and static
//! pool definitions read from a YAML file.

use crate::crd::WorkerPool;
use crate::injection::{PoolSource, StaticPools};
use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PoolFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: document {index}: {source}")]
    Parse {
        path: String,
        index: usize,
        source: serde_norway::Error,
    },
    #[error("{path}: document {index}: invalid WorkerPool: {detail}")]
    Invalid {
        path: String,
        index: usize,
        detail: String,
    },
    #[error("{path}: document {index} is a {kind}, not a WorkerPool")]
    NotAPool {
        path: String,
        index: usize,
        kind: String,
    },
}

/// Parses every `WorkerPool` document of a multi-document YAML text.
pub fn parse_pools(text: &str, path: &str) -> Result<Vec<WorkerPool>, PoolFileError> {
    let mut pools = Vec::new();
    for (index, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value =
            serde::Deserialize::deserialize(doc).map_err(|source| PoolFileError::Parse {
                path: path.to_string(),
                index,
                source,
            })?;
        let value: serde_json::Value = value;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != "WorkerPool" {
            return Err(PoolFileError::NotAPool {
                path: path.to_string(),
                index,
                kind: kind.to_string(),
            });
        }
        let pool: WorkerPool =
            serde_json::from_value(value).map_err(|e| PoolFileError::Invalid {
                path: path.to_string(),
                index,
                detail: e.to_string(),
            })?;
        pool.spec
            .validate()
            .map_err(|detail| PoolFileError::Invalid {
                path: path.to_string(),
                index,
                detail,
            })?;
        pools.push(pool);
    }
    Ok(pools)
}

/// Static pools from a YAML file of `WorkerPool`s.
pub fn load_pool_file(path: &Path) -> Result<StaticPools, PoolFileError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PoolFileError::Read {
        path: display.clone(),
        source,
    })?;
    Ok(StaticPools::new(parse_pools(&text, &display)?))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pools_and_rejects_other_kinds() {
        let text = "apiVersion: workers.runyard.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: a}\nspec: {poolSize: 3}\n---\n---\napiVersion: workers.runyard.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: b, namespace: ci}\nspec: {}\n";
        let pools = parse_pools(text, "x").expect("parse");
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].spec.pool_size, 3);
        assert_eq!(pools[1].spec.pool_size, 1);
        let err = parse_pools("kind: Pod\n", "x").expect_err("not a pool");
        assert!(err.to_string().contains("not a WorkerPool"), "{err}");
        let err = parse_pools(
            "kind: WorkerPool\nspec: {poolSize: -1}\nmetadata: {name: a}\n",
            "x",
        )
        .expect_err("negative pool size");
        assert!(err.to_string().contains("poolSize"), "{err}");
        let err = parse_pools(
            "kind: WorkerPool\nspec: {runTimeout: soon}\nmetadata: {name: a}\n",
            "x",
        )
        .expect_err("bad duration");
        assert!(err.to_string().contains("runTimeout"), "{err}");
        assert!(parse_pools("kind: WorkerPool\nmetadata: [\n", "x").is_err());
    }
}
