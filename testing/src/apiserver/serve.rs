//! The HTTP side: a `tower::Service` that routes kube's requests to the
//! store, answering as kube-apiserver does.

use super::logs::{self, LogBody};
use super::select::Selector;
pub(crate) use super::status::Failure;
use super::store::{ObjKey, ResId, Shared, State, WatchReg};
use super::stream::{line, partial_metadata, Pause, WatchFilter, WatchStream};
use super::write::{create, delete, patch, update};
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

pub(crate) fn json_response(code: u16, v: &Value) -> Response<ResBody> {
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
pub(crate) struct Ctx {
    pub verb: Verb,
    pub res: ResId,
    pub rt: Arc<ResourceType>,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    pub q: Query,
    pub content_type: String,
    pub metadata_only: bool,
    pub client: Arc<ClientState>,
    pub body: Bytes,
}

impl Ctx {
    pub fn key(&self) -> ObjKey {
        let ns = if self.rt.namespaced {
            self.ns.clone().unwrap_or_default()
        } else {
            String::new()
        };
        (self.res, ns, self.name.clone().unwrap_or_default())
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    pub fn dry_run(&self) -> bool {
        self.q.get("dryRun") == Some("All")
    }

    pub fn out(&self, obj: &Value) -> Value {
        if self.metadata_only {
            partial_metadata(obj)
        } else {
            obj.clone()
        }
    }

    pub fn info(&self, name: Option<String>, old: Option<Value>, dry_run: bool) -> RequestInfo {
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
