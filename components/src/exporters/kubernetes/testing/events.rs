//! Event creation.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{Fault, Shared, bad_body, json, lock, status};

/// Creates an Event in namespace `ns`, naming it from its `generateName` as the API server does.
pub(super) fn create(state: &Shared, body: &Bytes, ns: &str, scripted: Option<Fault>) -> Response {
    if let Some(Fault::Forbidden) = scripted {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "events is forbidden: User \"system:serviceaccount:tracescale:tracescale\" cannot create resource \"events\" in API group \"\" in the namespace {ns:?}"
            ),
            json!({ "kind": "events" }),
        );
    }
    let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
        return bad_body();
    };
    let mut s = lock(state);
    let n = s.events.len();
    if let Some(prefix) = event
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        event["metadata"]["name"] = json!(format!("{prefix}{n:05x}"));
    }
    s.events.push(event.clone());
    json(StatusCode::CREATED, event.to_string())
}
