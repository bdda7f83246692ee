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
    pub fn check(self, earlier: &[String], new: &Schema) -> std::result::Result<(), String> {
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
        for (i, text) in against.iter().enumerate() {
            let old = Schema::parse_str(text)
                .map_err(|e| format!("a stored version does not parse: {e}"))?;
            let version = earlier.len() - against.len() + i + 1;
            if backward {
                SchemaCompatibility::can_read(&old, new).map_err(|e| {
                    format!(
                        "{}: the new schema cannot read data written with version {version}: {e}",
                        self.as_str()
                    )
                })?;
            }
            if forward {
                SchemaCompatibility::can_read(new, &old).map_err(|e| {
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
        Ok(self.check(earlier, &parse(new)?))
    }
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
