#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let pools = runyard::injection::load_pool_file("benches/data/pools.yaml".as_ref()).unwrap();
    let body = std::fs::read("benches/data/review-6k.json").unwrap();
    let inj = runyard::injection::Injector::new(runyard::injection::ClusterFacts::default());
    for _ in 0..60000 {
        std::hint::black_box(runyard::webhook::review::handle(&body, &inj, &pools).unwrap());
    }
}
