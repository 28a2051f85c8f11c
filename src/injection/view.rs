//! A run Pod as the webhook's fast path ([`super::fast`]) reads it: only
//! what that path needs, strings borrowed from the request's body, every
//! other member walked (counted under the scan's limits by
//! `injection::bounded`) and not built.
//!
//! Safe by construction: every type here refuses members it does not name
//! (`deny_unknown_fields`), and the members it names but does not read are
//! listed one by one (the `_`-prefixed ones) after checking that no part of
//! the engine reads them (probes, `args`, `workingDir`, env values, ...). A
//! member added by a later Kubernetes version, or one the policy reads, is
//! never skipped unseen: the parse fails, and the review takes the engine's
//! full path (the typed Pod). The fast path itself only ever reads what is
//! here.
//!
//! The API server sends the object it decoded into its own types, so a
//! member skipped here has the type Kubernetes gives it.

use super::limits::Key;
use k8s_openapi::api::core::v1::{ContainerPort, PodSecurityContext, SecurityContext};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// Skipped: walked, not built.
type Skip = Option<IgnoredAny>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodView<'a> {
    /// The object's identity, which the typed Pod checks (`v1`, `Pod` when
    /// present): the fast path takes only a pod that says it is one.
    #[serde(borrow, default)]
    pub api_version: Option<Key<'a>>,
    #[serde(borrow, default)]
    pub kind: Option<Key<'a>>,
    #[serde(borrow, default)]
    pub metadata: MetaView<'a>,
    #[serde(borrow)]
    pub spec: Option<SpecView<'a>>,
    pub status: Skip,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetaView<'a> {
    #[serde(borrow, default)]
    pub namespace: Option<Key<'a>>,
    #[serde(borrow, default)]
    pub labels: Option<Pairs<'a>>,
    #[serde(borrow, default)]
    pub annotations: Option<Pairs<'a>>,
    #[serde(borrow, default)]
    pub owner_references: Option<Vec<OwnerView<'a>>>,
    pub name: Skip,
    pub generate_name: Skip,
    pub uid: Skip,
    pub resource_version: Skip,
    pub generation: Skip,
    pub creation_timestamp: Skip,
    pub deletion_timestamp: Skip,
    pub deletion_grace_period_seconds: Skip,
    pub finalizers: Skip,
    pub managed_fields: Skip,
    pub self_link: Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnerView<'a> {
    #[serde(borrow)]
    pub api_version: Key<'a>,
    #[serde(borrow)]
    pub kind: Key<'a>,
    pub controller: Option<bool>,
    pub name: Skip,
    pub uid: Skip,
    pub block_owner_deletion: Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpecView<'a> {
    #[serde(borrow, default)]
    pub containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(default)]
    pub ephemeral_containers: Skip,
    #[serde(borrow, default)]
    pub volumes: Option<Vec<VolumeView<'a>>>,
    #[serde(default)]
    pub security_context: Option<PodSecurityContext>,
    pub host_network: Option<bool>,
    #[serde(rename = "hostPID")]
    pub host_pid: Option<bool>,
    #[serde(rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    pub share_process_namespace: Option<bool>,
    #[serde(borrow, default)]
    pub scheduling_gates: Option<Vec<NameView<'a>>>,
    pub active_deadline_seconds: Option<i64>,
    // Written by the engine only when the pool sets them (the fast path
    // takes only pools that set none), read by nothing else.
    pub service_account_name: Skip,
    pub service_account: Skip,
    pub automount_service_account_token: Skip,
    pub node_selector: Skip,
    pub affinity: Skip,
    pub tolerations: Skip,
    pub image_pull_secrets: Skip,
    pub termination_grace_period_seconds: Skip,
    // Read by no part of the engine.
    pub restart_policy: Skip,
    pub dns_policy: Skip,
    pub dns_config: Skip,
    pub scheduler_name: Skip,
    pub priority: Skip,
    pub priority_class_name: Skip,
    pub preemption_policy: Skip,
    pub enable_service_links: Skip,
    pub node_name: Skip,
    pub hostname: Skip,
    pub subdomain: Skip,
    #[serde(rename = "setHostnameAsFQDN")]
    pub set_hostname_as_fqdn: Skip,
    pub host_aliases: Skip,
    pub host_users: Skip,
    pub os: Skip,
    pub overhead: Skip,
    pub readiness_gates: Skip,
    pub runtime_class_name: Skip,
    pub topology_spread_constraints: Skip,
    pub resource_claims: Skip,
    pub resources: Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerView<'a> {
    #[serde(borrow)]
    pub name: Key<'a>,
    #[serde(borrow, default)]
    pub image: Option<Key<'a>>,
    #[serde(borrow, default)]
    pub env: Option<Vec<EnvView<'a>>>,
    #[serde(borrow, default)]
    pub volume_mounts: Option<Vec<MountView<'a>>>,
    #[serde(borrow, default)]
    pub resources: Option<ResourcesView<'a>>,
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
    #[serde(default)]
    pub ports: Option<Vec<ContainerPort>>,
    // Read by no part of the engine for a run's container (its command only
    // when PATH is rewritten, which the fast path does not take; envFrom only
    // when the pool adds some).
    pub command: Skip,
    pub args: Skip,
    pub working_dir: Skip,
    pub env_from: Skip,
    pub restart_policy: Skip,
    pub resize_policy: Skip,
    pub volume_devices: Skip,
    pub liveness_probe: Skip,
    pub readiness_probe: Skip,
    pub startup_probe: Skip,
    pub lifecycle: Skip,
    pub termination_message_path: Skip,
    pub termination_message_policy: Skip,
    pub image_pull_policy: Skip,
    pub stdin: Skip,
    pub stdin_once: Skip,
    pub tty: Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvView<'a> {
    #[serde(borrow)]
    pub name: Key<'a>,
    pub value: Skip,
    pub value_from: Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MountView<'a> {
    #[serde(borrow)]
    pub mount_path: Key<'a>,
    pub name: Skip,
    pub sub_path: Skip,
    pub sub_path_expr: Skip,
    pub read_only: Skip,
    pub recursive_read_only: Skip,
    pub mount_propagation: Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesView<'a> {
    #[serde(borrow, default)]
    pub requests: Option<Keys<'a>>,
    #[serde(borrow, default)]
    pub limits: Option<Keys<'a>>,
    pub claims: Skip,
}

impl ResourcesView<'_> {
    /// Whether `resource` has a request or a limit.
    pub fn has(&self, resource: &str) -> bool {
        [&self.requests, &self.limits]
            .into_iter()
            .flatten()
            .any(|keys| keys.0.iter().any(|k| k.as_str() == resource))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeView<'a> {
    #[serde(borrow)]
    pub name: Key<'a>,
    /// The one source the policy reads (runyard denies it unless the pool
    /// allows privileged runs).
    pub host_path: Skip,
    pub aws_elastic_block_store: Skip,
    pub azure_disk: Skip,
    pub azure_file: Skip,
    pub cephfs: Skip,
    pub cinder: Skip,
    pub config_map: Skip,
    pub csi: Skip,
    #[serde(rename = "downwardAPI")]
    pub downward_api: Skip,
    pub empty_dir: Skip,
    pub ephemeral: Skip,
    pub fc: Skip,
    pub flex_volume: Skip,
    pub flocker: Skip,
    pub gce_persistent_disk: Skip,
    pub git_repo: Skip,
    pub glusterfs: Skip,
    pub image: Skip,
    pub iscsi: Skip,
    pub nfs: Skip,
    pub persistent_volume_claim: Skip,
    pub photon_persistent_disk: Skip,
    pub portworx_volume: Skip,
    pub projected: Skip,
    pub quobyte: Skip,
    pub rbd: Skip,
    #[serde(rename = "scaleIO")]
    pub scale_io: Skip,
    pub secret: Skip,
    pub storageos: Skip,
    pub vsphere_volume: Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameView<'a> {
    #[serde(borrow)]
    pub name: Key<'a>,
}

/// A map of strings (labels, annotations), as its pairs in the body's order.
/// A key twice is refused by `injection::bounded` before it gets here.
#[derive(Debug, Default)]
pub struct Pairs<'a>(pub Vec<(Key<'a>, Key<'a>)>);

impl Pairs<'_> {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Pairs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<'de>, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(V)
    }
}

/// The keys of a map whose values are not read (resource quantities).
#[derive(Debug, Default)]
pub struct Keys<'a>(pub Vec<Key<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Keys<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys<'de>, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, IgnoredAny)) = map.next_entry()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}
