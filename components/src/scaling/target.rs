//! Workload targets as rules and objectives write them: `kind/name` with a short kind.

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
