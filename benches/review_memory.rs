//! Peak memory of one review at the body-size limit, for the worst shapes a
//! client can send (issue 16.3). Each case runs in a fresh child process that
//! reads its body from a file and handles it (Linux: VmRSS before, VmHWM
//! after, from /proc/self/status), so nothing the parent built is reused.
//! `cargo run --release --example review_memory`; results in BENCHMARKS.md.

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
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("one") {
        return child(&args[2], args[3].parse().expect("threads"));
    }
    // Pool "big" (in the child) allows the most any pool may (the CRD's maxima).
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

    let dir = std::env::temp_dir().join(format!("review-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let me = std::env::current_exe().expect("exe");
    println!("| shape | body | decision | response | process peak RSS | peak above the process before the review |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (i, (what, body)) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.json"));
        std::fs::write(&path, body).expect("write");
        let out = std::process::Command::new(&me)
            .arg("one")
            .arg(&path)
            .arg("1")
            .output()
            .expect("child");
        println!(
            "| {what} | {:.2} MiB | {}",
            body.len() as f64 / 1048576.0,
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    for (i, threads) in [(0usize, 2usize), (3, 2), (3, 4)] {
        let path = dir.join(format!("{i}.json"));
        let out = std::process::Command::new(&me)
            .arg("one")
            .arg(&path)
            .arg(threads.to_string())
            .output()
            .expect("child");
        println!(
            "| {threads} × case {} at once (`--concurrent-reviews {threads}`) | | {}",
            i + 1,
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Child: handle the body in `path` on `threads` threads at once and print
/// the table cells.
fn child(path: &str, threads: usize) {
    let spec = WorkerPoolSpec {
        limits: runyard::crd::HARD_LIMITS,
        ..Default::default()
    };
    let mut big = WorkerPool::new("big", spec);
    big.metadata.namespace = Some("ci".into());
    let pools = StaticPools::new(vec![big]);
    let injector = Injector::new(ClusterFacts::default());
    let body = std::fs::read(path).expect("body");
    let before = kib("VmRSS:");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| review::handle(&body, &injector, &pools).expect("readable")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let peak = kib("VmHWM:");
    let handled = &results[0];
    let decision = match &handled.message {
        Some(m) => format!("denied: {}", m.chars().take(70).collect::<String>()),
        None => handled.decision.label().to_string(),
    };
    println!(
        "{decision} | {:.2} MiB | {:.1} MiB | {:.1} MiB |",
        handled.body.len() as f64 / 1048576.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
}
