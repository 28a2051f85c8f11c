//! The controller's real runtime (watches, caches, kube's `Controller`, leader
//! election, kube::Client) against the in-memory API server: a pool runs its
//! queue within its cap; watch events cost no LISTs and a claim a bounded
//! number of requests; a hung call times out while other pools go on; a
//! leader whose renewals stall stops acting before its Lease can be taken;
//! controllers racing on one pool never create more workers than it asks for.

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use runyard::controller::lease::LeaseTimings;
use runyard::controller::runtime::{start, ControllerOptions, Running};
use runyard::crd::{Worker, WorkerPhase, WorkerPool, WorkerPoolSpec};
use runyard::shutdown::Shutdown;
use runyard::vocab::{label, ANNOTATION_INJECTED, LABEL_POOL, LABEL_WORKER};
use runyard_testing::apiserver::{FakeApiServer, FaultSpec, Verb};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const NS: &str = "ci";

fn pool(server: &FakeApiServer, name: &str, size: i32) {
    let mut p = WorkerPool::new(
        name,
        WorkerPoolSpec {
            pool_size: size,
            ..Default::default()
        },
    );
    p.metadata.namespace = Some(NS.into());
    server.create_obj(&p);
}

/// A run Job as the webhook leaves it: suspended, labeled, template injected.
fn queued(server: &FakeApiServer, name: &str, pool: &str) {
    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "namespace": NS, "labels": { LABEL_POOL: pool } },
        "spec": {
            "suspend": true,
            "template": {
                "metadata": { "labels": { LABEL_POOL: pool }, "annotations": { ANNOTATION_INJECTED: "true" } },
                "spec": { "restartPolicy": "Never", "containers": [{ "name": "worker", "image": "alpine" }] }
            }
        }
    }))
    .expect("job");
    server.create_obj(&job);
}

fn options(identity: &str, leader_election: bool) -> ControllerOptions {
    ControllerOptions {
        namespace: Some(NS.into()),
        leader_election,
        resync: Duration::from_secs(30),
        api_timeout: Duration::from_millis(300),
        lease_timings: LeaseTimings {
            duration: Duration::from_millis(1500),
            renew_deadline: Duration::from_millis(900),
            retry: Duration::from_millis(200),
        },
        ..ControllerOptions::new(identity, NS, "127.0.0.1:0".parse().expect("addr"))
    }
}

async fn controller(
    server: &FakeApiServer,
    user: &str,
    leader_election: bool,
) -> (Running, tokio::sync::watch::Sender<bool>) {
    controller_with(server, options(user, leader_election), user).await
}

async fn controller_with(
    server: &FakeApiServer,
    opts: ControllerOptions,
    user: &str,
) -> (Running, tokio::sync::watch::Sender<bool>) {
    let (stop, shutdown) = Shutdown::manual();
    let running = start(server.client_as(user), opts, shutdown)
        .await
        .expect("start");
    (running, stop)
}

fn jobs(server: &FakeApiServer) -> Vec<Job> {
    server.objects::<Job>(Some(NS))
}

fn finished(j: &Job) -> bool {
    j.status.as_ref().is_some_and(|s| s.conditions.is_some())
}

fn running(server: &FakeApiServer) -> Vec<String> {
    jobs(server)
        .into_iter()
        .filter(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(false) && !finished(j))
        .filter_map(|j| j.metadata.name)
        .collect()
}

/// The Job controller: completes a started Job.
fn complete(server: &FakeApiServer, name: &str) {
    server.update_obj::<Job>(NS, name, |j| {
        j.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
    });
}

async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// No run is held by two workers, and every running run is held.
fn assert_consistent(server: &FakeApiServer) {
    let mut held = BTreeSet::new();
    for w in server.objects::<Worker>(Some(NS)) {
        if let Some(run) = w.status.and_then(|s| s.current_run) {
            assert!(held.insert(run.clone()), "{run} held by two workers");
        }
    }
    for name in running(server) {
        assert!(
            held.contains(&format!("Job/{name}")),
            "{name} runs unclaimed"
        );
    }
}

#[tokio::test]
async fn a_pool_runs_its_queue_two_at_a_time_from_its_caches() {
    let server = FakeApiServer::new();
    pool(&server, "builders", 2);
    for i in 0..5 {
        queued(&server, &format!("run-{i}"), "builders");
    }
    let (c, stop) = controller(&server, "controller", true).await;
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while done < 5 {
        assert!(Instant::now() < deadline, "the queue did not drain");
        let now_running = running(&server);
        assert!(
            now_running.len() <= 2,
            "more than two at once: {now_running:?}"
        );
        assert_consistent(&server);
        if let Some(name) = now_running.first() {
            complete(&server, name);
            done += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(
        "the workers are idle again",
        Duration::from_secs(10),
        || {
            server.objects::<Worker>(Some(NS)).iter().all(|w| {
                w.status
                    .as_ref()
                    .is_some_and(|s| s.phase == WorkerPhase::Idle)
            })
        },
    )
    .await;
    let names: BTreeSet<_> = server
        .objects::<Worker>(Some(NS))
        .into_iter()
        .filter_map(|w| w.metadata.name)
        .collect();
    assert_eq!(names, ["builders-0", "builders-1"].map(String::from).into());
    let _ = stop.send(true);
    c.wait().await;
}

#[tokio::test]
async fn watch_events_cost_no_lists_and_a_claim_costs_three_requests() {
    let server = FakeApiServer::new();
    pool(&server, "builders", 1);
    queued(&server, "first", "builders");
    for i in 0..30 {
        queued(&server, &format!("q-{i:02}"), "builders");
    }
    let (c, stop) = controller(&server, "controller", false).await;
    eventually("the first run is claimed", Duration::from_secs(10), || {
        running(&server) == ["first"]
    })
    .await;
    // Let the queue notes of the first pass land, then measure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.reset_requests();
    // Pod-status-like churn: watch events on run objects that change nothing
    // the controller decides on.
    for i in 0..20 {
        server.update_obj::<Job>(NS, &format!("q-{i:02}"), |j| {
            j.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("churn".into(), i.to_string());
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.count(Verb::List, "*"), 0, "no LIST per watch event");
    let writes = |s: &FakeApiServer| {
        s.requests()
            .into_iter()
            .filter(|r| {
                matches!(
                    r.verb,
                    Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
                )
            })
            .count()
    };
    assert_eq!(
        writes(&server),
        0,
        "events that change nothing write nothing"
    );

    // One claim: the worker's status, the run, one Event; plus the queue
    // notes whose position changed (at most NOTE_POSITIONS + 1) and the
    // release of the finished run (worker status, result, Event).
    server.reset_requests();
    complete(&server, "first");
    eventually("the next run is claimed", Duration::from_secs(10), || {
        running(&server) == ["q-00"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = server.requests();
    let claim_patch = requests
        .iter()
        .filter(|r| r.verb == Verb::Patch && r.is("jobs") && r.name.as_deref() == Some("q-00"))
        .count();
    assert_eq!(claim_patch, 1, "one write claims the run");
    let notes = requests
        .iter()
        .filter(|r| {
            r.verb == Verb::Patch
                && r.is("jobs")
                && r.name.as_deref() != Some("q-00")
                && r.name.as_deref() != Some("first")
        })
        .count();
    assert!(
        notes <= runyard::controller::model::NOTE_POSITIONS + 1,
        "{notes} queue notes rewritten"
    );
    assert_eq!(server.count(Verb::List, "*"), 0);
    let total = writes(&server);
    assert!(
        total <= 3 + 3 + notes + 1,
        "{total} writes for one release and one claim: {requests:#?}"
    );
    let _ = stop.send(true);
    c.wait().await;
}

#[tokio::test]
async fn a_hung_call_times_out_and_other_pools_go_on() {
    let server = FakeApiServer::new();
    pool(&server, "stuck", 1);
    pool(&server, "free", 1);
    // A deadline long enough that the hung call is still pending while the
    // other pool is served.
    let opts = ControllerOptions {
        api_timeout: Duration::from_secs(3),
        ..options("controller", false)
    };
    let (c, stop) = controller_with(&server, opts, "controller").await;
    eventually(
        "both pools have their worker",
        Duration::from_secs(10),
        || server.objects::<Worker>(Some(NS)).len() == 2,
    )
    .await;
    // Claiming for "stuck" hangs at its worker's status write.
    let fault = server.fail(
        FaultSpec::hang(Verb::Update)
            .resource("workers")
            .subresource("status")
            .name("stuck-0"),
    );
    queued(&server, "s", "stuck");
    let timeouts = |c: &Running| {
        c.metrics
            .encode()
            .lines()
            .any(|l| l.starts_with("runyard_reconcile_errors_total{kind=\"timeout\"}"))
    };
    eventually(
        "the stuck pool's claim hangs",
        Duration::from_secs(5),
        || {
            server
                .requests()
                .iter()
                .any(|r| r.verb == Verb::Update && r.name.as_deref() == Some("stuck-0"))
        },
    )
    .await;
    queued(&server, "f", "free");
    eventually(
        "the other pool claims its run",
        Duration::from_secs(10),
        || running(&server).contains(&"f".to_string()),
    )
    .await;
    assert!(
        !timeouts(&c),
        "served while the hung call was still pending"
    );
    assert!(!running(&server).contains(&"s".to_string()));
    // The hung call ends as a typed timeout, counted.
    eventually("the hung call times out", Duration::from_secs(10), || {
        timeouts(&c)
    })
    .await;
    // The hung call ended as a timeout (not a hang): once the API answers
    // again, the stuck pool's next pass claims.
    server.clear_fault(fault);
    eventually("the stuck pool recovers", Duration::from_secs(10), || {
        running(&server).contains(&"s".to_string())
    })
    .await;
    assert_consistent(&server);
    let _ = stop.send(true);
    c.wait().await;
}

#[tokio::test]
async fn a_leader_whose_renewals_stall_stops_before_another_takes_over() {
    let server = FakeApiServer::new();
    pool(&server, "builders", 2);
    let (a, stop_a) = controller(&server, "a", true).await;
    let lead_a = a.leadership.clone();
    eventually("a leads", Duration::from_secs(5), || lead_a.is_leading()).await;
    let (b, stop_b) = controller(&server, "b", true).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!b.leadership.is_leading(), "one leader at a time");

    // a's renewals hang from now on.
    server.fail(FaultSpec::hang(Verb::Update).resource("leases").user("a"));
    let stalled = Instant::now();
    let mut a_stopped = None;
    let mut b_started = None;
    while b_started.is_none() {
        assert!(stalled.elapsed() < Duration::from_secs(10), "no takeover");
        if a_stopped.is_none() && !lead_a.is_leading() {
            a_stopped = Some(Instant::now());
        }
        if b.leadership.is_leading() {
            b_started = Some(Instant::now());
            assert!(
                !lead_a.is_leading(),
                "two leaders at once ({:?} after the stall)",
                stalled.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (a_stopped, b_started) = (a_stopped.expect("a stopped"), b_started.expect("b led"));
    assert!(
        a_stopped <= b_started,
        "a stopped acting before b took over"
    );
    // a stays out: none of its writes land from here; b claims.
    let writes_by = |user: &str| {
        server
            .requests()
            .into_iter()
            .filter(|r| r.user == user && !r.is("leases"))
            .filter(|r| {
                matches!(
                    r.verb,
                    Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
                )
            })
            .count()
    };
    let before = writes_by("a");
    queued(&server, "after-takeover", "builders");
    eventually("b claims", Duration::from_secs(10), || {
        running(&server).contains(&"after-takeover".to_string())
    })
    .await;
    assert_eq!(writes_by("a"), before, "the old leader does not act");
    let claimed = server.get_obj::<Job>(NS, "after-takeover").expect("job");
    assert!(label(&claimed.metadata, LABEL_WORKER).is_some());
    assert_consistent(&server);
    let _ = stop_b.send(true);
    b.wait().await;
    server.clear_faults();
    let _ = stop_a.send(true);
    a.wait().await;
}

#[tokio::test]
async fn controllers_racing_on_one_pool_never_create_more_workers_than_asked() {
    let server = FakeApiServer::new();
    pool(&server, "builders", 3);
    // Two controllers that both act (no Lease), as two leaders briefly would.
    let (a, stop_a) = controller(&server, "a", false).await;
    let (b, stop_b) = controller(&server, "b", false).await;
    eventually("three workers", Duration::from_secs(10), || {
        server.objects::<Worker>(Some(NS)).len() >= 3
    })
    .await;
    server.update_obj::<WorkerPool>(NS, "builders", |p| p.spec.pool_size = 5);
    eventually("five workers", Duration::from_secs(10), || {
        server.objects::<Worker>(Some(NS)).len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names: BTreeSet<_> = server
        .objects::<Worker>(Some(NS))
        .into_iter()
        .filter_map(|w| w.metadata.name)
        .collect();
    assert_eq!(
        names,
        (0..5)
            .map(|i| format!("builders-{i}"))
            .collect::<BTreeSet<_>>()
    );
    for i in 0..4 {
        queued(&server, &format!("r-{i}"), "builders");
    }
    eventually("four runs", Duration::from_secs(10), || {
        running(&server).len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_consistent(&server);
    let _ = stop_a.send(true);
    let _ = stop_b.send(true);
    a.wait().await;
    b.wait().await;
}
