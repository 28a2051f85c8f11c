//! The self-managed webhook certificate (`runyard webhook --cert-secret`)
//! against the in-memory API server, with a clock the tests move: the first
//! start creates and patches, a restart reuses, a rotation patches the
//! caBundle before the served certificate changes, replicas that race never
//! write conflicting Secrets, `/readyz` follows the caBundle, and a real
//! HTTPS client that trusts the old caBundle keeps working through the
//! rotation window.

mod support;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ServiceReference, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use runyard::certs::managed::{self, pem_blocks, Managed, Step};
use runyard::crd::{WorkerPool, WorkerPoolSpec};
use runyard::injection::{ClusterFacts, Injector, StaticPools};
use runyard::webhook::rotator::{Applied, Clock, Rotator, RotatorConfig};
use runyard::webhook::tls::CertStore;
use runyard::webhook::{self, metrics::Metrics, AppState, Limits, ServerOptions, TlsSource};
use runyard_testing::apiserver::{FakeApiServer, Verb};
use rustls::pki_types::UnixTime;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::client::{client_config_at, Conn};
use tower::ServiceExt;

const NS: &str = "runyard";
const SECRET: &str = "runyard-webhook-tls";
const CONFIG: &str = "runyard";
const DAY: i64 = 86_400;
const VALIDITY: Duration = Duration::from_secs(90 * 86_400);

/// A clock the test moves; also the TLS client's clock, so certificates
/// issued "in the future" verify.
#[derive(Debug)]
struct TestClock(AtomicI64);

impl TestClock {
    fn starting_now() -> Arc<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        Arc::new(Self(AtomicI64::new(now)))
    }
    fn set(&self, t: i64) {
        self.0.store(t, Ordering::SeqCst);
    }
    fn advance(&self, by: i64) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl rustls::time_provider::TimeProvider for TestClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            self.now() as u64
        )))
    }
}

fn config() -> RotatorConfig {
    RotatorConfig::for_service(
        "runyard-webhook",
        NS,
        &["localhost".to_string(), "127.0.0.1".to_string()],
        SECRET,
        CONFIG,
        VALIDITY,
    )
}

fn webhook_configuration() -> MutatingWebhookConfiguration {
    let hook = |name: &str| MutatingWebhook {
        name: name.into(),
        admission_review_versions: vec!["v1".into()],
        side_effects: "None".into(),
        client_config: WebhookClientConfig {
            service: Some(ServiceReference {
                name: "runyard-webhook".into(),
                namespace: NS.into(),
                path: Some("/mutate".into()),
                port: Some(443),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    MutatingWebhookConfiguration {
        metadata: kube::api::ObjectMeta {
            name: Some(CONFIG.into()),
            ..Default::default()
        },
        webhooks: Some(vec![hook("jobs.runyard.dev"), hook("pods.runyard.dev")]),
    }
}

struct Replica {
    rotator: Rotator,
    store: Arc<CertStore>,
    trusted: Arc<AtomicBool>,
}

fn replica(server: &FakeApiServer, clock: &Arc<TestClock>, user: &str) -> Replica {
    let store = Arc::new(CertStore::empty());
    let trusted = Arc::new(AtomicBool::new(true));
    let rotator = Rotator::new(
        server.client_as(user),
        config(),
        store.clone(),
        trusted.clone(),
        clock.clone(),
    );
    Replica {
        rotator,
        store,
        trusted,
    }
}

impl Replica {
    fn served(&self) -> String {
        String::from_utf8(self.store.served_cert().expect("serving")).expect("PEM")
    }
    fn trusted(&self) -> bool {
        self.trusted.load(Ordering::SeqCst)
    }
}

fn stored(server: &FakeApiServer) -> Managed {
    let secret: Secret = server.get_obj(NS, SECRET).expect("the Secret exists");
    Managed::from_secret(&secret).expect("a usable Secret")
}

/// The caBundle of each webhook of the configuration.
fn ca_bundles(server: &FakeApiServer) -> Vec<String> {
    let config: MutatingWebhookConfiguration = server.get_obj("", CONFIG).expect("config");
    config
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| {
            String::from_utf8(w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default())
                .expect("PEM")
        })
        .collect()
}

/// Whether the API server, trusting the configuration's caBundle now, would
/// accept what `r` serves.
fn api_server_accepts(server: &FakeApiServer, r: &Replica, clock: &TestClock) -> bool {
    let bundles: Vec<_> = ca_bundles(server)
        .into_iter()
        .map(|b| Some(b.into_bytes()))
        .collect();
    managed::trusted_by_all(
        &bundles,
        r.served().as_bytes(),
        "runyard-webhook.runyard.svc",
        clock.now(),
    )
}

/// Watches every write to the Secret from inside the API server: an update
/// that changes the served certificate (`tls.crt`) to one the caBundle does
/// not trust at that moment is recorded as a violation.
fn guard_served_changes(server: &FakeApiServer, clock: &Arc<TestClock>) -> Arc<Mutex<Vec<String>>> {
    use base64::Engine as _;
    let violations = Arc::new(Mutex::new(Vec::new()));
    let (seen, api, clock) = (violations.clone(), server.clone(), clock.clone());
    server.on_update("secrets", move |new, info| {
        let cert = |v: &serde_json::Value| {
            v["data"]["tls.crt"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default()
        };
        let served = cert(new);
        if info.old_object.as_ref().map(cert) != Some(served.clone()) {
            let bundles: Vec<_> = ca_bundles(&api)
                .into_iter()
                .map(|b| Some(b.into_bytes()))
                .collect();
            if !managed::trusted_by_all(
                &bundles,
                &served,
                "runyard-webhook.runyard.svc",
                clock.now(),
            ) {
                seen.lock().expect("lock").push(format!(
                    "at {}: served certificate changed to one the caBundle does not trust",
                    clock.now()
                ));
            }
        }
        Ok(())
    });
    violations
}

#[tokio::test]
async fn first_start_creates_the_secret_and_patches_the_ca_bundle() {
    let server = FakeApiServer::new();
    let config = server.create_obj(&webhook_configuration());
    let clock = TestClock::starting_now();
    let r = replica(&server, &clock, "webhook-0");
    assert!(!r.trusted(), "not ready before the first tick");

    let report = r.rotator.tick().await.expect("tick");
    assert_eq!(
        report.writes,
        ["created the Secret", "patched the caBundle"]
    );
    assert_eq!(report.last, Some(Step::Steady));
    assert!(report.serving && report.trusted && r.trusted());

    let secret: Secret = server.get_obj(NS, SECRET).expect("Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let owner = &secret.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("MutatingWebhookConfiguration", CONFIG),
        "deleted with the webhook configuration"
    );
    assert_eq!(Some(&owner.uid), config.metadata.uid.as_ref());
    let m = stored(&server);
    assert_eq!(m.served.cert, r.served());
    assert_eq!(m.served.not_after - m.served.not_before, 90 * DAY + 300);
    assert_eq!(
        ca_bundles(&server),
        [m.ca_bundle.clone(), m.ca_bundle.clone()]
    );
    assert!(api_server_accepts(&server, &r, &clock));
    // The CA's key is not kept anywhere.
    let keys: Vec<String> = secret.data.expect("data").into_keys().collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);

    // The next tick is two reads.
    server.reset_requests();
    let report = r.rotator.tick().await.expect("tick");
    assert!(report.writes.is_empty());
    assert_eq!(server.count(Verb::Get, "*"), 2);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_restart_reuses_the_secret() {
    let server = FakeApiServer::new();
    server.create_obj(&webhook_configuration());
    let clock = TestClock::starting_now();
    let first = replica(&server, &clock, "webhook-0");
    first.rotator.tick().await.expect("tick");
    let before = stored(&server);

    clock.advance(30 * DAY);
    server.reset_requests();
    let restarted = replica(&server, &clock, "webhook-0");
    let report = restarted.rotator.tick().await.expect("tick");
    assert!(report.writes.is_empty(), "{report:?}");
    assert_eq!(
        server.count(Verb::Create, "*") + server.count(Verb::Update, "*"),
        0
    );
    assert_eq!(restarted.served(), before.served.cert);
    assert!(restarted.trusted());
    assert_eq!(stored(&server), before);
}

#[tokio::test]
async fn rotation_patches_the_ca_bundle_first_and_swaps_the_served_certificate_after() {
    let server = FakeApiServer::new();
    server.create_obj(&webhook_configuration());
    let clock = TestClock::starting_now();
    let violations = guard_served_changes(&server, &clock);
    let r = replica(&server, &clock, "webhook-0");
    r.rotator.tick().await.expect("tick");
    let old = stored(&server);
    let due = old.served.renew_at();
    assert_eq!(due - old.served.not_before, (90 * DAY + 300) / 3 * 2);

    clock.set(due - 1);
    let report = r.rotator.tick().await.expect("tick");
    assert!(report.writes.is_empty(), "not due yet: {report:?}");

    clock.set(due);
    server.reset_requests();
    let report = r.rotator.tick().await.expect("tick");
    assert_eq!(
        report.writes,
        ["added the next certificate", "patched the caBundle"]
    );
    assert_eq!(report.last, Some(Step::AwaitTrust { until: due + 60 }));
    let rotating = stored(&server);
    let next = rotating.next.clone().expect("a next certificate");
    assert_eq!(
        r.served(),
        old.served.cert,
        "the old certificate is still served"
    );
    let cas = pem_blocks(&rotating.ca_bundle);
    assert_eq!(cas.len(), 2);
    assert_eq!(cas[0], old.ca_bundle, "the served certificate's CA stays");
    let svc = "runyard-webhook.runyard.svc";
    assert!(managed::verify(cas[1].as_bytes(), next.cert.as_bytes(), svc, due).is_ok());
    assert_eq!(
        ca_bundles(&server),
        [rotating.ca_bundle.clone(), rotating.ca_bundle.clone()]
    );
    assert!(r.trusted() && api_server_accepts(&server, &r, &clock));

    // Not before the caBundle has held the new CA for the trust delay.
    clock.advance(59);
    let report = r.rotator.tick().await.expect("tick");
    assert!(report.writes.is_empty(), "{report:?}");
    assert_eq!(r.served(), old.served.cert);

    clock.advance(1);
    let report = r.rotator.tick().await.expect("tick");
    assert_eq!(report.writes, ["promoted the next certificate"]);
    assert_eq!(r.served(), next.cert, "the new certificate is served");
    assert!(r.trusted() && api_server_accepts(&server, &r, &clock));
    let promoted = stored(&server);
    assert!(promoted.next.is_none());
    assert_eq!(
        promoted.ca_bundle, rotating.ca_bundle,
        "the old CA stays trusted"
    );

    // In the API's order of events: the caBundle write came before the
    // write that changed what is served.
    let writes: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|q| matches!(q.verb, Verb::Update | Verb::Create))
        .map(|q| q.resource)
        .collect();
    assert_eq!(
        writes,
        ["secrets", "mutatingwebhookconfigurations", "secrets"]
    );
    assert_eq!(*violations.lock().expect("lock"), Vec::<String>::new());
}

#[tokio::test]
async fn two_replicas_that_race_never_write_conflicting_secrets() {
    let server = FakeApiServer::new();
    server.create_obj(&webhook_configuration());
    let clock = TestClock::starting_now();
    let violations = guard_served_changes(&server, &clock);
    let a = replica(&server, &clock, "webhook-a");
    let b = replica(&server, &clock, "webhook-b");

    // Both read "no Secret", both try to create one: one create wins.
    let (seen_a, seen_b) = (
        a.rotator.observe().await.expect("read"),
        b.rotator.observe().await.expect("read"),
    );
    let (step_a, step_b) = (a.rotator.plan(&seen_a), b.rotator.plan(&seen_b));
    assert!(matches!(step_a, Step::Issue(_)) && step_a == step_b);
    assert_eq!(
        a.rotator.apply(&seen_a, &step_a).await.expect("apply"),
        Applied::Wrote("created the Secret")
    );
    let winner = stored(&server);
    assert_eq!(
        b.rotator.apply(&seen_b, &step_b).await.expect("apply"),
        Applied::Lost
    );
    assert_eq!(stored(&server), winner, "the loser wrote nothing");
    // Both serve the winner's certificate.
    let (ra, rb) = (
        a.rotator.tick().await.expect("tick"),
        b.rotator.tick().await.expect("tick"),
    );
    assert_eq!(ra.writes, ["patched the caBundle"]);
    assert!(rb.writes.is_empty());
    assert_eq!(a.served(), winner.served.cert);
    assert_eq!(b.served(), winner.served.cert);

    // The rotation: both begin it from the same read; one next certificate.
    clock.set(winner.served.renew_at());
    let (seen_a, seen_b) = (
        a.rotator.observe().await.expect("read"),
        b.rotator.observe().await.expect("read"),
    );
    let (step_a, step_b) = (a.rotator.plan(&seen_a), b.rotator.plan(&seen_b));
    assert_eq!(
        (&step_a, &step_b),
        (&Step::BeginRotation, &Step::BeginRotation)
    );
    assert_eq!(
        b.rotator.apply(&seen_b, &step_b).await.expect("apply"),
        Applied::Wrote("added the next certificate")
    );
    let next = stored(&server).next.expect("next");
    assert_eq!(
        a.rotator.apply(&seen_a, &step_a).await.expect("apply"),
        Applied::Lost
    );
    assert_eq!(
        stored(&server).next,
        Some(next.clone()),
        "the loser's next certificate was not written"
    );

    // Ticking together, round after round, through promotion and the next
    // rotation: every replica always serves what the caBundle trusts, and
    // they end up serving the same certificate.
    let mut promoted = false;
    for round in 0..400 {
        let (ta, tb) = tokio::join!(a.rotator.tick(), b.rotator.tick());
        ta.expect("tick a");
        tb.expect("tick b");
        for r in [&a, &b] {
            assert!(
                api_server_accepts(&server, r, &clock),
                "round {round}: served but not trusted"
            );
            assert!(r.trusted());
        }
        promoted |= stored(&server).served == next;
        clock.advance(if round % 50 == 49 { 20 * DAY } else { 13 });
    }
    assert!(promoted, "the raced rotation completed");
    a.rotator.tick().await.expect("tick");
    b.rotator.tick().await.expect("tick");
    assert_eq!(a.served(), b.served());
    assert_eq!(a.served(), stored(&server).served.cert);
    assert!(
        server.count(Verb::Update, "secrets") >= 4,
        "several rotations happened"
    );
    assert_eq!(*violations.lock().expect("lock"), Vec::<String>::new());
}

#[tokio::test]
async fn readyz_waits_until_the_ca_bundle_trusts_the_served_certificate() {
    let server = FakeApiServer::new();
    let clock = TestClock::starting_now();
    let state = AppState::new(
        Injector::new(ClusterFacts::default()),
        Arc::new(StaticPools::new(Vec::new())),
        Arc::new(Metrics::new()),
        Arc::new(AtomicBool::new(true)),
        4,
    );
    let store = Arc::new(CertStore::empty());
    let rotator = Rotator::new(
        server.client(),
        config(),
        store.clone(),
        state.certificate_trusted(),
        clock.clone(),
    );
    let readyz = || async {
        let resp = webhook::probes_router(state.clone())
            .oneshot(
                http::Request::get("/readyz")
                    .body(axum::body::Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        resp.status().as_u16()
    };
    assert_eq!(readyz().await, 503);

    // No webhook configuration yet: the certificate is made and served, but
    // nothing trusts it.
    let report = rotator.tick().await.expect("tick");
    assert_eq!(report.writes, ["created the Secret"]);
    assert_eq!(report.last, Some(Step::NoWebhookConfig));
    assert!(report.serving && !report.trusted);
    assert_eq!(readyz().await, 503);

    server.create_obj(&webhook_configuration());
    let report = rotator.tick().await.expect("tick");
    assert_eq!(report.writes, ["patched the caBundle"]);
    assert_eq!(readyz().await, 200);

    // Someone puts another CA into the caBundle: unready until it is put back.
    let other = Managed::issue(&["x".to_string()], clock.now(), DAY).expect("issue");
    server.update_obj::<MutatingWebhookConfiguration>("", CONFIG, |c| {
        for w in c.webhooks.iter_mut().flatten() {
            w.client_config.ca_bundle = Some(ByteString(other.ca_bundle.clone().into_bytes()));
        }
    });
    let seen = rotator.observe().await.expect("read");
    assert_eq!(rotator.serve(&seen), (true, false));
    assert_eq!(readyz().await, 503);
    let report = rotator.tick().await.expect("tick");
    assert_eq!(report.writes, ["patched the caBundle"]);
    assert_eq!(readyz().await, 200);
}

#[tokio::test]
async fn a_client_trusting_the_old_ca_bundle_keeps_working_through_the_rotation() {
    runyard::webhook::tls::install_crypto_provider();
    let server = FakeApiServer::new();
    server.create_obj(&webhook_configuration());
    let clock = TestClock::starting_now();
    let mut pool = WorkerPool::new("builders", WorkerPoolSpec::default());
    pool.metadata.namespace = Some("ci".into());
    let state = AppState::new(
        Injector::new(ClusterFacts::default()),
        Arc::new(StaticPools::new(vec![pool])),
        Arc::new(Metrics::new()),
        Arc::new(AtomicBool::new(true)),
        16,
    );
    let store = Arc::new(CertStore::empty());
    let rotator = Rotator::new(
        server.client(),
        config(),
        store.clone(),
        state.certificate_trusted(),
        clock.clone(),
    );
    let running = webhook::start(
        ServerOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            metrics_listen: None,
            tls: TlsSource::Store(store.clone()),
            limits: Limits::default(),
        },
        state,
    )
    .await
    .expect("start");
    let addr = running.addr;
    let time: Arc<dyn rustls::time_provider::TimeProvider> = clock.clone();
    let connect = |bundle: String| {
        let config = client_config_at(
            &bundle,
            &[b"http/1.1"],
            rustls::DEFAULT_VERSIONS,
            time.clone(),
        );
        async move { Conn::open_with(addr, config).await }
    };
    let current = || ca_bundles(&server)[0].clone();
    let review = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/admission-review/v1.36/03-pod-create-bare-run.json"
    ))
    .expect("fixture");

    // Before the first tick there is no certificate: handshakes fail.
    let throwaway = Managed::issue(&["localhost".to_string()], clock.now(), DAY).expect("issue");
    assert!(connect(throwaway.ca_bundle).await.is_err());

    rotator.tick().await.expect("tick");
    let old_bundle = current();
    let mut kept = connect(old_bundle.clone())
        .await
        .expect("connect with the first caBundle");
    assert_eq!(kept.get("/readyz").await.expect("reply").status, 200);

    let due = stored(&server).served.renew_at();
    let violations = guard_served_changes(&server, &clock);
    let mut steps = Vec::new();
    // Through the window: rotation begins, the caBundle gets the new CA, the
    // trust delay passes in 10-second ticks, the new certificate is served.
    clock.set(due - 10);
    for _ in 0..10 {
        let report = rotator.tick().await.expect("tick");
        steps.extend(report.writes);
        let promoted = steps.contains(&"promoted the next certificate");
        // A client trusting the caBundle as it is now always gets in.
        let mut now_conn = connect(current())
            .await
            .expect("the current caBundle is trusted");
        assert_eq!(
            now_conn
                .post("/mutate", review.clone())
                .await
                .expect("reply")
                .status,
            200
        );
        // One that still trusts only the old caBundle gets in until the
        // new certificate is served, by which time the caBundle has held the
        // new CA for the trust delay.
        assert_eq!(connect(old_bundle.clone()).await.is_ok(), !promoted);
        // The connection made before the rotation keeps working.
        assert_eq!(
            kept.post("/mutate", review.clone())
                .await
                .expect("kept")
                .status,
            200
        );
        assert_eq!(kept.get("/readyz").await.expect("kept").status, 200);
        clock.advance(10);
    }
    assert_eq!(
        steps,
        [
            "added the next certificate",
            "patched the caBundle",
            "promoted the next certificate"
        ]
    );
    assert_eq!(*violations.lock().expect("lock"), Vec::<String>::new());
    running.shutdown();
    running.wait().await.expect("stopped");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain-HTTP GET; the status code, or None when nothing answers.
async fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
}

/// The real binary, as the chart runs it, against the in-memory API over
/// HTTP: it creates the Secret, sets the caBundle, turns ready, and serves
/// the API server a certificate its caBundle trusts for the Service's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_manages_its_certificate_from_the_command_line() {
    runyard::webhook::tls::install_crypto_provider();
    let server = FakeApiServer::new();
    server.create_obj(&webhook_configuration());
    let api = server
        .listen("system:serviceaccount:runyard:runyard-webhook")
        .await
        .expect("listen");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig(NS)).expect("kubeconfig");
    let https: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let probes: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runyard"))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("POD_NAMESPACE")
        .env_remove("RUNYARD_TLS_CERT")
        .env_remove("RUNYARD_TLS_KEY")
        .args(["webhook", "--listen", &https.to_string()])
        .args(["--metrics-listen", &probes.to_string()])
        .args(["--cert-secret", SECRET, "--cert-namespace", NS])
        .args([
            "--cert-service",
            "runyard-webhook",
            "--webhook-config",
            CONFIG,
        ])
        .args(["--cert-reload-interval", "1s", "--log-format", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start runyard webhook");

    let started = std::time::Instant::now();
    let mut ready = false;
    for _ in 0..300 {
        if http_status(probes, "/readyz").await == Some(200) {
            ready = true;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("runyard webhook exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        let _ = child.start_kill();
        let out = child.wait_with_output().await.expect("output");
        panic!(
            "never ready; log:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("ready {:?} after the start", started.elapsed());
    let m = stored(&server);
    assert_eq!(
        m.names,
        runyard::certs::service_dns_names("runyard-webhook", NS)
    );
    assert_eq!(
        ca_bundles(&server),
        [m.ca_bundle.clone(), m.ca_bundle.clone()]
    );
    let config = support::client::client_config(&m.ca_bundle, &[b"h2"], rustls::DEFAULT_VERSIONS);
    let mut conn = Conn::open_as(https, config, "runyard-webhook.runyard.svc")
        .await
        .expect("the API server's view: trusted for the Service name");
    assert_eq!(conn.get("/readyz").await.expect("reply").status, 200);
    let review = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/admission-review/v1.36/03-pod-create-bare-run.json"
    ))
    .expect("fixture");
    let reply = conn.post("/mutate", review).await.expect("reply");
    assert_eq!(reply.status, 200);
    let _ = child.start_kill();
    let _ = child.wait().await;
}
