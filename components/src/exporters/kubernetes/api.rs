//! The Kubernetes calls the exporter makes, through `kube::Client`, and what their failures
//! mean for it: retry now (409), back off (unreachable, 429, 5xx), or give up on this target
//! with one clear message (403, 404, a kind with no scale subresource).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use tracescale_core::signal::{ContainerResources, Target};

use super::config::ApiSettings;

/// The Event reason the exporter records on every workload it changes.
pub const EVENT_REASON: &str = "TracescaleScaled";

/// What a failed call means for the exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The API is unreachable, throttling (429) or failing (5xx): hold and retry later.
    Transient {
        /// What happened, for the log and `/readyz`.
        detail: String,
        /// The server's `Retry-After`, when it sent one in its Status.
        retry_after: Option<Duration>,
    },
    /// 409: the object changed since it was read.
    Conflict,
    /// 403: the service account lacks a permission.
    Forbidden {
        /// The verb that was refused (`get`, `patch`, `create`).
        verb: &'static str,
        /// The resource, with its subresource (`deployments/scale`).
        resource: String,
        /// The API group (`apps`; empty for the core group).
        group: String,
        /// The namespace.
        namespace: String,
    },
    /// 404, or a kind the API does not serve.
    NotFound(String),
    /// The kind has no scale subresource.
    NoScale(String),
    /// Any other refusal (400, 422, …): retrying would not help.
    Rejected(String),
}

impl ApiError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Transient { .. } => "unreachable",
            ApiError::Conflict => "conflict",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::NoScale(_) => "no_scale_subresource",
            ApiError::Rejected(_) => "rejected",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Transient { detail, .. } => write!(f, "kubernetes API unavailable: {detail}"),
            ApiError::Conflict => {
                f.write_str("the object changed while it was being scaled (409 Conflict)")
            }
            ApiError::Forbidden {
                verb,
                resource,
                group,
                namespace,
            } => {
                let group = if group.is_empty() {
                    "\"\" (core)"
                } else {
                    group
                };
                write!(
                    f,
                    "forbidden: the service account may not {verb:?} {resource:?} in API group {group} in namespace {namespace:?}; grant the verb in its Role (see examples/kubernetes/base/rbac.yaml)"
                )
            }
            ApiError::NotFound(m) => write!(f, "not found: {m}"),
            ApiError::NoScale(kind) => write!(
                f,
                "{kind} has no scale subresource; only resources that serve /scale can be scaled"
            ),
            ApiError::Rejected(m) => write!(f, "refused by the API server: {m}"),
        }
    }
}

/// The Event reason of a vertical change.
pub const RESIZE_EVENT_REASON: &str = "TracescaleResized";

/// A container's requests and limits, as read from a pod template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerState {
    /// `resources.requests`.
    pub requests: std::collections::BTreeMap<String, String>,
    /// `resources.limits`.
    pub limits: std::collections::BTreeMap<String, String>,
}

impl ContainerState {
    /// True when every quantity `want` sets is already set to the same text.
    pub fn satisfies(&self, want: &ContainerResources) -> bool {
        want.requests
            .iter()
            .all(|(k, v)| self.requests.get(k) == Some(v))
            && want
                .limits
                .iter()
                .all(|(k, v)| self.limits.get(k) == Some(v))
    }
}

/// The replicas of a workload, as its scale subresource reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleState {
    /// `spec.replicas`.
    pub replicas: u32,
    /// `metadata.resourceVersion`, the precondition of the patch.
    pub resource_version: Option<String>,
    /// `metadata.uid` (the workload's), for the Event.
    pub uid: Option<String>,
}

/// Builds a client: an explicit kubeconfig (and context), else `$KUBECONFIG` or
/// `~/.kube/config` with the context, else the in-cluster service account.
pub async fn connect(s: &ApiSettings) -> Result<Client, String> {
    let options = KubeConfigOptions {
        context: s.context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = match (&s.kubeconfig, &s.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("kubeconfig: {e}"))?,
        (None, None) => Config::infer()
            .await
            .map_err(|e| format!("no in-cluster service account and no kubeconfig: {e}"))?,
    };
    config.connect_timeout = Some(s.request_timeout);
    config.read_timeout = Some(s.request_timeout);
    config.write_timeout = Some(s.request_timeout);
    Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))
}

/// A kind resolved through discovery.
#[derive(Debug, Clone)]
struct Resolved {
    resource: ApiResource,
    scale: bool,
}

/// The calls, with a discovery cache.
pub struct KubeApi {
    client: Client,
    timeout: Duration,
    resolved: HashMap<(String, String), Resolved>,
}

impl KubeApi {
    /// Wraps a client; every call is bounded by `timeout`.
    pub fn new(client: Client, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            resolved: HashMap::new(),
        }
    }

    /// Resolves `api_version`/`kind` through discovery, once per kind.
    async fn resolve(&mut self, t: &Target) -> Result<Resolved, ApiError> {
        let key = (t.api_version.clone(), t.kind.clone());
        if let Some(r) = self.resolved.get(&key) {
            return Ok(r.clone());
        }
        let (group, version) = match t.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", t.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &t.kind);
        let what = format!("{} {}", t.kind, t.api_version);
        let found = match self
            .bounded(kube::discovery::pinned_kind(&self.client, &gvk))
            .await
        {
            Ok(Ok(found)) => found,
            Ok(Err(kube::Error::Discovery(_))) => {
                return Err(ApiError::NotFound(format!(
                    "the API serves no kind {:?} in {:?}",
                    t.kind, t.api_version
                )));
            }
            Ok(Err(e)) => {
                return Err(match classify(Failure::Kube(e), "get", &what, group, "") {
                    ApiError::NotFound(_) => {
                        ApiError::NotFound(format!("the API does not serve {:?}", t.api_version))
                    }
                    other => other,
                });
            }
            Err(timeout) => return Err(classify(timeout, "get", &what, group, "")),
        };
        let (resource, caps) = found;
        let scale = caps
            .subresources
            .iter()
            .any(|(sub, _)| sub.plural == "scale");
        let r = Resolved { resource, scale };
        self.resolved.insert(key, r.clone());
        Ok(r)
    }

    async fn scale_api(&mut self, t: &Target) -> Result<(Api<DynamicObject>, Resolved), ApiError> {
        let r = self.resolve(t).await?;
        if !r.scale {
            return Err(ApiError::NoScale(format!("{} {}", t.kind, t.api_version)));
        }
        Ok((
            Api::namespaced_with(self.client.clone(), &t.namespace, &r.resource),
            r,
        ))
    }

    /// Reads the scale subresource.
    pub async fn get_scale(&mut self, t: &Target) -> Result<ScaleState, ApiError> {
        let (api, r) = self.scale_api(t).await?;
        let scale = self
            .bounded(api.get_scale(&t.name))
            .await
            .and_then(|r| r.map_err(Failure::Kube))
            .map_err(|e| classify(e, "get", &subresource(&r), &r.resource.group, &t.namespace))?;
        Ok(ScaleState {
            replicas: scale
                .spec
                .and_then(|s| s.replicas)
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(0),
            resource_version: scale.metadata.resource_version,
            uid: scale.metadata.uid,
        })
    }

    /// Sets `spec.replicas` through the scale subresource, conditional on `resource_version`
    /// (a stale one gets 409). Returns the replicas the server reports.
    pub async fn patch_scale(
        &mut self,
        t: &Target,
        replicas: u32,
        resource_version: Option<&str>,
    ) -> Result<u32, ApiError> {
        let (api, r) = self.scale_api(t).await?;
        let mut body = json!({ "spec": { "replicas": replicas } });
        if let Some(rv) = resource_version {
            body["metadata"] = json!({ "resourceVersion": rv });
        }
        let params = PatchParams {
            field_manager: Some("tracescale".to_string()),
            ..PatchParams::default()
        };
        let scale = self
            .bounded(api.patch_scale(&t.name, &params, &Patch::Merge(&body)))
            .await
            .and_then(|r| r.map_err(Failure::Kube))
            .map_err(|e| {
                classify(
                    e,
                    "patch",
                    &subresource(&r),
                    &r.resource.group,
                    &t.namespace,
                )
            })?;
        Ok(scale
            .spec
            .and_then(|s| s.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(replicas))
    }

    /// Reads the named container's `resources` in the workload's pod template, with the
    /// workload's `resourceVersion` and `uid`. Only the built-in workload kinds, whose pod
    /// templates take a strategic merge patch.
    pub async fn get_container_resources(
        &mut self,
        t: &Target,
        container: &str,
    ) -> Result<(ContainerState, Option<String>, Option<String>), ApiError> {
        let (api, r) = self.workload_api(t).await?;
        let obj = self
            .bounded(api.get(&t.name))
            .await
            .and_then(|r| r.map_err(Failure::Kube))
            .map_err(|e| {
                classify(
                    e,
                    "get",
                    &r.resource.plural,
                    &r.resource.group,
                    &t.namespace,
                )
            })?;
        let containers = obj
            .data
            .pointer("/spec/template/spec/containers")
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some(c) = containers
            .iter()
            .find(|c| c.get("name").and_then(serde_json::Value::as_str) == Some(container))
        else {
            return Err(ApiError::NotFound(format!(
                "{} {}/{} has no container {container:?} in its pod template",
                t.kind, t.namespace, t.name
            )));
        };
        let read = |what: &str| -> std::collections::BTreeMap<String, String> {
            c.pointer(&format!("/resources/{what}"))
                .and_then(serde_json::Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok((
            ContainerState {
                requests: read("requests"),
                limits: read("limits"),
            },
            obj.metadata.resource_version,
            obj.metadata.uid,
        ))
    }

    /// Sets the container's requests and limits in the pod template with a strategic merge
    /// patch conditional on `resource_version`; the workload rolls out new pods.
    pub async fn patch_container_resources(
        &mut self,
        t: &Target,
        want: &ContainerResources,
        resource_version: Option<&str>,
    ) -> Result<(), ApiError> {
        let (api, r) = self.workload_api(t).await?;
        let mut resources = serde_json::Map::new();
        if !want.requests.is_empty() {
            resources.insert("requests".into(), json!(want.requests));
        }
        if !want.limits.is_empty() {
            resources.insert("limits".into(), json!(want.limits));
        }
        let mut body = json!({ "spec": { "template": { "spec": { "containers": [
            { "name": want.container, "resources": resources }
        ] } } } });
        if let Some(rv) = resource_version {
            body["metadata"] = json!({ "resourceVersion": rv });
        }
        let params = PatchParams {
            field_manager: Some("tracescale".to_string()),
            ..PatchParams::default()
        };
        self.bounded(api.patch(&t.name, &params, &Patch::Strategic(&body)))
            .await
            .and_then(|r| r.map_err(Failure::Kube))
            .map(|_| ())
            .map_err(|e| {
                classify(
                    e,
                    "patch",
                    &r.resource.plural,
                    &r.resource.group,
                    &t.namespace,
                )
            })
    }

    async fn workload_api(
        &mut self,
        t: &Target,
    ) -> Result<(Api<DynamicObject>, Resolved), ApiError> {
        if t.api_version != "apps/v1"
            || !["Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"].contains(&t.kind.as_str())
        {
            return Err(ApiError::Rejected(format!(
                "vertical scaling needs an apps/v1 Deployment, StatefulSet, ReplicaSet or DaemonSet, whose pod template takes a strategic merge patch; {} {} does not",
                t.kind, t.api_version
            )));
        }
        let r = self.resolve(t).await?;
        Ok((
            Api::namespaced_with(self.client.clone(), &t.namespace, &r.resource),
            r,
        ))
    }

    /// Records a Normal Event on the workload with `reason`.
    pub async fn event_with_reason(
        &mut self,
        t: &Target,
        uid: Option<String>,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", t.name)),
                namespace: Some(t.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(t.api_version.clone()),
                kind: Some(t.kind.clone()),
                name: Some(t.name.clone()),
                namespace: Some(t.namespace.clone()),
                uid,
                ..ObjectReference::default()
            },
            reason: Some(reason.to_string()),
            // The API server caps Event messages at 1 KiB.
            message: Some(truncate(message, 1024)),
            type_: Some("Normal".to_string()),
            action: Some("Scale".to_string()),
            source: Some(EventSource {
                component: Some("tracescale".to_string()),
                ..EventSource::default()
            }),
            reporting_component: Some("tracescale".to_string()),
            reporting_instance: Some("tracescale".to_string()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &t.namespace);
        self.bounded(api.create(&PostParams::default(), &event))
            .await
            .and_then(|r| r.map_err(Failure::Kube))
            .map(|_| ())
            .map_err(|e| classify(e, "create", "events", "", &t.namespace))
    }

    /// Lists the `autoscaling/v2` HorizontalPodAutoscalers of `namespace`, or of every
    /// namespace. KEDA acts through one it creates per ScaledObject, so this sees both.
    pub async fn list_autoscalers(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<DynamicObject>, ApiError> {
        let resource = ApiResource {
            group: "autoscaling".into(),
            version: "v2".into(),
            api_version: "autoscaling/v2".into(),
            kind: "HorizontalPodAutoscaler".into(),
            plural: "horizontalpodautoscalers".into(),
        };
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        self.bounded(api.list(&ListParams::default()))
            .await
            .and_then(|r| r.map_err(Failure::Kube))
            .map(|list| list.items)
            .map_err(|e| {
                classify(
                    e,
                    "list",
                    "horizontalpodautoscalers",
                    "autoscaling",
                    namespace.unwrap_or(""),
                )
            })
    }

    async fn bounded<T>(&self, f: impl Future<Output = T>) -> Result<T, Failure> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| Failure::Timeout(self.timeout))
    }
}

fn subresource(r: &Resolved) -> String {
    format!("{}/scale", r.resource.plural)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A call that did not return a response.
#[derive(Debug)]
enum Failure {
    Kube(kube::Error),
    Timeout(Duration),
}

fn classify(
    e: Failure,
    verb: &'static str,
    resource: &str,
    group: &str,
    namespace: &str,
) -> ApiError {
    let e = match e {
        Failure::Timeout(d) => {
            return ApiError::Transient {
                detail: format!("no answer within {d:?}"),
                retry_after: None,
            };
        }
        Failure::Kube(e) => e,
    };
    match e {
        kube::Error::Api(status) => {
            let retry_after = status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s)));
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            match status.code {
                409 => ApiError::Conflict,
                403 => ApiError::Forbidden {
                    verb,
                    resource: resource.to_string(),
                    group: group.to_string(),
                    namespace: namespace.to_string(),
                },
                404 => ApiError::NotFound(message),
                429 | 500..=599 => ApiError::Transient {
                    detail: format!("{} {message}", status.code),
                    retry_after,
                },
                code => ApiError::Rejected(format!("{code} {message}")),
            }
        }
        other => ApiError::Transient {
            detail: other.to_string(),
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_the_verb_and_the_resource() {
        let e = ApiError::Forbidden {
            verb: "patch",
            resource: "deployments/scale".into(),
            group: "apps".into(),
            namespace: "shop".into(),
        };
        let s = e.to_string();
        assert!(s.contains("\"patch\""), "{s}");
        assert!(s.contains("\"deployments/scale\""), "{s}");
        assert!(s.contains("apps"), "{s}");
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
