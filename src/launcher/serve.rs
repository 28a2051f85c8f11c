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
use crate::vocab::{ANNOTATION_STOP, EXEC_SHIM_PATH, SHIM_UNTIL_ARG};
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

fn cgroup(proc: &Path, pid: &str) -> Option<String> {
    std::fs::read_to_string(proc.join(pid).join("cgroup")).ok()
}

/// A pool sidecar's process: the exec shim supervising it until the
/// workers are done (container sidecar mode).
fn is_supervised_sidecar(proc: &Path, pid: &str) -> bool {
    let Ok(cmdline) = std::fs::read(proc.join(pid).join("cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    args.next() == Some(EXEC_SHIM_PATH.as_bytes())
        && args.any(|a| a.starts_with(SHIM_UNTIL_ARG.as_bytes()))
}

/// Processes of the run's workers in a shared process namespace, read from
/// `proc` (`/proc`): those of other containers (another cgroup than this
/// one's; pid 1 is the pause process), except the containers of pool
/// sidecars (the cgroups of their supervisors), which run until the workers
/// are done and must not keep the launcher waiting for them.
pub fn worker_processes(proc: &Path) -> usize {
    let own = cgroup(proc, "self");
    let pids: Vec<String> = std::fs::read_dir(proc)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()) && n != "1")
        .collect();
    let with_cgroups: Vec<(&String, String)> = pids
        .iter()
        .filter_map(|pid| Some((pid, cgroup(proc, pid)?)))
        .filter(|(_, c)| Some(c) != own.as_ref())
        .collect();
    let sidecars: std::collections::BTreeSet<&String> = with_cgroups
        .iter()
        .filter(|(pid, _)| is_supervised_sidecar(proc, pid))
        .map(|(_, c)| c)
        .collect();
    with_cgroups
        .iter()
        .filter(|(_, c)| !sidecars.contains(c))
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
                if worker_processes(Path::new("/proc")) > 0 {
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

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("it answered {0:?}")]
    Status(String),
}

/// The launcher's readiness probe: `GET /healthz` on its socket answers 200
/// within `timeout`.
pub fn probe(socket: &Path, timeout: Duration) -> Result<(), ProbeError> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: launcher\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match stream.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.lines().next().unwrap_or_default().to_string();
    if status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
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
    let done_file = layout.workers_done_file();
    let workers_done = || {
        // Pool sidecars under the exec shim stop when this appears.
        if let Err(e) = std::fs::write(&done_file, b"") {
            tracing::warn!(path = %done_file.display(), error = %e, "cannot tell pool sidecars that the workers are done");
        }
    };
    tokio::select! {
        _ = &mut exited => {
            tracing::info!("the worker exited");
            workers_done();
        }
        _ = crate::shutdown::signal() => {
            request_stop(&stop_tx, &stop_file, "the pod is terminating");
            if opts.watch != WorkerWatch::Kubelet {
                // Keep serving while the worker cleans up.
                if tokio::time::timeout(opts.grace, &mut exited).await.is_err() {
                    tracing::warn!("grace period over; the worker is still running");
                }
                workers_done();
            }
        }
    }
    watcher.abort();
    let _ = exit_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
