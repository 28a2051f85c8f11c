//! Offline injection of multi-document YAML (Jobs, Pods, `List`s), as
//! `runyard inject` prints it, through exactly the webhook's engine. The engine's JSON Patch is
//! applied to the document as written, as the API server applies it, so
//! fields runyard does not know survive untouched.

use super::{InjectError, Injector, Mutation, PoolSource, Requester, RunObject};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum InjectFileError {
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        index: usize,
        source: serde_norway::Error,
    },
    #[error("document {index} ({what}): {message}")]
    Denied {
        index: usize,
        what: String,
        message: String,
    },
    #[error("document {index} ({what}): invalid {kind}: {detail}")]
    Invalid {
        index: usize,
        what: String,
        kind: &'static str,
        detail: String,
    },
    #[error("writing YAML: {0}")]
    Output(serde_norway::Error),
    #[error("no objects in it (it is empty or only comments)")]
    Empty,
}

/// Injects every run in `input`; other documents pass through unchanged. An
/// input without any object is an error (a wrong file, an empty pipe).
pub fn inject_yaml(
    input: &str,
    injector: &Injector,
    pools: &dyn PoolSource,
    default_namespace: &str,
) -> Result<String, InjectFileError> {
    let mut out = String::new();
    let mut first = true;
    for (index, doc) in serde_norway::Deserializer::from_str(input).enumerate() {
        let value: Value = serde::Deserialize::deserialize(doc)
            .map_err(|source| InjectFileError::Yaml { index, source })?;
        if value.is_null() {
            continue;
        }
        let value = inject_value(value, index, injector, pools, default_namespace)?;
        if !first {
            out.push_str("---\n");
        }
        first = false;
        out.push_str(&serde_norway::to_string(&value).map_err(InjectFileError::Output)?);
    }
    if first {
        return Err(InjectFileError::Empty);
    }
    Ok(out)
}

fn describe(value: &Value) -> String {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let name = value
        .pointer("/metadata/name")
        .or_else(|| value.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    format!("{kind} {name}")
}

/// Injects one object (recursing into `List` items).
pub fn inject_value(
    mut value: Value,
    index: usize,
    injector: &Injector,
    pools: &dyn PoolSource,
    default_namespace: &str,
) -> Result<Value, InjectFileError> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(default_namespace)
        .to_string();
    let invalid = |kind: &'static str, value: &Value, detail: String| InjectFileError::Invalid {
        index,
        what: describe(value),
        kind,
        detail,
    };
    let patch = match (api_version, kind) {
        (_, "List") | (_, "JobList") | (_, "PodList") => {
            if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
                for item in items.iter_mut() {
                    let taken = std::mem::take(item);
                    *item = inject_value(taken, index, injector, pools, default_namespace)?;
                }
            }
            return Ok(value);
        }
        ("batch/v1", "Job") => engine_patch::<Job>(&value, &namespace, injector, pools),
        ("v1", "Pod") => engine_patch::<Pod>(&value, &namespace, injector, pools),
        _ => return Ok(value),
    };
    let patch = match patch {
        Ok(Some(patch)) => patch,
        Ok(None) => return Ok(value),
        Err(Refused::Invalid(kind, detail)) => return Err(invalid(kind, &value, detail)),
        Err(Refused::Denied(e)) => {
            return Err(InjectFileError::Denied {
                index,
                what: describe(&value),
                message: e.to_string(),
            })
        }
    };
    let original = value.clone();
    json_patch::patch(&mut value, &patch).map_err(|e| {
        invalid(
            "patch",
            &original,
            format!("the engine's patch does not apply: {e}"),
        )
    })?;
    Ok(value)
}

enum Refused {
    Invalid(&'static str, String),
    Denied(InjectError),
}

/// The engine's patch for one document of kind `R` (`None`: unchanged).
fn engine_patch<R: RunObject>(
    value: &Value,
    namespace: &str,
    injector: &Injector,
    pools: &dyn PoolSource,
) -> Result<Option<json_patch::Patch>, Refused> {
    let obj: R = serde_json::from_value(value.clone())
        .map_err(|e| Refused::Invalid(R::KIND, e.to_string()))?;
    match injector.mutate_as(
        obj.without_managed_fields(),
        namespace,
        pools,
        Requester::User,
    ) {
        Ok(Mutation::Mutated { patch, .. }) => patch.operations().map(Some).map_err(|e| {
            Refused::Invalid("patch", format!("the engine's patch does not parse: {e}"))
        }),
        Ok(_) => Ok(None),
        Err(e) => Err(Refused::Denied(e)),
    }
}
