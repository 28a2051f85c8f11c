//! Pool policy checks: registry hosts and privilege (Pod Security `baseline`
//! and more, unless the pool allows privileged runs), and the `restricted`
//! defaults for containers that set nothing.

use super::InjectError;
use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, ContainerPort, PodSecurityContext, PodSpec,
    SELinuxOptions, SeccompProfile, SecurityContext, Volume,
};
use std::collections::BTreeMap;

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

/// The repository of an image reference, normalised like [`registry_host`]:
/// no tag or digest, Docker Hub names in full (`alpine` is
/// `docker.io/library/alpine`), the host lower-cased.
pub fn image_repository(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    // A tag is a `:` after the last `/` (a `:` before it is a host's port).
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    let host = registry_host(name);
    let path = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest.to_string()
        }
        _ => name.to_string(),
    };
    let path = if host == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    format!("{host}/{path}")
}

/// Whether `image` is matched by an `allowedSidecarImages` entry: the same
/// repository (any tag or digest), or an entry `REPO_PREFIX/*` matching every
/// repository below that prefix. An empty list matches nothing.
pub fn sidecar_image_allowed(image: &str, allowed: &[String]) -> bool {
    if allowed.is_empty() || image.trim().is_empty() {
        return false;
    }
    let repo = image_repository(image);
    allowed.iter().any(|entry| {
        let entry = entry.trim();
        match entry.strip_suffix("/*") {
            Some(prefix) if !prefix.is_empty() => {
                // Normalise the prefix as a repository (`library/` only for
                // a bare Hub name, which a prefix never is).
                let prefix = image_repository(&format!("{prefix}/x"));
                let prefix = prefix.strip_suffix("/x").unwrap_or(&prefix);
                repo.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
            }
            Some(_) => false,
            None => !entry.is_empty() && image_repository(entry) == repo,
        }
    })
}

/// Checks the images of the run's own containers against the pool's allowed
/// hosts; images in `sidecar_images` (`allowedSidecarImages`) are allowed
/// from any host.
pub fn check_images<'a>(
    pool: &str,
    allowed: &[String],
    sidecar_images: &[String],
    containers: impl Iterator<Item = &'a Container>,
) -> Result<(), InjectError> {
    for c in containers {
        let Some(image) = c.image.as_deref().filter(|i| !i.is_empty()) else {
            continue;
        };
        let host = registry_host(image);
        if !host_allowed(&host, allowed) && !sidecar_image_allowed(image, sidecar_images) {
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

/// SELinux types Pod Security `baseline` allows (besides none).
pub const ALLOWED_SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The sysctls Pod Security `baseline` allows (namespaced and safe).
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The legacy per-container AppArmor annotation.
pub const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

fn selinux_escape(o: &SELinuxOptions) -> Option<String> {
    if let Some(t) = o.type_.as_deref().filter(|t| !t.is_empty()) {
        if !ALLOWED_SELINUX_TYPES.contains(&t) {
            return Some(format!("SELinux type {t:?}"));
        }
    }
    for (field, value) in [("user", &o.user), ("role", &o.role)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            return Some(format!("SELinux {field} {v:?}"));
        }
    }
    None
}

fn unconfined(
    seccomp: Option<&SeccompProfile>,
    apparmor: Option<&AppArmorProfile>,
) -> Option<String> {
    if seccomp.is_some_and(|p| p.type_ == "Unconfined") {
        return Some("seccompProfile Unconfined".into());
    }
    if apparmor.is_some_and(|p| p.type_ == "Unconfined") {
        return Some("appArmorProfile Unconfined".into());
    }
    None
}

/// What in a pod's own fields (not its containers') Pod Security `baseline`
/// forbids, or runyard forbids on top (root, group 0): the first found.
pub fn pod_escape(
    annotations: Option<&BTreeMap<String, String>>,
    spec: &PodSpec,
) -> Option<String> {
    pod_escape_of(
        annotations
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        [spec.host_network, spec.host_pid, spec.host_ipc],
        spec.security_context.as_ref(),
    )
}

/// [`pod_escape`] of a pod's annotations, its `[hostNetwork, hostPID,
/// hostIPC]` and its security context (all it reads).
pub fn pod_escape_of<'s>(
    annotations: impl IntoIterator<Item = (&'s str, &'s str)>,
    host: [Option<bool>; 3],
    sc: Option<&PodSecurityContext>,
) -> Option<String> {
    for (flag, name) in host.into_iter().zip(["hostNetwork", "hostPID", "hostIPC"]) {
        if flag == Some(true) {
            return Some(format!("the pod sets {name}: true"));
        }
    }
    for (key, value) in annotations {
        if let Some(container) = key.strip_prefix(APPARMOR_ANNOTATION_PREFIX) {
            if !(value.is_empty() || value == "runtime/default" || value.starts_with("localhost/"))
            {
                return Some(format!(
                    "the pod's annotation {key} sets AppArmor profile {value:?} for container {container:?}"
                ));
            }
        }
    }
    let sc = sc?;
    let pod = |what: String| Some(format!("the pod sets {what}"));
    if sc.run_as_user == Some(0) {
        return pod("runAsUser: 0 (root)".into());
    }
    if sc.run_as_non_root == Some(false) {
        return pod("runAsNonRoot: false".into());
    }
    if sc.run_as_group == Some(0) {
        return pod("runAsGroup: 0 (root's group)".into());
    }
    if sc.fs_group == Some(0) {
        return pod("fsGroup: 0 (root's group)".into());
    }
    if sc.supplemental_groups.iter().flatten().any(|g| *g == 0) {
        return pod("supplementalGroups with 0 (root's group)".into());
    }
    if let Some(what) = sc.se_linux_options.as_ref().and_then(selinux_escape) {
        return pod(what);
    }
    if let Some(what) = unconfined(sc.seccomp_profile.as_ref(), sc.app_armor_profile.as_ref()) {
        return pod(what);
    }
    if sc
        .windows_options
        .as_ref()
        .is_some_and(|w| w.host_process == Some(true))
    {
        return pod("windowsOptions.hostProcess: true".into());
    }
    for sysctl in sc.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            return pod(format!("the unsafe sysctl {:?}", sysctl.name));
        }
    }
    None
}

/// What in one container Pod Security `baseline` forbids, or runyard forbids
/// on top (root, group 0, any added capability): the first found.
pub fn container_escape(c: &Container) -> Option<String> {
    container_escape_of(
        &c.name,
        c.ports.as_deref().unwrap_or_default(),
        c.security_context.as_ref(),
    )
}

/// [`container_escape`] of a container's name, ports and security context
/// (all it reads).
pub fn container_escape_of(
    name: &str,
    ports: &[ContainerPort],
    sc: Option<&SecurityContext>,
) -> Option<String> {
    for port in ports {
        if let Some(p) = port.host_port.filter(|p| *p != 0) {
            return Some(format!("container {name:?} uses hostPort {p}"));
        }
    }
    let sc = sc?;
    let sets = |what: &str| Some(format!("container {name:?} sets {what}"));
    if sc.privileged == Some(true) {
        return Some(format!("container {name:?} is privileged"));
    }
    if sc.allow_privilege_escalation == Some(true) {
        return sets("allowPrivilegeEscalation: true");
    }
    if let Some(add) = sc.capabilities.as_ref().and_then(|c| c.add.as_ref()) {
        if !add.is_empty() {
            return Some(format!(
                "container {name:?} adds capabilities {}",
                add.join(", ")
            ));
        }
    }
    if sc.run_as_user == Some(0) {
        return sets("runAsUser: 0 (root)");
    }
    if sc.run_as_non_root == Some(false) {
        return sets("runAsNonRoot: false");
    }
    if sc.run_as_group == Some(0) {
        return sets("runAsGroup: 0 (root's group)");
    }
    if let Some(mount) = sc.proc_mount.as_deref().filter(|m| *m != "Default") {
        return sets(&format!("procMount: {mount}"));
    }
    if let Some(what) = sc.se_linux_options.as_ref().and_then(selinux_escape) {
        return sets(&what);
    }
    if let Some(what) = unconfined(sc.seccomp_profile.as_ref(), sc.app_armor_profile.as_ref()) {
        return sets(&what);
    }
    if sc
        .windows_options
        .as_ref()
        .is_some_and(|w| w.host_process == Some(true))
    {
        return sets("windowsOptions.hostProcess: true");
    }
    None
}

/// Denies everything Pod Security `baseline` forbids (host namespaces and
/// ports, privileged containers, added capabilities, SELinux types and
/// users, unconfined seccomp or AppArmor, procMount, unsafe sysctls, Windows
/// host processes), plus root users and group 0, unless the pool allows
/// privileged runs. `hostPath` volumes: [`check_volumes`].
pub fn check_privilege<'a>(
    pool: &str,
    annotations: Option<&BTreeMap<String, String>>,
    spec: &PodSpec,
    containers: impl Iterator<Item = &'a Container>,
) -> Result<(), InjectError> {
    let deny = |what: String| InjectError::PrivilegeNotAllowed {
        what,
        pool: pool.to_string(),
    };
    if let Some(what) = pod_escape(annotations, spec) {
        return Err(deny(what));
    }
    for c in containers {
        if let Some(what) = container_escape(c) {
            return Err(deny(what));
        }
    }
    Ok(())
}

/// Pod Security `restricted`'s container requirements, where the container
/// set nothing: no privilege escalation (unless privileged, where that is
/// invalid), and `drop: [ALL]` — also for `capabilities: {}` or an empty
/// `drop`, which would otherwise keep the runtime's default capabilities.
pub fn harden(sc: &mut SecurityContext) {
    if sc.privileged != Some(true) && sc.allow_privilege_escalation.is_none() {
        sc.allow_privilege_escalation = Some(false);
    }
    let caps = sc.capabilities.get_or_insert_with(Capabilities::default);
    if caps.drop.as_ref().is_none_or(Vec::is_empty) {
        caps.drop = Some(vec!["ALL".to_string()]);
    }
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

    #[test]
    fn image_repositories_normalise() {
        for (image, repo) in [
            ("alpine", "docker.io/library/alpine"),
            ("alpine:3.20", "docker.io/library/alpine"),
            ("istio/proxyv2:1.24.0", "docker.io/istio/proxyv2"),
            (
                "index.docker.io/istio/proxyv2@sha256:ab",
                "docker.io/istio/proxyv2",
            ),
            (
                "registry.local:5000/mesh/agent:2",
                "registry.local:5000/mesh/agent",
            ),
            ("registry.local:5000/agent", "registry.local:5000/agent"),
            ("GCR.io/Mesh/agent", "gcr.io/Mesh/agent"),
        ] {
            assert_eq!(image_repository(image), repo, "{image}");
        }
    }

    #[test]
    fn sidecar_images_match_a_repository_or_a_prefix() {
        let allowed: Vec<String> = ["docker.io/istio/proxyv2", "gcr.io/mesh/*", "vault:1.15"]
            .map(String::from)
            .into();
        for image in [
            "istio/proxyv2:1.24.0",
            "docker.io/istio/proxyv2@sha256:ab",
            "gcr.io/mesh/agent:1",
            "gcr.io/mesh/deep/agent",
            "vault",
            "library/vault:1.16",
        ] {
            assert!(sidecar_image_allowed(image, &allowed), "{image}");
        }
        for image in [
            "istio/proxyv2-evil:1",
            "evil.io/istio/proxyv2:1",
            "gcr.io/mesh",
            "gcr.io/meshy/agent",
            "gcr.io/other/mesh/agent",
            "hashicorp/vault",
            "",
        ] {
            assert!(!sidecar_image_allowed(image, &allowed), "{image}");
        }
        assert!(!sidecar_image_allowed("alpine", &[]));
        assert!(!sidecar_image_allowed("alpine", &["/*".to_string()]));
        assert!(!sidecar_image_allowed("alpine", &["".to_string()]));
    }
}
