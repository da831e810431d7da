//! Other autoscalers on the workloads the exporter may scale.
//!
//! Two autoscalers on one workload undo each other's changes: a HorizontalPodAutoscaler sets
//! `spec.replicas` back to what its metric asks for at its next sync. KEDA acts through a
//! HorizontalPodAutoscaler it creates per ScaledObject (`keda-hpa-<name>`, owned by the
//! ScaledObject), so listing HPAs finds both; only `list` on `horizontalpodautoscalers` is needed.

use std::collections::HashMap;
use std::fmt;

use kube::api::DynamicObject;
use tracescale_core::signal::Target;

use super::api::{ApiError, KubeApi};
use crate::scaling::AllowList;

/// The prefix of the HorizontalPodAutoscalers KEDA creates for its ScaledObjects.
const KEDA_HPA_PREFIX: &str = "keda-hpa-";

/// An autoscaler that scales a workload the exporter may scale too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OtherAutoscaler {
    /// The workload it scales (`scaleTargetRef`).
    pub(super) target: Target,
    /// The HorizontalPodAutoscaler's name.
    pub(super) hpa: String,
    /// The KEDA ScaledObject behind the HPA, if KEDA made it.
    pub(super) scaled_object: Option<String>,
}

impl fmt::Display for OtherAutoscaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = &self.target.namespace;
        match &self.scaled_object {
            Some(so) => write!(
                f,
                "KEDA ScaledObject {ns}/{so} (through HorizontalPodAutoscaler {ns}/{})",
                self.hpa
            ),
            None => write!(f, "HorizontalPodAutoscaler {ns}/{}", self.hpa),
        }
    }
}

impl OtherAutoscaler {
    /// The autoscaler an HPA object stands for; `None` when it names no target.
    pub(super) fn from_hpa(hpa: &DynamicObject) -> Option<Self> {
        let name = hpa.metadata.name.clone()?;
        let namespace = hpa.metadata.namespace.clone()?;
        let reference = hpa.data.pointer("/spec/scaleTargetRef")?;
        let field = |key: &str| reference.get(key).and_then(serde_json::Value::as_str);
        let target = Target {
            api_version: field("apiVersion").unwrap_or("apps/v1").to_string(),
            kind: field("kind")?.to_string(),
            name: field("name")?.to_string(),
            namespace,
        };
        let owner = hpa
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "ScaledObject" && o.api_version.starts_with("keda.sh/"))
            .map(|o| o.name.clone());
        let scaled_object =
            owner.or_else(|| name.strip_prefix(KEDA_HPA_PREFIX).map(str::to_string));
        Some(Self {
            target,
            hpa: name,
            scaled_object,
        })
    }
}

/// The allowed workloads another autoscaler scales, by workload.
#[derive(Debug, Clone, Default)]
pub(super) struct Conflicts {
    by_workload: HashMap<(String, String, String), OtherAutoscaler>,
}

fn key(t: &Target) -> (String, String, String) {
    // The API group's version does not matter (a Deployment is one object whatever version
    // names it); the kind is compared as the allow-list compares it.
    (
        t.namespace.clone(),
        t.kind.to_ascii_lowercase(),
        t.name.clone(),
    )
}

impl Conflicts {
    /// The other autoscaler of `target`, if one scales it.
    pub(super) fn of(&self, target: &Target) -> Option<&OtherAutoscaler> {
        self.by_workload.get(&key(target))
    }

    /// How many allowed workloads another autoscaler scales.
    pub(super) fn len(&self) -> usize {
        self.by_workload.len()
    }

    /// Every conflict, sorted by workload.
    pub(super) fn sorted(&self) -> Vec<&OtherAutoscaler> {
        let mut all: Vec<_> = self.by_workload.values().collect();
        all.sort_by_key(|o| key(&o.target));
        all
    }
}

/// What listing the autoscalers found.
#[derive(Debug)]
pub(super) enum Check {
    /// Listed in every namespace that was allowed to be listed.
    Listed {
        /// The conflicts found.
        conflicts: Conflicts,
        /// Namespaces (`""`: all of them) where listing was forbidden (403).
        forbidden: Vec<String>,
    },
    /// The API did not answer; worth another try.
    Unavailable(String),
}

/// Lists the HPAs of the namespaces `allow` names (of every namespace when a pattern covers
/// them all) and keeps those whose target `allow` covers.
pub(super) async fn check(api: &KubeApi, allow: &AllowList) -> Check {
    let namespaces: Vec<Option<String>> = match allow.namespaces() {
        Some(list) => list.into_iter().map(Some).collect(),
        None => vec![None],
    };
    let mut conflicts = Conflicts::default();
    let mut forbidden = Vec::new();
    for ns in namespaces {
        match api.list_autoscalers(ns.as_deref()).await {
            Ok(items) => {
                for other in items.iter().filter_map(OtherAutoscaler::from_hpa) {
                    if allow.allows(&other.target) {
                        conflicts.by_workload.insert(key(&other.target), other);
                    }
                }
            }
            Err(ApiError::Forbidden { .. }) => forbidden.push(ns.unwrap_or_default()),
            Err(ApiError::Transient { detail, .. }) => return Check::Unavailable(detail),
            // A 404 (no autoscaling/v2 served) or another refusal: nothing to find there.
            Err(_) => {}
        }
    }
    Check::Listed {
        conflicts,
        forbidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hpa(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_hpa_names_its_target_and_keda_is_told_by_owner_or_name() {
        let plain = hpa(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "checkout", "namespace": "shop" },
            "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout" } }
        }));
        let other = OtherAutoscaler::from_hpa(&plain).unwrap();
        assert_eq!(other.target.to_string(), "shop/deployment/checkout");
        assert_eq!(other.to_string(), "HorizontalPodAutoscaler shop/checkout");

        let owned = hpa(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "keda-hpa-cart", "namespace": "shop", "ownerReferences": [
                { "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "cart", "uid": "1" }
            ] },
            "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "cart" } }
        }));
        assert_eq!(
            OtherAutoscaler::from_hpa(&owned).unwrap().to_string(),
            "KEDA ScaledObject shop/cart (through HorizontalPodAutoscaler shop/keda-hpa-cart)"
        );

        let named = hpa(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "keda-hpa-queue", "namespace": "shop" },
            "spec": { "scaleTargetRef": { "kind": "StatefulSet", "name": "queue" } }
        }));
        let other = OtherAutoscaler::from_hpa(&named).unwrap();
        assert_eq!(other.scaled_object.as_deref(), Some("queue"));
        assert_eq!(other.target.to_string(), "shop/statefulset/queue");
    }
}
