//! A serde deserializer over a `toml::Value` that remembers where it is, so a
//! serde error inside `[[apps]]` names its key
//! (`completion_params.temperature`), which `toml::Value`'s own deserializer
//! does not. Owns nothing else.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use std::fmt;

/// A serde error and the key path (relative to the deserialised value) where it happened.
#[derive(Debug)]
pub(super) struct PathError {
    /// Innermost segment first; errors gain segments on their way out.
    segments: Vec<Segment>,
    message: String,
}

#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

impl PathError {
    fn within(mut self, segment: Segment) -> Self {
        self.segments.push(segment);
        self
    }

    /// The path below the deserialised value: `a.b[2].c`, `""` for the value itself.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for s in self.segments.iter().rev() {
            match s {
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path(), self.message)
    }
}

impl std::error::Error for PathError {}

impl de::Error for PathError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PathError { segments: Vec::new(), message: msg.to_string() }
    }
}

/// Deserialises `T` from `value`, naming the failing key on error.
pub(super) fn from_value<T: DeserializeOwned>(value: toml::Value) -> Result<T, PathError> {
    T::deserialize(ValueDe(value))
}

struct ValueDe(toml::Value);

fn unexpected(v: &toml::Value) -> de::Unexpected<'_> {
    match v {
        toml::Value::String(s) => de::Unexpected::Str(s),
        toml::Value::Integer(i) => de::Unexpected::Signed(*i),
        toml::Value::Float(f) => de::Unexpected::Float(*f),
        toml::Value::Boolean(b) => de::Unexpected::Bool(*b),
        toml::Value::Datetime(_) => de::Unexpected::Other("datetime"),
        toml::Value::Array(_) => de::Unexpected::Seq,
        toml::Value::Table(_) => de::Unexpected::Map,
    }
}

impl<'de> de::Deserializer<'de> for ValueDe {
    type Error = PathError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            toml::Value::String(s) => visitor.visit_string(s),
            toml::Value::Integer(i) => visitor.visit_i64(i),
            toml::Value::Float(f) => visitor.visit_f64(f),
            toml::Value::Boolean(b) => visitor.visit_bool(b),
            toml::Value::Datetime(d) => visitor.visit_string(d.to_string()),
            toml::Value::Array(a) => visitor.visit_seq(Seq { iter: a.into_iter().enumerate() }),
            toml::Value::Table(t) => visitor.visit_map(Map { iter: t.into_iter(), pending: None }),
        }
    }

    /// TOML has no null: a present value is always `Some`.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, PathError> {
        visitor.visit_newtype_struct(self)
    }

    /// Unit variants are strings (`mode = "chat"`); other variants are a table
    /// with one key, the variant name (`{ text-input = { ... } }`).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        match self.0 {
            toml::Value::String(s) => visitor.visit_enum(IntoDeserializer::<PathError>::into_deserializer(s)),
            toml::Value::Table(t) if t.len() == 1 => match t.into_iter().next() {
                Some((variant, value)) => visitor.visit_enum(Enum { variant, value }),
                None => Err(de::Error::custom("expected a table with exactly one key")),
            },
            other => Err(de::Error::invalid_type(unexpected(&other), &"a string or a table with exactly one key")),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct Seq {
    iter: std::iter::Enumerate<std::vec::IntoIter<toml::Value>>,
}

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = PathError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, PathError> {
        match self.iter.next() {
            None => Ok(None),
            Some((i, v)) => seed.deserialize(ValueDe(v)).map(Some).map_err(|e| e.within(Segment::Index(i))),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Map {
    iter: toml::map::IntoIter,
    pending: Option<(String, toml::Value)>,
}

impl<'de> de::MapAccess<'de> for Map {
    type Error = PathError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, PathError> {
        match self.iter.next() {
            None => Ok(None),
            Some((k, v)) => {
                // An unknown field fails here; name it.
                let key = seed
                    .deserialize(IntoDeserializer::<PathError>::into_deserializer(k.clone()))
                    .map_err(|e| e.within(Segment::Key(k.clone())))?;
                self.pending = Some((k, v));
                Ok(Some(key))
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, PathError> {
        match self.pending.take() {
            Some((k, v)) => seed.deserialize(ValueDe(v)).map_err(|e| e.within(Segment::Key(k))),
            None => Err(de::Error::custom("a map value was requested before its key")),
        }
    }
}

struct Enum {
    variant: String,
    value: toml::Value,
}

impl<'de> de::EnumAccess<'de> for Enum {
    type Error = PathError;
    type Variant = Variant;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Variant), PathError> {
        let v = seed.deserialize(IntoDeserializer::<PathError>::into_deserializer(self.variant.clone()))?;
        Ok((v, Variant { name: self.variant, value: self.value }))
    }
}

struct Variant {
    name: String,
    value: toml::Value,
}

impl<'de> de::VariantAccess<'de> for Variant {
    type Error = PathError;

    fn unit_variant(self) -> Result<(), PathError> {
        Err(<PathError as de::Error>::invalid_type(unexpected(&self.value), &"a plain string for this variant")
            .within(Segment::Key(self.name)))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, PathError> {
        let name = self.name;
        seed.deserialize(ValueDe(self.value)).map_err(|e| e.within(Segment::Key(name)))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, PathError> {
        let name = self.name;
        de::Deserializer::deserialize_seq(ValueDe(self.value), visitor).map_err(|e| e.within(Segment::Key(name)))
    }

    fn struct_variant<V: Visitor<'de>>(self, _fields: &'static [&'static str], visitor: V) -> Result<V::Value, PathError> {
        let name = self.name;
        de::Deserializer::deserialize_map(ValueDe(self.value), visitor).map_err(|e| e.within(Segment::Key(name)))
    }
}
