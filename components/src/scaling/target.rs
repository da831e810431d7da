//! Workload targets as rules and objectives write them (`kind/name` with a short kind), and as
//! allow-lists and clients name one workload (`namespace/kind/name`).

use tracescale_core::signal::Target;

/// The short kinds a target may use, and what they stand for.
const SHORT_KINDS: [(&str, &str, &str); 3] = [
    ("deployment", "apps/v1", "Deployment"),
    ("statefulset", "apps/v1", "StatefulSet"),
    ("replicaset", "apps/v1", "ReplicaSet"),
];

/// Resolves a `kind/name` target (`deployment/checkout`) in `namespace`, with the short kinds
/// every processor that makes decisions accepts; the error says how to write it.
pub fn parse_short_target(short: &str, namespace: &str) -> Result<Target, String> {
    let valid = SHORT_KINDS.map(|(k, ..)| k).join(", ");
    let Some((kind, name)) = short.split_once('/') else {
        return Err(format!(
            "write it as \"kind/name\", such as \"deployment/checkout\" (kinds: {valid})"
        ));
    };
    let (kind, name) = (kind.trim(), name.trim());
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "{short:?} needs exactly one name after the kind, such as \"deployment/checkout\""
        ));
    }
    let lower = kind.to_ascii_lowercase();
    match SHORT_KINDS.iter().find(|(k, ..)| *k == lower) {
        Some((_, api_version, kind)) => Ok(Target {
            api_version: (*api_version).to_string(),
            kind: (*kind).to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
        }),
        None => Err(format!(
            "unknown kind {kind:?} (short kinds: {valid}); for another resource write `api_version`, `kind` and `name`"
        )),
    }
}

/// Resolves one workload named as `namespace/kind/name`, the form allow-lists and metric
/// labels use, or as `kind/name` in `namespace` when that is not empty. The kind is compared
/// case-insensitively, as the allow-list does; a short kind resolves as
/// [`parse_short_target`] resolves it, any other kind keeps an empty `api_version` (nothing
/// that matches targets reads it). No wildcard: this names one workload, not a pattern.
pub fn parse_workload(text: &str, namespace: &str) -> Result<Target, String> {
    let parts: Vec<&str> = text.trim().split('/').map(str::trim).collect();
    let (ns, kind, name) = match parts.as_slice() {
        [ns, kind, name] => (*ns, *kind, *name),
        [kind, name] if !namespace.is_empty() => (namespace, *kind, *name),
        [_, _] => {
            return Err(format!(
                "{text:?} has no namespace: write \"namespace/kind/name\", such as \"shop/deployment/checkout\""
            ));
        }
        _ => {
            return Err(format!(
                "{text:?} is not \"namespace/kind/name\" (or \"kind/name\"), such as \"shop/deployment/checkout\""
            ));
        }
    };
    for (what, part) in [("namespace", ns), ("kind", kind), ("name", name)] {
        if part.is_empty() {
            return Err(format!("{text:?}: the {what} is empty"));
        }
        if part.contains('*') || part.contains(char::is_whitespace) {
            return Err(format!("{text:?}: the {what} {part:?} is not a name"));
        }
    }
    let lower = kind.to_ascii_lowercase();
    Ok(match SHORT_KINDS.iter().find(|(k, ..)| *k == lower) {
        Some((_, api_version, kind)) => Target {
            api_version: (*api_version).to_string(),
            kind: (*kind).to_string(),
            name: name.to_string(),
            namespace: ns.to_string(),
        },
        None => Target {
            api_version: String::new(),
            kind: lower,
            name: name.to_string(),
            namespace: ns.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_is_named_in_full_or_in_a_namespace() {
        let t = parse_workload("shop/Deployment/checkout", "").unwrap();
        assert_eq!(
            (
                t.api_version.as_str(),
                t.kind.as_str(),
                t.to_string().as_str()
            ),
            ("apps/v1", "Deployment", "shop/deployment/checkout")
        );
        let t = parse_workload("statefulset/payments-db", "shop").unwrap();
        assert_eq!(t.to_string(), "shop/statefulset/payments-db");
        // Any other kind is kept, lowercased, as the allow-list compares it.
        let t = parse_workload("shop/Rollout/frontend", "").unwrap();
        assert_eq!(t.to_string(), "shop/rollout/frontend");
        for bad in [
            "",
            "checkout",
            "a/b/c/d",
            "shop//checkout",
            "shop/deployment/*",
            "shop/deployment/check out",
        ] {
            assert!(parse_workload(bad, "shop").is_err(), "{bad:?}");
        }
        assert!(parse_workload("deployment/checkout", "").is_err());
    }
}
