//! AdmissionReview v1 in, AdmissionReview v1 out.
//!
//! The request is parsed once: the envelope into small structs and the object
//! straight from its raw JSON into the typed Job or Pod. Business outcomes
//! (denials, invalid objects) are answered with HTTP 200 and `allowed: false`;
//! only a body that is not a readable AdmissionReview v1 is a [`ReviewError`]
//! (HTTP 400).

use crate::injection::{limits, InjectError, Injector, Mutation, PoolSource, Requester, RunObject};
use base64::Engine as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The only AdmissionReview version runyard speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Why a body cannot be answered with an AdmissionReview (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("malformed JSON: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("expected kind AdmissionReview, got {0:?}")]
    WrongKind(String),
    #[error("unsupported apiVersion {0:?}: runyard needs admission.k8s.io/v1 (set admissionReviewVersions: [v1])")]
    UnsupportedVersion(String),
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    #[error("the AdmissionReview request has no uid")]
    MissingUid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    kind: Option<Gvk>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_object: Option<&'a RawValue>,
    #[serde(default)]
    user_info: UserInfo,
}

#[derive(Deserialize, Default)]
struct UserInfo {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize, Default)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

/// What the webhook decided; also the `decision` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A run, mutated.
    Patched,
    /// A run needing no change.
    Unchanged,
    /// Not a run, or a kind/operation runyard does not mutate.
    Ignored,
    /// A run refused with a message; `reason` is the stable error label.
    Denied(&'static str),
}

impl Decision {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Unchanged => "unchanged",
            Self::Ignored => "ignored",
            Self::Denied(_) => "denied",
        }
    }
}

/// Kind of object reviewed (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewKind {
    Job,
    Pod,
    Other,
}

impl ReviewKind {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Job => "Job",
            Self::Pod => "Pod",
            Self::Other => "other",
        }
    }
}

/// A handled review: the response body and what was decided.
#[derive(Debug)]
pub struct Handled {
    pub body: Vec<u8>,
    pub uid: String,
    pub kind: ReviewKind,
    pub decision: Decision,
    /// The denial message, for logs.
    pub message: Option<String>,
    pub dry_run: bool,
}

/// Handles one AdmissionReview body.
pub fn handle(
    body: &[u8],
    injector: &Injector,
    pools: &dyn PoolSource,
) -> Result<Handled, ReviewError> {
    let review = parse_envelope(body)?;
    match review.kind.as_deref() {
        Some("AdmissionReview") => {}
        other => {
            return Err(ReviewError::WrongKind(
                other.unwrap_or_default().to_string(),
            ))
        }
    }
    match review.api_version.as_deref() {
        Some(API_VERSION) => {}
        other => {
            return Err(ReviewError::UnsupportedVersion(
                other.unwrap_or_default().to_string(),
            ))
        }
    }
    let request = review.request.ok_or(ReviewError::MissingRequest)?;
    let uid = request
        .uid
        .filter(|u| !u.is_empty())
        .ok_or(ReviewError::MissingUid)?;
    let gvk = request.kind.unwrap_or_default();
    let kind = match (gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()) {
        ("batch", "v1", "Job") => ReviewKind::Job,
        ("", "v1", "Pod") => ReviewKind::Pod,
        _ => ReviewKind::Other,
    };
    let operation = match request.operation.as_deref() {
        Some("CREATE") => Operation::Create,
        Some("UPDATE") => Operation::Update,
        _ => Operation::Other,
    };
    let dry_run = request.dry_run.unwrap_or(false);
    let sub_resource = request.sub_resource.as_deref().unwrap_or_default();
    let action = match (kind, operation, sub_resource) {
        (ReviewKind::Other, _, _) | (_, Operation::Other, _) => None,
        (_, op, "") => Some(op),
        (ReviewKind::Pod, Operation::Update, "ephemeralcontainers") => Some(Operation::Ephemeral),
        _ => None,
    };
    let applies = action.is_some();
    let decided = match action {
        None => Ok(None),
        Some(op) => {
            let requester = injector.trust.requester(&request.user_info.username);
            let object = Objects {
                new: request.object,
                old: request.old_object,
                namespace: request.namespace.as_deref(),
            };
            match (kind, op) {
                (ReviewKind::Pod, Operation::Ephemeral) => {
                    review_ephemeral(object, injector, pools)
                }
                (ReviewKind::Job, _) => {
                    review_object::<Job>(op, object, requester, injector, pools)
                }
                (ReviewKind::Pod, _) => {
                    review_object::<Pod>(op, object, requester, injector, pools)
                }
                (ReviewKind::Other, _) => Ok(None),
            }
        }
    };
    let (decision, patch, message) = match decided {
        Ok(None) if applies => (Decision::Unchanged, None, None),
        Ok(None) => (Decision::Ignored, None, None),
        Ok(Some(Decided::NotARun)) => (Decision::Ignored, None, None),
        Ok(Some(Decided::Patch(p))) => (Decision::Patched, Some(p), None),
        Err((reason, msg)) => (Decision::Denied(reason), None, Some(msg)),
    };
    let body = response_body(&uid, &decision, patch.as_deref(), message.as_deref())?;
    Ok(Handled {
        body,
        uid,
        kind,
        decision,
        message,
        dry_run,
    })
}

// The phases of a review are kept out of line (`#[inline(never)]`) so that a
// profile (`valgrind --tool=callgrind`, BENCHMARKS.md's per-phase table) shows
// each one as its own function; a call per phase costs nothing measurable.

/// Phase "envelope parse": the AdmissionReview around the object, whose raw
/// JSON is borrowed, not parsed.
#[inline(never)]
fn parse_envelope(body: &[u8]) -> Result<ReviewIn<'_>, ReviewError> {
    Ok(serde_json::from_slice(body)?)
}

/// Writes the AdmissionReview response. Built by hand into one buffer: the
/// base64 patch (the bulk of the body) needs no JSON escaping and is copied
/// in as is; the uid and message go through serde_json's escaping.
fn response_body(
    uid: &str,
    decision: &Decision,
    patch: Option<&[u8]>,
    message: Option<&str>,
) -> Result<Vec<u8>, ReviewError> {
    let patch_len = patch.map_or(0, |p| p.len().div_ceil(3) * 4);
    let mut out = Vec::with_capacity(160 + uid.len() + patch_len + message.map_or(0, str::len));
    out.extend_from_slice(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
    );
    serde_json::to_writer(&mut out, uid)?;
    let allowed = !matches!(decision, Decision::Denied(_));
    match message {
        Some(message) if !allowed => {
            out.extend_from_slice(
                br#","allowed":false,"status":{"code":403,"reason":"Forbidden","message":"#,
            );
            serde_json::to_writer(&mut out, message)?;
            out.push(b'}');
        }
        _ => out.extend_from_slice(br#","allowed":true,"status":{"code":200}"#),
    }
    if let Some(patch) = patch {
        out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        encode_base64(patch, &mut out);
        out.push(b'"');
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// Phase "base64": the patch, encoded straight into the response buffer.
#[inline(never)]
fn encode_base64(patch: &[u8], out: &mut Vec<u8>) {
    use base64::engine::general_purpose::STANDARD;
    let start = out.len();
    out.resize(start + patch.len().div_ceil(3) * 4, 0);
    // The buffer was sized for the padded encoding: it always fits.
    let written = STANDARD
        .encode_slice(patch, &mut out[start..])
        .unwrap_or_default();
    out.truncate(start + written);
}

enum Decided {
    NotARun,
    Patch(Vec<u8>),
}

type Denial = (&'static str, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Update,
    /// UPDATE of the `pods/ephemeralcontainers` subresource.
    Ephemeral,
    Other,
}

/// The request's objects, unparsed.
#[derive(Clone, Copy)]
struct Objects<'a> {
    new: Option<&'a RawValue>,
    old: Option<&'a RawValue>,
    namespace: Option<&'a str>,
}

impl Objects<'_> {
    fn parse<R: RunObject>(raw: Option<&RawValue>, field: &str) -> Result<R, Denial> {
        let raw = raw.ok_or_else(|| ("invalid", format!("runyard: request.{field} is missing")))?;
        let obj: R = parse_object(raw, field, R::KIND)?;
        Ok(obj.without_managed_fields())
    }
}

fn review_object<R: RunObject>(
    op: Operation,
    objects: Objects<'_>,
    requester: Requester,
    injector: &Injector,
    pools: &dyn PoolSource,
) -> Result<Option<Decided>, Denial> {
    let new: R = Objects::parse(objects.new, "object")?;
    let ns = namespace_of(objects.namespace, new.meta().namespace.as_deref())?;
    match op {
        Operation::Create => outcome_patch(injector.mutate_as(new, &ns, pools, requester)),
        Operation::Update => {
            let old: R = Objects::parse(objects.old, "oldObject")?;
            injector
                .review_update(&old, &new, &ns, pools, requester)
                .map(|()| None)
                .map_err(|e| (e.reason(), e.to_string()))
        }
        Operation::Ephemeral | Operation::Other => Ok(None),
    }
}

fn review_ephemeral(
    objects: Objects<'_>,
    injector: &Injector,
    pools: &dyn PoolSource,
) -> Result<Option<Decided>, Denial> {
    let new: Pod = Objects::parse(objects.new, "object")?;
    let old: Pod = Objects::parse(objects.old, "oldObject")?;
    let ns = namespace_of(objects.namespace, new.meta().namespace.as_deref())?;
    outcome_patch(injector.review_ephemeral(&old, &new, &ns, pools))
}

fn parse_object<T: serde::de::DeserializeOwned>(
    raw: &RawValue,
    field: &str,
    kind: &'static str,
) -> Result<T, Denial> {
    let invalid = |e: &dyn std::fmt::Display| {
        (
            "invalid",
            format!("runyard: request.{field} is not a valid {kind}: {e}"),
        )
    };
    // Parsed under the scan's limits (the typed object can be many times
    // the JSON, see `injection::limits`); refused, the scan says why.
    if let Some(obj) = parse_bounded(kind, raw) {
        return Ok(obj);
    }
    let scanned = match scan_object(kind, raw) {
        Ok(scanned) => scanned,
        Err(limits::ScanError::TooLarge(e)) => return Err((e.reason(), e.to_string())),
        Err(limits::ScanError::Json(e)) => return Err(invalid(&e)),
    };
    scanned.parse(raw.get()).map_err(|e| invalid(&e))
}

/// Phase "object parse": the raw object into the typed Job or Pod, counted,
/// checked and bounded as it is read (`injection::bounded`).
#[inline(never)]
fn parse_bounded<T: serde::de::DeserializeOwned>(kind: &'static str, raw: &RawValue) -> Option<T> {
    crate::injection::bounded::parse(kind, raw.get())
}

/// Phase "size scan" (part of the object parse, for an object the bounded
/// parse refused: the scan finds out why): `limits::scan_object`.
#[inline(never)]
fn scan_object(kind: &'static str, raw: &RawValue) -> Result<limits::Scanned, limits::ScanError> {
    limits::scan_object(kind, raw.get())
}

fn namespace_of(request: Option<&str>, object: Option<&str>) -> Result<String, Denial> {
    request
        .filter(|n| !n.is_empty())
        .or(object.filter(|n| !n.is_empty()))
        .map(str::to_string)
        .ok_or((
            "invalid",
            "runyard: the request has no namespace".to_string(),
        ))
}

fn outcome_patch<T>(outcome: Result<Mutation<T>, InjectError>) -> Result<Option<Decided>, Denial> {
    match outcome {
        Ok(Mutation::NotARun) => Ok(Some(Decided::NotARun)),
        Ok(Mutation::Unchanged) => Ok(None),
        Ok(Mutation::Mutated { patch, object }) => {
            free(object);
            Ok(Some(Decided::Patch(patch.into_bytes())))
        }
        Err(e) => Err((e.reason(), e.to_string())),
    }
}

/// Phase "free": the mutated object, which the webhook does not send.
#[inline(never)]
fn free<T>(object: T) {
    drop(object);
}
