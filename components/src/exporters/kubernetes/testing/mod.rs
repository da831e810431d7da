//! An in-process stand-in for the Kubernetes API server, for tests and the latency harness.
//!
//! It answers what the exporter uses, as the API server does: discovery documents
//! (`/api/v1`, `/apis/{group}/{version}`), GET/PATCH/PUT on `…/{resource}/{name}/scale` with
//! `autoscaling/v1` Scale bodies and `metadata.resourceVersion` (409 with a Status object on a
//! stale one), 404 and 403 as Status objects, 429 as `text/plain` with `Retry-After` (what the
//! real server sends), Event creation, and lists of `autoscaling/v2` HorizontalPodAutoscalers
//! (the other autoscalers the exporter looks for at start). Faults are scripted per request; every request,
//! patch and event is recorded so tests assert what was patched, not only that something was.
//!
//! One file per resource it serves: `discovery`, `scale`, `workload` (the pod template), `lease`,
//! `events` and `autoscalers`. Compiled only for tests, benches and examples: the `testing` feature.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod autoscalers;
mod discovery;
mod events;
mod lease;
mod listener;
mod scale;
mod workload;

use listener::Listener;

/// One workload with a scale subresource.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `spec.replicas`.
    pub replicas: u32,
    /// `metadata.resourceVersion`, bumped on every write.
    pub resource_version: u64,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.template.spec.containers`: one container `app` with no resources at first.
    pub containers: Value,
}

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// HTTP method.
    pub method: Method,
    /// Path, without the query.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

/// A patch or replace the server applied.
#[derive(Debug, Clone)]
pub struct Write {
    /// `namespace/resource/name`, for example `shop/deployments/checkout`.
    pub object: String,
    /// The request body as JSON.
    pub body: Value,
    /// The `Content-Type` it came with.
    pub content_type: String,
    /// When it arrived.
    pub at: Instant,
}

/// A scripted answer, used instead of the normal one for matching requests.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 `text/plain` with `Retry-After: seconds`.
    Throttle {
        /// The `Retry-After` value.
        seconds: u64,
    },
    /// 500 as a Status object.
    ServerError,
    /// 403 as a Status object, as RBAC answers it.
    Forbidden,
    /// Another writer changes the object first: replicas become `replicas`, the resource
    /// version moves on, and this request then goes through normally (a stale precondition
    /// gets 409).
    ConcurrentWrite {
        /// The replicas the other writer sets.
        replicas: u32,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Scripted {
    method: Method,
    path_contains: String,
    /// Only requests whose body contains this (empty: any).
    body_contains: String,
    remaining: u32,
    fault: Fault,
}

#[derive(Default)]
pub(super) struct Inner {
    objects: BTreeMap<String, Workload>,
    requests: Vec<Seen>,
    writes: Vec<Write>,
    events: Vec<Value>,
    /// Leases by `namespace/name`.
    leases: BTreeMap<String, Value>,
    /// HorizontalPodAutoscalers by `namespace/name`.
    autoscalers: BTreeMap<String, Value>,
    faults: Vec<Scripted>,
    next_uid: u64,
}

pub(super) type Shared = Arc<Mutex<Inner>>;

pub(super) fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The server. Dropping it stops it.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Shared,
    task: Option<JoinHandle<()>>,
    /// Cancelled by [`FakeApiServer::stop`]: closes the connections already open too.
    down: CancellationToken,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl FakeApiServer {
    /// Starts on an ephemeral port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr` (to come back on the port of a server that was stopped).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let mut server = Self {
            addr,
            state: Arc::new(Mutex::new(Inner::default())),
            task: None,
            down: CancellationToken::new(),
        };
        server.serve().await?;
        Ok(server)
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        let inner = TcpListener::bind(self.addr).await?;
        self.addr = inner.local_addr()?;
        self.down = CancellationToken::new();
        let listener = Listener {
            inner,
            down: self.down.clone(),
        };
        let app = Router::new()
            .fallback(handle)
            .with_state(self.state.clone());
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        Ok(())
    }

    /// Stops listening and cuts the open connections: the API is unreachable (connections are
    /// refused) until [`FakeApiServer::resume`]. The objects are kept.
    pub fn stop(&mut self) {
        self.down.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.serve().await
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a workload: `resource` is the plural (`deployments`, `statefulsets`, `widgets`).
    pub fn add(&self, namespace: &str, resource: &str, name: &str, replicas: u32) {
        let mut s = lock(&self.state);
        s.next_uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", s.next_uid);
        s.objects.insert(
            format!("{namespace}/{resource}/{name}"),
            Workload {
                replicas,
                resource_version: 1,
                uid,
                containers: json!([{ "name": "app", "image": "shop/app:1", "resources": {} }]),
            },
        );
    }

    /// Adds a HorizontalPodAutoscaler `name` that scales `kind` `target` (`"Deployment"`,
    /// `"checkout"`) in `namespace`.
    pub fn add_autoscaler(&self, namespace: &str, name: &str, kind: &str, target: &str) {
        lock(&self.state).autoscalers.insert(
            format!("{namespace}/{name}"),
            autoscalers::hpa(namespace, name, kind, target, None),
        );
    }

    /// Adds what KEDA makes of a ScaledObject `scaled_object`: the HorizontalPodAutoscaler
    /// `keda-hpa-<scaled_object>`, owned by it, scaling `kind` `target`.
    pub fn add_scaled_object(
        &self,
        namespace: &str,
        scaled_object: &str,
        kind: &str,
        target: &str,
    ) {
        let name = format!("keda-hpa-{scaled_object}");
        lock(&self.state).autoscalers.insert(
            format!("{namespace}/{name}"),
            autoscalers::hpa(namespace, &name, kind, target, Some(scaled_object)),
        );
    }

    /// Answers every list of HorizontalPodAutoscalers with 403, as for a service account the
    /// Role grants no `list` on them.
    pub fn forbid_listing_autoscalers(&self) {
        self.fault(
            Method::GET,
            "/horizontalpodautoscalers",
            u32::MAX,
            Fault::Forbidden,
        );
    }

    /// The workload, if it exists.
    pub fn workload(&self, namespace: &str, resource: &str, name: &str) -> Option<Workload> {
        lock(&self.state)
            .objects
            .get(&format!("{namespace}/{resource}/{name}"))
            .cloned()
    }

    /// The replicas a workload holds now; None when there is no such workload.
    pub fn replicas(&self, namespace: &str, resource: &str, name: &str) -> Option<u32> {
        self.workload(namespace, resource, name).map(|w| w.replicas)
    }

    /// Answers the next `times` requests whose method is `method` and whose path contains
    /// `path_contains` with `fault`.
    pub fn fault(&self, method: Method, path_contains: &str, times: u32, fault: Fault) {
        self.fault_when(method, path_contains, "", times, fault);
    }

    /// [`FakeApiServer::fault`] for the requests whose body also contains `body_contains`, to
    /// fail one client's writes and not another's (`"holderIdentity":"a"`).
    pub fn fault_when(
        &self,
        method: Method,
        path_contains: &str,
        body_contains: &str,
        times: u32,
        fault: Fault,
    ) {
        lock(&self.state).faults.push(Scripted {
            method,
            path_contains: path_contains.to_string(),
            body_contains: body_contains.to_string(),
            remaining: times,
            fault,
        });
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.state).requests.clone()
    }

    /// Every patch or replace applied so far.
    pub fn writes(&self) -> Vec<Write> {
        lock(&self.state).writes.clone()
    }

    /// The `i`-th patch or replace, if there is one yet (cheap to poll, unlike
    /// [`FakeApiServer::writes`]).
    pub fn write(&self, i: usize) -> Option<Write> {
        lock(&self.state).writes.get(i).cloned()
    }

    /// Every Event created so far.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.state).events.clone()
    }

    /// The Lease `namespace/name` as stored, if any.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.state)
            .leases
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    /// Writes a kubeconfig for this server (bearer token `token`) to `path`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        write!(
            f,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: {token}\n",
            self.addr
        )
    }
}

/// Routes a request to the resource it names, after recording it and taking the scripted fault
/// that matches it, if any.
async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let scripted = {
        let mut s = lock(&state);
        s.requests.push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            at: Instant::now(),
        });
        let text = String::from_utf8_lossy(&body);
        let found = s.faults.iter_mut().find(|f| {
            f.remaining > 0
                && f.method == method
                && path.contains(&f.path_contains)
                && text.contains(&f.body_contains)
        });
        found.map(|f| {
            f.remaining -= 1;
            f.fault.clone()
        })
    };

    if let Some(scale_path) = scale::path(&path) {
        return scale::serve(&state, method, &headers, &body, scripted, scale_path);
    }

    if method == Method::GET
        && let Some(doc) = discovery::document(&path)
    {
        return json(StatusCode::OK, doc.to_string());
    }

    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let [
        "apis",
        "coordination.k8s.io",
        "v1",
        "namespaces",
        ns,
        "leases",
        name @ ..,
    ] = parts.as_slice()
    {
        if let Some(Fault::ServerError) = scripted {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "etcdserver: request timed out".into(),
                json!({}),
            );
        }
        return lease::serve(&state, &method, &body, ns, name.first().copied());
    }
    match parts.as_slice() {
        [
            "apis",
            "autoscaling",
            "v2",
            "namespaces",
            ns,
            "horizontalpodautoscalers",
        ] => {
            return autoscalers::list(&state, &method, Some(ns), scripted);
        }
        ["apis", "autoscaling", "v2", "horizontalpodautoscalers"] => {
            return autoscalers::list(&state, &method, None, scripted);
        }
        _ => {}
    }
    if let ["apis", group, version, "namespaces", ns, res, name] = parts.as_slice() {
        return workload::serve(
            &state, &method, &headers, &body, group, version, ns, res, name, scripted,
        );
    }
    if let ["api", "v1", "namespaces", ns, "events"] = parts.as_slice()
        && method == Method::POST
    {
        return events::create(&state, &body, ns, scripted);
    }

    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource".into(),
        json!({}),
    )
}

pub(super) fn status(code: StatusCode, reason: &str, message: String, details: Value) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn json(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) fn not_found(res: &str, group: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{res}.{group} {name:?} not found"),
        json!({ "name": name, "group": group, "kind": res }),
    )
}

pub(super) fn bad_body() -> Response {
    status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "the body of the request was in an unknown format".into(),
        json!({}),
    )
}

/// How many requests matched `method` and a path containing `part`.
pub fn count(requests: &[Seen], method: &Method, part: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.method == *method && r.path.contains(part))
        .count()
}

/// Workloads by key, for summaries.
pub fn replicas_by_object(server: &FakeApiServer) -> HashMap<String, u32> {
    lock(&server.state)
        .objects
        .iter()
        .map(|(k, w)| (k.clone(), w.replicas))
        .collect()
}
