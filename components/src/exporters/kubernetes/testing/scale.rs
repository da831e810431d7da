//! GET, PATCH and PUT of the scale subresource, with `resourceVersion` preconditions.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::time::Instant;

use super::{Fault, Shared, Workload, Write, bad_body, json, lock, not_found, status};

/// Answers a request on a `…/scale` path, `(group, namespace, resource, name)`.
pub(super) fn serve(
    state: &Shared,
    method: Method,
    headers: &HeaderMap,
    body: &Bytes,
    scripted: Option<Fault>,
    (group, ns, res, name): (String, String, String, String),
) -> Response {
    let group_label = if group.is_empty() {
        "\"\"".to_string()
    } else {
        format!("{group:?}")
    };
    match scripted {
        Some(Fault::Throttle { seconds }) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    (
                        header::CONTENT_TYPE,
                        "text/plain; charset=utf-8".to_string(),
                    ),
                    (header::RETRY_AFTER, seconds.to_string()),
                ],
                "Too many requests, please try again later.\n",
            )
                .into_response();
        }
        Some(Fault::ServerError) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "an error on the server (\"etcdserver: request timed out\") has prevented the request from succeeding".into(),
                json!({}),
            );
        }
        Some(Fault::Forbidden) => {
            let verb = match method {
                Method::GET => "get",
                Method::PUT => "update",
                _ => "patch",
            };
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{res}.{group} {name:?} is forbidden: User \"system:serviceaccount:tracescale:tracescale\" cannot {verb} resource \"{res}/scale\" in API group {group_label} in the namespace {ns:?}"
                ),
                json!({ "name": name, "group": group, "kind": format!("{res}/scale") }),
            );
        }
        Some(Fault::ConcurrentWrite { replicas }) => {
            let mut s = lock(state);
            if let Some(w) = s.objects.get_mut(&format!("{ns}/{res}/{name}")) {
                w.replicas = replicas;
                w.resource_version += 1;
            }
        }
        None => {}
    }
    let key = format!("{ns}/{res}/{name}");
    let mut s = lock(state);
    let Some(w) = s.objects.get(&key).cloned() else {
        return not_found(&res, &group, &name);
    };
    match method {
        Method::GET => scale_body(&ns, &name, &w),
        Method::PATCH | Method::PUT => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                return bad_body();
            };
            if method == Method::PATCH && content_type != "application/merge-patch+json" {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {content_type:?}"
                    ),
                    json!({}),
                );
            }
            if let Some(conflict) = stale(&patch, w.resource_version, &res, &group, &name) {
                return conflict;
            }
            let Some(replicas) = patch
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .and_then(|r| u32::try_from(r).ok())
            else {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "Scale.autoscaling \"\" is invalid: spec.replicas: Required value".into(),
                    json!({}),
                );
            };
            s.writes.push(Write {
                object: key.clone(),
                body: patch,
                content_type,
                at: Instant::now(),
            });
            let w = match s.objects.get_mut(&key) {
                Some(w) => {
                    w.replicas = replicas;
                    w.resource_version += 1;
                    w.clone()
                }
                None => w,
            };
            scale_body(&ns, &name, &w)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on scale"),
            json!({}),
        ),
    }
}

/// 409 when the patch carries a `resourceVersion` other than the object's.
pub(super) fn stale(
    patch: &Value,
    current: u64,
    res: &str,
    group: &str,
    name: &str,
) -> Option<Response> {
    let rv = patch.pointer("/metadata/resourceVersion")?.as_str()?;
    (rv != current.to_string()).then(|| {
        status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {res}.{group} {name:?}: the object has been modified; please apply your changes to the latest version and try again"
            ),
            json!({ "name": name, "group": group, "kind": res }),
        )
    })
}

pub(super) fn scale_body(ns: &str, name: &str, w: &Workload) -> Response {
    let body = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": name, "namespace": ns, "uid": w.uid,
            "resourceVersion": w.resource_version.to_string(),
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": { "replicas": w.replicas },
        "status": { "replicas": w.replicas, "selector": format!("app={name}") },
    });
    json(StatusCode::OK, body.to_string())
}

/// `(group, namespace, resource, name)` of a `…/scale` path.
pub(super) fn path(path: &str) -> Option<(String, String, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, res, name, "scale"] => {
            Some((String::new(), (*ns).into(), (*res).into(), (*name).into()))
        }
        [
            "apis",
            group,
            _version,
            "namespaces",
            ns,
            res,
            name,
            "scale",
        ] => Some(((*group).into(), (*ns).into(), (*res).into(), (*name).into())),
        _ => None,
    }
}
