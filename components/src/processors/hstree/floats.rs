//! Floats in a saved model: compared up to a JSON round trip, and written so that they come
//! back exactly.

/// Equal up to JSON's round trip, which may move a float by an ulp.
pub(crate) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

/// Floats as their shortest exact decimal string: `serde_json` parses numbers fast rather than
/// exactly, and a restored model must continue bit for bit where the saved one stopped.
pub(crate) mod exact {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }

    /// Arrays of five floats (the P² markers).
    pub(crate) mod five {
        use serde::de::Error as _;
        use serde::ser::SerializeTuple;
        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(v: &[f64; 5], s: S) -> Result<S::Ok, S::Error> {
            let mut t = s.serialize_tuple(5)?;
            for x in v {
                t.serialize_element(&x.to_string())?;
            }
            t.end()
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[f64; 5], D::Error> {
            let text = <[String; 5]>::deserialize(d)?;
            let mut out = [0.0; 5];
            for (o, t) in out.iter_mut().zip(&text) {
                *o = t.parse().map_err(D::Error::custom)?;
            }
            Ok(out)
        }
    }
}
