//! Runyard's own containers as JSON, kept from one patch to the next.
//!
//! The init and launcher containers runyard adds to a run pod are the same
//! from one run of a pool to the next but for the run id, and writing them
//! was the largest single part of writing a patch (~23 k instructions of the
//! 84 k for the 6 KB Pod review). A container named as one of runyard's is
//! compared with the ones kept, its run id variable's value left out of the
//! comparison; when one is equal, its JSON is copied and the run id written
//! in. The JSON kept is the writer's own output for an equal container, so the
//! bytes are the same as writing the container (a property test compares
//! them). Comparing costs a tenth of writing.
//!
//! Kept per thread (the webhook's reviews run on a few runtime threads), at
//! most [`CAPACITY`] containers each: a few pools' init and launcher
//! containers. Anything else, or a container whose run id cannot be placed
//! unambiguously, is written as it is.

use super::json::{self, Error};
use crate::vocab::{env, INIT_CONTAINER, LAUNCHER_CONTAINER};
use k8s_openapi::api::core::v1::Container;
use std::cell::RefCell;

/// Containers kept per thread.
pub const CAPACITY: usize = 8;

struct Kept {
    /// The container, its run id variable's value (if any) left out.
    container: Container,
    /// Its JSON.
    json: Vec<u8>,
    /// Where `,"value":"<run id>"` goes in `json`: before the closing brace
    /// of the run id variable, `{"name":"RUNYARD_RUN_ID"}`. `None` when the
    /// container has no such variable.
    run_id_at: Option<usize>,
}

thread_local! {
    static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

/// Appends `c` as JSON to `out`: the same bytes as `json::write(out, c)`.
/// `c` is left as it was (its run id is taken out for the comparison and put
/// back).
pub fn write_container(out: &mut Vec<u8>, c: &mut Container) -> Result<(), Error> {
    if c.name != INIT_CONTAINER && c.name != LAUNCHER_CONTAINER {
        return json::write(out, c);
    }
    let Some(var) = run_id_var(c) else {
        return json::write(out, c);
    };
    let slot = var.and_then(|i| c.env.as_mut().and_then(|vars| vars.get_mut(i)));
    let value = slot.and_then(|v| v.value.take());
    let written = KEPT.with(|kept| {
        write_kept(
            &mut kept.borrow_mut(),
            out,
            c,
            var.is_some(),
            value.as_deref(),
        )
    });
    if let Some(value) = value {
        if let Some(v) = var.and_then(|i| c.env.as_mut().and_then(|vars| vars.get_mut(i))) {
            v.value = Some(value);
        }
    }
    match written {
        Ok(true) => Ok(()),
        Ok(false) => json::write(out, c),
        Err(e) => Err(e),
    }
}

/// The index of `c`'s run id variable (`Some(None)`: it has none), or `None`
/// when its value cannot be left out alone: the name twice, or a `valueFrom`.
fn run_id_var(c: &Container) -> Option<Option<usize>> {
    let mut found = None;
    for (i, v) in c.env.iter().flatten().enumerate() {
        if v.name == env::RUN_ID {
            if found.is_some() || v.value_from.is_some() {
                return None;
            }
            found = Some(i);
        }
    }
    Some(found)
}

/// Writes `c` (its run id `value` taken out; `has_var`: it has a run id
/// variable) from a kept equal container,
/// keeping it first if there is none. `false`: not written (its run id's
/// place in the JSON is ambiguous), to be written as it is.
fn write_kept(
    kept: &mut Vec<Kept>,
    out: &mut Vec<u8>,
    c: &Container,
    has_var: bool,
    value: Option<&str>,
) -> Result<bool, Error> {
    if let Some(k) = kept
        .iter()
        .find(|k| k.container.name == c.name && k.container == *c)
    {
        return k.write(out, value);
    }
    let mut json = Vec::with_capacity(2048);
    json::write(&mut json, c)?;
    let run_id_at = if has_var {
        match run_id_place(&json)? {
            Some(at) => Some(at),
            None => return Ok(false),
        }
    } else {
        None
    };
    let new = Kept {
        container: c.clone(),
        json,
        run_id_at,
    };
    let written = new.write(out, value);
    if kept.len() == CAPACITY {
        kept.remove(0);
    }
    kept.push(new);
    written
}

/// The place of the run id's value in a container's JSON: before the closing
/// brace of `{"name":"RUNYARD_RUN_ID"}`, when that text occurs exactly once.
/// It is the run id variable's (a string's quotes are escaped, so it can only
/// be an object; any other object spelt so, e.g. a `configMapRef` of that
/// name, makes it ambiguous).
fn run_id_place(json: &[u8]) -> Result<Option<usize>, Error> {
    let mut pattern = b"{\"name\":".to_vec();
    json::write_str(&mut pattern, env::RUN_ID)?;
    pattern.push(b'}');
    let mut found = json
        .windows(pattern.len())
        .enumerate()
        .filter(|(_, w)| *w == pattern.as_slice())
        .map(|(i, _)| i + pattern.len() - 1);
    Ok(match (found.next(), found.next()) {
        (Some(at), None) => Some(at),
        _ => None,
    })
}

impl Kept {
    fn write(&self, out: &mut Vec<u8>, value: Option<&str>) -> Result<bool, Error> {
        match (self.run_id_at, value) {
            (_, None) => out.extend_from_slice(&self.json),
            (Some(at), Some(value)) => {
                let (head, tail) = self.json.split_at(at);
                out.extend_from_slice(head);
                out.extend_from_slice(b",\"value\":");
                json::write_str(out, value)?;
                out.extend_from_slice(tail);
            }
            (None, Some(_)) => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMapEnvSource, EnvFromSource, EnvVar, EnvVarSource};
    use proptest::prelude::*;

    fn var(name: &str, value: Option<&str>) -> EnvVar {
        EnvVar {
            name: name.to_string(),
            value: value.map(str::to_string),
            ..Default::default()
        }
    }

    fn written(c: &mut Container) -> Vec<u8> {
        let before = c.clone();
        let mut out = b"[".to_vec();
        write_container(&mut out, c).unwrap();
        assert_eq!(*c, before, "the container is left as it was");
        out
    }

    fn expected(c: &Container) -> Vec<u8> {
        let mut out = b"[".to_vec();
        json::write(&mut out, c).unwrap();
        out
    }

    fn containers() -> impl Strategy<Value = Container> {
        let names = prop_oneof![
            Just(INIT_CONTAINER.to_string()),
            Just(LAUNCHER_CONTAINER.to_string()),
            Just("build".to_string()),
        ];
        // Few distinct values, so that equal containers (kept ones found
        // again) come up often; any string for the run id and other values.
        let vars = prop::collection::vec(
            (
                prop_oneof![
                    3 => Just(env::RUN_ID.to_string()),
                    1 => Just(env::POOL.to_string()),
                    1 => "[A-Z_]{1,6}",
                ],
                prop::option::of(prop_oneof![Just("01abc".to_string()), any::<String>()]),
                any::<bool>(),
            ),
            0..4,
        );
        let images = prop_oneof![Just("runyard:1".to_string()), Just("runyard:2".to_string())];
        let config_maps = prop::option::of(prop_oneof![
            Just(env::RUN_ID.to_string()),
            Just("settings".to_string()),
        ]);
        (names, prop::option::of(vars), images, config_maps).prop_map(
            |(name, vars, image, config_map)| Container {
                name,
                image: Some(image),
                env: vars.map(|vars| {
                    vars.into_iter()
                        .map(|(name, value, from_field)| EnvVar {
                            name,
                            value: if from_field { None } else { value },
                            value_from: from_field.then(|| EnvVarSource {
                                field_ref: Some(Default::default()),
                                ..Default::default()
                            }),
                        })
                        .collect()
                }),
                env_from: config_map.map(|name| {
                    vec![EnvFromSource {
                        config_map_ref: Some(ConfigMapEnvSource {
                            name,
                            optional: None,
                        }),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
        )
    }

    proptest! {
        // Whatever was kept before, a container is written as the writer
        // writes it, and left as it was.
        #[test]
        fn kept_containers_are_written_as_the_writer_writes_them(
            seq in prop::collection::vec(containers(), 1..24),
        ) {
            for mut c in seq {
                let want = expected(&c);
                let got = written(&mut c);
                prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
            }
        }
    }

    #[test]
    fn a_kept_container_is_found_again_with_another_run_id() {
        let container = |run_id: &str| Container {
            name: INIT_CONTAINER.to_string(),
            image: Some("runyard:memo-test".to_string()),
            env: Some(vec![
                var(env::POOL, Some("builders")),
                var(env::RUN_ID, Some(run_id)),
                var(env::WORKSPACE, Some("/ws")),
            ]),
            ..Default::default()
        };
        let mut first = container("01first");
        assert_eq!(written(&mut first), expected(&first));
        let kept = |image: &str| {
            KEPT.with(|k| {
                k.borrow()
                    .iter()
                    .filter(|k| k.container.image.as_deref() == Some(image))
                    .count()
            })
        };
        assert_eq!(kept("runyard:memo-test"), 1);
        // Another run id, one that needs escaping too: the same kept entry.
        for run_id in ["01second", "quote\"and\\slash\n"] {
            let mut c = container(run_id);
            assert_eq!(written(&mut c), expected(&c));
        }
        assert_eq!(kept("runyard:memo-test"), 1, "found again, not kept twice");
        // Anything else that differs is another container.
        let mut other = container("01third");
        other.image = Some("runyard:memo-test-2".to_string());
        assert_eq!(written(&mut other), expected(&other));
        assert_eq!(kept("runyard:memo-test-2"), 1);
    }

    #[test]
    fn an_ambiguous_run_id_place_is_written_as_it_is() {
        let mut c = Container {
            name: LAUNCHER_CONTAINER.to_string(),
            image: Some("runyard:ambiguous".to_string()),
            env: Some(vec![var(env::RUN_ID, Some("01run"))]),
            // Spelt like the run id variable without its value.
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: env::RUN_ID.to_string(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(written(&mut c), expected(&c));
        let kept = KEPT.with(|k| {
            k.borrow()
                .iter()
                .any(|k| k.container.image.as_deref() == Some("runyard:ambiguous"))
        });
        assert!(!kept, "not kept: its run id has no one place");
    }

    #[test]
    fn at_most_capacity_containers_are_kept() {
        for i in 0..CAPACITY + 3 {
            let mut c = Container {
                name: INIT_CONTAINER.to_string(),
                image: Some(format!("runyard:capacity-{i}")),
                ..Default::default()
            };
            assert_eq!(written(&mut c), expected(&c));
        }
        assert_eq!(KEPT.with(|k| k.borrow().len()), CAPACITY);
    }
}
