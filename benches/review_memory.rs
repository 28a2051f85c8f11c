//! Peak memory of one review at the body-size limit, for the worst shapes a
//! client can send (issue 16.3). Linux only: reads VmHWM from
//! /proc/self/status and resets it through /proc/self/clear_refs between
//! cases. `cargo run --release --example review_memory`; results in
//! BENCHMARKS.md.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use runyard::crd::{WorkerPool, WorkerPoolSpec};
use runyard::injection::{ClusterFacts, Injector, StaticPools};
use runyard::webhook::review;
use serde_json::{json, Value};

const LIMIT: usize = 3 * 1024 * 1024;

fn kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn envelope(object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "ci",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object,
        }
    }))
    .expect("json")
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "ci", "labels": {"runyard.dev/pool": "big"}},
           "spec": spec})
}

/// Grows `make(n)` until the body is just under the limit.
fn at_limit(make: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let (mut lo, mut hi) = (1usize, 4_000_000usize);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if make(mid).len() <= LIMIT {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    make(lo)
}

fn main() {
    // A pool that allows the most any pool may (the CRD's maxima).
    let mut spec = WorkerPoolSpec::default();
    spec.limits = runyard::crd::HARD_LIMITS;
    let mut big = WorkerPool::new("big", spec);
    big.metadata.namespace = Some("ci".into());
    let pools = StaticPools::new(vec![big]);
    let injector = Injector::new(ClusterFacts::default());
    let filler = |n: usize| "x".repeat(n);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "250 containers (the most a pool may allow), 5000 env entries, long values",
            at_limit(|n| {
                let per = n / 5_000 + 1;
                envelope(pod(json!({"containers": (0..250).map(|i| json!({
                "name": format!("c{i}"), "image": "alpine",
                "env": (0..20).map(|j| json!({"name": format!("E{j}"), "value": filler(per)})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()})))
            }),
        ),
        (
            "500 containers, 10000 env entries (the scan's caps; the pool denies after parsing)",
            at_limit(|n| {
                let per = n / 10_000 + 1;
                envelope(pod(json!({"containers": (0..500).map(|i| json!({
                "name": format!("c{i}"), "image": "alpine",
                "env": (0..20).map(|j| json!({"name": format!("E{j}"), "value": filler(per)})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()})))
            }),
        ),
        (
            "250 bare containers + 250 init containers + 1000 volumes",
            {
                envelope(pod(json!({
                    "containers": (0..250).map(|i| json!({"name": format!("c{i}"), "image": "alpine"})).collect::<Vec<_>>(),
                    "initContainers": (0..250).map(|i| json!({"name": format!("i{i}"), "image": "alpine"})).collect::<Vec<_>>(),
                    "volumes": (0..1000).map(|i| json!({"name": format!("v{i}"), "emptyDir": {}})).collect::<Vec<_>>(),
                })))
            },
        ),
        (
            "99,900 tiny tolerations + one long string",
            at_limit(|n| {
                let mut o = pod(
                    json!({"containers": [{"name": "w", "image": "alpine", "args": [filler(n)]}],
                "tolerations": vec![json!({}); 99_900]}),
                );
                o["metadata"]["annotations"] = json!({});
                envelope(o)
            }),
        ),
        ("49,000 labels (values near the 100,000 cap)", {
            let labels: serde_json::Map<String, Value> = (0..49_000)
                .map(|i| (format!("l{i:05}"), Value::from("v")))
                .chain([("runyard.dev/pool".to_string(), Value::from("big"))])
                .collect();
            let mut o = pod(json!({"containers": [{"name": "w", "image": "alpine"}]}));
            o["metadata"]["labels"] = Value::Object(labels);
            envelope(o)
        }),
        (
            "10,000 containers (denied before parsing)",
            envelope(pod(json!({"containers":
            (0..10_000).map(|i| json!({"name": format!("c{i}"), "image": "alpine"})).collect::<Vec<_>>()}))),
        ),
        (
            "3 MiB of tolerations {} (denied before parsing)",
            at_limit(|n| {
                envelope(pod(json!({
            "containers": [{"name": "w", "image": "alpine"}], "tolerations": vec![json!({}); n]})))
            }),
        ),
        (
            "3 MiB annotation (denied after parsing)",
            at_limit(|n| {
                let mut o = pod(json!({"containers": [{"name": "w", "image": "alpine"}]}));
                o["metadata"]["annotations"] = json!({"a": filler(n)});
                envelope(o)
            }),
        ),
    ];

    println!("| shape | body | decision | response | peak RSS above baseline |");
    println!("| --- | --- | --- | --- | --- |");
    let mut worst = 0u64;
    for (what, body) in &cases {
        reset_peak();
        let before = kib("VmRSS:");
        let handled = review::handle(body, &injector, &pools).expect("readable");
        let peak = kib("VmHWM:").saturating_sub(before);
        worst = worst.max(peak);
        let decision = match &handled.message {
            Some(m) => format!("denied: {}", m.chars().take(60).collect::<String>()),
            None => handled.decision.label().to_string(),
        };
        println!(
            "| {what} | {:.2} MiB | {decision} | {:.2} MiB | {:.1} MiB |",
            body.len() as f64 / 1048576.0,
            handled.body.len() as f64 / 1048576.0,
            peak as f64 / 1024.0
        );
        drop(handled);
    }
    // `--concurrent-reviews 4`: four of the worst at once.
    let (_, first) = &cases[0];
    reset_peak();
    let before = kib("VmRSS:");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| review::handle(first, &injector, &pools).expect("readable"));
        }
    });
    let four = kib("VmHWM:").saturating_sub(before);
    println!();
    println!(
        "worst single review: {:.1} MiB above baseline",
        worst as f64 / 1024.0
    );
    println!(
        "four of case 1 at once (--concurrent-reviews 4): {:.1} MiB above baseline",
        four as f64 / 1024.0
    );
    println!(
        "baseline RSS of this process: {:.1} MiB",
        kib("VmRSS:") as f64 / 1024.0
    );
}
