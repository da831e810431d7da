//! `autoscaling/v2` HorizontalPodAutoscalers: listed in one namespace or in all of them, as
//! the exporter does at start to find other autoscalers; 403 when scripted, as RBAC answers a
//! service account without `list` on them.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Fault, Shared, lock, status};

/// An HPA object as the API server stores it.
pub(super) fn hpa(
    namespace: &str,
    name: &str,
    kind: &str,
    target: &str,
    scaled_object: Option<&str>,
) -> Value {
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "uid": format!("hpa-{namespace}-{name}"),
        "resourceVersion": "1",
    });
    if let Some(so) = scaled_object {
        // What KEDA writes: the ScaledObject owns the HPA it creates.
        metadata["ownerReferences"] = json!([{
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "name": so,
            "uid": format!("so-{namespace}-{so}"),
            "controller": true,
        }]);
    }
    let api_version = match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" => "apps/v1",
        _ => "example.com/v1",
    };
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": { "apiVersion": api_version, "kind": kind, "name": target },
            "minReplicas": 1,
            "maxReplicas": 10,
        },
    })
}

/// Lists the HPAs of namespace `ns`, or of every namespace.
pub(super) fn list(
    state: &Shared,
    method: &Method,
    ns: Option<&str>,
    scripted: Option<Fault>,
) -> Response {
    if *method != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            json!({}),
        );
    }
    if let Some(Fault::Forbidden) = scripted {
        let scope = match ns {
            Some(ns) => format!("in the namespace {ns:?}"),
            None => "at the cluster scope".to_string(),
        };
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "horizontalpodautoscalers.autoscaling is forbidden: User \"system:serviceaccount:tracescale:tracescale\" cannot list resource \"horizontalpodautoscalers\" in API group \"autoscaling\" {scope}"
            ),
            json!({ "group": "autoscaling", "kind": "horizontalpodautoscalers" }),
        );
    }
    let items: Vec<Value> = lock(state)
        .autoscalers
        .iter()
        .filter(|(key, _)| ns.is_none_or(|ns| key.starts_with(&format!("{ns}/"))))
        .map(|(_, hpa)| hpa.clone())
        .collect();
    super::json(
        StatusCode::OK,
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscalerList",
            "metadata": { "resourceVersion": "1" },
            "items": items,
        })
        .to_string(),
    )
}
