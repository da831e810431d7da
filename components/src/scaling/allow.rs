//! The allow-list: the workloads an exporter may touch, as `namespace/kind/name` patterns.
//!
//! A decision names its target from config, but the spans that triggered it come from the
//! network; the allow-list is the last word on what may be scaled, so that no span content can
//! steer an exporter to another workload.

use std::fmt;

use tracescale_core::signal::Target;

/// One `namespace/kind/name` pattern; `*` as a whole segment matches any value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowPattern {
    segments: [Segment; 3],
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Any,
    Exact(String),
}

impl Segment {
    fn matches(&self, value: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Exact(s) => s == value,
        }
    }
}

impl AllowPattern {
    /// Parses `namespace/kind/name`. Kinds are compared case-insensitively
    /// (`shop/Deployment/checkout` and `shop/deployment/checkout` are one pattern).
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let [ns, kind, name] = parts.as_slice() else {
            return Err(format!(
                "{text:?} is not `namespace/kind/name` (for example \"shop/deployment/checkout\"; `*` matches any segment)"
            ));
        };
        let mut segments = Vec::with_capacity(3);
        for (what, part, lower) in [
            ("namespace", ns, false),
            ("kind", kind, true),
            ("name", name, false),
        ] {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("{text:?}: the {what} is empty"));
            }
            if part == "*" {
                segments.push(Segment::Any);
            } else if part.contains('*') {
                return Err(format!(
                    "{text:?}: `*` matches a whole segment only; {part:?} would be read literally"
                ));
            } else if lower {
                segments.push(Segment::Exact(part.to_ascii_lowercase()));
            } else {
                segments.push(Segment::Exact(part.to_string()));
            }
        }
        let segments: [Segment; 3] = segments
            .try_into()
            .map_err(|_| format!("{text:?} is not `namespace/kind/name`"))?;
        Ok(Self {
            segments,
            text: text.to_string(),
        })
    }

    /// True when the pattern covers the target.
    pub fn matches(&self, target: &Target) -> bool {
        let [ns, kind, name] = &self.segments;
        ns.matches(&target.namespace)
            && kind.matches(&target.kind.to_ascii_lowercase())
            && name.matches(&target.name)
    }
}

impl fmt::Display for AllowPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The patterns of one exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<AllowPattern>,
}

impl AllowList {
    /// An allow-list of parsed patterns.
    pub fn new(patterns: Vec<AllowPattern>) -> Self {
        Self { patterns }
    }

    /// True when some pattern covers the target.
    pub fn allows(&self, target: &Target) -> bool {
        self.patterns.iter().any(|p| p.matches(target))
    }

    /// True when no pattern is configured: nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The namespaces the patterns name, sorted and once each; `None` when a pattern covers
    /// every namespace (`*/…`).
    pub fn namespaces(&self) -> Option<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.patterns {
            match &p.segments[0] {
                Segment::Any => return None,
                Segment::Exact(ns) => out.push(ns.clone()),
            }
        }
        out.sort();
        out.dedup();
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(ns: &str, kind: &str, name: &str) -> Target {
        Target {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: ns.into(),
        }
    }

    #[test]
    fn namespaces_are_listed_unless_a_pattern_covers_them_all() {
        let list = AllowList::new(vec![
            AllowPattern::parse("shop/deployment/checkout").unwrap(),
            AllowPattern::parse("db/statefulset/*").unwrap(),
            AllowPattern::parse("shop/deployment/*").unwrap(),
        ]);
        assert_eq!(list.namespaces(), Some(vec!["db".into(), "shop".into()]));
        let all = AllowList::new(vec![AllowPattern::parse("*/deployment/web").unwrap()]);
        assert_eq!(all.namespaces(), None);
    }

    #[test]
    fn exact_and_wildcard_segments() {
        let list = AllowList::new(vec![
            AllowPattern::parse("shop/deployment/checkout").unwrap(),
            AllowPattern::parse("db/StatefulSet/*").unwrap(),
        ]);
        assert!(list.allows(&target("shop", "Deployment", "checkout")));
        assert!(!list.allows(&target("shop", "Deployment", "cart")));
        assert!(!list.allows(&target("other", "Deployment", "checkout")));
        assert!(list.allows(&target("db", "StatefulSet", "payments-db")));
        assert!(!list.allows(&target("db", "Deployment", "payments-db")));
        assert!(!AllowList::default().allows(&target("shop", "Deployment", "checkout")));
    }

    #[test]
    fn names_are_not_globs_or_prefixes() {
        let list = AllowList::new(vec![AllowPattern::parse("shop/deployment/check").unwrap()]);
        assert!(!list.allows(&target("shop", "Deployment", "checkout")));
        assert!(AllowPattern::parse("shop/deployment/check*").is_err());
    }

    #[test]
    fn malformed_patterns_are_refused_with_a_reason() {
        for bad in ["shop/checkout", "a/b/c/d", "/deployment/x", "shop//x", ""] {
            assert!(AllowPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AllowPattern::parse("*/*/*").is_ok());
    }
}
