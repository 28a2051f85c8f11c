//! The patch's JSON writer: compact JSON into a byte buffer, the same bytes
//! `serde_json::to_writer` writes (a property test compares them), but a
//! string that needs no escaping (every struct member's name and nearly every
//! value in a Pod) is checked eight bytes at a time and copied in one piece,
//! where serde_json looks every byte up in its escape table and writes the
//! quotes and the text as separate writes. A string that does need escaping
//! goes through serde_json itself, so escapes are written exactly as before.

use serde::ser::{self, Serialize};

pub type Error = serde_json::Error;

/// Appends `value` as compact JSON to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    value.serialize(Writer(out))
}

/// Appends the JSON string `s` (quoted, escaped where needed) to `out`.
pub fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), Error> {
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(out, s)
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    }
}

/// Whether `bytes` hold a byte JSON escapes: `"`, `\` or a control character
/// below 0x20 (serde_json escapes exactly these). Eight bytes at a time; the
/// last, partial word is read overlapping the one before it (or, below eight
/// bytes, as two overlapping halves), so no byte is looked at on its own
/// unless the string is shorter than four.
fn needs_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n < 4 {
        return bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    }
    if n < 8 {
        let (lo, hi) = (u32_at(bytes, 0), u32_at(bytes, n - 4));
        return word_needs_escape(u64::from(lo) | u64::from(hi) << 32);
    }
    let mut at = 0;
    while at + 8 <= n {
        if word_needs_escape(u64_at(bytes, at)) {
            return true;
        }
        at += 8;
    }
    at < n && word_needs_escape(u64_at(bytes, n - 8))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(word)
}

/// Whether one of the eight bytes of `x` needs escaping: the classic "has a
/// byte less than n" and "has a zero byte" tests, exact as a yes or no for the
/// whole word.
fn word_needs_escape(x: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const SPACE: u64 = u64::from_ne_bytes([0x20; 8]);
    const QUOTE: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASH: u64 = u64::from_ne_bytes([b'\\'; 8]);
    let below_space = x.wrapping_sub(SPACE) & !x;
    let q = x ^ QUOTE;
    let quote = q.wrapping_sub(ONES) & !q;
    let b = x ^ BACKSLASH;
    let backslash = b.wrapping_sub(ONES) & !b;
    (below_space | quote | backslash) & HIGH != 0
}

fn write_int<I: itoa::Integer>(out: &mut Vec<u8>, i: I) {
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

struct Writer<'a>(&'a mut Vec<u8>);

/// A sequence, map or struct being written; `variant` when it is the inside
/// of an enum variant (`{"Variant":...}`), closed with one more brace.
pub struct Compound<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    variant: bool,
}

impl<'a> Compound<'a> {
    fn open(out: &'a mut Vec<u8>, variant: Option<&str>, bracket: u8) -> Result<Self, Error> {
        if let Some(name) = variant {
            out.push(b'{');
            write_str(out, name)?;
            out.push(b':');
        }
        out.push(bracket);
        Ok(Compound {
            out,
            first: true,
            variant: variant.is_some(),
        })
    }

    fn comma(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.out.push(b',');
        }
    }

    fn close(self, bracket: u8) -> Result<(), Error> {
        self.out.push(bracket);
        if self.variant {
            self.out.push(b'}');
        }
        Ok(())
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.comma();
        value.serialize(Writer(self.out))
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        self.comma();
        write_str(self.out, key)?;
        self.out.push(b':');
        value.serialize(Writer(self.out))
    }
}

impl<'a> ser::Serializer for Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.0
            .extend_from_slice(if v { b"true".as_slice() } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        write_int(self.0, v);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        write_int(self.0, v);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        write_int(self.0, v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        write_int(self.0, v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        write_int(self.0, v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        write_int(self.0, v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        write_int(self.0, v);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        write_int(self.0, v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        write_int(self.0, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        write_int(self.0, v);
        Ok(())
    }
    // Floats (none in a Pod's typed fields; only in free-form JSON) as
    // serde_json writes them, non-finite ones as `null`.
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        serde_json::to_writer(self.0, &v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        serde_json::to_writer(self.0, &v)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_str(self.0, v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.0, v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        let mut seq = Compound::open(self.0, None, b'[')?;
        for b in v {
            seq.comma();
            write_int(seq.out, *b);
        }
        seq.close(b']')
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        write_str(self.0, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let mut map = Compound::open(self.0, None, b'{')?;
        map.field(variant, value)?;
        map.close(b'}')
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, Error> {
        Compound::open(self.0, None, b'[')
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, Error> {
        Compound::open(self.0, None, b'[')
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Error> {
        Compound::open(self.0, None, b'[')
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Error> {
        Compound::open(self.0, Some(variant), b'[')
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, Error> {
        Compound::open(self.0, None, b'{')
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Error> {
        Compound::open(self.0, None, b'{')
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Error> {
        Compound::open(self.0, Some(variant), b'{')
    }
}

/// The sequence-like compounds: elements after commas, closed with `]`.
macro_rules! seq_like {
    ($($trait:ident::$method:ident),* $(,)?) => {
        $(
            impl ser::$trait for Compound<'_> {
                type Ok = ();
                type Error = Error;
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                    self.element(value)
                }
                fn end(self) -> Result<(), Error> {
                    self.close(b']')
                }
            }
        )*
    };
}

seq_like! {
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.comma();
        key.serialize(KeyWriter(self.out))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.out.push(b':');
        value.serialize(Writer(self.out))
    }
    fn end(self) -> Result<(), Error> {
        self.close(b'}')
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.close(b'}')
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.close(b'}')
    }
}

/// A map key: a string, or what serde_json also writes as one (a number, a
/// bool, a char, a unit variant, a newtype around one of these).
struct KeyWriter<'a>(&'a mut Vec<u8>);

fn key_must_be_a_string() -> Error {
    ser::Error::custom("key must be a string")
}

macro_rules! quoted_int_keys {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<(), Error> {
                self.0.push(b'"');
                write_int(self.0, v);
                self.0.push(b'"');
                Ok(())
            }
        )*
    };
}

macro_rules! not_a_key {
    ($($method:ident($($ty:ty),*) -> $ret:ty),* $(,)?) => {
        $(
            fn $method(self $(, _: $ty)*) -> Result<$ret, Error> {
                Err(key_must_be_a_string())
            }
        )*
    };
}

impl ser::Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    quoted_int_keys! {
        serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64),
        serialize_i128(i128), serialize_u8(u8), serialize_u16(u16), serialize_u32(u32),
        serialize_u64(u64), serialize_u128(u128),
    }

    not_a_key! {
        serialize_f32(f32) -> (), serialize_f64(f64) -> (), serialize_bytes(&[u8]) -> (),
        serialize_none() -> (), serialize_unit() -> (),
        serialize_unit_struct(&'static str) -> (),
        serialize_seq(Option<usize>) -> Self::SerializeSeq,
        serialize_tuple(usize) -> Self::SerializeTuple,
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant,
        serialize_map(Option<usize>) -> Self::SerializeMap,
        serialize_struct(&'static str, usize) -> Self::SerializeStruct,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant,
    }

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.0.extend_from_slice(if v {
            b"\"true\"".as_slice()
        } else {
            b"\"false\""
        });
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_str(self.0, v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.0, v)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        write_str(self.0, variant)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    fn ours<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, v).expect("writes");
        out
    }

    fn same_as_serde_json<T: Serialize + ?Sized>(v: &T) {
        let theirs = serde_json::to_vec(v).expect("serde_json writes");
        assert_eq!(
            String::from_utf8_lossy(&ours(v)),
            String::from_utf8_lossy(&theirs)
        );
    }

    #[test]
    fn escape_check_finds_every_escaped_byte_at_every_offset() {
        for len in 0..20 {
            for at in 0..len {
                for byte in (0u8..0x20).chain([b'"', b'\\']) {
                    let mut s = vec![b'a'; len];
                    s[at] = byte;
                    assert!(needs_escape(&s), "{byte:#x} at {at} of {len}");
                }
                // Neighbours of the escaped bytes, and bytes of multi-byte
                // UTF-8, are not escaped.
                for byte in [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff] {
                    let mut s = vec![b'a'; len];
                    s[at] = byte;
                    assert!(!needs_escape(&s), "{byte:#x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn writes_what_serde_json_writes() {
        same_as_serde_json(&json!({
            "a": [1, -2, 3.5, true, false, null, "x\"y\\z\n\u{1}\u{7f}é"],
            "b/c": {"": [], "d": {}},
            "f": [f64::MAX, 0.1, 1e300],
        }));
        same_as_serde_json(&f64::NAN);
        same_as_serde_json(&'"');
        same_as_serde_json(&(1u8, "t", [2u64; 3]));
        same_as_serde_json(&Some(u128::MAX));
        same_as_serde_json(&BTreeMap::from([(1, "one"), (-2, "minus two")]));
        same_as_serde_json(&BTreeMap::from([(true, 1), (false, 0)]));
        same_as_serde_json(&serde_bytes_like(&[0, 1, 255]));
        #[derive(serde::Serialize)]
        enum E {
            Unit,
            New(u8),
            Tuple(u8, &'static str),
            Struct { a: u8, b: Option<u8> },
        }
        same_as_serde_json(&[
            E::Unit,
            E::New(1),
            E::Tuple(2, "x"),
            E::Struct { a: 3, b: None },
        ]);
    }

    /// Bytes serialised as bytes (not as a sequence of numbers).
    fn serde_bytes_like(b: &[u8]) -> impl Serialize + '_ {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bytes(b)
    }

    #[test]
    fn a_map_key_that_is_not_a_string_is_an_error() {
        let map = BTreeMap::from([(vec![1], 2)]);
        assert!(write(&mut Vec::new(), &map).is_err());
        assert!(serde_json::to_vec(&map).is_err());
    }

    #[test]
    fn a_pod_is_written_as_serde_json_writes_it() {
        let review: Value = serde_json::from_str(include_str!("../../benches/data/review-6k.json"))
            .expect("review");
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(review["request"]["object"].clone()).expect("a pod");
        same_as_serde_json(&pod);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[ -~\\x00-\\x1f\"\\\\é]{0,24}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_is_written_byte_for_byte_as_serde_json_writes_it(v in json_value()) {
            let theirs = serde_json::to_vec(&v).expect("serde_json writes");
            prop_assert_eq!(ours(&v), theirs);
        }

        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(s in any::<String>()) {
            prop_assert_eq!(ours(&s), serde_json::to_vec(&s).expect("writes"));
        }
    }
}
