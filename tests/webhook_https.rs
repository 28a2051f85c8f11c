//! The real webhook server on a loopback port with `runyard certs` certificates,
//! spoken to over TLS with rustls: captured AdmissionReviews, bad input,
//! HTTP/2, limits, certificate rotation and graceful shutdown.

mod support;

use base64::Engine as _;
use bytes::Bytes;
use kube::core::admission::AdmissionReview;
use kube::core::DynamicObject;
use runyard::crd::{WorkerPool, WorkerPoolSpec};
use runyard::injection::{ClusterFacts, Injector, StaticPools};
use runyard::webhook::{
    self, metrics::Metrics, AppState, Limits, Running, ServerOptions as Options, TlsSource,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::client::{client_config, tls_connect, Conn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    running: Option<Running>,
    dir: tempfile::TempDir,
    ca: String,
    ready: Arc<AtomicBool>,
}

impl Server {
    fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").addr
    }
    fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }
}

fn write_certs(dir: &Path) -> String {
    let bundle = runyard::certs::generate(&["localhost".to_string(), "127.0.0.1".to_string()], 1)
        .expect("certs");
    runyard::certs::write_dir(&bundle, dir).expect("write certs");
    bundle.ca_cert
}

fn pools() -> StaticPools {
    let mut pool = WorkerPool::new("builders", WorkerPoolSpec::default());
    pool.metadata.namespace = Some("ci".into());
    StaticPools::new(vec![pool])
}

async fn start_with(limits: Limits, metrics_listen: bool) -> Server {
    runyard::webhook::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write_certs(dir.path());
    let ready = Arc::new(AtomicBool::new(true));
    let state = AppState::new(
        Injector::with_run_ids(ClusterFacts::default(), || {
            "01jhttps0000000000000000000".into()
        }),
        Arc::new(pools()),
        Arc::new(Metrics::new()),
        ready.clone(),
        limits.max_in_flight,
    );
    let options = Options {
        listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_listen: metrics_listen.then(|| "127.0.0.1:0".parse().expect("addr")),
        tls: TlsSource::Files {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            reload_interval: Duration::from_millis(50),
        },
        limits,
    };
    let running = webhook::start(options, state).await.expect("start");
    Server {
        running: Some(running),
        dir,
        ca,
        ready,
    }
}

async fn start() -> Server {
    start_with(Limits::default(), false).await
}

fn fixture(version: &str, name: &str) -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/admission-review",
        version,
        name,
    ]
    .iter()
    .collect();
    std::fs::read(path).expect("fixture")
}

/// Parses a response with kube's own AdmissionReview type. kube models the
/// patch as raw bytes, so the canonical base64 string is checked separately
/// (`apply_patch`) and left out here.
fn review(body: &[u8]) -> kube::core::admission::AdmissionResponse {
    let mut v: Value = serde_json::from_slice(body).expect("response is JSON");
    let patch = v["response"]
        .as_object_mut()
        .and_then(|r| r.remove("patch"));
    let parsed: AdmissionReview<DynamicObject> = serde_json::from_value(v)
        .unwrap_or_else(|e| panic!("{e}: {:.300}", String::from_utf8_lossy(body)));
    let mut response = parsed.response.expect("response");
    response.patch = patch.map(|p| p.as_str().unwrap_or_default().as_bytes().to_vec());
    response
}

fn request_uid(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("json");
    v["request"]["uid"].as_str().expect("uid").to_string()
}

fn apply_patch(fixture_body: &[u8], response_body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(response_body).expect("json");
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(v["response"]["patch"].as_str().expect("patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("patch JSON");
    let req: Value = serde_json::from_slice(fixture_body).expect("fixture json");
    let mut object = req["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).expect("patch applies to the captured object");
    object
}

#[tokio::test]
async fn job_create_is_queued_and_injected_over_http1() {
    let server = start().await;
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    assert_eq!(conn.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let body = fixture("v1.36", "00-job-create-build-42.json");
    let reply = conn
        .post("/mutate?timeout=5s", body.clone())
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    let response = review(&reply.body);
    assert_eq!(response.uid, request_uid(&body));
    assert!(response.allowed);
    let job = apply_patch(&body, &reply.body);
    assert_eq!(job["spec"]["suspend"], true);
    assert_eq!(
        job["metadata"]["labels"]["runyard.dev/run-id"],
        "01jhttps0000000000000000000"
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["annotations"]["runyard.dev/injected"],
        "true"
    );
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(job).expect("a Job");
    assert!(job.spec.is_some());
}

#[tokio::test]
async fn pod_reviews_over_http2_on_one_connection() {
    let server = start().await;
    let mut conn = Conn::open(server.addr(), &server.ca, true)
        .await
        .expect("connect");
    assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]));
    for name in [
        "02-pod-create-build-42.json",
        "03-pod-create-bare-run.json",
        "04-pod-create-dry.json",
        "05-pod-create-with-sidecar.json",
    ] {
        let body = fixture("v1.36", name);
        let reply = conn
            .post("/mutate?timeout=5s", body.clone())
            .await
            .expect("reply");
        assert_eq!(reply.status, 200, "{name}");
        let response = review(&reply.body);
        assert_eq!(response.uid, request_uid(&body), "{name}");
        assert!(response.allowed, "{name}");
        let pod = apply_patch(&body, &reply.body);
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).expect("a Pod");
        let inits: Vec<_> = pod
            .spec
            .expect("spec")
            .init_containers
            .into_iter()
            .flatten()
            .map(|c| c.name)
            .collect();
        assert_eq!(&inits[..2], ["init", "launcher"], "{name}");
    }
}

#[tokio::test]
async fn old_api_server_payloads_are_handled_too() {
    let server = start().await;
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    let body = fixture("v1.21", "03-pod-create-build-42.json");
    let reply = conn.post("/mutate", body.clone()).await.expect("reply");
    assert_eq!(reply.status, 200);
    assert!(review(&reply.body).allowed);
    apply_patch(&body, &reply.body);
}

#[tokio::test]
async fn updates_and_unknown_kinds_are_allowed_untouched() {
    let server = start().await;
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    // The captured UPDATE unsuspends the queued Job as kubernetes-admin: only
    // the runyard controller starts runs.
    let body = fixture("v1.36", "01-job-update-build-42.json");
    let reply = conn.post("/mutate", body.clone()).await.expect("reply");
    assert_eq!(reply.status, 200);
    let response = review(&reply.body);
    assert!(!response.allowed, "a user starts a queued run");
    assert!(
        response.result.message.contains("spec.suspend"),
        "{}",
        response.result.message
    );
    // The same change by the controller's ServiceAccount is allowed, untouched.
    let mut v: Value = serde_json::from_slice(&body).expect("json");
    v["request"]["userInfo"]["username"] =
        runyard::injection::trust::DEFAULT_CONTROLLER_USER.into();
    let reply = conn
        .post("/mutate", serde_json::to_vec(&v).expect("json"))
        .await
        .expect("reply");
    let response = review(&reply.body);
    assert!(response.allowed);
    assert!(response.patch.is_none());
    // A user's harmless change (a label of their own) is allowed, untouched.
    let mut v: Value = serde_json::from_slice(&body).expect("json");
    v["request"]["object"]["spec"]["suspend"] = true.into();
    v["request"]["object"]["metadata"]["labels"]["team"] = "a".into();
    let reply = conn
        .post("/mutate", serde_json::to_vec(&v).expect("json"))
        .await
        .expect("reply");
    let response = review(&reply.body);
    assert!(response.allowed, "{}", response.result.message);
    assert!(response.patch.is_none());

    let mut v: Value =
        serde_json::from_slice(&fixture("v1.36", "00-job-create-build-42.json")).expect("json");
    v["request"]["kind"] =
        serde_json::json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let reply = conn
        .post("/mutate", serde_json::to_vec(&v).expect("json"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    let response = review(&reply.body);
    assert!(response.allowed);
    assert!(response.patch.is_none());
}

/// Sends `v` and returns (allowed, message, the patched request object if
/// there was a patch).
async fn send(conn: &mut Conn, v: &Value) -> (bool, String, Option<Value>) {
    let body = serde_json::to_vec(v).expect("json");
    let reply = conn.post("/mutate", body.clone()).await.expect("reply");
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let response = review(&reply.body);
    let patched = response
        .patch
        .is_some()
        .then(|| apply_patch(&body, &reply.body));
    (response.allowed, response.result.message, patched)
}

#[tokio::test]
async fn runyards_own_labels_skip_neither_the_queue_nor_the_hardening() {
    let server = start().await;
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    // A bare run Pod with a forged injection marker and worker label comes
    // out gated, unclaimed and hardened.
    let mut pod: Value =
        serde_json::from_slice(&fixture("v1.36", "03-pod-create-bare-run.json")).expect("json");
    let meta = &mut pod["request"]["object"]["metadata"];
    meta["annotations"]["runyard.dev/injected"] = "true".into();
    meta["labels"]["runyard.dev/worker"] = "builders-1".into();
    let (allowed, message, patched) = send(&mut conn, &pod).await;
    assert!(allowed, "{message}");
    let pod_out = patched.expect("patched");
    assert_eq!(
        pod_out["spec"]["schedulingGates"][0]["name"],
        "runyard.dev/claim"
    );
    assert!(pod_out["metadata"]["labels"]["runyard.dev/worker"].is_null());
    assert_eq!(pod_out["spec"]["securityContext"]["runAsUser"], 1983);
    // With a privileged container named like runyard's init container: denied.
    let containers = pod["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers");
    containers.push(serde_json::json!({
        "name": "init", "image": "alpine",
        "securityContext": { "privileged": true, "runAsUser": 0 }
    }));
    let (allowed, message, _) = send(&mut conn, &pod).await;
    assert!(!allowed);
    assert!(message.contains("privileged"), "{message}");

    // A Job created with a worker label is queued, its label dropped.
    let mut job: Value =
        serde_json::from_slice(&fixture("v1.36", "00-job-create-build-42.json")).expect("json");
    job["request"]["object"]["metadata"]["labels"]["runyard.dev/worker"] = "builders-1".into();
    job["request"]["object"]["spec"]["suspend"] = false.into();
    let (allowed, _, patched) = send(&mut conn, &job).await;
    assert!(allowed);
    let job_out = patched.expect("patched");
    assert_eq!(job_out["spec"]["suspend"], true);
    assert!(job_out["metadata"]["labels"]["runyard.dev/worker"].is_null());

    // Ungating a bare run by a user: denied.
    let mut ungate = pod.clone();
    ungate["request"]["operation"] = "UPDATE".into();
    ungate["request"]["oldObject"] = pod_out.clone();
    let mut ungated = pod_out.clone();
    ungated["spec"]["schedulingGates"] = Value::Null;
    ungate["request"]["object"] = ungated;
    let (allowed, message, _) = send(&mut conn, &ungate).await;
    assert!(!allowed);
    assert!(message.contains("runyard.dev/claim"), "{message}");

    // `kubectl debug` on a run pod of a pool that does not allow it: denied.
    let mut debug = ungate.clone();
    debug["request"]["subResource"] = "ephemeralcontainers".into();
    let mut debugged = pod_out.clone();
    debugged["spec"]["ephemeralContainers"] =
        serde_json::json!([{ "name": "debugger", "image": "busybox:1.36" }]);
    debug["request"]["object"] = debugged;
    let (allowed, message, _) = send(&mut conn, &debug).await;
    assert!(!allowed);
    assert!(message.contains("allowEphemeralContainers"), "{message}");
}

#[tokio::test]
async fn missing_pool_is_denied_with_a_message() {
    let server = start().await;
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    // The tf-plan Job names pool "terraform", which does not exist in "ci".
    let body = fixture("v1.36", "06-job-create-tf-plan-1234.json");
    let reply = conn.post("/mutate", body.clone()).await.expect("reply");
    assert_eq!(reply.status, 200, "denials are answers, not HTTP errors");
    let response = review(&reply.body);
    assert_eq!(response.uid, request_uid(&body));
    assert!(!response.allowed);
    assert_eq!(response.result.code, 403);
    assert!(
        response
            .result
            .message
            .contains("pool \"terraform\" does not exist in namespace \"ci\""),
        "{}",
        response.result.message
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let server = start().await;
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    let good: Value =
        serde_json::from_slice(&fixture("v1.36", "03-pod-create-bare-run.json")).expect("json");

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            b"{\"kind\": \"AdmissionReview\", ".to_vec(),
            400,
            "malformed JSON",
        ),
        ("empty body", Vec::new(), 400, "malformed JSON"),
        (
            "not JSON at all",
            b"\x00\xff garbage".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "a bare Pod",
            serde_json::to_vec(&good["request"]["object"]).expect("json"),
            400,
            "expected kind AdmissionReview",
        ),
        (
            "v1beta1",
            {
                let mut v = good.clone();
                v["apiVersion"] = "admission.k8s.io/v1beta1".into();
                serde_json::to_vec(&v).expect("json")
            },
            400,
            "unsupported apiVersion",
        ),
        (
            "no request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            400,
            "no request",
        ),
        (
            "no uid",
            {
                let mut v = good.clone();
                v["request"].as_object_mut().expect("obj").remove("uid");
                serde_json::to_vec(&v).expect("json")
            },
            400,
            "no uid",
        ),
        (
            "wrong types",
            {
                let mut v = good.clone();
                v["request"]["uid"] = 42.into();
                serde_json::to_vec(&v).expect("json")
            },
            400,
            "malformed JSON",
        ),
    ];
    for (what, body, status, needle) in cases {
        let reply = conn.post("/mutate", body).await.expect(what);
        assert_eq!(reply.status.as_u16(), status, "{what}");
        let text = String::from_utf8_lossy(&reply.body);
        assert!(text.contains(needle), "{what}: {text}");
    }

    // Readable reviews with broken objects are denied, with the uid copied.
    let mut v = good.clone();
    v["request"].as_object_mut().expect("obj").remove("object");
    let reply = conn
        .post("/mutate", serde_json::to_vec(&v).expect("json"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    let response = review(&reply.body);
    assert!(!response.allowed);
    assert!(response
        .result
        .message
        .contains("request.object is missing"));

    let mut v = good;
    v["request"]["object"]["spec"]["containers"] = "not a list".into();
    let reply = conn
        .post("/mutate", serde_json::to_vec(&v).expect("json"))
        .await
        .expect("reply");
    let response = review(&reply.body);
    assert!(!response.allowed);
    assert!(
        response.result.message.contains("not a valid Pod"),
        "{}",
        response.result.message
    );

    // Wrong method and path.
    assert_eq!(conn.get("/mutate").await.expect("reply").status, 405);
    assert_eq!(conn.post("/nope", "x").await.expect("reply").status, 404);

    // The connection survived all of it.
    let reply = conn
        .post("/mutate", fixture("v1.36", "03-pod-create-bare-run.json"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let server = start().await;
    let big = vec![b' '; webhook::MAX_BODY_BYTES + 1];
    for h2 in [false, true] {
        let mut conn = Conn::open(server.addr(), &server.ca, h2)
            .await
            .expect("connect");
        let reply = conn.post("/mutate", big.clone()).await.expect("reply");
        assert_eq!(reply.status, 413, "h2={h2}");
    }
    // A body without a declared length is cut off at the limit too.
    let config = client_config(&server.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let mut tls = tls_connect(server.addr(), config).await.expect("connect");
    tls.write_all(b"POST /mutate HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .expect("write");
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..4 {
        let header = format!("{:x}\r\n", chunk.len());
        if tls.write_all(header.as_bytes()).await.is_err()
            || tls.write_all(&chunk).await.is_err()
            || tls.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let mut buf = vec![0u8; 256];
    let n = tls.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

/// Over HTTP/2 an oversized body is answered 413 on a cleanly ended stream,
/// whether its length is declared or not: the server reads the rest of the
/// body before answering, so the client could send all of it (a server that
/// answers mid-stream resets the stream, which curl and Go's client report
/// as a stream error instead of the 413).
#[tokio::test]
async fn oversize_bodies_get_413_over_http2_while_still_streaming() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    let server = start().await;
    for declared in [true, false] {
        let config = client_config(&server.ca, &[b"h2"], rustls::DEFAULT_VERSIONS);
        let tls = tls_connect(server.addr(), config).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let chunk = Bytes::from(vec![b' '; 64 * 1024]);
        let chunks = (webhook::MAX_BODY_BYTES / chunk.len()) + 8;
        let total = chunks * chunk.len();
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        let frames = futures::stream::iter((0..chunks).map(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))
        }));
        let mut req = http::Request::builder()
            .method("POST")
            .uri("https://localhost/mutate")
            .header("content-type", "application/json");
        if declared {
            req = req.header("content-length", total.to_string());
        }
        let req = req.body(StreamBody::new(frames)).expect("request");
        let reply = sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("declared={declared}: {e:?}"));
        assert_eq!(reply.status(), 413, "declared={declared}");
        let body = reply.into_body().collect().await.expect("body").to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("exceeds"),
            "declared={declared}"
        );
        assert_eq!(
            sent.load(Ordering::SeqCst),
            chunks,
            "declared={declared}: the whole body was taken before the answer"
        );
    }
}

#[tokio::test]
async fn slow_bodies_hit_the_api_server_deadline() {
    let server = start().await;
    let config = client_config(&server.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let mut tls = tls_connect(server.addr(), config).await.expect("connect");
    tls.write_all(
        b"POST /mutate?timeout=300ms HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .expect("write");
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("answered before the test timeout")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
}

#[tokio::test]
async fn a_stalled_body_holds_no_review_slot() {
    // The only review slot: a request whose body never completes used to
    // hold it (issue 16.2); the body is now read before the slot is taken.
    let server = start_with(
        Limits {
            max_in_flight: 1,
            ..Limits::default()
        },
        false,
    )
    .await;
    let config = client_config(&server.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let mut stalled = tls_connect(server.addr(), config).await.expect("connect");
    stalled
        .write_all(b"POST /mutate?timeout=10s HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        conn.post("/mutate", fixture("v1.36", "03-pod-create-bare-run.json")),
    )
    .await
    .expect("answered at once")
    .expect("reply");
    assert_eq!(reply.status, 200);
    // Probes are not subject to the review limit.
    assert_eq!(conn.get("/healthz").await.expect("reply").status, 200);
    drop(stalled);
}

#[tokio::test]
async fn probes_and_metrics() {
    let server = start_with(Limits::default(), true).await;
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    assert_eq!(conn.get("/healthz").await.expect("reply").status, 200);
    assert_eq!(conn.get("/readyz").await.expect("reply").status, 200);
    server.ready.store(false, Ordering::Relaxed);
    let reply = conn.get("/readyz").await.expect("reply");
    assert_eq!(reply.status, 503);
    assert!(String::from_utf8_lossy(&reply.body).contains("not synced"));
    server.ready.store(true, Ordering::Relaxed);

    conn.post("/mutate", fixture("v1.36", "03-pod-create-bare-run.json"))
        .await
        .expect("reply");
    conn.post(
        "/mutate",
        fixture("v1.36", "06-job-create-tf-plan-1234.json"),
    )
    .await
    .expect("reply");
    conn.post("/mutate", "not json").await.expect("reply");
    let reply = conn.get("/metrics").await.expect("reply");
    let text = String::from_utf8_lossy(&reply.body);
    assert!(
        text.contains(
            r#"runyard_webhook_decisions_total{kind="Pod",decision="patched",reason=""} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"runyard_webhook_decisions_total{kind="Job",decision="denied",reason="pool_not_found"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"runyard_webhook_rejected_requests_total{reason="bad_request"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("runyard_webhook_request_duration_seconds_bucket"),
        "{text}"
    );

    // The plain-HTTP listener serves the same probes and metrics, and no reviews.
    let addr = server.running().metrics_addr.expect("metrics listener");
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    plain.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("runyard_webhook_decisions_total"));
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(
            b"POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        )
        .await
        .expect("write");
    let mut out = String::new();
    plain.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_and_garbage_does_not_hurt() {
    let server = start().await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = client_config(&server.ca, &[b"http/1.1"], &[version]);
        let tls = tls_connect(server.addr(), config).await.expect("handshake");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
    }
    // Plain HTTP on the TLS port fails the handshake without harming the server.
    let mut plain = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(2), plain.read(&mut buf)).await;
    // An untrusted CA is refused by the client.
    let other_ca = runyard::certs::generate(&["localhost".to_string()], 1)
        .expect("certs")
        .ca_cert;
    assert!(Conn::open(server.addr(), &other_ca, false).await.is_err());
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    assert_eq!(conn.get("/healthz").await.expect("reply").status, 200);
}

#[tokio::test]
async fn certificates_rotate_without_dropping_connections() {
    let server = start().await;
    let old_ca = server.ca.clone();
    let mut kept = Conn::open(server.addr(), &old_ca, false)
        .await
        .expect("connect");
    let mut kept_h2 = Conn::open(server.addr(), &old_ca, true)
        .await
        .expect("connect");
    let before = kept.peer_cert.clone().expect("cert");
    assert_eq!(kept.get("/healthz").await.expect("reply").status, 200);

    // cert-manager writes a new key pair from a new CA.
    let new_ca = write_certs(server.dir.path());
    let mut rotated = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(conn) = Conn::open(server.addr(), &new_ca, false).await {
            assert_ne!(conn.peer_cert.as_deref(), Some(&before[..]));
            rotated = true;
            break;
        }
    }
    assert!(rotated, "the new certificate was never served");
    assert!(
        Conn::open(server.addr(), &old_ca, false).await.is_err(),
        "new handshakes no longer present the old certificate"
    );
    // Connections established before the rotation keep working.
    let body = fixture("v1.36", "03-pod-create-bare-run.json");
    assert_eq!(
        kept.post("/mutate", body.clone())
            .await
            .expect("kept h1")
            .status,
        200
    );
    assert_eq!(
        kept_h2.post("/mutate", body).await.expect("kept h2").status,
        200
    );
    let metrics = kept.get("/metrics").await.expect("reply");
    assert!(String::from_utf8_lossy(&metrics.body)
        .contains("runyard_webhook_certificate_reloads_total 1"));

    // A broken write (a key that does not match) keeps the current certificate.
    std::fs::write(server.dir.path().join("tls.key"), "garbage").expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(Conn::open(server.addr(), &new_ca, false).await.is_ok());
}

#[tokio::test]
async fn shutdown_drains_in_flight_reviews_and_closes_idle_connections() {
    let mut server = start().await;
    let addr = server.addr();
    let idle = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    let mut idle_h2 = Conn::open(server.addr(), &server.ca, true)
        .await
        .expect("connect");
    assert_eq!(idle_h2.get("/healthz").await.expect("reply").status, 200);

    // A review in flight: headers and half the body sent.
    let body = fixture("v1.36", "03-pod-create-bare-run.json");
    let config = client_config(&server.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let mut in_flight = tls_connect(server.addr(), config).await.expect("connect");
    let head = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.expect("write");
    let (first, rest) = body.split_at(body.len() / 2);
    in_flight.write_all(first).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let running = server.running.take().expect("running");
    running.shutdown();
    let waiter = tokio::spawn(running.wait());
    tokio::time::sleep(Duration::from_millis(100)).await;

    // New connections are refused once the listener is closed.
    assert!(Conn::open(addr, &server.ca, false).await.is_err());
    // Idle keep-alive connections are closed by the server.
    tokio::time::timeout(Duration::from_secs(5), idle.driver)
        .await
        .expect("idle HTTP/1.1 connection closed")
        .expect("driver");
    tokio::time::timeout(Duration::from_secs(5), idle_h2.driver)
        .await
        .expect("idle HTTP/2 connection closed")
        .expect("driver");

    // The in-flight review still gets its answer.
    in_flight.write_all(rest).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), in_flight.read_to_end(&mut buf))
        .await
        .expect("answered")
        .ok();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"allowed\":true"), "{text}");
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("server stopped")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test]
async fn unusable_certificates_fail_at_start() {
    runyard::webhook::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tls.crt"), "not a cert").expect("write");
    std::fs::write(dir.path().join("tls.key"), "not a key").expect("write");
    let state = AppState::new(
        Injector::new(ClusterFacts::default()),
        Arc::new(pools()),
        Arc::new(Metrics::new()),
        Arc::new(AtomicBool::new(true)),
        4,
    );
    let options = Options {
        listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_listen: None,
        tls: TlsSource::Files {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("missing.key"),
            reload_interval: Duration::from_secs(1),
        },
        limits: Limits::default(),
    };
    let err = webhook::start(options, state).await.err().expect("fails");
    assert!(err.to_string().contains("missing.key"), "{err}");
    let _ = Bytes::new();
}
