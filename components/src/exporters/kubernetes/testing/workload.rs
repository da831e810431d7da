//! GET and strategic-merge PATCH of a workload itself (its pod template).

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use tokio::time::Instant;

use super::scale::stale;
use super::{Fault, Shared, Workload, Write, bad_body, json, lock, not_found, status};

/// GET and strategic-merge PATCH of a workload itself (its pod template).
#[allow(clippy::too_many_arguments)]
pub(super) fn serve(
    state: &Shared,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
    group: &str,
    version: &str,
    ns: &str,
    res: &str,
    name: &str,
    scripted: Option<Fault>,
) -> Response {
    if let Some(Fault::Forbidden) = scripted {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{res}.{group} {name:?} is forbidden: User \"system:serviceaccount:tracescale:tracescale\" cannot patch resource {res:?} in API group {group:?} in the namespace {ns:?}"
            ),
            json!({ "name": name, "group": group, "kind": res }),
        );
    }
    let key = format!("{ns}/{res}/{name}");
    let mut s = lock(state);
    let Some(w) = s.objects.get(&key).cloned() else {
        return not_found(res, group, name);
    };
    let kind = match res {
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "replicasets" => "ReplicaSet",
        "daemonsets" => "DaemonSet",
        _ => "Unknown",
    };
    let object = |w: &Workload| {
        json!({
            "apiVersion": format!("{group}/{version}"),
            "kind": kind,
            "metadata": {
                "name": name, "namespace": ns, "uid": w.uid,
                "resourceVersion": w.resource_version.to_string(),
            },
            "spec": {
                "replicas": w.replicas,
                "template": { "spec": { "containers": w.containers } },
            },
        })
        .to_string()
    };
    let ok = |text: String| json(StatusCode::OK, text);
    match *method {
        Method::GET => ok(object(&w)),
        Method::PATCH => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if content_type != "application/strategic-merge-patch+json" {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!(
                        "this stand-in takes strategic merge patches of workloads; got {content_type:?}"
                    ),
                    json!({}),
                );
            }
            let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                return bad_body();
            };
            if let Some(conflict) = stale(&patch, w.resource_version, res, group, name) {
                return conflict;
            }
            let mut updated = w.clone();
            // Containers merge by name; `resources.requests` and `.limits` merge by key.
            for c in patch
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(cname) = c.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let Some(list) = updated.containers.as_array_mut() else {
                    continue;
                };
                let Some(target) = list
                    .iter_mut()
                    .find(|x| x.get("name").and_then(Value::as_str) == Some(cname))
                else {
                    continue;
                };
                for what in ["requests", "limits"] {
                    if let Some(m) = c
                        .pointer(&format!("/resources/{what}"))
                        .and_then(Value::as_object)
                    {
                        for (k, v) in m {
                            target["resources"][what][k] = v.clone();
                        }
                    }
                }
            }
            updated.resource_version += 1;
            s.writes.push(Write {
                object: key.clone(),
                body: patch,
                content_type,
                at: Instant::now(),
            });
            s.objects.insert(key, updated.clone());
            ok(object(&updated))
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
            json!({}),
        ),
    }
}
