//! Confluent's compatibility levels between a subject's versions, checked with Avro's
//! schema resolution rules.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

use crate::error::{LogError, Result};

/// How a subject's new versions must relate to its earlier ones (Confluent's levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compatibility {
    None,
    /// The new schema reads data written with the latest one.
    Backward,
    BackwardTransitive,
    /// The latest schema reads data written with the new one.
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Compatibility {
    pub const ALL: [Compatibility; 7] = [
        Compatibility::None,
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn parse(s: &str) -> Option<Compatibility> {
        Compatibility::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive
                | Compatibility::ForwardTransitive
                | Compatibility::FullTransitive
        )
    }

    /// Why `new` may not follow `earlier` (texts of the subject's versions, oldest first).
    pub fn check(self, earlier: &[String], new: &str) -> std::result::Result<(), String> {
        let against: &[String] = match (self, earlier.len()) {
            (Compatibility::None, _) | (_, 0) => return Ok(()),
            (c, n) if !c.transitive() => &earlier[n - 1..],
            _ => earlier,
        };
        let backward = !matches!(
            self,
            Compatibility::Forward | Compatibility::ForwardTransitive
        );
        let forward = !matches!(
            self,
            Compatibility::Backward | Compatibility::BackwardTransitive
        );
        for (i, old) in against.iter().enumerate() {
            let version = earlier.len() - against.len() + i + 1;
            if backward {
                can_read(old, new).map_err(|e| {
                    format!(
                        "{}: the new schema cannot read data written with version {version}: {e}",
                        self.as_str()
                    )
                })?;
            }
            if forward {
                can_read(new, old).map_err(|e| {
                    format!(
                        "{}: version {version} cannot read data written with the new schema: {e}",
                        self.as_str()
                    )
                })?;
            }
        }
        Ok(())
    }
}

impl Compatibility {
    /// [`Compatibility::check`] for a schema text; a text that is not Avro is an error.
    pub fn check_text(
        self,
        earlier: &[String],
        new: &str,
    ) -> Result<std::result::Result<(), String>> {
        parse(new)?;
        Ok(self.check(earlier, new))
    }
}

/// Whether data written with the schema `writer` can be read with `reader` (Avro's
/// resolution rules), both schema texts. apache-avro 0.21's checker has no rule for the
/// `decimal` logical type (it answers "inconclusive", even for two identical schemas), so
/// decimals are compared here — a decimal field must keep its precision and scale — and
/// the rest is checked with the decimals read as their underlying type.
pub fn can_read(writer: &str, reader: &str) -> std::result::Result<(), String> {
    let (w, w_decimals) = without_decimals(writer)?;
    let (r, r_decimals) = without_decimals(reader)?;
    for (path, r_decimal) in &r_decimals {
        if let Some(w_decimal) = w_decimals.get(path)
            && w_decimal != r_decimal
        {
            return Err(format!(
                "{path} is decimal({}, {}) in the writer's schema and decimal({}, {}) in the reader's",
                w_decimal.0, w_decimal.1, r_decimal.0, r_decimal.1
            ));
        }
    }
    SchemaCompatibility::can_read(&w, &r).map_err(|e| e.to_string())
}

/// The (precision, scale) of each decimal of a schema, by field path.
type Decimals = std::collections::BTreeMap<String, (u64, u64)>;

/// A schema text with each decimal replaced by its underlying type, and its decimals.
fn without_decimals(text: &str) -> std::result::Result<(Schema, Decimals), String> {
    fn walk(v: &mut serde_json::Value, path: &str, out: &mut Decimals) {
        match v {
            serde_json::Value::Object(map) => {
                if map.get("logicalType").and_then(|t| t.as_str()) == Some("decimal") {
                    let n = |k: &str| map.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
                    out.insert(path.to_string(), (n("precision"), n("scale")));
                    for k in ["logicalType", "precision", "scale"] {
                        map.remove(k);
                    }
                }
                let name = map.get("name").and_then(|n| n.as_str()).map(str::to_string);
                for (k, child) in map.iter_mut() {
                    let here = match (k.as_str(), &name) {
                        ("type", Some(n)) => format!("{path}.{n}"),
                        _ => path.to_string(),
                    };
                    walk(child, &here, out);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, path, out);
                }
            }
            _ => {}
        }
    }
    let mut json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut decimals = Decimals::new();
    walk(&mut json, "", &mut decimals);
    let schema = Schema::parse_str(&json.to_string()).map_err(|e| format!("not Avro: {e}"))?;
    Ok((schema, decimals))
}

pub(super) fn parse(schema: &str) -> Result<Schema> {
    Schema::parse_str(schema)
        .map_err(|e| LogError::InvalidSchema(format!("not a valid Avro schema: {e}")))
}

/// Avro's Parsing Canonical Form of a schema text: two texts are the same schema when
/// their canonical forms are equal.
pub fn canonical(schema: &str) -> Result<String> {
    Ok(parse(schema)?.canonical_form())
}
