//! Borrowing deserialisation helpers.
//!
//! serde borrows a `Cow<'a, str>` field only when the field is exactly that type and marked
//! `#[serde(borrow)]`; inside an `Option` or a `Vec` it always allocates. These helpers borrow
//! from the input whenever the JSON string has no escapes, so decoding a typical event makes no
//! allocation per string field.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Visitor};

/// A string that borrows from the input when it can.
pub(crate) struct CowStr<'a>(pub(crate) Cow<'a, str>);

struct CowStrVisitor;

impl<'de> Visitor<'de> for CowStrVisitor {
    type Value = CowStr<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(CowStr(Cow::Borrowed(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(CowStr(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(CowStr(Cow::Owned(v)))
    }
}

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CowStrVisitor)
    }
}

/// `Option<Cow<str>>` that borrows; `null` and a missing field (with `#[serde(default)]`) are `None`.
pub(crate) fn opt_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(Option::<CowStr<'de>>::deserialize(d)?.map(|s| s.0))
}

/// `Option<Vec<Cow<str>>>` whose items borrow.
pub(crate) fn opt_vec_str<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Cow<'de, str>>>, D::Error> {
    Ok(Option::<Vec<CowStr<'de>>>::deserialize(d)?.map(|v| v.into_iter().map(|s| s.0).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(default, borrow, deserialize_with = "opt_str")]
        a: Option<Cow<'a, str>>,
        #[serde(default, borrow, deserialize_with = "opt_vec_str")]
        b: Option<Vec<Cow<'a, str>>>,
    }

    #[test]
    fn borrows_plain_strings_and_owns_escaped_ones() {
        let p: Probe<'_> = serde_json::from_str(r#"{"a":"plain","b":["x","y\n"]}"#).unwrap();
        assert!(matches!(p.a, Some(Cow::Borrowed("plain"))));
        let b = p.b.unwrap();
        assert!(matches!(b[0], Cow::Borrowed("x")));
        assert!(matches!(&b[1], Cow::Owned(s) if s == "y\n"));
    }

    #[test]
    fn null_and_missing_are_none() {
        let p: Probe<'_> = serde_json::from_str(r#"{"a":null}"#).unwrap();
        assert!(p.a.is_none() && p.b.is_none());
    }

    #[test]
    fn wrong_type_is_an_error() {
        assert!(serde_json::from_str::<Probe<'_>>(r#"{"a":5}"#).is_err());
    }
}
