//! JSON objects only where the protocol says "object".
//!
//! A `#[derive(Deserialize)]` struct also reads a JSON array, its members taken by position
//! (serde's `visit_seq`): `["my-node","BE",{…}]` would pass for an enrollment body, and a signed
//! window payload `[1,"<node id>",…]` for a window. `docs/protocol.md` defines every body and
//! payload as a JSON object with named members, and stored windows are read back by name, so
//! these helpers refuse anything but an object: at the top ([`from_slice`]) and for nested
//! structs (`#[serde(deserialize_with = …)]` with [`object`], [`optional_object`],
//! [`objects`]).

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Parses `bytes` as one JSON object read into `T`, with nothing but whitespace after it.
///
/// # Errors
/// serde_json's error (with line and column) for input that is not JSON, is not an object
/// ("invalid type: sequence, expected a JSON object"), does not fit `T`, or has trailing data.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = object(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Deserializes `T` from a map (a JSON object) only, never from a sequence; for a struct field
/// (`#[serde(deserialize_with = "wattest_shared::json::object")]`).
///
/// # Errors
/// `D::Error` when the value is not an object or its members do not fit `T`.
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_map(ObjectVisitor(PhantomData))
}

/// [`object`] for an optional member: absent (with `#[serde(default)]`) or `null` is `None`.
///
/// # Errors
/// As [`object`].
pub fn optional_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct OptionVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for OptionVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            object(d).map(Some)
        }
    }
    deserializer.deserialize_option(OptionVisitor(PhantomData))
}

/// Deserializes a sequence (a JSON array) whose every element is an object read into `T`.
///
/// # Errors
/// `D::Error` when the value is not an array, or an element is not an object or does not fit
/// `T`.
pub fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    /// One element, read with [`object`].
    struct Element<T>(T);
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Element<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            object(d).map(Element)
        }
    }
    struct SeqVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of JSON objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // Capped: the length hint comes from the input.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(Element(item)) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(SeqVisitor(PhantomData))
}

/// Hands a map to `T`'s own `Deserialize` (which then sees only `visit_map`).
struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(deserialize_with = "objects")]
        items: Vec<Inner>,
        #[serde(default, deserialize_with = "optional_object")]
        extra: Option<Inner>,
    }

    /// Objects are read as before, at every level; arrays standing for a struct are refused at
    /// every level, with serde_json's position.
    #[test]
    fn only_objects_stand_for_structs() {
        let ok: Outer = from_slice(br#" {"name":"n","items":[{"a":1},{"a":2}]} "#).unwrap();
        assert_eq!(
            ok,
            Outer {
                name: "n".into(),
                items: vec![Inner { a: 1 }, Inner { a: 2 }],
                extra: None,
            }
        );
        let with_extra: Outer = from_slice(br#"{"name":"n","items":[],"extra":{"a":3}}"#).unwrap();
        assert_eq!(with_extra.extra, Some(Inner { a: 3 }));
        let null_extra: Outer = from_slice(br#"{"name":"n","items":[],"extra":null}"#).unwrap();
        assert_eq!(null_extra.extra, None);
        // What plain serde_json reads by position.
        assert_eq!(
            serde_json::from_slice::<Inner>(b"[1]").unwrap(),
            Inner { a: 1 }
        );
        for (bad, expected) in [
            (
                &br#"["n",[[1]]]"#[..],
                "invalid type: sequence, expected a JSON object",
            ),
            (
                br#"{"name":"n","items":[[1]]}"#,
                "invalid type: sequence, expected a JSON object",
            ),
            (
                br#"{"name":"n","items":[],"extra":[3]}"#,
                "invalid type: sequence, expected a JSON object",
            ),
            (
                br#"{"name":"n","items":{"a":1}}"#,
                "expected an array of JSON objects",
            ),
            (br#"{"name":"n","items":[]} {}"#, "trailing characters"),
            (br#""n""#, "expected a JSON object"),
            (br#"{"name":"n","items":[],"b":1}"#, "unknown field `b`"),
        ] {
            let err = from_slice::<Outer>(bad).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{}: {err}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
