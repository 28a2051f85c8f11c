//! Where the engine's pools come from: the [`PoolSource`] trait (a reflector
//! cache in the webhook, static definitions for `--pools FILE` and `runyard
//! inject`), and the parsing of WorkerPool files.

use crate::crd::WorkerPool;
use std::path::Path;
use std::sync::Arc;

/// Where pools come from: a kube-rs reflector store, or static definitions.
pub trait PoolSource: Send + Sync {
    fn pool(&self, namespace: &str, name: &str) -> Option<Arc<WorkerPool>>;
}

/// Pools defined statically (`--pools FILE`, `runyard inject --pool FILE`), or a
/// built-in default pool for any name.
#[derive(Debug, Clone, Default)]
pub struct StaticPools {
    pools: Vec<Arc<WorkerPool>>,
    default_for_any_name: bool,
}

impl StaticPools {
    /// Exactly these pools. A pool without a namespace matches every namespace.
    pub fn new(pools: Vec<WorkerPool>) -> Self {
        Self {
            pools: pools.into_iter().map(Arc::new).collect(),
            default_for_any_name: false,
        }
    }

    /// A pool with default settings for whatever name a run asks for.
    pub fn default_pool() -> Self {
        Self {
            pools: Vec::new(),
            default_for_any_name: true,
        }
    }
}

impl PoolSource for StaticPools {
    fn pool(&self, namespace: &str, name: &str) -> Option<Arc<WorkerPool>> {
        let found = self.pools.iter().find(|p| {
            p.metadata.name.as_deref() == Some(name)
                && p.metadata
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| ns == namespace)
        });
        if let Some(p) = found {
            return Some(p.clone());
        }
        self.default_for_any_name.then(|| {
            let mut pool = WorkerPool::new(name, Default::default());
            pool.metadata.namespace = Some(namespace.to_string());
            Arc::new(pool)
        })
    }
}

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
