//! Hostile clients against the real webhook server over TLS (issues 14 and
//! 16): slowloris headers, trickled bodies, idle and ping-only connections,
//! floods of connections, HTTP/2 stream floods, old TLS versions, and
//! crafted bodies. Each test fails without the limit that handles it.

mod support;

use bytes::Bytes;
use runyard::crd::{WorkerPool, WorkerPoolSpec};
use runyard::injection::{ClusterFacts, Injector, StaticPools};
use runyard::webhook::{self, metrics::Metrics, AppState, Limits, ReviewLimits, Running};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::client::{client_config, tls_connect, ClientTls, Conn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    running: Running,
    _dir: tempfile::TempDir,
    ca: String,
}

impl Server {
    fn addr(&self) -> SocketAddr {
        self.running.addr
    }
}

async fn start(limits: Limits, review: ReviewLimits) -> Server {
    webhook::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = runyard::certs::generate(&["localhost".to_string(), "127.0.0.1".to_string()], 1)
        .expect("certs");
    runyard::certs::write_dir(&bundle, dir.path()).expect("write certs");
    let mut pool = WorkerPool::new("builders", WorkerPoolSpec::default());
    pool.metadata.namespace = Some("ci".into());
    let state = AppState::with_limits(
        Injector::with_run_ids(ClusterFacts::default(), || {
            "01jhostile00000000000000000".into()
        }),
        Arc::new(StaticPools::new(vec![pool])),
        Arc::new(Metrics::new()),
        Arc::new(AtomicBool::new(true)),
        limits.max_in_flight,
        review,
    );
    let options = webhook::ServerOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_listen: None,
        tls: webhook::TlsSource::Files {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            reload_interval: Duration::from_secs(60),
        },
        limits,
    };
    let running = webhook::start(options, state).await.expect("start");
    Server {
        running,
        _dir: dir,
        ca: bundle.ca_cert,
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/admission-review/v1.36/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).expect("fixture")
}

fn review_body() -> Vec<u8> {
    fixture("03-pod-create-bare-run.json")
}

/// A TLS connection from a chosen loopback address (another "client IP").
async fn tls_from(
    local: &str,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<ClientTls> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().expect("local addr"))?;
    let tcp = socket.connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
}

/// Whether the server closed `tls` within `within` (EOF or an error on read).
async fn closed_within(tls: &mut ClientTls, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tls.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn served(server: &Server) -> u16 {
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    let reply = conn
        .post("/mutate?timeout=5s", review_body())
        .await
        .expect("reply");
    reply.status.as_u16()
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_by_the_header_timeout() {
    let server = start(
        Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        ReviewLimits::default(),
    )
    .await;
    let config = client_config(&server.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let tls = tls_connect(server.addr(), config).await.expect("connect");
    let (mut rd, mut wr) = tokio::io::split(tls);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for b in b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n" {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = [0u8; 256];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => continue,
        }
    };
    writer.abort();
    assert!(
        closed,
        "a client sending a header byte at a time is cut off"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(served(&server).await, 200);
}

#[tokio::test]
async fn a_trickled_body_hits_the_deadline_however_long_the_client_asks_for() {
    let server = start(
        Limits::default(),
        ReviewLimits {
            max_deadline: Duration::from_secs(1),
            ..ReviewLimits::default()
        },
    )
    .await;
    let config = client_config(&server.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let tls = tls_connect(server.addr(), config).await.expect("connect");
    let (mut rd, mut wr) = tokio::io::split(tls);
    let started = Instant::now();
    // The client asks for an hour; the API server's maximum is 30 s, and
    // this server's cap is set to 1 s.
    wr.write_all(b"POST /mutate?timeout=1h HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n")
        .await
        .expect("write");
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf))
        .await
        .expect("answered within the capped deadline")
        .expect("read");
    writer.abort();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        webhook::deadline(
            &"/mutate?timeout=1h".parse().expect("uri"),
            webhook::MAX_DEADLINE
        ),
        Duration::from_secs(30)
    );
}

#[tokio::test]
async fn slow_uploads_never_cause_429_for_a_normal_review() {
    // The attack: more slow uploads than review slots.
    let server = start(
        Limits {
            max_in_flight: 4,
            ..Limits::default()
        },
        ReviewLimits::default(),
    )
    .await;
    let config = client_config(&server.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut tls = tls_from("127.0.0.2", server.addr(), config.clone())
            .await
            .expect("connect");
        tls.write_all(
            b"POST /mutate?timeout=10s HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{\"kind\":",
        )
        .await
        .expect("write");
        slow.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        assert_eq!(
            served(&server).await,
            200,
            "no slot is held by a slow upload"
        );
    }
    drop(slow);
}

#[tokio::test]
async fn a_client_over_its_memory_share_gets_429_and_others_are_served() {
    let server = start(
        Limits::default(),
        ReviewLimits {
            body_memory: 8 << 20,
            body_memory_per_ip: 2 << 20,
            ..ReviewLimits::default()
        },
    )
    .await;
    let config = client_config(&server.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    // One client IP uploads nearly its 2 MiB share and stalls.
    let mut hog = tls_from("127.0.0.2", server.addr(), config.clone())
        .await
        .expect("connect");
    hog.write_all(
        b"POST /mutate?timeout=10s HTTP/1.1\r\nhost: x\r\ncontent-length: 3000000\r\n\r\n",
    )
    .await
    .expect("write");
    let share = (2 << 20) - review_body().len() / 2;
    hog.write_all(&vec![b' '; share]).await.expect("write");
    let uploaded = async {
        while server.running.state.body_memory_used() < share {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), uploaded)
        .await
        .expect("the server holds the upload");
    // The same IP's next review is over its share: 429 at once.
    let tls = tls_from("127.0.0.2", server.addr(), config.clone())
        .await
        .expect("connect");
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut sender, driver) = hyper::client::conn::http1::handshake(io).await.expect("h1");
    tokio::spawn(driver);
    let req = http::Request::post("/mutate")
        .header("host", "localhost")
        .body(http_body_util::Full::new(Bytes::from(review_body())))
        .expect("request");
    let reply = sender.send_request(req).await.expect("reply");
    assert_eq!(reply.status(), 429);
    assert_eq!(reply.headers()["retry-after"], "1");
    // Everyone else is served.
    assert_eq!(served(&server).await, 200);
    drop(hog);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.running.state.body_memory_used(), 0, "all given back");
}

#[tokio::test]
async fn two_thousand_idle_connections_do_not_keep_a_new_client_out() {
    let server = start(
        // Timeouts long enough that only the caps and eviction are at work.
        Limits {
            max_connections: 256,
            max_connections_per_ip: 64,
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            ..Limits::default()
        },
        ReviewLimits::default(),
    )
    .await;
    let config = client_config(&server.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    // 2,000 connections finish the handshake and say nothing (from 127.0.0.2
    // to 127.0.0.9: several "client IPs").
    let mut idle = Vec::new();
    let mut refused = 0;
    for batch in 0..20 {
        let attempts = (0..100).map(|i| {
            let local = format!("127.0.0.{}", 2 + (batch * 100 + i) % 8);
            let config = config.clone();
            let addr = server.addr();
            async move { tls_from(&local, addr, config).await }
        });
        for result in futures::future::join_all(attempts).await {
            match result {
                Ok(tls) => idle.push(tls),
                Err(_) => refused += 1,
            }
        }
    }
    assert_eq!(idle.len() + refused, 2000);
    // A new client, from a fresh IP and from one of the flooding IPs, is served.
    assert_eq!(served(&server).await, 200);
    let mut conn = {
        let tls = tls_from("127.0.0.2", server.addr(), config.clone())
            .await
            .expect("connect from a flooding IP");
        let io = hyper_util::rt::TokioIo::new(tls);
        let (sender, driver) = hyper::client::conn::http1::handshake(io).await.expect("h1");
        tokio::spawn(driver);
        sender
    };
    let req = http::Request::post("/mutate")
        .header("host", "localhost")
        .body(http_body_util::Full::new(Bytes::from(review_body())))
        .expect("request");
    assert_eq!(conn.send_request(req).await.expect("reply").status(), 200);
    drop(idle);
}

#[tokio::test]
async fn silent_and_idle_keep_alive_connections_are_closed() {
    let server = start(
        Limits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ReviewLimits::default(),
    )
    .await;
    let config = client_config(&server.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
    // Silent after the handshake: closed after the header timeout.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(
            tls_connect(server.addr(), config.clone())
                .await
                .expect("connect"),
        );
    }
    let started = Instant::now();
    for tls in &mut silent {
        assert!(
            closed_within(tls, Duration::from_secs(4)).await,
            "silent connection closed"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(800));
    // Idle between requests (HTTP/1.1 keep-alive): closed after the idle timeout.
    let conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    let mut conn = conn;
    assert_eq!(
        conn.post("/mutate", review_body())
            .await
            .expect("reply")
            .status,
        200
    );
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(6), conn.driver)
        .await
        .expect("the idle keep-alive connection is closed")
        .expect("join");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn idle_and_ping_only_http2_connections_are_closed() {
    let server = start(
        Limits {
            idle_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ReviewLimits::default(),
    )
    .await;
    let config = client_config(&server.ca, &[b"h2"], rustls::DEFAULT_VERSIONS);
    let tls = tls_connect(server.addr(), config).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(tls);
    // The client pings every 100 ms; the server answers, and still closes
    // the connection: pings are not requests.
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .handshake(io)
            .await
            .expect("h2");
    let driver = tokio::spawn(conn);
    let req = http::Request::post("/mutate")
        .body(http_body_util::Full::new(Bytes::from(review_body())))
        .expect("request");
    assert_eq!(sender.send_request(req).await.expect("reply").status(), 200);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the idle HTTP/2 connection is closed")
        .expect("join")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn http2_streams_per_connection_are_bounded() {
    let server = start(
        Limits {
            max_concurrent_streams: 8,
            ..Limits::default()
        },
        ReviewLimits::default(),
    )
    .await;
    let config = client_config(&server.ca, &[b"h2"], rustls::DEFAULT_VERSIONS);
    let tls = tls_connect(server.addr(), config).await.expect("connect");
    let (client, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(connection);
    let client = client.ready().await.expect("ready");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.current_max_send_streams(), 8);
    // Twenty uploads that never finish their bodies, each sending 8 bytes:
    // the server takes only 8 streams at once (the client queues the rest),
    // so it holds 8 × 8 bytes, not 20 × 8.
    let mut held = Vec::new();
    for _ in 0..20 {
        let c = client.clone().ready().await.expect("ready");
        let mut c = c;
        let req = http::Request::post("https://localhost/mutate?timeout=10s")
            .body(())
            .expect("request");
        let (response, mut body) = c.send_request(req, false).expect("send");
        let _ = body.send_data(Bytes::from_static(b"{\"kind\":"), false);
        held.push((response, body, c));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.running.state.body_memory_used(),
        8 * 8,
        "the server reads 8 streams of one connection at once"
    );
    // Other connections are unaffected.
    assert_eq!(served(&server).await, 200);
    drop(held);
}

/// A TLS 1.0 (`0x0301`) or 1.1 (`0x0302`) ClientHello, as old clients send.
fn old_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    let suites: [u8; 6] = [0x00, 0x2f, 0xc0, 0x13, 0xc0, 0x09];
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(&suites);
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut handshake = vec![1u8]; // ClientHello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_0_and_1_1_clients_are_refused() {
    let server = start(Limits::default(), ReviewLimits::default()).await;
    for version in [[3u8, 1u8], [3, 2]] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        tcp.write_all(&old_client_hello(version))
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("answered")
            .unwrap_or(0);
        // Either a fatal alert (content type 21; rustls says
        // handshake_failure, 40, or protocol_version, 70) or a closed
        // connection; never a ServerHello.
        if n > 0 {
            assert_eq!(buf[0], 0x15, "an alert, not a handshake: {:?}", &buf[..n]);
            assert!(
                [40, 70].contains(&buf[n - 1]),
                "handshake_failure or protocol_version: {:?}",
                &buf[..n]
            );
        }
    }
    assert_eq!(served(&server).await, 200);
}

/// The captured bare-run review with its object replaced.
fn review_with(object: Value) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&review_body()).expect("json");
    v["request"]["object"] = object;
    serde_json::to_vec(&v).expect("json")
}

fn pod_object() -> Value {
    let v: Value = serde_json::from_slice(&review_body()).expect("json");
    v["request"]["object"].clone()
}

#[tokio::test]
async fn crafted_bodies_get_a_clear_answer_never_a_panic() {
    let server = start(Limits::default(), ReviewLimits::default()).await;
    let mut conn = Conn::open(server.addr(), &server.ca, false)
        .await
        .expect("connect");
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    // The 409 KB body: 10,000 small containers.
    let mut many = pod_object();
    let one = many["spec"]["containers"][0].clone();
    many["spec"]["containers"] = Value::Array(
        (0..10_000)
            .map(|i| json!({"name": format!("c{i}"), "image": "alpine"}))
            .collect(),
    );
    let mut over_pool = pod_object();
    over_pool["spec"]["containers"] = Value::Array(
        (0..65)
            .map(|i| {
                let mut c = one.clone();
                c["name"] = format!("c{i}").into();
                c
            })
            .collect(),
    );
    let mut label = pod_object();
    label["metadata"]["labels"]["team"] = "x".repeat(1 << 20).into();
    let envelope_deep = {
        let text = String::from_utf8(review_body()).expect("utf8");
        text.replacen(
            "\"request\"",
            &format!("\"deep\":{},\"request\"", deep(100_000)),
            1,
        )
        .into_bytes()
    };
    let object_deep = {
        let text = String::from_utf8(review_body()).expect("utf8");
        text.replacen(
            "\"spec\"",
            &format!("\"deep\":{},\"spec\"", deep(100_000)),
            1,
        )
        .into_bytes()
    };
    let non_utf8 = {
        let mut b = review_body();
        // In the uid, a field the webhook reads (an unknown field is skipped
        // unread, and so is an invalid byte in it).
        let at = b
            .windows(7)
            .position(|w| w == b"\"uid\":\"")
            .expect("a uid")
            + 8;
        b[at] = 0xff;
        b
    };
    let duplicate_envelope = {
        let text = String::from_utf8(review_body()).expect("utf8");
        text.replacen("\"request\"", "\"request\":{},\"request\"", 1)
            .into_bytes()
    };
    let duplicate_label = {
        let text = String::from_utf8(review_body()).expect("utf8");
        text.replacen(
            "\"labels\":{",
            "\"labels\":{\"team\":\"a\",\"team\":\"b\",",
            1,
        )
        .into_bytes()
    };
    // (case, body, status, allowed?, a word of the answer)
    type Case = (&'static str, Vec<u8>, u16, Option<bool>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "10,000 containers",
            review_with(many),
            200,
            Some(false),
            "10000 containers",
        ),
        (
            "over the pool's limit",
            review_with(over_pool),
            200,
            Some(false),
            "spec.limits.containers",
        ),
        (
            "a 1 MiB label value",
            review_with(label),
            200,
            Some(false),
            "at most 63",
        ),
        // An unknown envelope field is skipped without recursion: answered.
        (
            "100,000-deep envelope",
            envelope_deep,
            200,
            Some(true),
            "patch",
        ),
        (
            "100,000-deep object",
            object_deep,
            200,
            Some(false),
            "recursion limit",
        ),
        ("non-UTF-8 bytes", non_utf8, 400, None, "malformed JSON"),
        (
            "a duplicate envelope key",
            duplicate_envelope,
            400,
            None,
            "duplicate field",
        ),
        (
            "a duplicate object key",
            duplicate_label,
            200,
            Some(false),
            "duplicate key",
        ),
    ];
    for (what, body, status, allowed, needle) in cases {
        let reply = conn.post("/mutate", body).await.expect(what);
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{what}: {}",
            String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)])
        );
        let text = String::from_utf8_lossy(&reply.body);
        assert!(text.contains(needle), "{what}: {text:.400}");
        if let Some(allowed) = allowed {
            let v: Value = serde_json::from_slice(&reply.body).expect("an AdmissionReview");
            assert_eq!(v["response"]["allowed"], allowed, "{what}");
            assert!(v["response"]["uid"].is_string(), "{what}");
        }
        assert!(reply.body.len() < 64 * 1024, "{what}: a small answer");
    }
    // The server is fine, and every body byte was given back.
    assert_eq!(served(&server).await, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.running.state.body_memory_used(), 0);
    let _ = json!({});
}
