//! Pod logs: `GET /api/v1/namespaces/NS/pods/NAME/log`, served from lines
//! tests append per (pod, container).

use super::serve::{Failure, Query};
use super::store::{Shared, State};
use bytes::Bytes;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;

pub(crate) type LogKey = (String, String, String);

fn render(ts: Timestamp, line: &str, timestamps: bool) -> Bytes {
    if timestamps {
        // the kubelet's RFC3339NanoFixed
        Bytes::from(format!("{ts:.9} {line}\n"))
    } else {
        Bytes::from(format!("{line}\n"))
    }
}

fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// Whether the container has terminated (or the pod is gone).
fn terminated(state: &State, key: &LogKey) -> bool {
    let Some(res) = state.find("", "v1", "pods") else {
        return true;
    };
    let Some(pod) = state.objects.get(&(res, key.0.clone(), key.1.clone())) else {
        return true;
    };
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .any(|f| {
            pod.pointer(&format!("/status/{f}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    c.get("name").and_then(Value::as_str) == Some(key.2.as_str())
                        && c.pointer("/state/terminated").is_some_and(Value::is_object)
                })
        })
}

/// Appends a line with a timestamp strictly after the previous one.
pub(crate) fn append(state: &mut State, key: LogKey, line: &str) -> Timestamp {
    let buf = state.logs.entry(key).or_default();
    let now = Timestamp::now();
    let ts = match buf.lines.last() {
        Some((last, _)) if *last >= now => *last + SignedDuration::from_micros(1),
        _ => now,
    };
    buf.lines.push((ts, line.to_string()));
    state.log_tick.send_modify(|t| *t += 1);
    ts
}

pub(crate) enum LogBody {
    Full(Bytes),
    Follow(LogFollow),
}

/// Serves a log request (the pod exists: checked by the caller).
pub(crate) fn logs(
    state: &mut State,
    shared: &Arc<Shared>,
    ns: &str,
    pod_name: &str,
    pod: &Value,
    q: &Query,
) -> Result<LogBody, Failure> {
    let containers = container_names(pod, "containers");
    let mut all = containers.clone();
    all.extend(container_names(pod, "initContainers"));
    let container = match q.get("container") {
        Some(c) => c.to_string(),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(Failure::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    if !all.is_empty() && !all.contains(&container) {
        return Err(Failure::bad_request(format!(
            "container {container} is not valid for pod {pod_name}"
        )));
    }
    let since = match (q.int("sinceSeconds")?, q.get("sinceTime")) {
        (Some(s), _) => Some(Timestamp::now() - SignedDuration::from_secs(s)),
        (None, Some(t)) => Some(
            t.parse::<Timestamp>()
                .map_err(|e| Failure::bad_request(format!("invalid sinceTime {t:?}: {e}")))?,
        ),
        (None, None) => None,
    };
    let timestamps = q.flag("timestamps");
    let limit = q.int("limitBytes")?.map(|n| n.max(0) as usize);
    let key: LogKey = (ns.to_string(), pod_name.to_string(), container);
    let (mut selected, next): (Vec<Bytes>, usize) = match state.logs.get(&key) {
        Some(buf) => (
            buf.lines
                .iter()
                .filter(|(ts, _)| since.is_none_or(|s| *ts >= s))
                .map(|(ts, l)| render(*ts, l, timestamps))
                .collect(),
            buf.lines.len(),
        ),
        None => (Vec::new(), 0),
    };
    if let Some(n) = q.int("tailLines")? {
        let n = n.max(0) as usize;
        if selected.len() > n {
            selected.drain(..selected.len() - n);
        }
    }
    if !q.flag("follow") {
        let mut out: Vec<u8> = selected.concat();
        if let Some(limit) = limit {
            out.truncate(limit);
        }
        return Ok(LogBody::Full(Bytes::from(out)));
    }
    let tick = state.log_tick.subscribe();
    Ok(LogBody::Follow(LogFollow {
        shared: Arc::clone(shared),
        key,
        next,
        pending: selected.into(),
        timestamps,
        bytes_left: limit,
        drop_after: state.log_drops.pop_front(),
        sent: 0,
        tick,
        done: false,
    }))
}

/// A followed log: existing lines, then appended ones, until the container
/// terminates, a test ends the log, or the client goes away.
pub(crate) struct LogFollow {
    shared: Arc<Shared>,
    key: LogKey,
    next: usize,
    pending: VecDeque<Bytes>,
    timestamps: bool,
    bytes_left: Option<usize>,
    drop_after: Option<usize>,
    sent: usize,
    tick: watch::Receiver<u64>,
    done: bool,
}

impl LogFollow {
    pub async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            if self.done {
                return None;
            }
            if self.drop_after == Some(self.sent) {
                self.done = true;
                return Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection dropped (test fault)",
                )));
            }
            if let Some(mut chunk) = self.pending.pop_front() {
                if let Some(left) = self.bytes_left.as_mut() {
                    if chunk.len() >= *left {
                        chunk.truncate(*left);
                        self.done = true;
                    }
                    *left -= chunk.len();
                }
                self.sent += 1;
                return Some(Ok(chunk));
            }
            self.tick.borrow_and_update();
            {
                let mut st = self.shared.lock();
                let ended = terminated(&st, &self.key);
                let buf = st.logs.entry(self.key.clone()).or_default();
                for (ts, l) in &buf.lines[self.next.min(buf.lines.len())..] {
                    self.pending.push_back(render(*ts, l, self.timestamps));
                }
                self.next = buf.lines.len();
                if self.pending.is_empty() && (ended || buf.ended) {
                    return None;
                }
            }
            if self.pending.is_empty() && self.tick.changed().await.is_err() {
                return None;
            }
        }
    }
}

/// Marks a pod's log as finished: followers end after the last line.
pub(crate) fn end(state: &mut State, key: LogKey) {
    state.logs.entry(key).or_default().ended = true;
    state.log_tick.send_modify(|t| *t += 1);
}
