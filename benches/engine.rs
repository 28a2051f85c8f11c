//! In-process cost of one AdmissionReview: parse, mutate, serialise the
//! response. `cargo bench --bench engine` runs criterion, then prints
//! per-iteration percentiles (criterion reports distributions of means, and the
//! target is a p99).

use criterion::{criterion_group, Criterion, Throughput};
use runyard::injection::{ClusterFacts, Injector, StaticPools};
use runyard::webhook::review;
use std::hint::black_box;
use std::time::Instant;

// The same allocator as the `runyard` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn setup() -> (Injector, StaticPools, Vec<(&'static str, Vec<u8>)>) {
    let root = env!("CARGO_MANIFEST_DIR");
    let pools =
        runyard::injection::load_pool_file(format!("{root}/benches/data/pools.yaml").as_ref())
            .expect("pools");
    let bodies = ["review-6k.json", "review-16k.json"]
        .into_iter()
        .map(|name| {
            let body = std::fs::read(format!("{root}/benches/data/{name}")).expect("body");
            (name, body)
        })
        .collect();
    (Injector::new(ClusterFacts::default()), pools, bodies)
}

fn handle(c: &mut Criterion) {
    let (injector, pools, bodies) = setup();
    let mut group = c.benchmark_group("review");
    for (name, body) in &bodies {
        let handled = review::handle(body, &injector, &pools).expect("handled");
        assert_eq!(handled.decision, review::Decision::Patched);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| review::handle(black_box(body), &injector, &pools).expect("handled"))
        });
    }
    group.finish();
}

fn percentiles() {
    let (injector, pools, bodies) = setup();
    println!("\nper-review latency (single thread, 20,000 iterations after 2,000 warm-up):");
    for (name, body) in &bodies {
        for _ in 0..2_000 {
            black_box(review::handle(body, &injector, &pools).expect("handled"));
        }
        let mut samples: Vec<u64> = (0..20_000)
            .map(|_| {
                let start = Instant::now();
                black_box(review::handle(body, &injector, &pools).expect("handled"));
                start.elapsed().as_nanos() as u64
            })
            .collect();
        samples.sort_unstable();
        let at = |q: f64| {
            samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0
        };
        println!(
            "  {name:16} {} bytes  p50 {:7.1} µs  p90 {:7.1} µs  p99 {:7.1} µs  max {:8.1} µs",
            body.len(),
            at(0.50),
            at(0.90),
            at(0.99),
            *samples.last().unwrap_or(&0) as f64 / 1000.0
        );
    }
}

criterion_group!(benches, handle);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs each benchmark once as a smoke test; only
    // measure percentiles in a real `cargo bench`.
    if std::env::args().any(|a| a == "--bench") {
        percentiles();
    }
}
