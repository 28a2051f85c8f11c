//! Shared setup of the fuzz targets: engines and static pools covering the
//! policy's branches (pool sidecars, image hosts, privilege, tight limits).

#![allow(dead_code)]

use runyard::crd::{ContainerSettings, RunLimits, WorkerPool, WorkerPoolSpec};
use runyard::injection::{ClusterFacts, Injector, SidecarMode, StaticPools};
use std::sync::OnceLock;

pub const RUN_ID: &str = "01jfuzz0000000000000000000";

fn container(name: &str, image: &str) -> k8s_openapi::api::core::v1::Container {
    k8s_openapi::api::core::v1::Container {
        name: name.into(),
        image: Some(image.into()),
        ..Default::default()
    }
}

/// Pools in namespace `ci`: `builders` (defaults), `sidecars` (pool
/// containers and worker settings), `strict` (ghcr.io only), `privileged`
/// (allowPrivileged, ephemeral containers), `tight` (small limits).
pub fn pools() -> &'static StaticPools {
    static POOLS: OnceLock<StaticPools> = OnceLock::new();
    POOLS.get_or_init(|| {
        let mut sidecars = WorkerPoolSpec::default();
        sidecars.pod.custom_init_containers = vec![container("setup", "registry.local/s:1")];
        sidecars.pod.additional_sidecar_containers = vec![container("side", "registry.local/d:1")];
        sidecars.pod.worker_container = Some(ContainerSettings {
            env: vec![k8s_openapi::api::core::v1::EnvVar {
                name: "CI".into(),
                value: Some("true".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        sidecars.pod.volumes = vec![k8s_openapi::api::core::v1::Volume {
            name: "extra".into(),
            empty_dir: Some(Default::default()),
            ..Default::default()
        }];
        let strict = WorkerPoolSpec {
            allowed_runner_image_hosts: vec!["ghcr.io".into()],
            ..Default::default()
        };
        let mut privileged = WorkerPoolSpec {
            allow_ephemeral_containers: true,
            ..Default::default()
        };
        privileged.pod.allow_privileged = true;
        let tight = WorkerPoolSpec {
            limits: RunLimits {
                containers: Some(2),
                init_containers: Some(1),
                env_entries: Some(4),
                volumes: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        let pools = [
            ("builders", WorkerPoolSpec::default()),
            ("sidecars", sidecars),
            ("strict", strict),
            ("privileged", privileged),
            ("tight", tight),
        ]
        .into_iter()
        .map(|(name, spec)| {
            let mut p = WorkerPool::new(name, spec);
            p.metadata.namespace = Some("ci".into());
            p
        })
        .collect();
        StaticPools::new(pools)
    })
}

/// The engine in native (`false`) or container (`true`) sidecar mode.
pub fn injector(container_mode: bool) -> &'static Injector {
    static ENGINES: OnceLock<[Injector; 2]> = OnceLock::new();
    let engines = ENGINES.get_or_init(|| {
        let make = |mode| {
            Injector::with_run_ids(ClusterFacts { sidecar_mode: mode }, || RUN_ID.to_string())
        };
        [make(SidecarMode::Native), make(SidecarMode::Container)]
    });
    &engines[usize::from(container_mode)]
}
