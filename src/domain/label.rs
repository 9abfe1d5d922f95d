//! A client's own words on a movement or a hold: a searchable reference and string metadata
//! (SPEC §6), both bounded.

use std::collections::BTreeMap;

use super::{ValidationError, Violations};

/// A client's label for a movement: 1 to 64 printable ASCII characters, searchable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference(String);

impl Reference {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "reference",
                "must be 1 to 64 characters long",
            ));
        }
        if !raw.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(ValidationError::new(
                "reference",
                "must be printable ASCII characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's string attributes on a movement: a JSON object of string values, at most 4 KiB
/// as compact JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub const MAX_BYTES: usize = 4096;

    pub fn new(map: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        let size = serde_json::to_string(&map).map_or(usize::MAX, |json| json.len());
        if size > Self::MAX_BYTES {
            return Err(ValidationError::new(
                "metadata",
                "must be at most 4096 bytes as JSON",
            ));
        }
        Ok(Self(map))
    }

    /// The stored JSON text of a row, which the database checked is an object.
    pub fn from_json(json: &str) -> Result<Self, ValidationError> {
        serde_json::from_str(json)
            .map(Self)
            .map_err(|_| ValidationError::new("metadata", "must be an object of strings"))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("a map of strings serializes")
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn into_entries(self) -> BTreeMap<String, String> {
        self.0
    }
}

/// The reference and metadata a client gave a movement or a hold, both optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Label {
    pub reference: Option<Reference>,
    pub metadata: Option<Metadata>,
}

impl Label {
    /// Parses both, reporting each bad one.
    pub fn parse(
        reference: Option<&str>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<Self, Vec<ValidationError>> {
        let mut v = Violations::default();
        let reference = v.check(reference.map(Reference::parse).transpose());
        let metadata = v.check(metadata.map(Metadata::new).transpose());
        v.finish(|| {
            Some(Label {
                reference: reference?,
                metadata: metadata?,
            })
        })
    }

    pub fn reference_str(&self) -> Option<&str> {
        self.reference.as_ref().map(Reference::as_str)
    }

    pub fn metadata_json(&self) -> Option<String> {
        self.metadata.as_ref().map(Metadata::to_json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_short_printable_ascii() {
        assert_eq!(Reference::parse("INV-2291").unwrap().as_str(), "INV-2291");
        assert!(Reference::parse("order 7").is_ok());
        assert!(Reference::parse(&"x".repeat(64)).is_ok());
        for bad in ["", "tab\there", "café", "line\n"] {
            assert_eq!(
                Reference::parse(bad).unwrap_err().field,
                "reference",
                "{bad:?}"
            );
        }
        assert!(Reference::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn metadata_is_bounded_as_json() {
        let small = BTreeMap::from([("order".to_owned(), "7".to_owned())]);
        let meta = Metadata::new(small).unwrap();
        assert_eq!(Metadata::from_json(&meta.to_json()).unwrap(), meta);
        // {"k":"…"} is 8 bytes of framing around the value.
        let fits = BTreeMap::from([("k".to_owned(), "v".repeat(4096 - 8))]);
        assert!(Metadata::new(fits).is_ok());
        let over = BTreeMap::from([("k".to_owned(), "v".repeat(4096 - 7))]);
        assert_eq!(Metadata::new(over).unwrap_err().field, "metadata");
        assert!(Metadata::from_json("[1]").is_err());
    }
}
