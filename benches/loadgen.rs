//! HTTPS load generator for `runyard webhook` (see `benches/run-loadgen.sh`).
//!
//! Keeps `--connections` TLS connections alive and posts one AdmissionReview
//! body on each. Without `--rate` every connection sends back to back (closed
//! loop, for peak throughput); with `--rate` requests are scheduled at that
//! total rate, the connections evenly staggered, and latency is measured from
//! the scheduled time when the connection was still busy then, so a slow
//! server is not hidden by the generator waiting for it (from the timer's
//! wake-up otherwise: tokio's timer is late by up to 1 ms, and that is the
//! generator's, not the server's). With `--pid` it samples
//! the server's resident memory.

#[path = "../tests/support/client.rs"]
mod client;

use bytes::Bytes;
use clap::Parser;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Webhook address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    addr: SocketAddr,
    /// CA certificate that signed the webhook's certificate.
    #[arg(long, default_value = "certs/ca.crt")]
    ca: PathBuf,
    /// AdmissionReview body to post.
    #[arg(long, default_value = "benches/data/review-6k.json")]
    body: PathBuf,
    /// Kept-alive connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Total requests per second (0: as fast as the server answers).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to send, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = |s: &str| runyard::duration::parse(s).map_err(|e| e.to_string()))]
    duration: Duration,
    /// Use HTTP/2 (default HTTP/1.1).
    #[arg(long)]
    h2: bool,
    /// PID of the server, to sample its resident memory and CPU time.
    #[arg(long)]
    pid: Option<u32>,
    /// Label printed with the results.
    #[arg(long, default_value = "run")]
    label: String,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// User and system CPU time of a process so far, in microseconds
/// (`/proc/PID/stat` fields 14 and 15, in USER_HZ = 100 ticks per second).
fn cpu_us(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count from its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user * 10_000, system * 10_000))
}

async fn connect(args: &Args, ca: &str) -> client::Conn {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client::Conn::open(args.addr, ca, args.h2).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {}: {e}", args.addr),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let ca = std::fs::read_to_string(&args.ca).expect("read --ca");
    let body = Bytes::from(std::fs::read(&args.body).expect("read --body"));
    let stop = Arc::new(AtomicBool::new(false));

    let sampler = args.pid.map(|pid| {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (peak, rss_kib(pid).unwrap_or(0))
        })
    });

    let mut conns = Vec::new();
    for _ in 0..args.connections {
        conns.push(connect(&args, &ca).await);
    }
    let cpu_before = args.pid.and_then(cpu_us);
    let start = Instant::now();
    let end = start + args.duration;
    let per_conn_interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));
    let mut tasks = Vec::new();
    let connections = args.connections.max(1);
    for (i, mut conn) in conns.into_iter().enumerate() {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            // Stagger connections evenly across one interval, so that the
            // server sees one request every 1/rate s, not bursts.
            let mut next = start
                + per_conn_interval
                    .map(|d| d.mul_f64(i as f64 / connections as f64))
                    .unwrap_or_default();
            loop {
                let scheduled = match per_conn_interval {
                    Some(interval) => {
                        let at = next;
                        next += interval;
                        if at > Instant::now() {
                            // Ahead of time: wait, and measure from when the
                            // timer woke us (tokio's timer has a resolution
                            // of 1 ms; its lateness is the generator's).
                            tokio::time::sleep_until(at.into()).await;
                            Instant::now()
                        } else {
                            // Behind: the previous answer came late, and the
                            // wait for it counts (no coordinated omission).
                            at
                        }
                    }
                    None => Instant::now(),
                };
                if scheduled >= end {
                    break;
                }
                match conn.post("/mutate?timeout=10s", body.clone()).await {
                    Ok(reply) => {
                        *tally.statuses.entry(reply.status.as_u16()).or_default() += 1;
                        tally
                            .latencies_us
                            .push(scheduled.elapsed().as_micros() as u64);
                    }
                    Err(_) => tally.errors += 1,
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.expect("task");
        all.latencies_us.extend(t.latencies_us);
        for (k, v) in t.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.errors += t.errors;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = args.pid.and_then(cpu_us);
    stop.store(true, Ordering::Relaxed);
    all.latencies_us.sort_unstable();
    let n = all.latencies_us.len();
    let q = |p: f64| {
        if n == 0 {
            0.0
        } else {
            all.latencies_us[((n as f64 * p) as usize).min(n - 1)] as f64 / 1000.0
        }
    };
    println!(
        "{}: {} requests in {:.1}s = {:.0}/s ({} conns, {}, target {}) | latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} | statuses {:?} errors {}",
        args.label,
        n,
        elapsed,
        n as f64 / elapsed,
        args.connections,
        if args.h2 { "h2" } else { "http/1.1" },
        if args.rate == 0 { "max".to_string() } else { format!("{}/s", args.rate) },
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        q(1.0),
        all.statuses,
        all.errors,
    );
    let ok = all.statuses.get(&200).copied().unwrap_or(0);
    // (user, system) µs per answered review.
    let cpu_split = cpu_before.zip(cpu_after).filter(|_| ok > 0).map(|(a, b)| {
        (
            (b.0 - a.0) as f64 / ok as f64,
            (b.1 - a.1) as f64 / ok as f64,
        )
    });
    let cpu_per_review = cpu_split.map(|(user, system)| user + system);
    if let Some((user, system)) = cpu_split {
        println!(
            "{}: server CPU {:.1} µs per answered review ({user:.1} user, {system:.1} system)",
            args.label,
            user + system
        );
    }
    // One machine-readable line (benches/compare-baseline.sh reads it).
    println!(
        "SUMMARY label={} rps={:.1} p50_ms={:.3} p99_ms={:.3} cpu_us={} user_us={} sys_us={} ok={} other={} errors={}",
        args.label.replace(' ', "_"),
        ok as f64 / elapsed,
        q(0.50),
        q(0.99),
        cpu_per_review.map_or("-".to_string(), |c| format!("{c:.1}")),
        cpu_split.map_or("-".to_string(), |c| format!("{:.1}", c.0)),
        cpu_split.map_or("-".to_string(), |c| format!("{:.1}", c.1)),
        ok,
        n as u64 - ok,
        all.errors,
    );
    if let Some(s) = sampler {
        let (peak, now) = s.await.expect("sampler");
        println!(
            "{}: server RSS peak {:.1} MiB, at end {:.1} MiB",
            args.label,
            peak as f64 / 1024.0,
            now as f64 / 1024.0
        );
    }
}
