//! One process that does one thing many times, for `perf record` and
//! `valgrind --tool=callgrind` (BENCHMARKS.md's per-phase instruction table):
//!
//! ```sh
//! cargo build --release --example profile_once
//! valgrind --tool=callgrind target/release/examples/profile_once [MODE] [BODY] [N]
//! ```
//!
//! MODE is `review` (the webhook's `review::handle`, the default), `value`
//! (the floor: the review body into a `serde_json::Value`), `typed` (the floor:
//! the envelope plus the object into a typed Pod, as the baseline and the old
//! handler read it), `lean` (the floor of the design step BENCHMARKS.md names:
//! the envelope plus only the pod fields the engine reads, borrowed from the
//! body, every other member skipped unread; see [`lean`]; `lean-summary`
//! prints what it read, once), `response` (print the review's response once)
//! or `none` (setup only: subtract it). BODY defaults to
//! `benches/data/review-6k.json`, N to 60,000 (use ~1,000 under valgrind;
//! `benches/cachegrind.sh` does, for cache misses).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use k8s_openapi::api::core::v1::Pod;
use std::hint::black_box;

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    request: Request<'a>,
}

#[derive(serde::Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    object: &'a serde_json::value::RawValue,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("review", String::as_str);
    let body = args
        .get(2)
        .map_or("benches/data/review-6k.json", String::as_str);
    let n: usize = args.get(3).map_or(Ok(60_000), |s| s.parse())?;
    let pools = runyard::injection::load_pool_file("benches/data/pools.yaml".as_ref())?;
    let body = std::fs::read(body)?;
    let inj = runyard::injection::Injector::new(runyard::injection::ClusterFacts::default());
    for _ in 0..n {
        match mode {
            "review" => {
                black_box(runyard::webhook::review::handle(
                    black_box(&body),
                    &inj,
                    &pools,
                )?);
            }
            "value" => {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(
                    &body,
                ))?);
            }
            "typed" => {
                let envelope: Envelope<'_> = serde_json::from_slice(black_box(&body))?;
                black_box(serde_json::from_str::<Pod>(envelope.request.object.get())?);
            }
            "lean" => {
                let review: lean::Review<'_> = serde_json::from_slice(black_box(&body))?;
                black_box(review);
            }
            "lean-summary" => {
                let review: lean::Review<'_> = serde_json::from_slice(&body)?;
                println!("{}", review.summary());
                return Ok(());
            }
            "response" => {
                let handled = runyard::webhook::review::handle(&body, &inj, &pools)?;
                println!("{}", String::from_utf8_lossy(&handled.body));
                return Ok(());
            }
            "none" => {}
            other => {
                anyhow::bail!(
                    "unknown mode {other:?}: review, value, typed, lean, lean-summary, response or none"
                )
            }
        }
    }
    Ok(())
}

/// What the engine reads of a Pod review, and nothing else: the model a
/// partial parse would fill (BENCHMARKS.md, "The floor of a partial parse").
/// Strings are borrowed from the body where they have no escapes (`Cow`);
/// the members the engine only copies or hands to the policy check whole
/// (resources, security contexts, value sources) are kept as the raw JSON
/// they are (`RawValue`, a borrowed slice); every member not named here is
/// skipped unread. Bench code: it measures what such a parse costs, it is
/// not the product's model.
// Most fields are read by nothing but `summary`: what is measured is filling them.
#[allow(dead_code)]
mod lean {
    use serde::Deserialize;
    use serde_json::value::RawValue;
    use std::borrow::Cow;

    type Raw<'a> = &'a RawValue;

    impl Review<'_> {
        /// What was read, counted: to check that the model reads the body.
        pub fn summary(&self) -> String {
            let request = self.request.as_ref();
            let pod = request.and_then(|r| r.object.as_ref());
            let meta = pod.and_then(|p| p.metadata.as_ref());
            let spec = pod.and_then(|p| p.spec.as_ref());
            let containers = || {
                spec.into_iter().flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(&s.init_containers)
                        .chain(&s.ephemeral_containers)
                })
            };
            format!(
                "operation={} pod={} labels={} containers={} env={} env_values={} mounts={} volumes={} raw_members={}",
                request
                    .and_then(|r| r.operation.as_ref())
                    .map_or("-", |o| &o.0),
                meta.and_then(|m| m.generate_name.as_ref().or(m.name.as_ref()))
                    .map_or("-", |n| &n.0),
                meta.map_or(0, |m| m.labels.len()),
                containers().count(),
                containers().map(|c| c.env.len()).sum::<usize>(),
                containers()
                    .flat_map(|c| &c.env)
                    .filter(|e| e.value.is_some() || e.value_from.is_some())
                    .count(),
                containers().map(|c| c.volume_mounts.len()).sum::<usize>(),
                spec.map_or(0, |s| s.volumes.len()),
                containers()
                    .map(|c| usize::from(c.resources.is_some()) + usize::from(c.security_context.is_some()))
                    .sum::<usize>()
                    + spec.map_or(0, |s| usize::from(s.security_context.is_some())),
            )
        }
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Review<'a> {
        #[serde(borrow)]
        pub api_version: Option<Str<'a>>,
        #[serde(borrow)]
        pub kind: Option<Str<'a>>,
        #[serde(borrow)]
        pub request: Option<Request<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Request<'a> {
        #[serde(borrow)]
        pub uid: Option<Str<'a>>,
        #[serde(borrow)]
        pub kind: Option<Gvk<'a>>,
        #[serde(borrow)]
        pub operation: Option<Str<'a>>,
        #[serde(borrow)]
        pub sub_resource: Option<Str<'a>>,
        #[serde(borrow)]
        pub namespace: Option<Str<'a>>,
        #[serde(borrow)]
        pub user_info: Option<UserInfo<'a>>,
        pub dry_run: Option<bool>,
        #[serde(borrow)]
        pub object: Option<Pod<'a>>,
        #[serde(borrow)]
        pub old_object: Option<Pod<'a>>,
    }

    #[derive(Deserialize)]
    pub struct Gvk<'a> {
        #[serde(borrow)]
        pub group: Option<Str<'a>>,
        #[serde(borrow)]
        pub version: Option<Str<'a>>,
        #[serde(borrow)]
        pub kind: Option<Str<'a>>,
    }

    #[derive(Deserialize)]
    pub struct UserInfo<'a> {
        #[serde(borrow)]
        pub username: Option<Str<'a>>,
    }

    #[derive(Deserialize)]
    pub struct Pod<'a> {
        #[serde(borrow)]
        pub metadata: Option<Meta<'a>>,
        #[serde(borrow)]
        pub spec: Option<Spec<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Meta<'a> {
        #[serde(borrow)]
        pub name: Option<Str<'a>>,
        #[serde(borrow)]
        pub generate_name: Option<Str<'a>>,
        #[serde(borrow)]
        pub namespace: Option<Str<'a>>,
        #[serde(borrow, default, deserialize_with = "pairs")]
        pub labels: Vec<(Str<'a>, Str<'a>)>,
        #[serde(borrow, default, deserialize_with = "pairs")]
        pub annotations: Vec<(Str<'a>, Str<'a>)>,
        #[serde(borrow, default)]
        pub owner_references: Vec<Owner<'a>>,
    }

    #[derive(Deserialize)]
    pub struct Owner<'a> {
        #[serde(borrow)]
        pub kind: Option<Str<'a>>,
        #[serde(borrow)]
        pub name: Option<Str<'a>>,
        pub controller: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Spec<'a> {
        #[serde(borrow, default)]
        pub containers: Vec<Container<'a>>,
        #[serde(borrow, default)]
        pub init_containers: Vec<Container<'a>>,
        #[serde(borrow, default)]
        pub ephemeral_containers: Vec<Container<'a>>,
        #[serde(borrow, default)]
        pub volumes: Vec<Volume<'a>>,
        #[serde(borrow)]
        pub security_context: Option<Raw<'a>>,
        #[serde(borrow, default)]
        pub scheduling_gates: Vec<Named<'a>>,
        pub host_network: Option<bool>,
        #[serde(rename = "hostPID")]
        pub host_pid: Option<bool>,
        #[serde(rename = "hostIPC")]
        pub host_ipc: Option<bool>,
        #[serde(borrow)]
        pub node_name: Option<Str<'a>>,
        #[serde(borrow)]
        pub restart_policy: Option<Str<'a>>,
        pub active_deadline_seconds: Option<i64>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Container<'a> {
        #[serde(borrow)]
        pub name: Str<'a>,
        #[serde(borrow)]
        pub image: Option<Str<'a>>,
        #[serde(borrow, default)]
        pub command: Vec<Str<'a>>,
        #[serde(borrow, default)]
        pub env: Vec<Env<'a>>,
        #[serde(borrow)]
        pub env_from: Option<Raw<'a>>,
        #[serde(borrow, default)]
        pub volume_mounts: Vec<Mount<'a>>,
        #[serde(borrow)]
        pub resources: Option<Raw<'a>>,
        #[serde(borrow)]
        pub security_context: Option<Raw<'a>>,
        #[serde(borrow)]
        pub restart_policy: Option<Str<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Env<'a> {
        #[serde(borrow)]
        pub name: Str<'a>,
        #[serde(borrow)]
        pub value: Option<Str<'a>>,
        #[serde(borrow)]
        pub value_from: Option<Raw<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Mount<'a> {
        #[serde(borrow)]
        pub name: Str<'a>,
        #[serde(borrow)]
        pub mount_path: Str<'a>,
        #[serde(borrow)]
        pub sub_path: Option<Str<'a>>,
        pub read_only: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Volume<'a> {
        #[serde(borrow)]
        pub name: Str<'a>,
        #[serde(borrow)]
        pub host_path: Option<Raw<'a>>,
    }

    #[derive(Deserialize)]
    pub struct Named<'a> {
        #[serde(borrow)]
        pub name: Str<'a>,
    }

    /// A string, borrowed from the body when it has no escapes.
    pub struct Str<'a>(pub Cow<'a, str>);

    impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Str<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Str<'de>, E> {
                    Ok(Str(Cow::Borrowed(s)))
                }
                fn visit_str<E>(self, s: &str) -> Result<Str<'de>, E> {
                    Ok(Str(Cow::Owned(s.to_string())))
                }
            }
            d.deserialize_str(V).map(|s| Str(s.0))
        }
    }

    /// A JSON object of strings, its members in order.
    fn pairs<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(Str<'de>, Str<'de>)>, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = Vec<(Str<'de>, Str<'de>)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = map.next_entry::<Str<'de>, Str<'de>>()? {
                    out.push(pair);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Pairs)
    }
}
