//! Controller throughput and latency against the in-memory API
//! (`cargo bench --bench controller`). Not criterion: each scenario is a
//! whole workload, reported with its percentiles.

use runyard::controller::metrics::ControllerMetrics;
use runyard::crd::WorkerPoolSpec;
use runyard_testing::MemoryCluster;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NS: &str = "ci";
const POOL: &str = "bench";

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
}

fn running(c: &MemoryCluster) -> Vec<String> {
    c.all_jobs(NS)
        .into_iter()
        .filter(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(false) && j.status.is_none())
        .filter_map(|j| j.metadata.name)
        .collect()
}

async fn settle(c: &MemoryCluster, m: &ControllerMetrics) {
    for _ in 0..20 {
        let r = c.reconcile(m, NS, POOL).await.expect("reconcile");
        if r.claims == 0
            && r.releases == 0
            && !r.needs_retry()
            && r.counts.actual == r.counts.desired
        {
            return;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list")
        || !std::env::args().any(|a| a == "--bench")
    {
        // `cargo test --benches`: a smoke run only.
        let c = MemoryCluster::new();
        c.add_pool(
            NS,
            POOL,
            WorkerPoolSpec {
                pool_size: 2,
                ..Default::default()
            },
        );
        settle(&c, &ControllerMetrics::new()).await;
        return;
    }
    let m = ControllerMetrics::new();

    // 0. Memory with 10,000 queued runs, first, in a fresh process. RSS
    // includes the in-memory API's own copy of every object (and of the queue
    // notes and Events the controller writes); the controller's share is the
    // growth during reconciling.
    let before = rss_mib();
    let c = MemoryCluster::new();
    c.add_pool(
        NS,
        POOL,
        WorkerPoolSpec {
            pool_size: 100,
            ..Default::default()
        },
    );
    for i in 0..10_000 {
        c.add_queued_job(NS, &format!("run-{i:05}"), POOL, 1_700_000_000 + i, None);
    }
    let stored = rss_mib();
    // The controller's own working set for one pass: the summarised listing
    // and the run model, held at once (as during a reconcile).
    let held = {
        use runyard::cluster::PoolReads;
        let objects = c.snapshot(NS, POOL).await.expect("snapshot");
        let runs: Vec<_> = objects
            .jobs
            .iter()
            .map(runyard::controller::model::observe::run_from_job)
            .collect();
        let after = rss_mib();
        let n = runs.len()
            + objects.workers.len()
            + objects.pods.len()
            + usize::from(objects.pool.is_some());
        (after - stored, n)
    };
    println!(
        "controller working set for one pass over 10,000 queued runs (Job summaries + run model): +{:.1} MiB RSS ({} objects)",
        held.0, held.1
    );
    let t = Instant::now();
    settle(&c, &m).await;
    let r = c.reconcile(&m, NS, POOL).await.expect("reconcile");
    let after = rss_mib();
    println!(
        "10,000 queued runs: RSS {before:.1} MiB at start, {stored:.1} MiB with the objects stored in the in-memory API, {after:.1} MiB after reconciling (+{:.1} MiB, which includes the 10,000 queue-note annotations and Events stored API-side); {:.0} ms per pass, {} queued",
        after - stored,
        t.elapsed().as_secs_f64() * 1000.0 / 2.0,
        r.counts.queued
    );
    drop(c);

    // 1. Registering 1,000 workers.
    let c = MemoryCluster::new();
    c.add_pool(
        NS,
        POOL,
        WorkerPoolSpec {
            pool_size: 1000,
            ..Default::default()
        },
    );
    let t = Instant::now();
    settle(&c, &m).await;
    println!(
        "register 1,000 workers: {:.1} ms ({} workers)",
        t.elapsed().as_secs_f64() * 1000.0,
        c.all_workers(NS).len()
    );

    // 2. Claims/s and claim latency: 100 workers, 1,000 queued runs.
    let c = MemoryCluster::new();
    c.add_pool(
        NS,
        POOL,
        WorkerPoolSpec {
            pool_size: 100,
            ..Default::default()
        },
    );
    settle(&c, &m).await;
    for i in 0..1000 {
        c.add_queued_job(NS, &format!("run-{i:05}"), POOL, 1_700_000_000 + i, None);
    }
    let t = Instant::now();
    let mut claims = 0;
    let mut passes = 0;
    while claims < 1000 {
        let r = c.reconcile(&m, NS, POOL).await.expect("reconcile");
        claims += r.claims;
        passes += 1;
        for name in running(&c) {
            c.finish_job(NS, &name, true);
        }
    }
    let elapsed = t.elapsed();
    println!(
        "claims: {claims} in {:.1} ms over {passes} reconciles = {:.0} claims/s",
        elapsed.as_secs_f64() * 1000.0,
        claims as f64 / elapsed.as_secs_f64()
    );

    // Latency: one run finishes, how long until the next queued run is claimed
    // (one reconcile: read, release, claim).
    let c = MemoryCluster::new();
    c.add_pool(
        NS,
        POOL,
        WorkerPoolSpec {
            pool_size: 100,
            ..Default::default()
        },
    );
    settle(&c, &m).await;
    for i in 0..1300 {
        c.add_queued_job(NS, &format!("run-{i:05}"), POOL, 1_700_000_000 + i, None);
    }
    settle(&c, &m).await;
    let mut lat = Vec::new();
    for _ in 0..200 {
        let Some(done) = running(&c).into_iter().next() else {
            break;
        };
        c.finish_job(NS, &done, true);
        let t = Instant::now();
        let r = c.reconcile(&m, NS, POOL).await.expect("reconcile");
        lat.push(t.elapsed());
        assert_eq!(
            r.claims, 1,
            "the freed worker claims the next run in the same pass"
        );
    }
    println!(
        "claim latency (run finished -> next run claimed), 100 workers, ~1,000 queued: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    drop(c);
}
