//! Following a worker's log: reconnecting after a dropped stream without
//! losing or repeating lines.

use crate::cluster::{ClientApi, ClusterError};
use crate::vocab::{INIT_CONTAINER, LAUNCHER_CONTAINER};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use std::io::Write;

/// Follows a container's log, reconnecting when the stream drops, without
/// losing or repeating lines (resumes at the last timestamp and skips the
/// lines already printed at it).
pub struct LogFollower {
    last: Option<Timestamp>,
    at_last: usize,
}

impl Default for LogFollower {
    fn default() -> Self {
        Self::new()
    }
}

impl LogFollower {
    pub fn new() -> Self {
        Self {
            last: None,
            at_last: 0,
        }
    }

    /// One connection: prints new lines; returns how many.
    pub async fn pass<C: ClientApi>(
        &mut self,
        c: &C,
        ns: &str,
        pod: &str,
        container: &str,
        out: &mut (dyn Write + Send),
    ) -> Result<usize, ClusterError> {
        let mut stream = c.follow_logs(ns, pod, container, self.last).await?;
        let mut skip = self.at_last;
        let mut printed = 0;
        while let Some(line) = stream.next().await {
            let Ok(line) = line else { break };
            let (ts, text) = match line
                .split_once(' ')
                .and_then(|(t, rest)| Some((t.parse::<Timestamp>().ok()?, rest)))
            {
                Some(x) => x,
                None => (self.last.unwrap_or(Timestamp::UNIX_EPOCH), line.as_str()),
            };
            if let Some(last) = self.last {
                if ts < last {
                    continue;
                }
                if ts == last && skip > 0 {
                    skip -= 1;
                    continue;
                }
            }
            let _ = writeln!(out, "{text}");
            printed += 1;
            if Some(ts) == self.last {
                self.at_last += 1;
            } else {
                self.last = Some(ts);
                self.at_last = 1;
                skip = 0;
            }
        }
        let _ = out.flush();
        Ok(printed)
    }
}

pub fn worker_container(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name != LAUNCHER_CONTAINER && c.name != INIT_CONTAINER)
        .map(|c| c.name.clone())
}

pub fn exit_code(pod: &Pod, container: &str) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}
