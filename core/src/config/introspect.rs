//! The top-level key names of a config struct, read from its `Deserialize` impl.
//!
//! `tracescale components` lists every component's keys; reading them from the struct the
//! component really deserializes means the listing cannot drift from the code.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The field names `T` declares, or an empty list when `T` is not a struct.
pub fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldCatcher {
        fields: &mut fields,
    });
    fields
}

struct FieldCatcher<'a> {
    fields: &'a mut &'static [&'static str],
}

#[derive(Debug)]
struct Caught;

impl std::fmt::Display for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("introspection only")
    }
}

impl std::error::Error for Caught {}

impl de::Error for Caught {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Caught
    }
}

impl<'de> Deserializer<'de> for FieldCatcher<'_> {
    type Error = Caught;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Caught> {
        Err(Caught)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Caught> {
        *self.fields = fields;
        Err(Caught)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Example {
        grpc: String,
        #[serde(rename = "max_request_size")]
        size: u64,
    }

    #[test]
    fn reads_field_names() {
        assert_eq!(field_names::<Example>(), &["grpc", "max_request_size"]);
        assert!(field_names::<u32>().is_empty());
    }
}
