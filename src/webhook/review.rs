//! AdmissionReview v1 in, AdmissionReview v1 out.
//!
//! The request is parsed once: the envelope into small structs and, where the
//! review needs it, the object into the typed Job or Pod where it stands in
//! the body (the API server writes the request's kind and operation before
//! its object); an object met before the review knows what it is is kept as
//! its raw JSON and parsed when needed. Business outcomes
//! (denials, invalid objects) are answered with HTTP 200 and `allowed: false`;
//! only a body that is not a readable AdmissionReview v1 is a [`ReviewError`]
//! (HTTP 400).

use crate::injection::view::PodView;
use crate::injection::{limits, InjectError, Injector, Mutation, PoolSource, Requester, RunObject};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
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

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize, Default)]
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
    object: Option<Object<'a>>,
    #[serde(borrow, default)]
    old_object: Option<Object<'a>>,
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
    // A Pod CREATE's object not injected before is read, in the common
    // case, as the fast path's view (`review_pod_create`).
    let review = parse_envelope(body, !looks_injected(body))?;
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
    let kind = ReviewKind::of(request.kind.as_ref());
    let dry_run = request.dry_run.unwrap_or(false);
    let action = Operation::action(
        kind,
        request.operation.as_deref(),
        request.sub_resource.as_deref(),
    );
    let applies = action.is_some();
    let decided = match action {
        None => Ok(None),
        Some(op) => {
            let requester = injector.trust.requester(&request.user_info.username);
            let object = Objects {
                new: request.object,
                old: request.old_object,
                namespace: request.namespace.as_deref(),
                body,
            };
            match (kind, op) {
                (ReviewKind::Pod, Operation::Ephemeral) => {
                    review_ephemeral(object, injector, pools)
                }
                (ReviewKind::Job, _) => {
                    review_object::<Job>(op, object, requester, injector, pools)
                }
                (ReviewKind::Pod, Operation::Create) => {
                    review_pod_create(object, requester, injector, pools)
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

/// Phase "envelope parse" (with, in the common case, the object parse): the
/// AdmissionReview, its object read in place when the request's kind and
/// operation came first and say the review needs it (`pod_create_view`: a
/// Pod CREATE's object as the fast path's view, else typed). Any error
/// there, and the plain parse (the object's raw JSON borrowed, not parsed) decides what
/// is read and explains what is not: the in-place parse only ever saves a
/// pass over the object, it never accepts or refuses anything of its own.
#[inline(never)]
fn parse_envelope(body: &[u8], pod_create_view: bool) -> Result<ReviewIn<'_>, ReviewError> {
    if let Ok(review) = parse_in_place(body, pod_create_view) {
        return Ok(review);
    }
    // The fast path's view refuses what it does not know (by design: see
    // `injection::view`); the typed object may still be read in place.
    if pod_create_view {
        if let Ok(review) = parse_in_place(body, false) {
            return Ok(review);
        }
    }
    Ok(serde_json::from_slice(body)?)
}

/// The AdmissionReview with its objects parsed in place where possible.
fn parse_in_place(body: &[u8], pod_create_view: bool) -> Result<ReviewIn<'_>, serde_json::Error> {
    // Checked as UTF-8 once, so that the parse does not check every string
    // again (serde_json's `from_slice` does); not UTF-8, and the derived
    // parse says so.
    let body = std::str::from_utf8(body).map_err(serde::de::Error::custom)?;
    let mut d = serde_json::Deserializer::from_str(body);
    let review = d.deserialize_map(InPlace { pod_create_view })?;
    d.end()?;
    Ok(review)
}

/// The request's object as the envelope parse left it.
enum Object<'a> {
    /// Its JSON, borrowed from the body: parsed when the review needs it.
    Raw(&'a RawValue),
    /// Parsed where it stood in the body, under the scan's limits
    /// (`injection::bounded`).
    Pod(Box<Pod>),
    Job(Box<Job>),
    /// A Pod CREATE's object as the fast path reads it, parsed where it
    /// stood in the body under the same limits (`injection::view`).
    View(Box<PodView<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(Object::Raw)
    }
}

/// A run object the in-place parse reads.
trait Typed: RunObject {
    /// `object` as `Self`; what is not `Self` is handed back.
    fn typed(object: Object<'_>) -> Result<Box<Self>, Object<'_>>;
}

impl Typed for Pod {
    fn typed(object: Object<'_>) -> Result<Box<Self>, Object<'_>> {
        match object {
            Object::Pod(pod) => Ok(pod),
            other => Err(other),
        }
    }
}

impl Typed for Job {
    fn typed(object: Object<'_>) -> Result<Box<Self>, Object<'_>> {
        match object {
            Object::Job(job) => Ok(job),
            other => Err(other),
        }
    }
}

/// The visitors of the in-place parse: the fields of [`ReviewIn`] and
/// [`RequestIn`] as their derived parse reads them. Whatever those would read
/// differently (a key with an escape, a duplicate, fields as a JSON array) is
/// an error here, and the derived parse decides.
struct InPlace {
    /// Read a Pod CREATE's object as the fast path's view (see [`ObjectSeed`]).
    pod_create_view: bool,
}

/// Whether a review's text names runyard's injected annotation: its pod
/// was injected before (a Job's pod, from the injected template), which the
/// fast path leaves to the engine, so it is read in place as a typed Pod
/// rather than as the fast path's view first. Only a choice between two
/// paths that give the same answer: an annotation spelt otherwise (escaped)
/// is found by the fast path, which leaves it to the engine all the same.
fn looks_injected(body: &[u8]) -> bool {
    memchr::memmem::find(body, INJECTED_KEY.as_bytes()).is_some()
}

/// [`crate::vocab::ANNOTATION_INJECTED`] as a JSON key (a test checks).
const INJECTED_KEY: &str = "\"runyard.dev/injected\"";

fn duplicate<E: de::Error>(seen: &mut bool, field: &'static str) -> Result<(), E> {
    if std::mem::replace(seen, true) {
        return Err(E::duplicate_field(field));
    }
    Ok(())
}

/// The value of `field`, which must not have been seen before.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    seen: &mut bool,
    field: &'static str,
) -> Result<T, A::Error> {
    duplicate(seen, field)?;
    map.next_value()
}

impl<'de> Visitor<'de> for InPlace {
    type Value = ReviewIn<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an AdmissionReview")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReviewIn<'de>, A::Error> {
        let mut review = ReviewIn::default();
        let mut seen = [false; 3];
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "apiVersion" => review.api_version = once(&mut map, &mut seen[0], "apiVersion")?,
                "kind" => review.kind = once(&mut map, &mut seen[1], "kind")?,
                "request" => {
                    duplicate(&mut seen[2], "request")?;
                    let request = InPlaceRequest {
                        pod_create_view: self.pod_create_view,
                    };
                    review.request = map.next_value_seed(Nullable(request))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(review)
    }
}

/// `null` as `None`, anything else read by the inner seed.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// The request of the in-place parse.
struct InPlaceRequest {
    /// As [`InPlace`]'s.
    pod_create_view: bool,
}

impl<'de> DeserializeSeed<'de> for InPlaceRequest {
    type Value = RequestIn<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InPlaceRequest {
    type Value = RequestIn<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an AdmissionReview request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestIn<'de>, A::Error> {
        let mut request = RequestIn::default();
        let mut seen = [false; 9];
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "uid" => request.uid = once(&mut map, &mut seen[0], "uid")?,
                "kind" => request.kind = once(&mut map, &mut seen[1], "kind")?,
                "subResource" => {
                    request.sub_resource = once(&mut map, &mut seen[2], "subResource")?
                }
                "namespace" => request.namespace = once(&mut map, &mut seen[3], "namespace")?,
                "operation" => request.operation = once(&mut map, &mut seen[4], "operation")?,
                "dryRun" => request.dry_run = once(&mut map, &mut seen[5], "dryRun")?,
                "object" => {
                    duplicate(&mut seen[6], "object")?;
                    let wanted = request.wanted();
                    let view = wanted == Some(Operation::Create) && self.pod_create_view;
                    request.object =
                        map.next_value_seed(ObjectSeed::new(&request, wanted, view))?;
                }
                "oldObject" => {
                    duplicate(&mut seen[7], "oldObject")?;
                    let wanted = request
                        .wanted()
                        .filter(|op| matches!(op, Operation::Update | Operation::Ephemeral));
                    request.old_object =
                        map.next_value_seed(ObjectSeed::new(&request, wanted, false))?;
                }
                "userInfo" => request.user_info = once(&mut map, &mut seen[8], "userInfo")?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(request)
    }
}

impl RequestIn<'_> {
    /// What the review will do with the request, as far as the fields read
    /// so far say (an absent subresource is none, as the API server omits it).
    fn wanted(&self) -> Option<Operation> {
        Operation::action(
            ReviewKind::of(self.kind.as_ref()),
            self.operation.as_deref(),
            self.sub_resource.as_deref(),
        )
    }
}

/// An object of the request: typed, when the review reads it (`wanted`: what
/// the review does with it) and the kind is known; for a Pod CREATE not
/// injected before, the fast path's view (`Injector::fast_pod_view`); its
/// raw JSON otherwise.
enum ObjectSeed {
    /// Its raw JSON.
    Raw,
    /// Typed, as the request's kind (`Pod` or `Job`).
    Typed(ReviewKind),
    /// A Pod CREATE's object as the fast path's view.
    View,
}

impl ObjectSeed {
    /// `pod_create_view`: read a Pod CREATE's object as the fast path's view.
    fn new(
        request: &RequestIn<'_>,
        wanted: Option<Operation>,
        pod_create_view: bool,
    ) -> Nullable<Self> {
        let kind = ReviewKind::of(request.kind.as_ref());
        Nullable(match (kind, wanted) {
            (_, None) | (ReviewKind::Other, _) => ObjectSeed::Raw,
            (ReviewKind::Pod, Some(Operation::Create)) if pod_create_view => ObjectSeed::View,
            (kind, Some(_)) => ObjectSeed::Typed(kind),
        })
    }
}

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = Object<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Object<'de>, D::Error> {
        use crate::injection::bounded::seed;
        match self {
            ObjectSeed::Typed(ReviewKind::Pod) => seed::<Pod>(Pod::KIND)
                .deserialize(d)
                .map(|p| Object::Pod(Box::new(p))),
            ObjectSeed::Typed(ReviewKind::Job) => seed::<Job>(Job::KIND)
                .deserialize(d)
                .map(|j| Object::Job(Box::new(j))),
            ObjectSeed::View => seed::<PodView<'de>>(Pod::KIND)
                .deserialize(d)
                .map(|v| Object::View(Box::new(v))),
            ObjectSeed::Typed(ReviewKind::Other) | ObjectSeed::Raw => Object::deserialize(d),
        }
    }
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

/// Phase "base64": the patch, encoded straight into the response buffer
/// (`base64-simd`: the vector instructions the CPU has, found at run time;
/// the patch is the bulk of the response, and a byte-at-a-time encoder was
/// a tenth of a review's instructions).
#[inline(never)]
fn encode_base64(patch: &[u8], out: &mut Vec<u8>) {
    base64_simd::STANDARD.encode_append(patch, out);
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

impl Operation {
    /// What a review of `kind` does for `operation` on `sub_resource`:
    /// `None`, nothing (not a kind or operation runyard reviews).
    fn action(
        kind: ReviewKind,
        operation: Option<&str>,
        sub_resource: Option<&str>,
    ) -> Option<Operation> {
        let operation = match operation {
            Some("CREATE") => Operation::Create,
            Some("UPDATE") => Operation::Update,
            _ => Operation::Other,
        };
        match (kind, operation, sub_resource.unwrap_or_default()) {
            (ReviewKind::Other, _, _) | (_, Operation::Other, _) => None,
            (_, op, "") => Some(op),
            (ReviewKind::Pod, Operation::Update, "ephemeralcontainers") => {
                Some(Operation::Ephemeral)
            }
            _ => None,
        }
    }
}

impl ReviewKind {
    fn of(gvk: Option<&Gvk>) -> Self {
        let Some(gvk) = gvk else {
            return Self::Other;
        };
        match (gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()) {
            ("batch", "v1", "Job") => Self::Job,
            ("", "v1", "Pod") => Self::Pod,
            _ => Self::Other,
        }
    }
}

/// The request's objects, as the envelope parse left them.
struct Objects<'a> {
    new: Option<Object<'a>>,
    old: Option<Object<'a>>,
    namespace: Option<&'a str>,
    /// The review's body, to read the object again typed when it was read
    /// as the fast path's view and the fast path leaves it to the engine.
    body: &'a [u8],
}

impl Objects<'_> {
    /// The object, on the heap (where the in-place parse put it): it is
    /// moved from here on as a pointer.
    fn parse<R: Typed>(object: Option<Object<'_>>, field: &str) -> Result<Box<R>, Denial> {
        let object =
            object.ok_or_else(|| ("invalid", format!("runyard: request.{field} is missing")))?;
        let mut obj: Box<R> = match R::typed(object) {
            Ok(obj) => obj,
            Err(Object::Raw(raw)) => Box::new(parse_object(raw, field, R::KIND)?),
            // The in-place parse reads the kind the request names, and the
            // review reads that same kind: never the other one.
            Err(Object::Pod(_) | Object::Job(_) | Object::View(_)) => {
                return Err((
                    "invalid",
                    format!("runyard: request.{field} is not a {}", R::KIND),
                ))
            }
        };
        obj.clear_managed_fields();
        Ok(obj)
    }
}

fn review_object<R: Typed>(
    op: Operation,
    objects: Objects<'_>,
    requester: Requester,
    injector: &Injector,
    pools: &dyn PoolSource,
) -> Result<Option<Decided>, Denial> {
    let new: Box<R> = Objects::parse(objects.new, "object")?;
    let ns = namespace_of(objects.namespace, new.meta().namespace.as_deref())?;
    match op {
        Operation::Create => outcome_patch(injector.mutate_boxed(new, &ns, pools, requester)),
        Operation::Update => {
            let old: Box<R> = Objects::parse(objects.old, "oldObject")?;
            injector
                .review_update(&*old, &*new, &ns, pools, requester)
                .map(|()| None)
                .map_err(|e| (e.reason(), e.to_string()))
        }
        Operation::Ephemeral | Operation::Other => Ok(None),
    }
}

/// A Pod CREATE: the fast path's patch when it takes the pod, else the
/// engine's full path on the typed Pod.
fn review_pod_create(
    mut objects: Objects<'_>,
    requester: Requester,
    injector: &Injector,
    pools: &dyn PoolSource,
) -> Result<Option<Decided>, Denial> {
    let fast = match &objects.new {
        Some(Object::View(view)) => {
            fast_pod_view(injector, view, objects.namespace, pools, requester)
        }
        Some(Object::Raw(raw)) => {
            fast_pod_create(injector, raw, objects.namespace, pools, requester)
        }
        _ => None,
    };
    if let Some(patch) = fast {
        return Ok(Some(Decided::Patch(patch.into_bytes())));
    }
    if let Some(Object::View(_)) = objects.new {
        objects.new = object_typed(objects.body);
    }
    review_object::<Pod>(Operation::Create, objects, requester, injector, pools)
}

/// Phase "fast path" (`injection::fast`: the patch, from the view the
/// envelope parse read).
#[inline(never)]
fn fast_pod_view(
    injector: &Injector,
    view: &PodView<'_>,
    namespace: Option<&str>,
    pools: &dyn PoolSource,
    requester: Requester,
) -> Option<crate::injection::patch::JsonPatch> {
    injector.fast_pod_view(view, namespace, pools, requester)
}

/// Phase "fast path" from the object's raw JSON (the envelope parse kept it
/// raw: its kind came after it), the view parse and the patch.
#[inline(never)]
fn fast_pod_create(
    injector: &Injector,
    raw: &RawValue,
    namespace: Option<&str>,
    pools: &dyn PoolSource,
    requester: Requester,
) -> Option<crate::injection::patch::JsonPatch> {
    injector.fast_pod_create(raw.get(), namespace, pools, requester)
}

/// The request's object, the body read again with the object typed: for a
/// Pod CREATE the fast path leaves to the engine. The body was read once
/// already, so this parse reads it too (the in-place parse, or the derived
/// one, whose object the review parses); `None`, which the review reports as
/// a missing object, only if it did not.
#[inline(never)]
fn object_typed(body: &[u8]) -> Option<Object<'_>> {
    parse_envelope(body, false).ok()?.request?.object
}

fn review_ephemeral(
    objects: Objects<'_>,
    injector: &Injector,
    pools: &dyn PoolSource,
) -> Result<Option<Decided>, Denial> {
    let new: Box<Pod> = Objects::parse(objects.new, "object")?;
    let old: Box<Pod> = Objects::parse(objects.old, "oldObject")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::ANNOTATION_INJECTED;
    use proptest::prelude::*;

    /// What a review's envelope says, its objects as their typed JSON (a raw
    /// object parsed as the request's kind, when it is one; a view as what
    /// it holds), for comparing the in-place parse with the derived one.
    fn seen(review: ReviewIn<'_>) -> String {
        let Some(request) = review.request else {
            return format!("{:?} {:?} no request", review.api_version, review.kind);
        };
        let kind = ReviewKind::of(request.kind.as_ref());
        let object = |o: Option<Object<'_>>| match o {
            None => "none".to_string(),
            Some(Object::Pod(p)) => serde_json::to_string(&p).expect("pod"),
            Some(Object::Job(j)) => serde_json::to_string(&j).expect("job"),
            Some(Object::View(v)) => format!("view {v:?}"),
            Some(Object::Raw(raw)) => match kind {
                ReviewKind::Pod => crate::injection::bounded::parse::<Pod>("Pod", raw.get())
                    .and_then(|p| serde_json::to_string(&p).ok()),
                ReviewKind::Job => crate::injection::bounded::parse::<Job>("Job", raw.get())
                    .and_then(|j| serde_json::to_string(&j).ok()),
                ReviewKind::Other => None,
            }
            .unwrap_or_else(|| format!("raw {}", raw.get())),
        };
        let gvk = request
            .kind
            .as_ref()
            .map(|g| format!("{}/{}/{}", g.group, g.version, g.kind));
        format!(
            "{:?} {:?} {:?} {gvk:?} {:?} {:?} {:?} {:?} {:?} | {} | {}",
            review.api_version,
            review.kind,
            request.uid,
            request.sub_resource,
            request.namespace,
            request.operation,
            request.dry_run,
            request.user_info.username,
            object(request.object),
            object(request.old_object),
        )
    }

    /// Whenever the in-place parse reads a body (`view`: a Pod CREATE's
    /// object as the fast path's view), the derived parse reads it too, to
    /// the same envelope and the same objects: a view is the view of the
    /// derived parse's raw object. What the in-place parse made of the
    /// object: "typed", "view" or "raw" (none too).
    fn same_as_derived(body: &[u8], view: bool) -> Option<&'static str> {
        let in_place = parse_in_place(body, view).ok()?;
        let mut derived: ReviewIn<'_> =
            serde_json::from_slice(body).expect("the derived parse reads it too");
        let made = match in_place.request.as_ref().and_then(|r| r.object.as_ref()) {
            Some(Object::Pod(_) | Object::Job(_)) => "typed",
            Some(Object::View(_)) => "view",
            Some(Object::Raw(_)) | None => "raw",
        };
        if let (true, Some(request)) = (made == "view", derived.request.as_mut()) {
            let raw = match &request.object {
                Some(Object::Raw(raw)) => Some(*raw),
                _ => None,
            };
            request.object = raw.and_then(|raw| {
                let mut d = serde_json::Deserializer::from_str(raw.get());
                let view = crate::injection::bounded::seed::<PodView<'_>>("Pod")
                    .deserialize(&mut d)
                    .ok()?;
                d.end().ok()?;
                Some(Object::View(Box::new(view)))
            });
        }
        assert_eq!(
            seen(in_place),
            seen(derived),
            "{:.300}",
            String::from_utf8_lossy(body)
        );
        Some(made)
    }

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let mut bodies = Vec::new();
        for dir in ["v1.21", "v1.36"] {
            let dir = format!(
                "{}/tests/fixtures/admission-review/{dir}",
                env!("CARGO_MANIFEST_DIR")
            );
            for entry in std::fs::read_dir(&dir).expect("fixtures") {
                let path = entry.expect("entry").path();
                bodies.push((
                    path.display().to_string(),
                    std::fs::read(&path).expect("read"),
                ));
            }
        }
        for name in ["review-6k.json", "review-16k.json"] {
            let path = format!("{}/benches/data/{name}", env!("CARGO_MANIFEST_DIR"));
            bodies.push((path.clone(), std::fs::read(&path).expect("read")));
        }
        bodies
    }

    #[test]
    fn captured_reviews_have_their_objects_parsed_in_place() {
        for (name, body) in fixtures() {
            // Every captured review is a CREATE or an UPDATE of a Pod or a
            // Job: the object is read where it stands, not skipped first;
            let typed = same_as_derived(&body, false);
            assert_eq!(typed, Some("typed"), "{name}: typed in place");
            // a Pod CREATE's not injected before as the fast path's view
            // (as `handle` reads it).
            let review: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            let pod_create = review["request"]["kind"]["kind"] == "Pod"
                && review["request"]["operation"] == "CREATE";
            let injected = !review["request"]["object"]["metadata"]["annotations"]
                [ANNOTATION_INJECTED]
                .is_null();
            let made = same_as_derived(&body, !looks_injected(&body));
            let expected = if pod_create && !injected {
                "view"
            } else {
                "typed"
            };
            assert_eq!(made, Some(expected), "{name}: read in place");
        }
    }

    /// The same review with its object written before everything else in
    /// the request: the envelope parse keeps it raw (its kind not yet
    /// known), and the review reads it from its JSON.
    fn object_first(body: &[u8]) -> Vec<u8> {
        let mut review: serde_json::Value = serde_json::from_slice(body).expect("JSON");
        let object = review["request"]
            .as_object_mut()
            .and_then(|r| r.remove("object"))
            .expect("an object");
        let rest = review["request"].to_string();
        let request = format!(r#"{{"object":{object},{}"#, &rest[1..]);
        review["request"] = serde_json::Value::Null;
        let envelope = review.to_string();
        envelope
            .replacen(r#""request":null"#, &format!(r#""request":{request}"#), 1)
            .into_bytes()
    }

    #[test]
    fn a_pod_the_fast_path_leaves_is_answered_as_when_read_raw() {
        use crate::injection::{ClusterFacts, SidecarMode};
        let pools = crate::injection::load_pool_file(
            format!("{}/benches/data/pools.yaml", env!("CARGO_MANIFEST_DIR")).as_ref(),
        )
        .expect("pools");
        // Native sidecars: the fast path takes the pods, from the view read
        // in place or from the raw JSON; as containers: it leaves them to
        // the engine, and the view is read again typed.
        for sidecar_mode in [SidecarMode::Native, SidecarMode::Container] {
            let injector = Injector::with_run_ids(ClusterFacts { sidecar_mode }, || "r".into());
            let mut patched = 0;
            for (name, body) in fixtures() {
                let review: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                if review["request"]["kind"]["kind"] != "Pod"
                    || review["request"]["operation"] != "CREATE"
                {
                    continue;
                }
                let raw = object_first(&body);
                assert!(matches!(
                    parse_envelope(&raw, true)
                        .expect("read")
                        .request
                        .and_then(|r| r.object),
                    Some(Object::Raw(_))
                ));
                let in_place = handle(&body, &injector, &pools).expect("answered");
                let from_raw = handle(&raw, &injector, &pools).expect("answered");
                assert_eq!(in_place.decision, from_raw.decision, "{name}");
                assert_eq!(
                    String::from_utf8_lossy(&in_place.body),
                    String::from_utf8_lossy(&from_raw.body),
                    "{name} ({sidecar_mode:?})"
                );
                patched += usize::from(in_place.decision == Decision::Patched);
            }
            assert!(patched >= 3, "{sidecar_mode:?}: {patched} patched");
        }
    }

    #[test]
    fn the_injected_key_is_the_annotation_as_json() {
        assert_eq!(INJECTED_KEY, format!("\"{ANNOTATION_INJECTED}\""));
        let pod =
            |annotations: &str| format!(r#"{{"metadata":{{"annotations":{{{annotations}}}}}}}"#);
        assert!(looks_injected(
            pod(r#""runyard.dev/injected":"r""#).as_bytes()
        ));
        assert!(!looks_injected(pod(r#""runyard.dev/pool":"p""#).as_bytes()));
    }

    #[test]
    fn what_the_in_place_parse_cannot_read_the_derived_parse_decides() {
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#;
        let envelope = |request: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request}}}"#
            )
        };
        let gvk = r#""kind":{"group":"","version":"v1","kind":"Pod"}"#;
        let job = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j"}}"#;
        let job_gvk = r#""kind":{"group":"batch","version":"v1","kind":"Job"}"#;
        let unknown = r#"{"apiVersion":"v1","kind":"Pod","spec":{"containers":[]},"x":1}"#;
        // Each body, and what the in-place parse makes of its object: with
        // the object typed, and with a Pod CREATE's as the fast path's view.
        let cases = [
            // the object before the kind: kept raw, parsed later
            (
                envelope(&format!(
                    r#"{{"uid":"u","object":{pod},{gvk},"operation":"CREATE"}}"#
                )),
                [Some("raw"), Some("raw")],
            ),
            // a subresource the review does not read: raw
            (
                envelope(&format!(
                    r#"{{"uid":"u",{gvk},"operation":"UPDATE","subResource":"status","object":{pod},"oldObject":{pod}}}"#
                )),
                [Some("raw"), Some("raw")],
            ),
            // a Pod CREATE: typed, or the fast path's view (`injection::fast`)
            (
                envelope(&format!(
                    r#"{{"uid":"u",{gvk},"operation":"CREATE","object":{pod}}}"#
                )),
                [Some("typed"), Some("view")],
            ),
            // one with a member the view does not know: typed only
            (
                envelope(&format!(
                    r#"{{"uid":"u",{gvk},"operation":"CREATE","object":{unknown}}}"#
                )),
                [Some("typed"), None],
            ),
            // CREATE: the old object (null) is not read as a Job
            (
                envelope(&format!(
                    r#"{{"uid":"u",{job_gvk},"operation":"CREATE","object":{job},"oldObject":null}}"#
                )),
                [Some("typed"), Some("typed")],
            ),
            // an object that is not a Job: the derived parse, whose review explains
            (
                envelope(&format!(
                    r#"{{"uid":"u",{job_gvk},"operation":"CREATE","object":[1]}}"#
                )),
                [None, None],
            ),
            // nor a Pod, at CREATE
            (
                envelope(&format!(
                    r#"{{"uid":"u",{gvk},"operation":"CREATE","object":[1]}}"#
                )),
                [None, None],
            ),
            // a duplicate field, an escaped key, fields as an array, trailing data
            (envelope(r#"{"uid":"u","uid":"v"}"#), [None, None]),
            (envelope(r#"{"\u0075id":"u"}"#), [None, None]),
            (
                r#"["admission.k8s.io/v1","AdmissionReview",null]"#.to_string(),
                [None, None],
            ),
            (format!("{} x", envelope("null")), [None, None]),
            // a null request, an object of null
            (envelope("null"), [Some("raw"), Some("raw")]),
            (
                envelope(&format!(
                    r#"{{"uid":"u",{gvk},"operation":"CREATE","object":null}}"#
                )),
                [Some("raw"), Some("raw")],
            ),
        ];
        for (body, [typed, view]) in cases {
            assert_eq!(same_as_derived(body.as_bytes(), false), typed, "{body}");
            assert_eq!(same_as_derived(body.as_bytes(), true), view, "{body}");
        }
        // A Pod CREATE the view does not read is read typed in place.
        let body = envelope(&format!(
            r#"{{"uid":"u",{gvk},"operation":"CREATE","object":{unknown}}}"#
        ));
        let review = parse_envelope(body.as_bytes(), true).expect("read");
        assert!(matches!(
            review.request.and_then(|r| r.object),
            Some(Object::Pod(_))
        ));
        // What neither reads is the same malformed-JSON error as before.
        assert!(matches!(
            parse_envelope(b"{", true),
            Err(ReviewError::Malformed(_))
        ));
    }

    /// Envelopes from the pieces of real requests, in any order, repeated,
    /// with objects of any shape.
    fn arb_body() -> impl Strategy<Value = String> {
        let object = prop_oneof![
            Just("null".to_string()),
            Just(r#"{"metadata":{"name":"p","labels":{"runyard.dev/pool":"x"}},"spec":{"containers":[{"name":"c"}]}}"#.to_string()),
            Just(r#"{"spec":{"template":{"spec":{"containers":[]}}}}"#.to_string()),
            Just(r#"{"metadata":{"name":1}}"#.to_string()),
            Just(r#"{"metadata":{"managedFields":[{}]}}"#.to_string()),
            Just("[]".to_string()),
            Just("7".to_string()),
        ];
        let member = prop_oneof![
            Just(r#""uid":"u""#.to_string()),
            Just(r#""uid":null"#.to_string()),
            Just(r#""kind":{"group":"","version":"v1","kind":"Pod"}"#.to_string()),
            Just(r#""kind":{"group":"batch","version":"v1","kind":"Job"}"#.to_string()),
            Just(r#""kind":"Pod""#.to_string()),
            Just(r#""operation":"CREATE""#.to_string()),
            Just(r#""operation":"UPDATE""#.to_string()),
            Just(r#""subResource":"ephemeralcontainers""#.to_string()),
            Just(r#""subResource":"status""#.to_string()),
            Just(r#""namespace":"ns""#.to_string()),
            Just(r#""dryRun":true"#.to_string()),
            Just(r#""dryRun":"yes""#.to_string()),
            Just(r#""userInfo":{"username":"alice","groups":["a"]}"#.to_string()),
            Just(r#""options":{"kind":"CreateOptions"}"#.to_string()),
            object.clone().prop_map(|o| format!(r#""object":{o}"#)),
            object.prop_map(|o| format!(r#""oldObject":{o}"#)),
        ];
        let request = prop_oneof![
            Just("null".to_string()),
            proptest::collection::vec(member, 0..10).prop_map(|m| format!("{{{}}}", m.join(","))),
        ];
        let top = prop_oneof![
            Just(r#""apiVersion":"admission.k8s.io/v1""#.to_string()),
            Just(r#""kind":"AdmissionReview""#.to_string()),
            Just(r#""response":{"uid":"u"}"#.to_string()),
            request.prop_map(|r| format!(r#""request":{r}"#)),
        ];
        proptest::collection::vec(top, 0..5).prop_map(|m| format!("{{{}}}", m.join(",")))
    }

    proptest! {
        #[test]
        fn the_patch_is_encoded_as_standard_padded_base64(
            patch in proptest::collection::vec(any::<u8>(), 0..300),
            before in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            use base64::Engine as _;
            let mut out = before.clone();
            encode_base64(&patch, &mut out);
            let mut expected = before;
            expected.extend_from_slice(
                base64::engine::general_purpose::STANDARD.encode(&patch).as_bytes(),
            );
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn the_in_place_parse_reads_what_the_derived_parse_reads(body in arb_body()) {
            same_as_derived(body.as_bytes(), false);
            same_as_derived(body.as_bytes(), true);
        }
    }
}
