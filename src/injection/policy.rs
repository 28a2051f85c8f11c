//! Pool policy checks: registry hosts and privilege.

use super::InjectError;
use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};

/// Registry host of an image reference, normalised: Docker Hub short names
/// (`alpine`, `library/alpine`, `user/app`) are `docker.io`, as are the Hub's
/// alias hosts; hosts are lower-cased.
pub fn registry_host(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let host = match name.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_ascii_lowercase()
        }
        _ => return "docker.io".to_string(),
    };
    normalise_host(&host)
}

fn normalise_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        other => other.to_ascii_lowercase(),
    }
}

/// Whether `host` is matched by an `allowedRunnerImageHosts` entry: an exact
/// host (`ghcr.io`, `registry.local:5000`) or a wildcard (`*.example.com`, which
/// matches subdomains but not `example.com` itself). An empty list allows all.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        match entry.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => normalise_host(&entry) == host,
        }
    })
}

/// Checks the images of the run's own containers against the pool's allowed hosts.
pub fn check_images<'a>(
    pool: &str,
    allowed: &[String],
    containers: impl Iterator<Item = &'a Container>,
) -> Result<(), InjectError> {
    for c in containers {
        let Some(image) = c.image.as_deref().filter(|i| !i.is_empty()) else {
            continue;
        };
        let host = registry_host(image);
        if !host_allowed(&host, allowed) {
            return Err(InjectError::ImageHostNotAllowed {
                container: c.name.clone(),
                image: image.to_string(),
                host,
                pool: pool.to_string(),
                allowed: allowed.join(", "),
            });
        }
    }
    Ok(())
}

/// Denies privileged containers, privilege escalation, added capabilities, root
/// users and host namespaces unless the pool allows privileged runs.
pub fn check_privilege<'a>(
    pool: &str,
    spec: &PodSpec,
    containers: impl Iterator<Item = &'a Container>,
) -> Result<(), InjectError> {
    let deny = |what: String| InjectError::PrivilegeNotAllowed {
        what,
        pool: pool.to_string(),
    };
    for (flag, name) in [
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "hostPID"),
        (spec.host_ipc, "hostIPC"),
    ] {
        if flag == Some(true) {
            return Err(deny(format!("the pod sets {name}: true")));
        }
    }
    if let Some(sc) = &spec.security_context {
        if sc.run_as_user == Some(0) {
            return Err(deny("the pod sets runAsUser: 0 (root)".into()));
        }
        if sc.run_as_non_root == Some(false) {
            return Err(deny("the pod sets runAsNonRoot: false".into()));
        }
    }
    for c in containers {
        let Some(sc) = &c.security_context else {
            continue;
        };
        let name = &c.name;
        if sc.privileged == Some(true) {
            return Err(deny(format!("container {name:?} is privileged")));
        }
        if sc.allow_privilege_escalation == Some(true) {
            return Err(deny(format!(
                "container {name:?} sets allowPrivilegeEscalation: true"
            )));
        }
        if let Some(add) = sc.capabilities.as_ref().and_then(|c| c.add.as_ref()) {
            if !add.is_empty() {
                return Err(deny(format!(
                    "container {name:?} adds capabilities {}",
                    add.join(", ")
                )));
            }
        }
        if sc.run_as_user == Some(0) {
            return Err(deny(format!("container {name:?} sets runAsUser: 0 (root)")));
        }
        if sc.run_as_non_root == Some(false) {
            return Err(deny(format!("container {name:?} sets runAsNonRoot: false")));
        }
    }
    Ok(())
}

/// Denies `hostPath` volumes (a node's files, e.g. the container runtime's
/// socket) unless the pool allows privileged runs.
pub fn check_volumes<'a>(
    pool: &str,
    volumes: impl Iterator<Item = &'a Volume>,
) -> Result<(), InjectError> {
    for v in volumes {
        if let Some(host) = &v.host_path {
            return Err(InjectError::PrivilegeNotAllowed {
                what: format!(
                    "volume {:?} mounts the node's path {:?} (hostPath)",
                    v.name, host.path
                ),
                pool: pool.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_short_names_normalise() {
        assert_eq!(registry_host("alpine"), "docker.io");
        assert_eq!(registry_host("alpine:3.20"), "docker.io");
        assert_eq!(registry_host("library/alpine"), "docker.io");
        assert_eq!(registry_host("hashicorp/terraform:1.9"), "docker.io");
        assert_eq!(registry_host("index.docker.io/library/alpine"), "docker.io");
        assert_eq!(registry_host("GHCR.io/org/app:1"), "ghcr.io");
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(
            registry_host("registry.local:5000/app@sha256:abc"),
            "registry.local:5000"
        );
        assert_eq!(registry_host("alpine@sha256:abc"), "docker.io");
    }

    #[test]
    fn allowed_hosts_match_exactly_or_by_wildcard() {
        let allowed = vec!["ghcr.io".to_string(), "*.example.com".to_string()];
        assert!(host_allowed("ghcr.io", &allowed));
        assert!(host_allowed("reg.example.com", &allowed));
        assert!(!host_allowed("example.com", &allowed));
        assert!(!host_allowed("evilexample.com", &allowed));
        assert!(!host_allowed("docker.io", &allowed));
        assert!(host_allowed("docker.io", &["index.docker.io".to_string()]));
        assert!(host_allowed("anything", &[]));
    }
}
