//! Discovery documents: which resources each group version serves, and which have `/scale`.

use serde_json::{Value, json};

fn resource_list(group_version: &str, resources: &[(&str, &str, bool, &[&str])]) -> Value {
    let mut list = Vec::new();
    for (name, kind, scale, verbs) in resources {
        list.push(json!({
            "name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs,
        }));
        if *scale {
            list.push(json!({
                "name": format!("{name}/scale"), "singularName": "", "namespaced": true,
                "group": "autoscaling", "version": "v1", "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list })
}

const WORKLOAD_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// The discovery document at `path`, if it is one.
pub(super) fn document(path: &str) -> Option<Value> {
    Some(match path {
        "/api/v1" => resource_list(
            "v1",
            &[
                (
                    "events",
                    "Event",
                    false,
                    &["create", "get", "list", "patch"],
                ),
                (
                    "replicationcontrollers",
                    "ReplicationController",
                    true,
                    WORKLOAD_VERBS,
                ),
            ],
        ),
        "/apis/apps/v1" => resource_list(
            "apps/v1",
            &[
                ("deployments", "Deployment", true, WORKLOAD_VERBS),
                ("statefulsets", "StatefulSet", true, WORKLOAD_VERBS),
                ("replicasets", "ReplicaSet", true, WORKLOAD_VERBS),
                ("daemonsets", "DaemonSet", false, WORKLOAD_VERBS),
            ],
        ),
        "/apis/example.com/v1" => resource_list(
            "example.com/v1",
            &[("widgets", "Widget", true, WORKLOAD_VERBS)],
        ),
        _ => return None,
    })
}
