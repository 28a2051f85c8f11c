//! Where the engine's pools come from: the [`PoolSource`] trait (a reflector
//! cache in the webhook, static definitions for `--pools FILE` and `runyard
//! inject`), and the parsing of WorkerPool files.
//!
//! Pool files are checked against the WorkerPool CRD's structural schema
//! (the one `runyard crd` ships and the API server enforces): a field the
//! schema does not know is an error, as with `kubectl apply`'s strict field
//! validation, not silently dropped (a misspelt `allowedRunnerImageHosts`
//! must not turn a restriction into allow-all). The CRD types themselves stay
//! lenient, so pools read from the API server (with fields of other versions)
//! still parse.

use crate::crd::WorkerPool;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, OnceLock};

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
    #[error("{path}: document {index}{}: invalid WorkerPool: {detail}", described(.name))]
    Invalid {
        path: String,
        index: usize,
        name: Option<String>,
        detail: String,
    },
    #[error("{path}: document {index}{}: {}; fix it or remove it (kubectl apply refuses it too)", described(.name), list_fields(.fields))]
    UnknownFields {
        path: String,
        index: usize,
        name: Option<String>,
        fields: Vec<SchemaProblem>,
    },
    #[error("{path}: no WorkerPool in it (the file is empty or only comments)")]
    Empty { path: String },
    #[error("{path}: document {index} is a {kind}, not a WorkerPool")]
    NotAPool {
        path: String,
        index: usize,
        kind: String,
    },
}

/// One field of a pool file that does not match the CRD's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    /// `spec.pod.workerContainer.env[0].valueFrm`
    pub field: String,
    pub kind: ProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// A field the schema does not have, with the closest one it has.
    Unknown { did_you_mean: Option<String> },
    /// A value of the wrong JSON type.
    WrongType { expected: String, found: String },
}

fn described(name: &Option<String>) -> String {
    name.as_ref()
        .map(|n| format!(" (WorkerPool {n})"))
        .unwrap_or_default()
}

fn list_fields(fields: &[SchemaProblem]) -> String {
    let unknown: Vec<String> = fields
        .iter()
        .filter_map(|p| match &p.kind {
            ProblemKind::Unknown { did_you_mean } => Some(match did_you_mean {
                Some(m) => format!("{:?} (did you mean {m:?}?)", p.field),
                None => format!("{:?}", p.field),
            }),
            ProblemKind::WrongType { .. } => None,
        })
        .collect();
    let wrong: Vec<String> = fields
        .iter()
        .filter_map(|p| match &p.kind {
            ProblemKind::WrongType { expected, found } => {
                Some(format!("{} must be {expected}, not {found}", p.field))
            }
            ProblemKind::Unknown { .. } => None,
        })
        .collect();
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        let noun = if unknown.len() == 1 {
            "field"
        } else {
            "fields"
        };
        parts.push(format!("unknown {noun} {}", unknown.join(", ")));
    }
    parts.extend(wrong);
    parts.join("; ")
}

/// The WorkerPool CRD's schema, plus `apiVersion`, `kind` and `metadata`
/// (which the API server checks as ObjectMeta).
fn pool_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = crate::crd::crds()
            .into_iter()
            .find(|c| c.spec.names.kind == "WorkerPool");
        let mut schema = crd
            .and_then(|c| c.spec.versions.into_iter().next())
            .and_then(|v| v.schema)
            .and_then(|s| s.open_api_v3_schema)
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null);
        let meta = schemars::SchemaGenerator::default()
            .into_root_schema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
        );
        let meta = serde_json::to_value(meta).unwrap_or(Value::Null);
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            let string = serde_json::json!({"type": "string"});
            props.entry("apiVersion").or_insert_with(|| string.clone());
            props.entry("kind").or_insert(string);
            // Only metadata's own fields are checked (nested ones are $refs).
            props.entry("metadata").or_insert(meta);
        }
        schema
    })
}

/// What in `value` the structural `schema` does not allow: unknown fields
/// (what the API server prunes, or rejects under strict field validation)
/// and values of the wrong type. Lenient where the schema says nothing.
pub fn schema_problems(value: &Value, schema: &Value) -> Vec<SchemaProblem> {
    let mut out = Vec::new();
    walk(value, schema, "", &mut out);
    out
}

fn walk(value: &Value, schema: &Value, path: &str, out: &mut Vec<SchemaProblem>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some((expected, found)) = wrong_type(value, schema) {
        out.push(SchemaProblem {
            field: path.to_string(),
            kind: ProblemKind::WrongType { expected, found },
        });
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && extra.is_none() {
                return;
            }
            for (key, child) in map {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match props.and_then(|p| p.get(key)).or(extra) {
                    Some(s) => walk(child, s, &at, out),
                    None => out.push(SchemaProblem {
                        field: at,
                        kind: ProblemKind::Unknown {
                            did_you_mean: props.and_then(|p| closest(key, p.keys())),
                        },
                    }),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|i| i.is_object()) {
                for (i, item) in items.iter().enumerate() {
                    walk(item, item_schema, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// `(expected, found)` when `value`'s JSON type is not the schema's.
fn wrong_type(value: &Value, schema: &Value) -> Option<(String, String)> {
    let found = match value {
        Value::Null => return None,
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    };
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return (!matches!(found, "an integer" | "a string"))
            .then(|| ("an integer or a string".to_string(), found.to_string()));
    }
    let expected = match schema.get("type").and_then(Value::as_str)? {
        "boolean" => "a boolean",
        "integer" => "an integer",
        "number" if found == "an integer" => return None,
        "number" => "a number",
        "string" => "a string",
        "array" => "a list",
        "object" => "a map",
        _ => return None,
    };
    (expected != found).then(|| (expected.to_string(), found.to_string()))
}

/// The known name closest to `key` (a likely typo), if any is close.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a String>) -> Option<String> {
    let lower = key.to_ascii_lowercase();
    known
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses every `WorkerPool` document of a multi-document YAML text, checking
/// each against the CRD's schema first.
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
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(
                |n| match value.pointer("/metadata/namespace").and_then(Value::as_str) {
                    Some(ns) => format!("{ns}/{n}"),
                    None => n.to_string(),
                },
            );
        let fields = schema_problems(&value, pool_schema());
        if !fields.is_empty() {
            return Err(PoolFileError::UnknownFields {
                path: path.to_string(),
                index,
                name,
                fields,
            });
        }
        let invalid = |detail: String| PoolFileError::Invalid {
            path: path.to_string(),
            index,
            name: name.clone(),
            detail,
        };
        let pool: WorkerPool = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        pool.spec.validate().map_err(invalid)?;
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
    let pools = parse_pools(&text, &display)?;
    if pools.is_empty() {
        return Err(PoolFileError::Empty { path: display });
    }
    Ok(StaticPools::new(pools))
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

    #[test]
    fn unknown_fields_are_refused_with_the_file_the_field_and_a_hint() {
        // The typo that would turn a restriction into allow-all.
        let text = "apiVersion: workers.runyard.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: builders, namespace: ci}\nspec:\n  allowedRunnerImageHost: [ghcr.io]\n";
        let err = parse_pools(text, "pools.yaml").expect_err("unknown field");
        assert_eq!(
            err.to_string(),
            "pools.yaml: document 0 (WorkerPool ci/builders): unknown field \"spec.allowedRunnerImageHost\" (did you mean \"allowedRunnerImageHosts\"?); fix it or remove it (kubectl apply refuses it too)"
        );
        // Inside embedded core types, and in metadata, too.
        let text = "kind: WorkerPool\nmetadata: {name: a, namspace: ci}\nspec:\n  pod:\n    workerContainer:\n      env: [{name: A, valu: b}]\n";
        let err = parse_pools(text, "p.yaml").expect_err("unknown fields");
        let msg = err.to_string();
        assert!(
            msg.contains("unknown fields \"metadata.namspace\" (did you mean \"namespace\"?), \"spec.pod.workerContainer.env[0].valu\" (did you mean \"value\"?)"),
            "{msg}"
        );
        // Wrong types name the field.
        let err = parse_pools(
            "kind: WorkerPool\nmetadata: {name: a}\nspec: {poolSize: three}\n",
            "p.yaml",
        )
        .expect_err("wrong type");
        assert!(
            err.to_string()
                .contains("spec.poolSize must be an integer, not a string"),
            "{err}"
        );
        // Maps with free keys, int-or-string quantities and every shipped
        // example still parse.
        parse_pools("kind: WorkerPool\nmetadata: {name: a, labels: {x: y}}\nspec:\n  pod:\n    nodeSelector: {anything: goes}\n    workerContainer: {resources: {requests: {cpu: 1, memory: 1Gi}}}\n", "p.yaml").expect("valid");
    }

    #[test]
    fn shipped_pool_files_are_valid() {
        let root = env!("CARGO_MANIFEST_DIR");
        for file in [
            "examples/pool.yaml",
            "examples/pool-advanced.yaml",
            "benches/data/pools.yaml",
        ] {
            load_pool_file(&Path::new(root).join(file)).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn an_empty_pool_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pools.yaml");
        std::fs::write(&path, "# nothing yet\n").expect("write");
        let err = load_pool_file(&path).expect_err("empty");
        assert!(
            err.to_string()
                .ends_with("pools.yaml: no WorkerPool in it (the file is empty or only comments)"),
            "{err}"
        );
    }
}
