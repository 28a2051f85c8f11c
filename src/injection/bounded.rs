//! The typed parse of a review's object with [`scan_object`]'s checks
//! made while it is parsed, instead of in a pass of their own before it.
//!
//! [`parse`] wraps serde_json's deserializer: every value the typed Pod or
//! Job reads goes through it, and it counts values, tallies the shape,
//! rejects duplicate keys and values of the wrong kind at the paths the shape
//! is read at, exactly as the scan does, and stops the parse at the first
//! value over a limit (so the memory of a review stays bounded by the same
//! numbers). `metadata.managedFields` is skipped unread, as the scan-then-parse
//! path skips it.
//!
//! It is a fast path, not a second definition: when it refuses an object
//! (any error, over a limit or not), the caller runs the scan and the plain
//! typed parse ([`scan_object`], [`Scanned::parse`]) for the exact error, so what is
//! accepted and every message stay those of the scan. The tests check that
//! both accept the same objects and build the same values.

#[cfg(test)]
use super::limits;
use super::limits::{At, Shape, MAX_OBJECT_VALUES, SCAN_LIMITS};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

/// Parses `raw` (a `kind` object, `Pod` or `Job`) into `T` under the scan's
/// limits. `None`: refused (not valid, or over a limit); the caller finds out
/// why with the scan.
pub fn parse<T: de::DeserializeOwned>(kind: &'static str, raw: &str) -> Option<T> {
    let mut d = serde_json::Deserializer::from_str(raw);
    let value = seed::<T>(kind).deserialize(&mut d).ok()?;
    d.end().ok()?;
    Some(value)
}

/// [`parse`] of a value inside a larger document (the object of an
/// AdmissionReview, read where it stands in the review): a seed that reads a
/// `kind` object (`Pod` or `Job`) into `T` under the scan's limits. An error
/// is a refusal, as `None` is for [`parse`].
pub fn seed<T>(kind: &'static str) -> Seed<T> {
    Seed {
        kind,
        value: PhantomData,
    }
}

/// See [`seed`].
pub struct Seed<T> {
    kind: &'static str,
    value: PhantomData<fn() -> T>,
}

impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for Seed<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        let budget = Budget {
            job: self.kind == "Job",
            values: Cell::new(0),
            shape: Cell::new(Shape::default()),
        };
        T::deserialize(Guard {
            d,
            b: &budget,
            at: At::Root,
        })
    }
}

/// What the parse has counted so far.
struct Budget {
    job: bool,
    values: Cell<u64>,
    shape: Cell<Shape>,
}

impl Budget {
    /// One more value (or map entry).
    fn count<E: de::Error>(&self) -> Result<(), E> {
        let n = self.values.get() + 1;
        self.values.set(n);
        if n > MAX_OBJECT_VALUES {
            return Err(E::custom("over the value limit"));
        }
        Ok(())
    }

    /// One more element of the list at `at`.
    fn element<E: de::Error>(&self, at: At) -> Result<(), E> {
        let mut shape = self.shape.get();
        let (count, max) = match at {
            At::Containers { init: false } => (&mut shape.containers, SCAN_LIMITS[0]),
            At::Containers { init: true } => (&mut shape.init_containers, SCAN_LIMITS[1]),
            At::Env => (&mut shape.env_entries, SCAN_LIMITS[2]),
            At::Volumes => (&mut shape.volumes, SCAN_LIMITS[3]),
            _ => return Ok(()),
        };
        *count += 1;
        let over = *count > u64::from(max);
        self.shape.set(shape);
        if over {
            return Err(E::custom("over a shape limit"));
        }
        Ok(())
    }
}

/// A deserializer whose every value is counted at `at`.
struct Guard<'b, D> {
    d: D,
    b: &'b Budget,
    at: At,
}

impl<'b, D> Guard<'b, D> {
    /// The inner deserializer, and `v` wrapped to count what it is given.
    fn split<V>(self, v: V) -> (D, Counted<'b, V>) {
        let counted = Counted {
            v,
            b: self.b,
            at: self.at,
        };
        (self.d, counted)
    }
}

/// The `Deserializer` methods of a wrapper (one with a `split` into the
/// inner deserializer and a wrapped visitor) that forward as they are.
macro_rules! forward_all {
    () => {
        /// Ignored values (unknown fields; keys nobody reads) are still
        /// walked, so they are counted and checked (and a key's text seen)
        /// as the scan walks them: only not built.
        fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            let (d, v) = self.split(visitor);
            d.deserialize_any(v)
        }

        fn is_human_readable(&self) -> bool {
            self.d.is_human_readable()
        }

        forward_all! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_seq(), deserialize_map(),
        deserialize_identifier(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        }
    };
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self $(, $arg: $ty)*, visitor: V) -> Result<V::Value, D::Error> {
                let (d, v) = self.split(visitor);
                d.$method($($arg,)* v)
            }
        )*
    };
}

impl<'de, 'b, D: Deserializer<'de>> Deserializer<'de> for Guard<'b, D> {
    type Error = D::Error;

    forward_all!();
}

/// A visitor that counts the value it is given, checks its kind at `at`, and
/// wraps what it nests into.
struct Counted<'b, V> {
    v: V,
    b: &'b Budget,
    at: At,
}

impl<V> Counted<'_, V> {
    /// A scalar: counted, and refused where a list or an object belongs.
    fn scalar<E: de::Error>(&self, unexpected: de::Unexpected<'_>) -> Result<(), E> {
        if self.at.is_list() || self.at.is_object() {
            return Err(E::invalid_type(unexpected, &"a list or an object"));
        }
        self.b.count()
    }
}

macro_rules! scalar {
    ($($method:ident($ty:ty) => $unexpected:expr),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.scalar::<E>(($unexpected)(&v))?;
                self.v.$method(v)
            }
        )*
    };
}

fn unexpected_other<T>(_: &T) -> de::Unexpected<'static> {
    de::Unexpected::Other("a scalar")
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Counted<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.v.expecting(f)
    }

    scalar! {
        visit_bool(bool) => |v: &bool| de::Unexpected::Bool(*v),
        visit_i8(i8) => unexpected_other,
        visit_i16(i16) => unexpected_other,
        visit_i32(i32) => unexpected_other,
        visit_i64(i64) => |v: &i64| de::Unexpected::Signed(*v),
        visit_i128(i128) => unexpected_other,
        visit_u8(u8) => unexpected_other,
        visit_u16(u16) => unexpected_other,
        visit_u32(u32) => unexpected_other,
        visit_u64(u64) => |v: &u64| de::Unexpected::Unsigned(*v),
        visit_u128(u128) => unexpected_other,
        visit_f32(f32) => unexpected_other,
        visit_f64(f64) => |v: &f64| de::Unexpected::Float(*v),
        visit_char(char) => unexpected_other,
        visit_string(String) => unexpected_other,
        visit_byte_buf(Vec<u8>) => unexpected_other,
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.scalar::<E>(de::Unexpected::Str(v))?;
        self.v.visit_str(v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.scalar::<E>(de::Unexpected::Str(v))?;
        self.v.visit_borrowed_str(v)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        self.scalar::<E>(de::Unexpected::Bytes(v))?;
        self.v.visit_bytes(v)
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        self.scalar::<E>(de::Unexpected::Bytes(v))?;
        self.v.visit_borrowed_bytes(v)
    }

    // `null` is a value wherever it is (the scan counts it and lets it be).
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.b.count()?;
        self.v.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.b.count()?;
        self.v.visit_unit()
    }

    // Not a value of its own: what it holds is counted.
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.v.visit_some(Guard {
            d,
            b: self.b,
            at: self.at,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.v.visit_newtype_struct(Guard {
            d,
            b: self.b,
            at: self.at,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if self.at.is_object() {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &"an object"));
        }
        self.b.count()?;
        let element = match self.at {
            At::Containers { .. } => At::Container,
            _ => At::Other,
        };
        self.v.visit_seq(Seq {
            seq,
            b: self.b,
            list: self.at,
            element,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        if self.at.is_list() {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &"a list"));
        }
        self.b.count()?;
        self.v.visit_map(Map {
            map,
            b: self.b,
            at: self.at,
            small: [""; SMALL_MAP],
            len: 0,
            large: std::collections::HashSet::new(),
            next: At::Other,
            managed: false,
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        // serde_json only offers enums to `deserialize_enum`, which no
        // Kubernetes type uses; were one to, its content is not counted, so
        // it is refused here (and the scan path decides).
        let _ = data;
        Err(de::Error::custom(
            "enums are not parsed on the bounded path",
        ))
    }
}

/// A list whose elements are counted (and tallied when the shape counts them).
struct Seq<'b, A> {
    seq: A,
    b: &'b Budget,
    list: At,
    element: At,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        // Counted as it starts (the seed only runs for an element that is
        // there), so that the element is returned as it was read: checked
        // after, an element (a `Volume` is over 3 KB) is copied once more.
        self.seq.next_element_seed(Element {
            list: self.list,
            seeded: Seeded {
                seed,
                b: self.b,
                at: self.element,
            },
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

/// A list element's seed: the element is counted in the list at `list`,
/// then read as `seeded` reads it.
struct Element<'b, T> {
    list: At,
    seeded: Seeded<'b, T>,
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Element<'_, T> {
    type Value = T::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        self.seeded.b.element(self.list)?;
        self.seeded.deserialize(d)
    }
}

/// A seed whose value is read through a [`Guard`] at `at`.
struct Seeded<'b, T> {
    seed: T,
    b: &'b Budget,
    at: At,
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Seeded<'_, T> {
    type Value = T::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        self.seed.deserialize(Guard {
            d,
            b: self.b,
            at: self.at,
        })
    }
}

/// Maps with more keys than this are checked for duplicates with a set.
const SMALL_MAP: usize = 16;

/// An object whose keys are checked for duplicates and whose entries are
/// counted, each value read at the path its key leads to.
struct Map<'b, 'de, A> {
    map: A,
    b: &'b Budget,
    at: At,
    small: [&'de str; SMALL_MAP],
    len: usize,
    large: std::collections::HashSet<Cow<'de, str>>,
    /// Where the value of the key just read is.
    next: At,
    /// The key just read is `metadata.managedFields`.
    managed: bool,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<'_, 'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut slot = None;
        let Some(key) = self.map.next_key_seed(KeySeed {
            seed,
            slot: &mut slot,
        })?
        else {
            return Ok(None);
        };
        let Some(name) = slot else {
            return Err(de::Error::custom("a key that is not a string"));
        };
        self.next = self.at.member(&name, self.b.job);
        self.managed = self.at == At::Metadata && name == "managedFields";
        // Small maps (nearly all) are searched linearly in a buffer on the
        // stack; an escaped key, or more than SMALL_MAP keys (labels,
        // annotations, large unknown maps), and a set takes over.
        let small = &mut self.small[..self.len];
        match name {
            Cow::Borrowed(k) if self.large.is_empty() && small.len() < SMALL_MAP => {
                if small.contains(&k) {
                    return Err(de::Error::custom("duplicate key"));
                }
                self.small[self.len] = k;
                self.len += 1;
            }
            name => {
                self.large.extend(small.iter().map(|k| Cow::Borrowed(*k)));
                self.len = 0;
                if !self.large.insert(name) {
                    return Err(de::Error::custom("duplicate key"));
                }
            }
        }
        Ok(Some(key))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.b.count()?;
        if std::mem::take(&mut self.managed) {
            return self.map.next_value_seed(Managed { seed, b: self.b });
        }
        self.map.next_value_seed(Seeded {
            seed,
            b: self.b,
            at: self.next,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// `metadata.managedFields`: a list is skipped unread and read as absent (as
/// the scan path parses it as `null`); `null` is absent; anything else is
/// refused (the scan path gives the typed parse's error).
struct Managed<'b, T> {
    seed: T,
    b: &'b Budget,
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Managed<'_, T> {
    type Value = T::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        struct ListOrNull;
        impl<'de> Visitor<'de> for ListOrNull {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of managed fields")
            }
            fn visit_unit<E: de::Error>(self) -> Result<(), E> {
                Ok(())
            }
            fn visit_none<E: de::Error>(self) -> Result<(), E> {
                Ok(())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(())
            }
        }
        // Counted once, as the scan counts it.
        self.b.count::<D::Error>()?;
        d.deserialize_any(ListOrNull)?;
        self.seed
            .deserialize(de::value::UnitDeserializer::<D::Error>::new())
    }
}

/// A map key's seed that also keeps the key's text.
struct KeySeed<'s, 'de, K> {
    seed: K,
    slot: &'s mut Option<Cow<'de, str>>,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, 'de, K> {
    type Value = K::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K::Value, D::Error> {
        self.seed.deserialize(KeyDe { d, slot: self.slot })
    }
}

/// The deserializer of a key: whatever the key's type asks for, its text is
/// seen on the way.
struct KeyDe<'s, 'de, D> {
    d: D,
    slot: &'s mut Option<Cow<'de, str>>,
}

impl<'s, 'de, D> KeyDe<'s, 'de, D> {
    /// The inner deserializer, and `v` wrapped to keep the key's text.
    fn split<V>(self, v: V) -> (D, KeyVisitor<'s, 'de, V>) {
        (self.d, KeyVisitor { v, slot: self.slot })
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KeyDe<'_, 'de, D> {
    type Error = D::Error;

    forward_all!();
}

/// Keeps a key's text, then hands it on.
struct KeyVisitor<'s, 'de, V> {
    v: V,
    slot: &'s mut Option<Cow<'de, str>>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for KeyVisitor<'_, 'de, V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.v.expecting(f)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        *self.slot = Some(Cow::Borrowed(v));
        self.v.visit_borrowed_str(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        *self.slot = Some(Cow::Owned(v.to_string()));
        self.v.visit_str(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        *self.slot = Some(Cow::Owned(v.clone()));
        self.v.visit_string(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use proptest::prelude::*;

    /// The scan-then-parse path the bounded parse stands in for.
    fn scanned<T: de::DeserializeOwned>(kind: &'static str, raw: &str) -> Option<T> {
        limits::scan_object(kind, raw).ok()?.parse(raw).ok()
    }

    fn same_as_scan(raw: &str) {
        let pod: Option<Pod> = parse("Pod", raw);
        assert_eq!(pod, scanned::<Pod>("Pod", raw), "Pod {raw:.300}");
        let job: Option<Job> = parse("Job", raw);
        assert_eq!(job, scanned::<Job>("Job", raw), "Job {raw:.300}");
    }

    #[test]
    fn the_captured_reviews_parse_as_the_scan_path_parses_them() {
        for body in [
            include_str!("../../benches/data/review-6k.json"),
            include_str!("../../benches/data/review-16k.json"),
        ] {
            let v: serde_json::Value = serde_json::from_str(body).expect("json");
            let raw = v["request"]["object"].to_string();
            let pod: Pod = parse("Pod", &raw).expect("accepted");
            assert!(pod.metadata.managed_fields.is_none());
            assert!(pod.spec.is_some());
            same_as_scan(&raw);
        }
    }

    #[test]
    fn what_the_scan_refuses_is_refused() {
        let many = |n: usize, item: &str| vec![item; n].join(",");
        let cases = [
            // duplicate keys, in a struct, in a label map, in an unknown field
            r#"{"metadata":{"name":"a","name":"b"}}"#.to_string(),
            r#"{"metadata":{"labels":{"a":"1","a":"2"}}}"#.to_string(),
            r#"{"x":{"a":1,"a":2}}"#.to_string(),
            r#"{"metadata":{"labels":{"a\u0062":"1","ab":"2"}}}"#.to_string(),
            // over the shape limits, within a valid object
            format!(r#"{{"spec":{{"containers":[{}]}}}}"#, many(501, "{}")),
            format!(
                r#"{{"spec":{{"volumes":[{}]}}}}"#,
                many(2001, r#"{"name":"v"}"#)
            ),
            format!(r#"{{"spec":{{"tolerations":[{}]}}}}"#, many(100_001, "{}")),
            // values in an unknown field count too
            format!(r#"{{"x":[{}]}}"#, many(100_001, "1")),
            // the wrong kind of value where the shape is read
            r#"{"spec":{"containers":{}}}"#.to_string(),
            r#"{"spec":[]}"#.to_string(),
            // managed fields that are neither a list nor null
            r#"{"metadata":{"managedFields":{}}}"#.to_string(),
            r#"[1,"#.to_string(),
            r#"{} {}"#.to_string(),
        ];
        for raw in &cases {
            same_as_scan(raw);
            assert!(parse::<Pod>("Pod", raw).is_none(), "{raw:.200}");
        }
        // Just within the limits: accepted, as the scan accepts it.
        let within = format!(r#"{{"spec":{{"containers":[{}]}}}}"#, many(500, "{}"));
        assert!(parse::<Pod>("Pod", &within).is_some());
        same_as_scan(&within);
        // A larger map: still checked for duplicates.
        let labels: Vec<String> = (0..40).map(|i| format!(r#""k{i}":"v""#)).collect();
        let mut dup = labels.clone();
        dup.push(r#""k3":"w""#.to_string());
        for keys in [labels, dup] {
            same_as_scan(&format!(
                r#"{{"metadata":{{"labels":{{{}}}}}}}"#,
                keys.join(",")
            ));
        }
        // Managed fields skipped unread, whatever their entries hold.
        let raw = r#"{"metadata":{"name":"p","managedFields":[{"time":"never","x":[1,2]}]}}"#;
        let pod: Pod = parse("Pod", raw).expect("accepted");
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
        same_as_scan(raw);
    }

    /// JSON texts around a run object: its pieces, shuffled and repeated.
    fn arb_object() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("1".to_string()),
            Just("true".to_string()),
            Just(r#""s""#.to_string()),
            Just("{}".to_string()),
            Just("[]".to_string()),
        ];
        let key = prop_oneof![
            Just("metadata"),
            Just("spec"),
            Just("template"),
            Just("containers"),
            Just("initContainers"),
            Just("ephemeralContainers"),
            Just("volumes"),
            Just("env"),
            Just("name"),
            Just("labels"),
            Just("managedFields"),
            Just("image"),
            Just("x"),
        ];
        leaf.prop_recursive(6, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((key.clone(), inner), 0..5).prop_map(|v| {
                    let members: Vec<String> = v
                        .into_iter()
                        .map(|(k, v)| format!(r#""{k}":{v}"#))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn accepts_and_builds_what_the_scan_path_does(raw in arb_object()) {
            let pod: Option<Pod> = parse("Pod", &raw);
            prop_assert_eq!(pod, scanned::<Pod>("Pod", &raw));
            let job: Option<Job> = parse("Job", &raw);
            prop_assert_eq!(job, scanned::<Job>("Job", &raw));
        }
    }
}
