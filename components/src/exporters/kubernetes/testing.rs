//! An in-process stand-in for the Kubernetes API server, for tests and the latency harness.
//!
//! It answers what the exporter uses, as the API server does: discovery documents
//! (`/api/v1`, `/apis/{group}/{version}`), GET/PATCH/PUT on `…/{resource}/{name}/scale` with
//! `autoscaling/v1` Scale bodies and `metadata.resourceVersion` (409 with a Status object on a
//! stale one), 404 and 403 as Status objects, 429 as `text/plain` with `Retry-After` (what the
//! real server sends), and Event creation. Faults are scripted per request; every request,
//! patch and event is recorded so tests assert what was patched, not only that something was.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

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
struct Scripted {
    method: Method,
    path_contains: String,
    /// Only requests whose body contains this (empty: any).
    body_contains: String,
    remaining: u32,
    fault: Fault,
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<String, Workload>,
    requests: Vec<Seen>,
    writes: Vec<Write>,
    events: Vec<Value>,
    /// Leases by `namespace/name`.
    leases: BTreeMap<String, Value>,
    faults: Vec<Scripted>,
    next_uid: u64,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
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

/// The listener: its connections fail as soon as the server is stopped, so a client's pooled
/// keep-alive connection cannot outlive an outage.
struct Listener {
    inner: TcpListener,
    down: CancellationToken,
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((stream, addr)) = self.inner.accept().await {
                let down = Box::pin(self.down.clone().cancelled_owned());
                return (Connection { stream, down }, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One accepted connection, cut when the server stops.
struct Connection {
    stream: TcpStream,
    down: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Connection {
    fn cut(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        self.down.as_mut().poll(cx).is_ready().then(|| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the API server stopped",
            )
        })
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.cut(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.cut(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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

    /// The workload, if it exists.
    pub fn workload(&self, namespace: &str, resource: &str, name: &str) -> Option<Workload> {
        lock(&self.state)
            .objects
            .get(&format!("{namespace}/{resource}/{name}"))
            .cloned()
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

fn status(code: StatusCode, reason: &str, message: String, details: Value) -> Response {
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

fn json(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn not_found(res: &str, group: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{res}.{group} {name:?} not found"),
        json!({ "name": name, "group": group, "kind": res }),
    )
}

/// Leases: GET and PUT by name, POST to the collection; a PUT whose `resourceVersion` is not the
/// stored one gets 409, as does a POST of a name that exists.
fn lease(state: &Shared, method: &Method, body: &Bytes, ns: &str, name: Option<&str>) -> Response {
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

fn bad_body() -> Response {
    status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "the body of the request was in an unknown format".into(),
        json!({}),
    )
}

/// 409 when the patch carries a `resourceVersion` other than the object's.
fn stale(patch: &Value, current: u64, res: &str, group: &str, name: &str) -> Option<Response> {
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

fn discovery(path: &str) -> Option<Value> {
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

fn scale_body(ns: &str, name: &str, w: &Workload) -> Response {
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
fn scale_path(path: &str) -> Option<(String, String, String, String)> {
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

    if let Some((group, ns, res, name)) = scale_path(&path) {
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
                let mut s = lock(&state);
                if let Some(w) = s.objects.get_mut(&format!("{ns}/{res}/{name}")) {
                    w.replicas = replicas;
                    w.resource_version += 1;
                }
            }
            None => {}
        }
        let key = format!("{ns}/{res}/{name}");
        let mut s = lock(&state);
        let Some(w) = s.objects.get(&key).cloned() else {
            return not_found(&res, &group, &name);
        };
        match method {
            Method::GET => return scale_body(&ns, &name, &w),
            Method::PATCH | Method::PUT => {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
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
                return scale_body(&ns, &name, &w);
            }
            _ => {
                return status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("{method} is not supported on scale"),
                    json!({}),
                );
            }
        }
    }

    if method == Method::GET
        && let Some(doc) = discovery(&path)
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
        return lease(&state, &method, &body, ns, name.first().copied());
    }
    if let ["apis", group, version, "namespaces", ns, res, name] = parts.as_slice() {
        return workload(
            &state, &method, &headers, &body, group, version, ns, res, name, scripted,
        );
    }
    if let ["api", "v1", "namespaces", ns, "events"] = parts.as_slice()
        && method == Method::POST
    {
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
        let Ok(mut event) = serde_json::from_slice::<Value>(&body) else {
            return bad_body();
        };
        let mut s = lock(&state);
        let n = s.events.len();
        if let Some(prefix) = event
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            event["metadata"]["name"] = json!(format!("{prefix}{n:05x}"));
        }
        s.events.push(event.clone());
        return json(StatusCode::CREATED, event.to_string());
    }

    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource".into(),
        json!({}),
    )
}

/// GET and strategic-merge PATCH of a workload itself (its pod template).
#[allow(clippy::too_many_arguments)]
fn workload(
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
