//! The HTTP side: a `tower::Service` that routes kube's requests to the
//! store, answering as kube-apiserver does.

use super::logs::{self, LogBody};
use super::patch::{apply_patch, parse_applied, server_side_apply};
use super::select::Selector;
use super::store::{
    meta, meta_mut, meta_str, names, now_rfc3339, rv_of, spec_changed, ObjKey, ResId, Shared,
    State, WatchReg,
};
use super::stream::{line, partial_metadata, Pause, WatchFilter, WatchStream};
use super::{ClientState, FaultAction, RequestInfo, RequestRecord, ResourceType, Verb};
use bytes::Bytes;
use futures::{future::BoxFuture, Stream, StreamExt};
use http::{header, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ResBody = UnsyncBoxBody<Bytes, BodyError>;

/// An error answer: becomes a `Status` body with the HTTP code.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl Failure {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    /// An error with the reason the real server uses for the code.
    pub fn from_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        Self::new(code, reason, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    fn object(rt: &ResourceType, name: &str, code: u16, reason: &str, message: String) -> Self {
        let mut f = Self::new(code, reason, message);
        f.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        f
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let msg = format!("{} {name:?} not found", rt.qualified());
        Self::object(rt, name, 404, "NotFound", msg)
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let msg = format!("{} {name:?} already exists", rt.qualified());
        Self::object(rt, name, 409, "AlreadyExists", msg)
    }

    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
            rt.qualified()
        );
        Self::object(rt, name, 409, "Conflict", msg)
    }

    fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn with_causes(mut self, causes: Vec<Value>) -> Self {
        self.details = Some(json!({"causes": causes}));
        self
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// Query parameters (kube sends `?&a=b`: empty pairs are skipped).
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, Failure> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse()
                    .map_err(|_| Failure::bad_request(format!("invalid {key}: {v:?}")))
            })
            .transpose()
    }
}

/// The service behind a [`kube::Client`] of the fake server.
#[derive(Clone)]
pub(crate) struct FakeService {
    pub shared: Arc<Shared>,
    pub client: Arc<ClientState>,
}

impl tower::Service<Request<kube::client::Body>> for FakeService {
    type Response = Response<ResBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let (shared, client) = (Arc::clone(&self.shared), Arc::clone(&self.client));
        Box::pin(async move { Ok(handle(shared, client, req).await) })
    }
}

fn full(code: u16, content_type: &str, body: Bytes) -> Response<ResBody> {
    let mut r = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(code: u16, v: &Value) -> Response<ResBody> {
    full(code, "application/json", Bytes::from(v.to_string()))
}

fn stream_response<S>(content_type: &str, s: S) -> Response<ResBody>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Send + 'static,
{
    let body = StreamBody::new(s.map(|r| r.map(Frame::data))).boxed_unsync();
    let mut r = Response::new(body);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn failure(f: &Failure) -> Response<ResBody> {
    json_response(f.code, &f.status())
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "36", "emulationMajor": "1", "emulationMinor": "36",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "35",
        "gitVersion": "v1.36.2", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0", "compiler": "gc", "platform": "linux/amd64",
    })
}

/// A resource request, as routed.
struct Ctx {
    verb: Verb,
    res: ResId,
    rt: Arc<ResourceType>,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    q: Query,
    content_type: String,
    metadata_only: bool,
    client: Arc<ClientState>,
    body: Bytes,
}

impl Ctx {
    fn key(&self) -> ObjKey {
        let ns = if self.rt.namespaced {
            self.ns.clone().unwrap_or_default()
        } else {
            String::new()
        };
        (self.res, ns, self.name.clone().unwrap_or_default())
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    fn dry_run(&self) -> bool {
        self.q.get("dryRun") == Some("All")
    }

    fn out(&self, obj: &Value) -> Value {
        if self.metadata_only {
            partial_metadata(obj)
        } else {
            obj.clone()
        }
    }

    fn info(&self, name: Option<String>, old: Option<Value>, dry_run: bool) -> RequestInfo {
        RequestInfo {
            verb: self.verb,
            group: self.rt.group.clone(),
            resource: self.rt.plural.clone(),
            subresource: self.sub.clone(),
            namespace: self.ns.clone(),
            name,
            user: self.client.user.clone(),
            dry_run,
            old_object: old,
        }
    }
}

struct Route<'a> {
    group: &'a str,
    version: &'a str,
    ns: Option<&'a str>,
    plural: &'a str,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn route(path: &str) -> Option<Route<'_>> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    match rest {
        [plural, tail @ ..] if tail.len() <= 2 => Some(Route {
            group,
            version,
            ns,
            plural,
            name: tail.first().copied(),
            sub: tail.get(1).copied(),
        }),
        _ => None,
    }
}

/// The first matching fault, counted down.
fn take_fault(st: &mut State, rec: &RequestRecord) -> Option<(FaultAction, bool)> {
    let i = st.faults.iter().position(|(_, f)| f.matches(rec))?;
    let f = &mut st.faults[i].1;
    let out = (f.action.clone(), f.applied);
    if let Some(n) = f.times.as_mut() {
        *n = n.saturating_sub(1);
        if *n == 0 {
            st.faults.remove(i);
        }
    }
    Some(out)
}

async fn handle(
    shared: Arc<Shared>,
    client: Arc<ClientState>,
    req: Request<kube::client::Body>,
) -> Response<ResBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if parts.uri.path().trim_end_matches('/') == "/version" {
        return json_response(200, &version_info());
    }
    let Some(r) = route(parts.uri.path()) else {
        return failure(&Failure::no_route());
    };
    let q = Query::parse(parts.uri.query());
    let verb = match (&parts.method, r.name.is_some()) {
        (&Method::GET, false) if q.flag("watch") => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::GET, true) => Verb::Get,
        (&Method::POST, _) => Verb::Create,
        (&Method::PUT, _) => Verb::Update,
        (&Method::PATCH, _) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => return failure(&Failure::from_code(405, "method not allowed")),
    };
    let header = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header(header::CONTENT_TYPE)
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let metadata_only = header(header::ACCEPT).contains("as=PartialObjectMetadata");
    let record = RequestRecord {
        verb,
        group: r.group.to_string(),
        resource: r.plural.to_string(),
        subresource: r.sub.map(str::to_string),
        namespace: r.ns.map(str::to_string),
        name: r.name.map(str::to_string),
        field_manager: q.get("fieldManager").map(str::to_string),
        content_type: (verb == Verb::Patch).then(|| content_type.clone()),
        user: client.user.clone(),
        metadata_only,
    };
    let (res, fault) = {
        let mut st = shared.lock();
        st.requests.push(record.clone());
        let fault = take_fault(&mut st, &record);
        let res = st
            .find(r.group, r.version, r.plural)
            .map(|id| (id, st.rt(id)));
        (res, fault)
    };
    let ctx = res.map(|(res, rt)| Ctx {
        verb,
        res,
        rt,
        ns: r.ns.map(str::to_string),
        name: r.name.map(str::to_string),
        sub: r.sub.map(str::to_string),
        q,
        content_type,
        metadata_only,
        client,
        body,
    });
    let run = |ctx: &Option<Ctx>| match ctx {
        Some(c) => dispatch(&shared, c).unwrap_or_else(|f| failure(&f)),
        None => failure(&Failure::no_route()),
    };
    match fault {
        None => run(&ctx),
        Some((FaultAction::Delay(d), _)) => {
            tokio::time::sleep(d).await;
            run(&ctx)
        }
        Some((FaultAction::Status(code), applied)) => {
            if applied {
                drop(run(&ctx));
            }
            failure(&injected(code, &record))
        }
        Some((FaultAction::Hang, applied)) => {
            if applied {
                drop(run(&ctx));
            }
            std::future::pending().await
        }
    }
}

fn injected(code: u16, rec: &RequestRecord) -> Failure {
    let what = format!("{} {:?}", rec.resource, rec.name.as_deref().unwrap_or(""));
    let msg = match code {
        409 => format!("Operation cannot be fulfilled on {what}: the object has been modified; please apply your changes to the latest version and try again"),
        429 => "Too many requests, please try again later.".to_string(),
        500 => format!("Internal error occurred: injected fault on {what}"),
        503 => "the server is currently unable to handle the request".to_string(),
        504 => "the server was unable to return a response in the time allotted, but may still be processing the request".to_string(),
        _ => format!("injected fault on {what}"),
    };
    Failure::from_code(code, msg)
}

fn dispatch(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let collection = matches!(
        c.verb,
        Verb::List | Verb::Watch | Verb::Create | Verb::DeleteCollection
    );
    if (!c.rt.namespaced && c.ns.is_some()) || (c.rt.namespaced && c.ns.is_none() && !collection) {
        return Err(Failure::no_route());
    }
    let status = c.sub.as_deref() == Some("status") && c.rt.status_subresource;
    let pods = c.rt.group.is_empty() && c.rt.plural == "pods";
    match (c.verb, c.sub.as_deref()) {
        (Verb::List, None) => list(shared, c),
        (Verb::Watch, None) => watch(shared, c),
        (Verb::Create, None) if c.name.is_none() => create(shared, c),
        (Verb::Get, None) => get(shared, c),
        (Verb::Get, Some(_)) if status => get(shared, c),
        (Verb::Get, Some("log")) if pods => pod_logs(shared, c),
        (Verb::Update, None) => update(shared, c),
        (Verb::Update, Some(_)) if status => update(shared, c),
        (Verb::Patch, None) => patch(shared, c),
        (Verb::Patch, Some(_)) if status => patch(shared, c),
        (Verb::Delete, None) => delete(shared, c),
        (Verb::DeleteCollection, _) => Err(Failure::from_code(
            405,
            "deletecollection is not supported by the fake API server",
        )),
        _ => Err(Failure::no_route()),
    }
}

fn get(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let st = shared.lock();
    let obj = st
        .objects
        .get(&c.key())
        .ok_or_else(|| Failure::not_found(&c.rt, c.name()))?;
    Ok(json_response(200, &c.out(obj)))
}

fn selectors(c: &Ctx) -> Result<(Selector, Selector), Failure> {
    let labels = Selector::labels(c.q.get("labelSelector")).map_err(Failure::bad_request)?;
    let fields = Selector::fields(c.q.get("fieldSelector")).map_err(Failure::bad_request)?;
    Ok((labels, fields))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

fn list(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let (labels, fields) = selectors(c)?;
    let limit = c.q.int("limit")?.filter(|&n| n > 0).map(|n| n as usize);
    let st = shared.lock();
    let (list_rv, after) = match c.q.get("continue") {
        Some(token) => {
            let bad = || Failure::bad_request("continue key is not valid");
            let decoded = unhex(token).ok_or_else(bad)?;
            let mut it = decoded.splitn(3, '/');
            let (rv, ns, name) = (it.next(), it.next(), it.next());
            let rv: u64 = rv.and_then(|r| r.parse().ok()).ok_or_else(bad)?;
            if rv < st.history_start(c.res) {
                return Err(Failure::new(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results."));
            }
            let after = (ns.unwrap_or("").to_string(), name.unwrap_or("").to_string());
            (rv, Some(after))
        }
        None => (st.rv, None),
    };
    let (mut items, mut remaining, mut last) = (Vec::new(), 0usize, None);
    for ((_, ns, name), obj) in st.objects_of(c.res, c.ns.as_deref()) {
        if after
            .as_ref()
            .is_some_and(|(a_ns, a_name)| (ns, name) <= (a_ns, a_name))
            || !labels.matches(obj)
            || !fields.matches(obj)
        {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            remaining += 1;
            continue;
        }
        items.push(c.out(obj));
        last = Some(format!("{ns}/{name}"));
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if remaining > 0 {
        if let Some(last) = last {
            metadata["continue"] = json!(hex(&format!("{list_rv}/{last}")));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let (api_version, kind) = if c.metadata_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadataList".to_string(),
        )
    } else {
        (c.rt.api_version(), format!("{}List", c.rt.kind))
    };
    Ok(json_response(
        200,
        &json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items}),
    ))
}

fn watch(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let send_initial = c.q.flag("sendInitialEvents");
    if send_initial
        && (!c.q.flag("allowWatchBookmarks")
            || c.q.get("resourceVersionMatch") != Some("NotOlderThan"))
    {
        return Err(Failure::invalid(
            "sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
        ));
    }
    let rv: Option<u64> = match c.q.get("resourceVersion").filter(|v| !v.is_empty()) {
        Some(v) => Some(
            v.parse()
                .map_err(|_| Failure::bad_request(format!("invalid resourceVersion {v:?}")))?,
        ),
        None => None,
    };
    let timeout =
        c.q.int("timeoutSeconds")?
            .filter(|&t| t > 0)
            .unwrap_or(1800);
    let (labels, fields) = selectors(c)?;
    let filter = WatchFilter {
        namespace: c.ns.clone(),
        labels,
        fields,
        metadata_only: c.metadata_only,
        api_version: c.rt.api_version(),
        kind: c.rt.kind.clone(),
    };
    let mut st = shared.lock();
    let mut queued = VecDeque::new();
    match rv {
        Some(r) if r > 0 && !send_initial => {
            let start = st.history_start(c.res);
            if r < start {
                let gone = Failure::new(
                    410,
                    "Expired",
                    format!("too old resource version: {r} ({start})"),
                );
                let only = line("ERROR", &gone.status());
                return Ok(stream_response(
                    "application/json",
                    futures::stream::iter([Ok::<_, BodyError>(only)]),
                ));
            }
            if let Some(h) = st.histories.get(&c.res) {
                queued.extend(
                    h.events
                        .iter()
                        .filter(|ch| ch.rv > r)
                        .filter_map(|ch| filter.translate(ch)),
                );
            }
        }
        _ => {
            for (_, obj) in st.objects_of(c.res, c.ns.as_deref()) {
                if filter.matches(obj) {
                    queued.push_back(filter.event("ADDED", obj));
                }
            }
            if send_initial {
                queued.push_back(filter.bookmark(st.rv, true));
            }
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    st.watchers.push(WatchReg { res: c.res, tx });
    let ws = WatchStream {
        queued,
        rx,
        filter,
        deadline: Some(tokio::time::Instant::now() + Duration::from_secs(timeout as u64)),
        pause: Pause {
            global: st.global_pause.subscribe(),
            client: c.client.paused.subscribe(),
        },
        close: st.close_epoch.subscribe(),
    };
    let lines = futures::stream::unfold(ws, |mut ws| async move {
        ws.next().await.map(|b| (Ok::<_, BodyError>(b), ws))
    });
    Ok(stream_response("application/json", lines))
}

fn pod_logs(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let mut st = shared.lock();
    let pod = st
        .objects
        .get(&c.key())
        .cloned()
        .ok_or_else(|| Failure::not_found(&c.rt, c.name()))?;
    let ns = c.ns.as_deref().unwrap_or("");
    match logs::logs(&mut st, shared, ns, c.name(), &pod, &c.q)? {
        LogBody::Full(b) => Ok(full(200, "text/plain", b)),
        LogBody::Follow(f) => Ok(stream_response(
            "text/plain",
            futures::stream::unfold(f, |mut f| async move {
                f.next().await.map(|r| (r.map_err(BodyError::from), f))
            }),
        )),
    }
}

fn parse_object(body: &[u8]) -> Result<Value, Failure> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Failure::bad_request(format!("the request body is not a valid object: {e}"))
    })?;
    if !v.is_object() {
        return Err(Failure::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// Checks the body's namespace against the URL's.
fn check_namespace(c: &Ctx, obj: &Value) -> Result<(), Failure> {
    match (
        meta_str(obj, "namespace").filter(|n| !n.is_empty()),
        c.ns.as_deref(),
    ) {
        (Some(body), Some(url)) if c.rt.namespaced && body != url => Err(Failure::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

fn check_name(c: &Ctx, obj: &Value) -> Result<(), Failure> {
    match meta_str(obj, "name").filter(|n| !n.is_empty()) {
        Some(n) if n != c.name() => Err(Failure::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            c.name()
        ))),
        _ => Ok(()),
    }
}

fn dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn run_hooks(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    create: bool,
    obj: &mut Value,
    info: &RequestInfo,
) -> Result<(), Failure> {
    let hooks: Vec<_> = {
        let st = shared.lock();
        let all = if create {
            &st.create_hooks
        } else {
            &st.update_hooks
        };
        all.iter()
            .filter(|(p, _)| names(p, rt))
            .map(|(_, h)| Arc::clone(h))
            .collect()
    };
    for hook in hooks {
        hook(obj, info).map_err(|(code, msg)| Failure::from_code(code, msg))?;
    }
    Ok(())
}

/// Stores a new object as create does: name (or generateName), uid,
/// timestamps, no status for resources with a status subresource.
pub(crate) fn create_locked(
    st: &mut State,
    res: ResId,
    ns: &str,
    mut obj: Value,
    dry_run: bool,
) -> Result<Value, Failure> {
    let rt = st.rt(res);
    if !rv_of(&obj).is_empty() {
        return Err(Failure::from_code(
            500,
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
            Some(prefix) => {
                let prefix = prefix.to_string();
                loop {
                    let candidate = format!("{prefix}{}", st.name_suffix());
                    if !st.objects.contains_key(&(res, ns.to_string(), candidate.clone())) {
                        break candidate;
                    }
                }
            }
            None => return Err(Failure::invalid(format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", rt.qualified()))),
        },
    };
    if !dns_subdomain(&name) {
        return Err(Failure::invalid(format!("{} {name:?} is invalid: metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character", rt.qualified())));
    }
    let key = (res, ns.to_string(), name.clone());
    if st.objects.contains_key(&key) {
        return Err(Failure::already_exists(&rt, &name));
    }
    st.normalize(res, ns, &name, &mut obj);
    st.fill_create(res, &mut obj);
    if rt.status_subresource {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
            if rt.group.is_empty() && rt.plural == "pods" {
                o.insert("status".into(), json!({"phase": "Pending"}));
            }
        }
    }
    if dry_run {
        return Ok(obj);
    }
    Ok(st.insert_new(key, obj))
}

fn create(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let mut obj = parse_object(&c.body)?;
    check_namespace(c, &obj)?;
    let name = meta_str(&obj, "name").map(str::to_string);
    run_hooks(
        shared,
        &c.rt,
        true,
        &mut obj,
        &c.info(name, None, c.dry_run()),
    )?;
    let ns = if c.rt.namespaced {
        c.ns.as_deref().unwrap_or("")
    } else {
        ""
    };
    let stored = create_locked(&mut shared.lock(), c.res, ns, obj, c.dry_run())?;
    Ok(json_response(201, &c.out(&stored)))
}

/// What an update stores: the status subresource changes only `.status`;
/// the main resource keeps system metadata and (with a status subresource)
/// the old status, and bumps generation on spec changes.
pub(crate) fn prepare_update(
    rt: &ResourceType,
    old: &Value,
    mut cand: Value,
    status_only: bool,
) -> Value {
    if status_only {
        let mut new = old.clone();
        if let Some(o) = new.as_object_mut() {
            match cand.get("status") {
                Some(s) => o.insert("status".into(), s.clone()),
                None => o.remove("status"),
            };
        }
        if let Some(mf) = meta(&cand).and_then(|m| m.get("managedFields")) {
            meta_mut(&mut new).insert("managedFields".into(), mf.clone());
        }
        return new;
    }
    let om = meta(old).cloned().unwrap_or_default();
    let m = meta_mut(&mut cand);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match om.get(k) {
            Some(v) => m.insert(k.into(), v.clone()),
            None => m.remove(k),
        };
    }
    if !m.contains_key("managedFields") {
        if let Some(mf) = om.get("managedFields") {
            m.insert("managedFields".into(), mf.clone());
        }
    }
    if rt.status_subresource {
        if let Some(o) = cand.as_object_mut() {
            match old.get("status") {
                Some(s) => o.insert("status".into(), s.clone()),
                None => o.remove("status"),
            };
        }
    }
    if spec_changed(old, &cand) {
        if let Some(g) = om.get("generation").and_then(Value::as_i64) {
            meta_mut(&mut cand).insert("generation".into(), json!(g + 1));
        }
    }
    cand
}

/// Read, compute, admit, write; retried if the object changed meanwhile.
fn write_loop(
    shared: &Arc<Shared>,
    c: &Ctx,
    compute: impl Fn(&Value) -> Result<Value, Failure>,
) -> Result<Response<ResBody>, Failure> {
    let key = c.key();
    for _ in 0..10 {
        let old = shared.lock().objects.get(&key).cloned();
        let old = old.ok_or_else(|| Failure::not_found(&c.rt, c.name()))?;
        let mut cand = compute(&old)?;
        let cand_rv = rv_of(&cand);
        if !cand_rv.is_empty() && cand_rv != rv_of(&old) {
            return Err(Failure::conflict(&c.rt, c.name()));
        }
        let info = c.info(c.name.clone(), Some(old.clone()), c.dry_run());
        run_hooks(shared, &c.rt, false, &mut cand, &info)?;
        let status_only = c.sub.as_deref() == Some("status");
        let mut new = prepare_update(&c.rt, &old, cand, status_only);
        let mut st = shared.lock();
        if st.objects.get(&key).map(rv_of) != Some(rv_of(&old)) {
            continue;
        }
        st.normalize(c.res, &key.1, &key.2, &mut new);
        if c.dry_run() {
            return Ok(json_response(200, &c.out(&new)));
        }
        let stored = st.write_update(key.clone(), &old, new);
        return Ok(json_response(200, &c.out(&stored)));
    }
    Err(Failure::conflict(&c.rt, c.name()))
}

fn update(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let body = parse_object(&c.body)?;
    check_name(c, &body)?;
    check_namespace(c, &body)?;
    write_loop(shared, c, |_| Ok(body.clone()))
}

fn patch(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    if c.content_type != "application/apply-patch+yaml" {
        if c.content_type == "application/strategic-merge-patch+json" && !c.rt.builtin {
            return Err(Failure::new(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources",
            ));
        }
        return write_loop(shared, c, |old| {
            let mut target = old.clone();
            apply_patch(&c.content_type, &mut target, &c.body)?;
            Ok(target)
        });
    }
    let manager = c.q.get("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
        Failure::invalid("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
    })?;
    let applied = parse_applied(&c.body)?;
    check_name(c, &applied)?;
    check_namespace(c, &applied)?;
    let force = c.q.flag("force");
    let exists = shared.lock().objects.contains_key(&c.key());
    if !exists && c.sub.is_none() {
        let mut obj = server_side_apply(None, &applied, manager, force, None, now_rfc3339())?;
        meta_mut(&mut obj).insert("name".into(), json!(c.name()));
        run_hooks(
            shared,
            &c.rt,
            true,
            &mut obj,
            &c.info(c.name.clone(), None, c.dry_run()),
        )?;
        let key = c.key();
        let stored = create_locked(&mut shared.lock(), c.res, &key.1, obj, c.dry_run())?;
        return Ok(json_response(201, &c.out(&stored)));
    }
    let sub = c.sub.as_deref();
    write_loop(shared, c, |old| {
        server_side_apply(Some(old), &applied, manager, force, sub, now_rfc3339())
    })
}

fn delete(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let opts = if c.body.is_empty() {
        json!({})
    } else {
        parse_object(&c.body)?
    };
    let dry_run = c.dry_run()
        || opts
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    let key = c.key();
    let mut st = shared.lock();
    let old = st
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| Failure::not_found(&c.rt, c.name()))?;
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        if let Some(want) = opts
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
        {
            let actual = meta_str(&old, field).unwrap_or("");
            if want != actual {
                return Err(Failure::from_code(409, format!("Precondition failed: {label} in precondition: {want}, {label} in object meta: {actual}")));
            }
        }
    }
    if dry_run {
        return Ok(json_response(200, &c.out(&old)));
    }
    let gone = st.delete(&key).unwrap_or(old);
    Ok(json_response(200, &c.out(&gone)))
}
