//! Secret names (DESIGN.md §7).
//!
//! A name is 1–253 characters of `/`-separated segments drawn from `[A-Za-z0-9._-]`; no segment is
//! empty, `.` or `..`, and the last segment is not one of the route words the API reserves. A
//! [`SecretName`] can only be obtained by parsing, so every name inside the system is valid.

use std::fmt;

pub const MAX_NAME_LEN: usize = 253;

/// Last segments that would collide with the API's sub-resource routes.
pub const RESERVED_LAST_SEGMENTS: [&str; 3] = ["verify", "rotate", "versions"];

/// A validated secret name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);

/// Why a name was refused. Messages quote the offending part so the caller can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error("name has an empty segment (leading, trailing or doubled '/')")]
    EmptySegment,
    #[error("name segment {0:?} is not allowed ('.' and '..' are reserved)")]
    DotSegment(&'static str),
    #[error("name contains the character {0:?}; allowed are A-Z a-z 0-9 . _ - and '/' between segments")]
    InvalidChar(char),
    #[error("name must not end with the reserved segment {0:?}")]
    ReservedSuffix(&'static str),
}

impl SecretName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        let chars = raw.chars().count();
        if chars > MAX_NAME_LEN {
            return Err(NameError::TooLong(chars));
        }
        if let Some(bad) =
            raw.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
        {
            return Err(NameError::InvalidChar(bad));
        }
        for segment in raw.split('/') {
            match segment {
                "" => return Err(NameError::EmptySegment),
                "." => return Err(NameError::DotSegment(".")),
                ".." => return Err(NameError::DotSegment("..")),
                _ => {}
            }
        }
        let last = raw.rsplit('/').next().unwrap_or(raw);
        if let Some(reserved) = RESERVED_LAST_SEGMENTS.iter().find(|r| **r == last) {
            return Err(NameError::ReservedSuffix(reserved));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The vault name of a `VaultSecret`: `<namespace>/<name>`.
    pub fn for_resource(namespace: &str, name: &str) -> Result<Self, NameError> {
        Self::parse(&format!("{namespace}/{name}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SecretName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SecretName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_plain_and_nested_names() {
        for ok in ["a", "db-password", "payments/api-key", "a.b_c-d/E9", "ns/x/y/z", "..a", "a.."] {
            assert_eq!(SecretName::parse(ok).unwrap().as_str(), ok);
        }
        assert!(SecretName::parse(&"a".repeat(253)).is_ok());
        assert!(SecretName::parse("verify/x").is_ok(), "only the last segment is reserved");
        assert!(SecretName::parse("x/verifyx").is_ok());
    }

    #[test]
    fn rejects_each_rule() {
        assert_eq!(SecretName::parse(""), Err(NameError::Empty));
        assert_eq!(SecretName::parse(&"a".repeat(254)), Err(NameError::TooLong(254)));
        assert_eq!(SecretName::parse("/a"), Err(NameError::EmptySegment));
        assert_eq!(SecretName::parse("a/"), Err(NameError::EmptySegment));
        assert_eq!(SecretName::parse("a//b"), Err(NameError::EmptySegment));
        assert_eq!(SecretName::parse("a/./b"), Err(NameError::DotSegment(".")));
        assert_eq!(SecretName::parse(".."), Err(NameError::DotSegment("..")));
        assert_eq!(SecretName::parse("a/../b"), Err(NameError::DotSegment("..")));
        assert_eq!(SecretName::parse("a b"), Err(NameError::InvalidChar(' ')));
        assert_eq!(SecretName::parse("a%2e"), Err(NameError::InvalidChar('%')));
        assert_eq!(SecretName::parse("a:1"), Err(NameError::InvalidChar(':')));
        assert_eq!(SecretName::parse("é"), Err(NameError::InvalidChar('é')));
        assert_eq!(SecretName::parse("a\\b"), Err(NameError::InvalidChar('\\')));
        for r in RESERVED_LAST_SEGMENTS {
            assert_eq!(SecretName::parse(&format!("svc/{r}")), Err(NameError::ReservedSuffix(r)));
            assert_eq!(SecretName::parse(r), Err(NameError::ReservedSuffix(r)));
        }
    }

    #[test]
    fn resource_names_join_namespace() {
        assert_eq!(SecretName::for_resource("team-a", "db").unwrap().as_str(), "team-a/db");
    }

    proptest! {
        #[test]
        fn valid_generated_names_parse(segs in prop::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}", 1..6)) {
            let raw = segs.join("/");
            let last = segs.last().unwrap().as_str();
            let ok = SecretName::parse(&raw);
            if RESERVED_LAST_SEGMENTS.contains(&last) {
                prop_assert!(ok.is_err());
            } else {
                let parsed = ok.unwrap();
                prop_assert_eq!(parsed.as_str(), raw.as_str());
            }
        }

        #[test]
        fn every_parsed_name_obeys_the_rules(raw in "\\PC{0,300}") {
            if let Ok(name) = SecretName::parse(&raw) {
                let s = name.as_str();
                prop_assert!(!s.is_empty() && s.len() <= MAX_NAME_LEN);
                for seg in s.split('/') {
                    prop_assert!(!seg.is_empty() && seg != "." && seg != "..");
                    prop_assert!(seg.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
                }
                prop_assert!(!RESERVED_LAST_SEGMENTS.contains(&s.rsplit('/').next().unwrap()));
            }
        }
    }
}
