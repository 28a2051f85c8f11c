//! `runyard status`: pools, workers and queues of a namespace, as a table or
//! JSON. Collected through [`ClientApi`] and the controller's model, so it
//! shows exactly the queue order the controller uses.

use crate::cluster::{ClientApi, ClusterError};
use crate::controller::model::{queue, ResultRecord};
use crate::vocab::{annotation, controlled_by_job, ANNOTATION_RESULT, ANNOTATION_RESULT_DETAIL};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolRow {
    pub name: String,
    pub desired: i32,
    pub actual: i32,
    pub idle: i32,
    pub busy: i32,
    pub queued: i32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRow {
    pub pool: String,
    pub name: String,
    pub phase: String,
    pub run: Option<String>,
    pub runs_completed: i64,
    /// Seconds since the worker's last heartbeat (its run's launcher was
    /// ready), if it has one.
    pub heartbeat_age_seconds: Option<i64>,
}

/// A finished run and its result record.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResultRow {
    pub pool: String,
    pub run: String,
    #[serde(flatten)]
    pub record: ResultRecord,
}

/// Finished runs shown per pool.
pub const RESULTS_SHOWN: usize = 10;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueRow {
    pub pool: String,
    pub position: usize,
    pub run: String,
    pub priority: i64,
    pub waiting_seconds: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    pub namespace: String,
    pub pools: Vec<PoolRow>,
    pub workers: Vec<WorkerRow>,
    pub queue: Vec<QueueRow>,
    /// The latest finished runs of each pool (newest first) that still
    /// exist; a succeeded bare Pod is deleted with its result (`runyard logs`
    /// still shows its kept record).
    pub results: Vec<ResultRow>,
}

/// Collects the status of every pool in `ns`.
pub async fn collect<C: ClientApi>(c: &C, ns: &str) -> Result<StatusReport, ClusterError> {
    let now = Timestamp::now().as_second();
    let mut report = StatusReport {
        namespace: ns.to_string(),
        pools: Vec::new(),
        workers: Vec::new(),
        queue: Vec::new(),
        results: Vec::new(),
    };
    let mut pools = c.pools(ns).await?;
    pools.sort_by_key(|p| p.name_any());
    for pool in pools {
        let name = pool.name_any();
        let mut objects = c.snapshot(ns, &name).await?;
        objects.pool = Some(pool.clone());
        let snap = objects.model();
        let workers = &objects.workers;
        // What is true now, not what the controller's next pass would make it.
        let busy = snap
            .workers
            .iter()
            .filter(|w| w.current_run.is_some())
            .count() as i32;
        let queued = queue(&snap.runs);
        report.pools.push(PoolRow {
            name: name.clone(),
            desired: pool.spec.pool_size.max(0),
            actual: snap
                .workers
                .iter()
                .filter(|w| w.phase != crate::crd::WorkerPhase::Draining)
                .count() as i32,
            idle: snap.workers.len() as i32 - busy,
            busy,
            queued: queued.len() as i32,
        });
        let mut ws: Vec<_> = workers
            .iter()
            .map(|w| {
                let s = w.status.clone().unwrap_or_default();
                WorkerRow {
                    pool: name.clone(),
                    name: w.name_any(),
                    phase: format!("{:?}", s.phase),
                    run: s.current_run,
                    runs_completed: s.runs_completed,
                    heartbeat_age_seconds: s.last_heartbeat.map(|t| (now - t.0.as_second()).max(0)),
                }
            })
            .collect();
        ws.sort_by(|a, b| a.name.cmp(&b.name));
        report.workers.extend(ws);
        let metas = objects.jobs.iter().map(|j| ("Job", &j.metadata)).chain(
            objects
                .pods
                .iter()
                .filter(|p| !controlled_by_job(&p.metadata))
                .map(|p| ("Pod", &p.metadata)),
        );
        let mut results: Vec<ResultRow> = metas
            .filter_map(|(kind, m)| {
                let outcome = annotation(m, ANNOTATION_RESULT)?;
                let mut record: ResultRecord = annotation(m, ANNOTATION_RESULT_DETAIL)
                    .and_then(|d| serde_json::from_str(d).ok())
                    .unwrap_or_default();
                if record.outcome.is_empty() {
                    record.outcome = outcome.to_string();
                }
                Some(ResultRow {
                    pool: name.clone(),
                    run: format!("{kind}/{}", m.name.as_deref().unwrap_or_default()),
                    record,
                })
            })
            .collect();
        results.sort_by(|a, b| b.record.finished_at.cmp(&a.record.finished_at));
        results.truncate(RESULTS_SHOWN);
        report.results.extend(results);
        for (i, run) in queued.iter().enumerate() {
            report.queue.push(QueueRow {
                pool: name.clone(),
                position: i + 1,
                run: run.key.to_string(),
                priority: run.priority,
                waiting_seconds: if run.created > 0 {
                    now - run.created
                } else {
                    0
                },
            });
        }
    }
    Ok(report)
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_string()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Human-readable tables.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    if r.pools.is_empty() {
        let _ = writeln!(out, "No WorkerPools in namespace {}.", r.namespace);
        return out;
    }
    let pools: Vec<Vec<String>> = r
        .pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.desired.to_string(),
                p.actual.to_string(),
                p.idle.to_string(),
                p.busy.to_string(),
                p.queued.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &["POOL", "DESIRED", "ACTUAL", "IDLE", "BUSY", "QUEUED"],
        &pools,
    );
    out.push('\n');
    let workers: Vec<Vec<String>> = r
        .workers
        .iter()
        .map(|w| {
            vec![
                w.pool.clone(),
                w.name.clone(),
                w.phase.clone(),
                w.run.clone().unwrap_or_else(|| "-".into()),
                w.runs_completed.to_string(),
                w.heartbeat_age_seconds
                    .map_or_else(|| "-".into(), |s| format!("{s}s ago")),
            ]
        })
        .collect();
    table(
        &mut out,
        &["POOL", "WORKER", "PHASE", "RUN", "RUNS", "HEARTBEAT"],
        &workers,
    );
    out.push('\n');
    if r.queue.is_empty() {
        out.push_str("No queued runs.\n");
    } else {
        let queue: Vec<Vec<String>> = r
            .queue
            .iter()
            .map(|q| {
                vec![
                    q.pool.clone(),
                    q.position.to_string(),
                    q.run.clone(),
                    q.priority.to_string(),
                    format!("{}s", q.waiting_seconds),
                ]
            })
            .collect();
        table(
            &mut out,
            &["POOL", "POSITION", "RUN", "PRIORITY", "WAITING"],
            &queue,
        );
    }
    if !r.results.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = r
            .results
            .iter()
            .map(|row| {
                let d = &row.record;
                vec![
                    row.pool.clone(),
                    row.run.clone(),
                    d.outcome.clone(),
                    d.reason.clone().unwrap_or_else(|| "-".into()),
                    d.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                    d.duration_seconds
                        .map_or_else(|| "-".into(), |s| format!("{s}s")),
                    d.worker.clone().unwrap_or_else(|| "-".into()),
                    d.finished_at.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "POOL", "RUN", "RESULT", "REASON", "EXIT", "DURATION", "WORKER", "FINISHED",
            ],
            &rows,
        );
    }
    out
}
