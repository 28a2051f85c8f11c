//! Streaming response bodies: watches and followed logs.

use super::select::Selector;
use super::store::{meta, meta_mut, Change, ChangeKind};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What one watch sees, and how it renders objects.
pub(crate) struct WatchFilter {
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: Selector,
    pub metadata_only: bool,
    pub api_version: String,
    pub kind: String,
}

pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

pub(crate) fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

impl WatchFilter {
    pub fn matches(&self, obj: &Value) -> bool {
        let ns = meta(obj)
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("");
        self.namespace.as_deref().is_none_or(|want| want == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    pub fn render(&self, obj: &Value) -> Value {
        if self.metadata_only {
            partial_metadata(obj)
        } else {
            obj.clone()
        }
    }

    pub fn event(&self, kind: &str, obj: &Value) -> Bytes {
        line(kind, &self.render(obj))
    }

    /// The event this watch gets for a change, if any: an object that stops
    /// matching is DELETED (its previous state, at the change's
    /// resourceVersion), one that starts matching is ADDED.
    pub fn translate(&self, ch: &Change) -> Option<Bytes> {
        let now = self.matches(&ch.new);
        let before = ch.old.as_ref().is_some_and(|o| self.matches(o));
        match ch.kind {
            ChangeKind::Added => now.then(|| self.event("ADDED", &ch.new)),
            ChangeKind::Deleted => (now || before).then(|| self.event("DELETED", &ch.new)),
            ChangeKind::Modified => match (before, now) {
                (true, true) => Some(self.event("MODIFIED", &ch.new)),
                (false, true) => Some(self.event("ADDED", &ch.new)),
                (true, false) => {
                    let mut gone = ch.old.clone()?;
                    meta_mut(&mut gone).insert("resourceVersion".into(), json!(ch.rv.to_string()));
                    Some(self.event("DELETED", &gone))
                }
                (false, false) => None,
            },
        }
    }

    pub fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let (api_version, kind) = if self.metadata_only {
            ("meta.k8s.io/v1", "PartialObjectMetadata")
        } else {
            (self.api_version.as_str(), self.kind.as_str())
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"apiVersion": api_version, "kind": kind, "metadata": metadata}),
        )
    }
}

/// Pause switches a watch obeys: the server's and its client's.
pub(crate) struct Pause {
    pub global: watch::Receiver<bool>,
    pub client: watch::Receiver<bool>,
}

impl Pause {
    fn paused(&self) -> bool {
        *self.global.borrow() || *self.client.borrow()
    }

    /// Resolves when either switch changes; Err if the server is gone.
    async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        tokio::select! {
            r = self.global.changed() => r,
            r = self.client.changed() => r,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One open watch: queued lines first, then changes as they happen.
pub(crate) struct WatchStream {
    pub queued: VecDeque<Bytes>,
    pub rx: mpsc::UnboundedReceiver<Arc<Change>>,
    pub filter: WatchFilter,
    pub deadline: Option<Instant>,
    pub pause: Pause,
    pub close: watch::Receiver<u64>,
}

impl WatchStream {
    /// The next line, None when the watch ends (timeout, closed by a test,
    /// server gone).
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.pause.paused() {
                tokio::select! {
                    r = self.pause.changed() => r.ok()?,
                    _ = sleep_until(self.deadline) => return None,
                    _ = self.close.changed() => return None,
                }
                continue;
            }
            if let Some(line) = self.queued.pop_front() {
                return Some(line);
            }
            tokio::select! {
                biased;
                _ = self.close.changed() => return None,
                _ = sleep_until(self.deadline) => return None,
                r = self.pause.changed() => r.ok()?,
                ch = self.rx.recv() => {
                    if let Some(line) = self.filter.translate(&*ch?) {
                        self.queued.push_back(line);
                    }
                }
            }
        }
    }
}
