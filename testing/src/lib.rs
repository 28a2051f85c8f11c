//! Test doubles for runyard, never linked into the shipped binary (a
//! dev-dependency only):
//!
//! - [`apiserver::FakeApiServer`], an in-memory Kubernetes API server that a
//!   real `kube::Client` talks to (below);
//! - [`MemoryCluster`], an in-memory implementation of runyard's cluster API
//!   traits with the API server's resourceVersion semantics and fault
//!   injection, and [`MemoryLease`], an in-memory Lease.
//!
//! # `apiserver`: an in-memory Kubernetes API server
//!
//! [`apiserver::FakeApiServer`] answers HTTP requests the way kube-apiserver
//! v1.36 does, in process: [`FakeApiServer::client`](apiserver::FakeApiServer::client)
//! returns a real [`kube::Client`] whose `tower::Service` is the server's
//! handler (no sockets). runyard's production code (`Api<K>` calls,
//! `kube::runtime::watcher`, reflectors, `Controller`, metadata-only
//! watches, the Lease code, the events `Recorder`) runs unchanged against it,
//! and tests look at the state, inject faults and count requests.
//!
//! ```
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//! use runyard_testing::apiserver::{FakeApiServer, FaultSpec, Verb};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = FakeApiServer::new();
//! let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("a".into());
//! api.create(&PostParams::default(), &cm).await.unwrap();
//! assert!(server.get("configmaps", "ns", "a").is_some());
//! server.fail(FaultSpec::status(Verb::Get, 500).times(1));
//! assert!(api.get("a").await.is_err());
//! assert_eq!(server.count(Verb::Get, "configmaps"), 1);
//! # }
//! ```
//!
//! ## What it implements
//!
//! - **Storage**: objects as `serde_json::Value` keyed by (resource,
//!   namespace, name); a registry of resources ([`apiserver::ResourceType`]):
//!   core pods (status), secrets, configmaps, events; batch jobs (status);
//!   coordination leases; events.k8s.io events; admissionregistration
//!   mutatingwebhookconfigurations (cluster-scoped); runyard's `workerpools`
//!   and `workers` (workers.runyard.dev/v1alpha1, status), and any
//!   [`register`](apiserver::FakeApiServer::register)ed CRD.
//! - **Metadata**: one global, etcd-like resourceVersion (decimal) set on
//!   every write; create sets uid, creationTimestamp, `generation: 1` (status
//!   resources), a name from `generateName` (prefix + 5 random characters),
//!   the namespace from the URL; changes outside metadata/status bump
//!   generation; apiVersion/kind are set on every object. A write that changes
//!   nothing is not written (no new resourceVersion, no watch event), as in
//!   the real server: controllers that patch idempotently settle.
//! - **Verbs** over the real URLs (`/api/v1/...`, `/apis/G/V/...`, namespaced
//!   and all-namespace): `GET /version` (v1.36.2); list with label selectors
//!   (`=`, `==`, `!=`, `key`, `!key`, `in`, `notin`), field selectors,
//!   `limit`/`continue` (pages report the first page's resourceVersion; a
//!   token older than the watch window is 410); watch (below); get; create
//!   (409 AlreadyExists; a resourceVersion in the body is a 500, as real);
//!   update (409 on a stale resourceVersion, 404 if missing); patch: merge,
//!   strategic (as merge; 415 for custom resources), JSON patch, and
//!   server-side apply; delete with uid/resourceVersion preconditions and
//!   finalizers (deletionTimestamp, removal when the last finalizer goes);
//!   `dryRun=All` everywhere. The status subresource changes only `.status`;
//!   main-resource writes keep the stored status. Errors are real `Status`
//!   bodies with the matching code.
//! - **Watches**: newline-delimited events from a bounded per-resource
//!   history ([`set_history_limit`](apiserver::FakeApiServer::set_history_limit));
//!   `resourceVersion` older than the window → one ERROR 410 "too old resource
//!   version" event and the end of the stream; unset or `0` → ADDED for the
//!   current state first; `sendInitialEvents` → ADDED for each object then a
//!   BOOKMARK annotated `k8s.io/initial-events-end`; `timeoutSeconds`; label
//!   and field selectors per watch, with selector transitions sent as
//!   ADDED/DELETED. Streams end when the client drops them.
//! - **Metadata-only requests** (`Accept: ...;as=PartialObjectMetadata[List]`):
//!   answers `meta.k8s.io/v1` `PartialObjectMetadata[List]`, also in watches.
//! - **Pod logs** from lines tests append
//!   ([`append_log`](apiserver::FakeApiServer::append_log)), with `container`,
//!   `follow` (until the container's status is terminated,
//!   [`end_logs`](apiserver::FakeApiServer::end_logs), or the client drops),
//!   `timestamps` (the kubelet's fixed 9-digit format), `sinceSeconds`,
//!   `sinceTime`, `limitBytes`, `tailLines`.
//! - **Cluster behaviour**: owner-reference garbage collection on demand,
//!   admission hooks ([`on_create`](apiserver::FakeApiServer::on_create),
//!   [`on_update`](apiserver::FakeApiServer::on_update)) that mutate or deny
//!   before storing, with the user of the client
//!   ([`client_as`](apiserver::FakeApiServer::client_as)).
//! - **Observability and faults**: every request recorded
//!   ([`apiserver::RequestRecord`]); faults ([`apiserver::FaultSpec`]) that
//!   answer an error, hang, or delay, optionally after applying the write;
//!   watch delivery paused globally or per client
//!   ([`apiserver::ClientHandle`]); watches closed and history compacted on
//!   demand.
//! - **Processes**: [`listen`](apiserver::FakeApiServer::listen) serves the
//!   same API over plain HTTP on a loopback port, with a kubeconfig for it
//!   ([`apiserver::HttpListener::kubeconfig`]), so a test can run a runyard
//!   binary against it.
//!
//! Test-side access ([`insert`](apiserver::FakeApiServer::insert),
//! [`modify`](apiserver::FakeApiServer::modify), typed
//! [`create_obj`](apiserver::FakeApiServer::create_obj) and friends) writes
//! like the API does (resourceVersion, watch events) but without admission
//! and keeping `.status`, which is how tests play the kubelet or the Job
//! controller. Closures given to `modify`/`update_obj` run under the
//! server's lock and must not call the server; admission hooks run outside
//! it and may.
//!
//! ## What it simplifies
//!
//! - **Server-side apply**: fields are owned per applier as leaf paths (lists
//!   are atomic, no `k:`/`v:` keys); conflicts are detected only between Apply
//!   managers (`force` takes fields over); fields an applier stops applying
//!   are removed unless another applier owns them. Non-apply writes record no
//!   `Update` managedFields entries. The applied object is deep-merged into
//!   the live one (maps by key, everything else replaced).
//! - **Strategic merge patch** is a JSON merge patch: lists are replaced, not
//!   merged by key, and `$patch` directives are not understood.
//! - **Consistency**: lists and gets always serve the latest state
//!   (`resourceVersion`/`resourceVersionMatch` on reads are ignored); pages of
//!   a paged list are not a snapshot (later pages see later writes, but report
//!   the first page's resourceVersion, so a watch from it replays them).
//! - **Watches** send no periodic bookmarks; a `resourceVersion` from the
//!   future starts at the present.
//! - **Validation**: names must be RFC 1123 subdomains; nothing else about
//!   objects is validated (no schemas, no immutable fields besides system
//!   metadata). Field selectors accept any dotted path.
//! - **Deletion**: immediate (no grace periods, pods included);
//!   `propagationPolicy` is ignored; garbage collection runs only when called
//!   and deletes objects none of whose owners (by uid) exist. No
//!   `deletecollection` (405).
//! - **Resources**: core v1 and events.k8s.io/v1 Events are separate stores
//!   (one resource, two views, in the real server). No discovery endpoints,
//!   namespaces, RBAC, or quota; pods get only `status.phase: Pending` on
//!   create.

pub mod apiserver;
pub mod lease;
pub mod memory;

pub use lease::MemoryLease;
pub use memory::{Checkpoint, MemoryCluster, Op, RecordedEvent};
