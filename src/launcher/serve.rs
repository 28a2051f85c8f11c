//! `runyard launcher serve`: the sidecar. Serves the worker a local HTTP API on
//! `.runyard/launcher.sock` in the workspace:
//!
//! - `GET /v1/run`: the run metadata (`.runyard/run.json`);
//! - `GET /v1/stop?wait=30s`: long-poll; answers `{"stop": true, "reason": ...}`
//!   as soon as a stop is requested, or `{"stop": false}` after `wait`;
//! - `GET /healthz`.
//!
//! A stop request arrives as the pod annotation `runyard.dev/stop` (set by
//! `runyard cancel`), read from the downward-API volume, so the pod needs no
//! Kubernetes credentials; it is also written to `.runyard/stop` for workers
//! that only read files. The sidecar exits when the worker has exited (a
//! regular container on clusters without native sidecars; with native sidecars
//! the kubelet stops it). On SIGTERM it requests a stop and keeps serving until
//! the worker has exited or the grace period ends.

use super::{read_podinfo, Layout};
use crate::vocab::ANNOTATION_STOP;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the sidecar decides that the worker has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerWatch {
    /// Native sidecar: the kubelet stops the sidecar after the worker.
    Kubelet,
    /// Regular container with a shared process namespace: the worker is gone
    /// when no process of another container (other than the pause process) is left.
    ProcessNamespace,
    /// A given process.
    Pid(u32),
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub watch: WorkerWatch,
    /// How long to keep serving after SIGTERM while the worker is still running.
    pub grace: Duration,
    /// How often annotations and processes are checked.
    pub poll: Duration,
}

#[derive(Clone)]
struct LauncherState {
    run_file: PathBuf,
    stop: watch::Receiver<Option<String>>,
}

fn stop_body(reason: &Option<String>) -> serde_json::Value {
    match reason {
        Some(r) => serde_json::json!({ "stop": true, "reason": r }),
        None => serde_json::json!({ "stop": false }),
    }
}

async fn run_info(State(s): State<LauncherState>) -> Response {
    match tokio::fs::read(&s.run_file).await {
        Ok(bytes) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            "run metadata not written yet (launcher init)",
        )
            .into_response(),
    }
}

async fn stop_poll(
    State(s): State<LauncherState>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<serde_json::Value> {
    let wait = q
        .get("wait")
        .and_then(|w| crate::duration::parse(w).ok())
        .unwrap_or(Duration::from_secs(30))
        .min(Duration::from_secs(300));
    let mut rx = s.stop.clone();
    let _ = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
    let reason = rx.borrow().clone();
    Json(stop_body(&reason))
}

pub fn router(run_file: PathBuf, stop: watch::Receiver<Option<String>>) -> Router {
    Router::new()
        .route("/v1/run", get(run_info))
        .route("/v1/stop", get(stop_poll))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(LauncherState { run_file, stop })
}

fn request_stop(tx: &watch::Sender<Option<String>>, stop_file: &Path, reason: &str) {
    if tx.borrow().is_some() {
        return;
    }
    let _ = std::fs::write(stop_file, reason);
    let _ = tx.send(Some(reason.to_string()));
    tracing::info!(reason, "stop requested");
}

fn cgroup(pid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

/// Processes of other containers in a shared process namespace (pid 1 is the
/// pause process).
fn worker_processes() -> usize {
    let own = cgroup("self");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()) && n != "1")
        .filter(|pid| cgroup(pid).is_some_and(|c| Some(&c) != own.as_ref()))
        .count()
}

/// Resolves when the worker has exited.
async fn worker_exited(watch: WorkerWatch, poll: Duration) {
    match watch {
        WorkerWatch::Kubelet => std::future::pending().await,
        WorkerWatch::Pid(pid) => {
            while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
                tokio::time::sleep(poll).await;
            }
        }
        WorkerWatch::ProcessNamespace => {
            let start = tokio::time::Instant::now();
            let mut seen = false;
            let mut absent = 0;
            loop {
                if worker_processes() > 0 {
                    seen = true;
                    absent = 0;
                } else {
                    absent += 1;
                    // Gone: seen before and now absent twice, or never seen in a minute.
                    if (seen && absent >= 2) || start.elapsed() > Duration::from_secs(60) {
                        return;
                    }
                }
                tokio::time::sleep(poll).await;
            }
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Runs the sidecar until the worker has exited.
pub async fn run(layout: &Layout, opts: ServeOptions) -> Result<(), ServeError> {
    let state = layout.state();
    std::fs::create_dir_all(&state).map_err(|source| ServeError::Io {
        what: "creating",
        path: state.clone(),
        source,
    })?;
    let socket = layout.socket();
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).map_err(|source| ServeError::Io {
        what: "listening on",
        path: socket.clone(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The worker may run as another user of the pod's group.
        let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660));
    }

    let (stop_tx, stop_rx) = watch::channel(None::<String>);
    let stop_file = layout.stop_file();
    let annotations = layout.podinfo.join("annotations");
    // Watch the pod's annotations (the kubelet rewrites the file on change).
    let watcher = {
        let stop_tx = stop_tx.clone();
        let stop_file = stop_file.clone();
        let poll = opts.poll;
        tokio::spawn(async move {
            loop {
                if let Some(reason) = read_podinfo(&annotations).get(ANNOTATION_STOP) {
                    let reason = if reason.is_empty() {
                        "stop requested"
                    } else {
                        reason.as_str()
                    };
                    request_stop(&stop_tx, &stop_file, reason);
                }
                tokio::time::sleep(poll).await;
            }
        })
    };

    let (exit_tx, mut exit_rx) = watch::channel(false);
    let app = router(layout.run_file(), stop_rx);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = exit_rx.wait_for(|e| *e).await;
            })
            .await
    });
    tracing::info!(socket = %socket.display(), "launcher serving");

    let exited = worker_exited(opts.watch, opts.poll);
    tokio::pin!(exited);
    tokio::select! {
        _ = &mut exited => tracing::info!("the worker exited"),
        _ = crate::shutdown::signal() => {
            request_stop(&stop_tx, &stop_file, "the pod is terminating");
            if opts.watch != WorkerWatch::Kubelet {
                // Keep serving while the worker cleans up.
                if tokio::time::timeout(opts.grace, &mut exited).await.is_err() {
                    tracing::warn!("grace period over; the worker is still running");
                }
            }
        }
    }
    watcher.abort();
    let _ = exit_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
