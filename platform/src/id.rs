//! The one identifier type for every id a service takes from HTTP or a message.
//!
//! An id is 1 to [`MAX_LEN`] ASCII letters, digits, `-`, `_`, `.` or `:`. Nothing else gets in:
//! no `/`, `?`, `#`, `%`, space, control character or non-ASCII byte, so an id can be put in a
//! URL path, a log line, a file name or a metric label without becoming something else (it is
//! still percent-encoded in URLs, see [`crate::http::path_segment`], so the encoding does not
//! depend on this rule). Checked where ids enter: request bodies and paths ([`Id`] fields,
//! [`crate::http::ApiPath`]), messages and queries; a bad id is a 422 naming the field, or a
//! dead-lettered message, never a 5xx.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Longest id accepted.
pub const MAX_LEN: usize = 64;

/// A checked identifier (see the module docs for the rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Id(String);

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The empty string.
    #[error("an id must not be empty")]
    Empty,
    /// Over [`MAX_LEN`] bytes.
    #[error("an id is at most {MAX_LEN} characters, this one has {0}")]
    TooLong(usize),
    /// A character outside the allowed set (shown escaped).
    #[error("an id may hold only ASCII letters, digits, '-', '_', '.' and ':', not {0}")]
    BadCharacter(String),
}

impl Id {
    /// Check `s` against the rule.
    pub fn new(s: impl Into<String>) -> Result<Id, IdError> {
        let s = s.into();
        check(&s)?;
        Ok(Id(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Check `s` against the rule without taking it.
pub fn check(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(IdError::TooLong(s.chars().count()));
    }
    match s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))) {
        Some(c) => Err(IdError::BadCharacter(format!("{:?}", c))),
        None => Ok(()),
    }
}

/// For `#[serde(deserialize_with = "lastmile_platform::id::checked")]` on a `String` field that
/// holds an id (domain records that travel in messages): the same rule, the field stays a string.
pub fn checked<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

/// Longest place name accepted ([`checked_label`]).
pub const MAX_LABEL_LEN: usize = 100;

/// For a `String` field holding a place name (a ride's or a driver's destination, which may be
/// a station id or a name like "Electronic City"): 1 to [`MAX_LABEL_LEN`] characters, no
/// control characters (so no newline or NUL reaches a log line), not blank.
pub fn checked_label<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_label(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

/// Check a place name against the rule of [`checked_label`].
pub fn check_label(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("a name must not be blank".into());
    }
    let n = s.chars().count();
    if n > MAX_LABEL_LEN {
        return Err(format!("a name is at most {MAX_LABEL_LEN} characters, this one has {n}"));
    }
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("a name may not hold control characters, not {c:?}")),
        None => Ok(()),
    }
}

/// The same for a list of ids.
pub fn checked_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for s in &list {
        check(s).map_err(serde::de::Error::custom)?;
    }
    Ok(list)
}

impl TryFrom<String> for Id {
    type Error = IdError;
    fn try_from(s: String) -> Result<Id, IdError> {
        Id::new(s)
    }
}

impl From<Id> for String {
    fn from(id: Id) -> String {
        id.0
    }
}

impl std::ops::Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Id {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Id {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in ["a", "rider-1", "ST101", "x_y.z:9", &"a".repeat(MAX_LEN)] {
            assert!(Id::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(Id::new(""), Err(IdError::Empty));
        assert_eq!(Id::new("a".repeat(MAX_LEN + 1)), Err(IdError::TooLong(MAX_LEN + 1)));
        for bad in ["pr1?evil", "a b", "a/b", "a%3F", "a#b", "nul\0", "new\nline", "é", "a+b"] {
            assert!(matches!(Id::new(bad), Err(IdError::BadCharacter(_))), "{bad:?}");
        }
    }

    #[test]
    fn json_rejects_a_bad_id_and_says_why() {
        let e = serde_json::from_str::<Id>("\"pr1?evil\"").unwrap_err().to_string();
        assert!(e.contains("not '?'"), "{e}");
        assert_eq!(serde_json::from_str::<Id>("\"r-1\"").unwrap(), "r-1");
        assert_eq!(serde_json::to_string(&Id::new("r-1").unwrap()).unwrap(), "\"r-1\"");
    }

    #[test]
    fn a_place_name_may_have_spaces_but_no_control_characters() {
        assert!(check_label("Electronic City").is_ok());
        assert!(check_label("ST104").is_ok());
        for bad in ["", "  ", "new\nline", "nul\0", &"x".repeat(MAX_LABEL_LEN + 1)] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
    }
}
