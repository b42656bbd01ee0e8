//! Role-based access control for management calls.
//!
//! A role is a set of `{action, path}` rules. A path is either exact (`payments/api-key`) or a
//! prefix ending in `*` (`payments/*` matches `payments/a/b` but not `payments`; `*` matches
//! everything). A principal holding several roles gets the union of their rules; anything not
//! granted is denied. An admin role allows everything, including token, role and audit management.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Create,
    Update,
    Delete,
    Rotate,
    ReadMetadata,
    /// Every secret action (not token/role/audit management, which needs an admin role).
    All,
}

impl Action {
    pub const ALL_NAMES: [&'static str; 6] = ["create", "update", "delete", "rotate", "read-metadata", "*"];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Rotate => "rotate",
            Self::ReadMetadata => "read-metadata",
            Self::All => "*",
        }
    }

    fn covers(self, wanted: Action) -> bool {
        self == Action::All || self == wanted
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbacError {
    #[error("unknown action {0:?}; expected one of create, update, delete, rotate, read-metadata, *")]
    UnknownAction(String),
    #[error("invalid path pattern {0:?}: use an exact name or a prefix ending in a single trailing '*'")]
    InvalidPath(String),
}

impl FromStr for Action {
    type Err = RbacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "create" => Self::Create,
            "update" => Self::Update,
            "delete" => Self::Delete,
            "rotate" => Self::Rotate,
            "read-metadata" => Self::ReadMetadata,
            "*" => Self::All,
            other => return Err(RbacError::UnknownAction(other.to_owned())),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

impl FromStr for PathPattern {
    type Err = RbacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || RbacError::InvalidPath(s.to_owned());
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        let chars_ok = body.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !chars_ok || (!prefix && body.is_empty()) || body.contains("//") || body.starts_with('/') {
            return Err(invalid());
        }
        Ok(if prefix { Self::Prefix(body.to_owned()) } else { Self::Exact(body.to_owned()) })
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(p) => f.write_str(p),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub path: PathPattern,
}

impl Rule {
    pub fn parse(action: &str, path: &str) -> Result<Self, RbacError> {
        Ok(Self { action: action.parse()?, path: path.parse()? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    pub is_admin: bool,
    pub rules: Vec<Rule>,
}

/// Whether the union of `roles` permits `action` on secret `path`. Deny by default.
pub fn allows(roles: &[Role], action: Action, path: &str) -> bool {
    roles.iter().any(|role| {
        role.is_admin || role.rules.iter().any(|r| r.action.covers(action) && r.path.matches(path))
    })
}

/// Whether any of `roles` is an admin role (token, role and audit management).
pub fn is_admin(roles: &[Role]) -> bool {
    roles.iter().any(|r| r.is_admin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn role(rules: &[(&str, &str)]) -> Role {
        Role { is_admin: false, rules: rules.iter().map(|(a, p)| Rule::parse(a, p).unwrap()).collect() }
    }

    #[test]
    fn prefix_matches_descendants_not_the_parent() {
        let r = [role(&[("rotate", "a/*")])];
        assert!(allows(&r, Action::Rotate, "a/b"));
        assert!(allows(&r, Action::Rotate, "a/b/c"));
        assert!(!allows(&r, Action::Rotate, "a"));
        assert!(!allows(&r, Action::Rotate, "ab"));
        assert!(!allows(&r, Action::Rotate, "b/a/c"));
    }

    #[test]
    fn exact_matches_only_itself() {
        let r = [role(&[("update", "a/b")])];
        assert!(allows(&r, Action::Update, "a/b"));
        assert!(!allows(&r, Action::Update, "a/b/c"));
        assert!(!allows(&r, Action::Update, "a/bc"));
    }

    #[test]
    fn bare_star_and_wildcard_action() {
        let r = [role(&[("*", "*")])];
        for a in [Action::Create, Action::Update, Action::Delete, Action::Rotate, Action::ReadMetadata] {
            assert!(allows(&r, a, "anything/at/all"));
        }
        assert!(!is_admin(&r), "a full secret rule is not admin");
    }

    #[test]
    fn deny_by_default_and_union_of_roles() {
        assert!(!allows(&[], Action::ReadMetadata, "x"));
        assert!(!allows(&[Role::default()], Action::ReadMetadata, "x"));
        let roles = [role(&[("create", "a/*")]), role(&[("delete", "b")])];
        assert!(allows(&roles, Action::Create, "a/x"));
        assert!(allows(&roles, Action::Delete, "b"));
        assert!(!allows(&roles, Action::Delete, "a/x"));
        assert!(!allows(&roles, Action::Create, "b"));
    }

    #[test]
    fn admin_allows_everything() {
        let admin = [Role { is_admin: true, rules: vec![] }];
        assert!(allows(&admin, Action::Delete, "x/y"));
        assert!(is_admin(&admin));
    }

    #[test]
    fn parsing_rejects_bad_actions_and_patterns() {
        assert_eq!("read".parse::<Action>(), Err(RbacError::UnknownAction("read".into())));
        for bad in ["", "a*b", "a**", "*a", "a b", "/a", "a//b"] {
            assert!(bad.parse::<PathPattern>().is_err(), "{bad:?}");
        }
        assert_eq!("*".parse::<PathPattern>(), Ok(PathPattern::Prefix(String::new())));
        assert_eq!("a/*".parse::<PathPattern>().unwrap().to_string(), "a/*");
        for name in Action::ALL_NAMES {
            assert_eq!(name.parse::<Action>().unwrap().as_str(), name);
        }
    }

    proptest! {
        #[test]
        fn prefix_rule_is_starts_with(prefix in "[a-z]{1,4}(/[a-z]{1,4}){0,2}/", path in "[a-z]{1,4}(/[a-z]{1,4}){0,3}") {
            let r = [role(&[("rotate", &format!("{prefix}*"))])];
            prop_assert_eq!(allows(&r, Action::Rotate, &path), path.starts_with(&prefix));
            prop_assert!(!allows(&r, Action::Rotate, prefix.trim_end_matches('/')));
            prop_assert!(!allows(&r, Action::Delete, &path));
        }
    }
}
