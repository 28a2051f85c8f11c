//! The controller's API cost and claim latency with its real runtime
//! (watches, caches, kube's Controller, kube::Client) against the in-memory
//! API server (`cargo bench --bench controller_api`): API requests by verb
//! per watch event and per claim, with 10, 1,000 and 10,000 queued runs, and
//! the latency from a run finishing to the next run's claim.

use runyard::controller::runtime::{start, ControllerOptions};
use runyard::crd::{WorkerPool, WorkerPoolSpec};
use runyard::shutdown::Shutdown;
use runyard::vocab::{ANNOTATION_INJECTED, LABEL_POOL};
use runyard_testing::apiserver::{FakeApiServer, RequestRecord, Verb};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NS: &str = "ci";
const POOL: &str = "bench";

fn job(name: &str, created: i64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": name, "namespace": NS, "labels": { LABEL_POOL: POOL },
                      "creationTimestamp": k8s_openapi::jiff::Timestamp::from_second(created).expect("time").to_string() },
        "spec": {
            "suspend": true,
            "template": {
                "metadata": { "labels": { LABEL_POOL: POOL }, "annotations": { ANNOTATION_INJECTED: "true" } },
                "spec": { "restartPolicy": "Never", "containers": [{ "name": "worker", "image": "alpine" }] }
            }
        }
    })
}

fn suspended(server: &FakeApiServer, name: &str) -> Option<bool> {
    server
        .get("jobs", NS, name)?
        .pointer("/spec/suspend")
        .and_then(serde_json::Value::as_bool)
}

fn complete(server: &FakeApiServer, name: &str) {
    server
        .modify("jobs", NS, name, |v| {
            v["status"] =
                serde_json::json!({ "conditions": [{ "type": "Complete", "status": "True" }] });
        })
        .expect("complete");
}

async fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    false
}

fn by_verb(requests: &[RequestRecord]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in requests {
        if r.verb == Verb::Watch {
            continue;
        }
        let target = match &r.subresource {
            Some(s) => format!("{}/{s}", r.resource),
            None => r.resource.clone(),
        };
        *m.entry(format!("{:?} {target}", r.verb).to_lowercase())
            .or_default() += 1;
    }
    m
}

fn per(m: &BTreeMap<String, usize>, n: usize) -> String {
    let mut parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}: {:.2}", *v as f64 / n as f64))
        .collect();
    if parts.is_empty() {
        parts.push("none".into());
    }
    parts.join(", ")
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
}

async fn scenario(queued: usize, workers: i32, claims: usize, smoke: bool) {
    let server = FakeApiServer::new();
    let mut pool = WorkerPool::new(
        POOL,
        WorkerPoolSpec {
            pool_size: workers,
            ..Default::default()
        },
    );
    pool.metadata.namespace = Some(NS.into());
    server.create_obj(&pool);
    let total = queued + workers as usize + claims;
    let names: Vec<String> = (0..total).map(|i| format!("run-{i:05}")).collect();
    for (i, n) in names.iter().enumerate() {
        server
            .insert("jobs", job(n, 1_700_000_000 + i as i64))
            .expect("job");
    }
    let (stop, shutdown) = Shutdown::manual();
    let opts = ControllerOptions {
        namespace: Some(NS.into()),
        leader_election: false,
        ..ControllerOptions::new("bench", NS, "127.0.0.1:0".parse().expect("addr"))
    };
    let started = Instant::now();
    let running = start(server.client(), opts, shutdown).await.expect("start");
    // Steady state: `workers` runs claimed, the rest queued with their notes.
    let head = workers as usize - 1;
    assert!(
        wait_until(Duration::from_secs(300), || suspended(
            &server,
            &names[head]
        ) == Some(false))
        .await,
        "the pool never filled"
    );
    // Every queued run has its note (and its one Queued Event).
    let last_note = total - 1;
    wait_until(Duration::from_secs(300), || {
        server.get("jobs", NS, &names[last_note]).is_some_and(|j| {
            j.pointer("/metadata/annotations/runyard.dev~1queue")
                .is_some()
        })
    })
    .await;
    let startup = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Watch events that change nothing the controller decides on.
    server.reset_requests();
    let events = if smoke { 5 } else { 100 };
    for i in 0..events {
        let n = &names[total - 1 - i % (queued.max(1))];
        server
            .modify("jobs", NS, n, |v| {
                v["metadata"]["labels"]["churn"] = serde_json::json!(i.to_string());
            })
            .expect("churn");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let event_requests = by_verb(&server.requests());

    // Claims: a running run finishes, the next in line is claimed.
    server.reset_requests();
    let mut latencies = Vec::with_capacity(claims);
    for k in 0..claims {
        let done = &names[k];
        let next = &names[workers as usize + k];
        let t = Instant::now();
        complete(&server, done);
        assert!(
            wait_until(Duration::from_secs(30), || suspended(&server, next)
                == Some(false))
            .await,
            "{next} was not claimed"
        );
        latencies.push(t.elapsed());
        // Let the notes and the release's writes land before the next one.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let claim_requests = by_verb(&server.requests());
    let _ = stop.send(true);
    running.wait().await;
    println!(
        "queued {queued:>6}, workers {workers:>3}: startup (list + first claims + notes) {:>7.1} ms",
        startup.as_secs_f64() * 1000.0
    );
    println!(
        "  per watch event ({events}): {}",
        per(&event_requests, events)
    );
    println!(
        "  per claim ({claims}, incl. the finished run's release and the queue notes): {}",
        per(&claim_requests, claims)
    );
    println!(
        "  finish -> next claim: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&mut latencies, 0.5),
        pct(&mut latencies, 0.9),
        pct(&mut latencies, 0.99),
        pct(&mut latencies, 1.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches`: a smoke run only.
        scenario(10, 2, 3, true).await;
        return;
    }
    scenario(10, 10, 50, false).await;
    scenario(1_000, 100, 200, false).await;
    scenario(10_000, 100, 100, false).await;
}
