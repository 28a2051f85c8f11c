//! Error messages for a person: one line, each cause once, and what to do
//! next where runyard knows it (the API server's address and the kubeconfig
//! when the cluster cannot be reached; how to point runyard at a cluster
//! when none is configured).

use crate::cluster::ClusterError;
use std::error::Error;
use std::sync::OnceLock;

/// The cluster the CLI talks to, for messages about reaching it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    /// The API server's URL.
    pub url: String,
    /// Where that came from: `kubeconfig PATH, context NAME`, or in-cluster.
    pub source: String,
}

static TARGET: OnceLock<ClusterTarget> = OnceLock::new();

/// Remembers the cluster the process talks to (the first one set wins).
pub(crate) fn set_target(target: ClusterTarget) {
    let _ = TARGET.set(target);
}

/// The messages of an error and its causes, each reduced to its own part: a
/// message that ends with its cause's text (`reading F: No such file`, cause
/// `No such file`) keeps only its head, so every cause is written once.
fn own_parts<'a>(e: &'a (dyn Error + 'static)) -> Vec<(String, &'a (dyn Error + 'static))> {
    let mut chain: Vec<&'a (dyn Error + 'static)> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        chain.push(err);
        next = err.source();
    }
    let messages: Vec<String> = chain.iter().map(|e| e.to_string()).collect();
    chain
        .iter()
        .enumerate()
        .map(|(i, err)| {
            let mut own = messages[i].as_str();
            if let Some(cause) = messages.get(i + 1) {
                if let Some(head) = own.strip_suffix(cause.as_str()) {
                    own = head.trim_end_matches([' ', ':', ',', ';', '(']).trim_end();
                }
            }
            // One line: a multi-line message (a YAML parser's snippet of
            // the input) keeps its first.
            let own = own.lines().next().unwrap_or_default().trim_end();
            (own.to_string(), *err)
        })
        .collect()
}

/// Joins parts with `: `, skipping empty ones and any already said.
fn join(parts: impl IntoIterator<Item = String>) -> String {
    let mut line = String::new();
    for part in parts {
        if part.is_empty() || line.contains(&part) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&part);
    }
    line
}

/// An error chain as one line, each cause once.
pub fn chain_line(e: &(dyn Error + 'static)) -> String {
    join(own_parts(e).into_iter().map(|(own, _)| own))
}

fn is_connect_error(e: &(dyn Error + 'static)) -> bool {
    e.downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(hyper_util::client::legacy::Error::is_connect)
}

fn is_api_layer(e: &(dyn Error + 'static)) -> bool {
    e.is::<ClusterError>() || e.is::<kube::Error>()
}

/// The line `main` prints after `error: `.
pub fn error_line(e: &anyhow::Error) -> String {
    let root: &(dyn Error + 'static) = e.as_ref();
    let parts = own_parts(root);
    let connect = parts.iter().any(|(_, err)| is_connect_error(*err));
    let timeout = parts.iter().any(|(_, err)| {
        matches!(
            err.downcast_ref::<ClusterError>(),
            Some(ClusterError::Timeout(_))
        )
    });
    match (TARGET.get(), connect || timeout) {
        (Some(target), true) => {
            // What runyard was doing, then where it could not get to and why.
            let doing = parts
                .iter()
                .take_while(|(_, err)| !is_api_layer(*err))
                .map(|(own, _)| own.clone());
            let why = if connect {
                parts.last().map(|(own, _)| own.clone()).unwrap_or_default()
            } else {
                "no answer in time".to_string()
            };
            let reach = format!(
                "cannot reach the Kubernetes API server at {} ({}): {why}; check that the cluster is running and that `kubectl cluster-info` works with the same kubeconfig",
                target.url, target.source
            );
            join(doing.chain([reach]))
        }
        _ => chain_line(root),
    }
}

/// Where the kubeconfig is looked for: `$KUBECONFIG`, else `~/.kube/config`.
fn kubeconfig_paths() -> (Vec<String>, bool) {
    match std::env::var("KUBECONFIG").ok().filter(|v| !v.is_empty()) {
        Some(list) => (
            std::env::split_paths(&list)
                .map(|p| p.display().to_string())
                .collect(),
            true,
        ),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_default();
            let path = std::path::Path::new(&home).join(".kube").join("config");
            (vec![path.display().to_string()], false)
        }
    }
}

/// Describes where the client's configuration came from, for [`ClusterTarget`].
pub(crate) fn config_source() -> String {
    let (paths, _) = kubeconfig_paths();
    match kube::config::Kubeconfig::read() {
        Ok(k) => match k.current_context {
            Some(ctx) => format!("kubeconfig {}, context {ctx}", paths.join(":")),
            None => format!("kubeconfig {}", paths.join(":")),
        },
        Err(_) => "in-cluster service account".to_string(),
    }
}

/// Why no client configuration could be found, and what to do about it.
pub(crate) fn no_cluster(e: &kube::config::InferConfigError) -> String {
    let (paths, from_env) = kubeconfig_paths();
    let existing: Vec<&String> = paths
        .iter()
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    if !existing.is_empty() {
        // A kubeconfig is there but unusable: say why, once.
        let why = own_parts(e)
            .into_iter()
            .skip(1)
            .map(|(own, _)| own)
            .collect::<Vec<_>>();
        return format!(
            "cannot use the kubeconfig {}: {}",
            existing
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(":"),
            join(why)
        );
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        let why = kube::Config::incluster()
            .err()
            .map(|e| chain_line(&e))
            .unwrap_or_default();
        return format!(
            "running in a cluster, but its service account cannot be used: {why}; check the pod's serviceAccountName and automountServiceAccountToken"
        );
    }
    let named = if from_env {
        format!("KUBECONFIG names {}, which does not exist", paths.join(":"))
    } else {
        format!("there is no kubeconfig at {}", paths.join(":"))
    };
    format!(
        "no Kubernetes cluster to talk to: {named}, and runyard is not running inside a cluster; set KUBECONFIG to a kubeconfig file (kind, minikube and cloud CLIs write one) and check it with `kubectl cluster-info`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Read {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_written_once() {
        let e = anyhow::Error::new(Read {
            path: "pools.yaml".into(),
            source: std::io::Error::from_raw_os_error(2),
        })
        .context("loading pools");
        let line = error_line(&e);
        assert_eq!(line.matches("os error 2").count(), 1, "{line}");
        assert!(
            line.starts_with("loading pools: reading pools.yaml: "),
            "{line}"
        );
        // anyhow's own `{:#}` repeats it.
        assert_eq!(format!("{e:#}").matches("os error 2").count(), 2);
    }

    #[test]
    fn a_cause_in_the_middle_of_a_message_is_not_repeated_after_it() {
        #[derive(Debug, thiserror::Error)]
        #[error("failed (inner: {source}), giving up")]
        struct Outer {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Outer {
            source: std::io::Error::other("disk on fire"),
        });
        assert_eq!(error_line(&e), "failed (inner: disk on fire), giving up");
    }
}
