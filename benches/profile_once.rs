//! One process that does one thing many times, for `perf record` and
//! `valgrind --tool=callgrind` (BENCHMARKS.md's per-phase instruction table):
//!
//! ```sh
//! cargo build --release --example profile_once
//! valgrind --tool=callgrind target/release/examples/profile_once [MODE] [BODY] [N]
//! ```
//!
//! MODE is `review` (the webhook's `review::handle`, the default), `value`
//! (the floor: the review body into a `serde_json::Value`), `typed` (the floor:
//! the envelope plus the object into a typed Pod, as the baseline and the old
//! handler read it), `response` (print the review's response once) or `none`
//! (setup only: subtract it). BODY defaults to `benches/data/review-6k.json`,
//! N to 60,000 (use ~1,000 under valgrind).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use k8s_openapi::api::core::v1::Pod;
use std::hint::black_box;

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    request: Request<'a>,
}

#[derive(serde::Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    object: &'a serde_json::value::RawValue,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("review", String::as_str);
    let body = args
        .get(2)
        .map_or("benches/data/review-6k.json", String::as_str);
    let n: usize = args.get(3).map_or(Ok(60_000), |s| s.parse())?;
    let pools = runyard::injection::load_pool_file("benches/data/pools.yaml".as_ref())?;
    let body = std::fs::read(body)?;
    let inj = runyard::injection::Injector::new(runyard::injection::ClusterFacts::default());
    for _ in 0..n {
        match mode {
            "review" => {
                black_box(runyard::webhook::review::handle(
                    black_box(&body),
                    &inj,
                    &pools,
                )?);
            }
            "value" => {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(
                    &body,
                ))?);
            }
            "typed" => {
                let envelope: Envelope<'_> = serde_json::from_slice(black_box(&body))?;
                black_box(serde_json::from_str::<Pod>(envelope.request.object.get())?);
            }
            "response" => {
                let handled = runyard::webhook::review::handle(&body, &inj, &pools)?;
                println!("{}", String::from_utf8_lossy(&handled.body));
                return Ok(());
            }
            "none" => {}
            other => {
                anyhow::bail!("unknown mode {other:?}: review, value, typed, response or none")
            }
        }
    }
    Ok(())
}
