//! Leases, for leader election.

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::{Shared, bad_body, json, lock, not_found, status};

/// Leases: GET and PUT by name, POST to the collection; a PUT whose `resourceVersion` is not the
/// stored one gets 409, as does a POST of a name that exists.
pub(super) fn serve(
    state: &Shared,
    method: &Method,
    body: &Bytes,
    ns: &str,
    name: Option<&str>,
) -> Response {
    let mut s = lock(state);
    let conflict = |name: &str, reason: &str, message: String| {
        status(
            StatusCode::CONFLICT,
            reason,
            message,
            json!({ "name": name, "group": "coordination.k8s.io", "kind": "leases" }),
        )
    };
    match (method, name) {
        (&Method::GET, Some(name)) => match s.leases.get(&format!("{ns}/{name}")) {
            Some(lease) => json(StatusCode::OK, lease.to_string()),
            None => not_found("leases", "coordination.k8s.io", name),
        },
        (&Method::POST, None) => {
            let Ok(mut lease) = serde_json::from_slice::<Value>(body) else {
                return bad_body();
            };
            let name = lease
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let key = format!("{ns}/{name}");
            if s.leases.contains_key(&key) {
                return conflict(
                    &name,
                    "AlreadyExists",
                    format!("leases.coordination.k8s.io {name:?} already exists"),
                );
            }
            lease["metadata"]["namespace"] = json!(ns);
            lease["metadata"]["resourceVersion"] = json!("1");
            s.leases.insert(key, lease.clone());
            json(StatusCode::CREATED, lease.to_string())
        }
        (&Method::PUT, Some(name)) => {
            let Ok(mut lease) = serde_json::from_slice::<Value>(body) else {
                return bad_body();
            };
            let key = format!("{ns}/{name}");
            let Some(stored) = s.leases.get(&key) else {
                return not_found("leases", "coordination.k8s.io", name);
            };
            let version = |v: &Value| {
                v.pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let current = version(stored).unwrap_or(0);
            if version(&lease) != Some(current) {
                return conflict(
                    name,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on leases.coordination.k8s.io {name:?}: the object has been modified; please apply your changes to the latest version and try again"
                    ),
                );
            }
            lease["metadata"]["namespace"] = json!(ns);
            lease["metadata"]["resourceVersion"] = json!((current + 1).to_string());
            s.leases.insert(key, lease.clone());
            json(StatusCode::OK, lease.to_string())
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on leases"),
            json!({}),
        ),
    }
}
