//! The Kubernetes package renders as a cluster would receive it: `kubectl kustomize` on
//! examples/kubernetes/base and on its leader-election variant, and the objects checked against
//! the pipeline file, the exporter's needs and the metrics the code exports.
//!
//! Without kubectl these tests say so and pass, except under `CI=true`, where they fail.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::util::{repo, wait_with_limit};

const BASE: &str = "examples/kubernetes/base";
const LEADER_ELECTION: &str = "examples/kubernetes/leader-election";
const KEDA: &str = "examples/kubernetes/keda";

/// The objects `kubectl kustomize DIR` renders; None (after saying why) when kubectl is not
/// installed and this is not CI.
fn render(dir: &str) -> Option<&'static [Value]> {
    static BASE_OBJECTS: OnceLock<Option<Vec<Value>>> = OnceLock::new();
    static LEADER_ELECTION_OBJECTS: OnceLock<Option<Vec<Value>>> = OnceLock::new();
    static KEDA_OBJECTS: OnceLock<Option<Vec<Value>>> = OnceLock::new();
    let cell = match dir {
        BASE => &BASE_OBJECTS,
        LEADER_ELECTION => &LEADER_ELECTION_OBJECTS,
        KEDA => &KEDA_OBJECTS,
        other => panic!("no kustomization {other}"),
    };
    cell.get_or_init(|| kustomize(dir)).as_deref()
}

fn kustomize(dir: &str) -> Option<Vec<Value>> {
    let spawned = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "kubectl is not installed: CI renders the Kubernetes package with `kubectl kustomize`"
            );
            eprintln!("skipped: kubectl is not installed, so {dir} is not rendered");
            return None;
        }
        Err(err) => panic!("kubectl: {err}"),
    };
    let out = wait_with_limit(child, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 YAML");
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("kubectl kustomize {dir}: not YAML: {e}\n{text}"));
    assert!(!objects.is_empty(), "{dir} renders nothing");
    Some(objects)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of this kind.
fn one<'a>(objects: &'a [Value], what: &str) -> &'a Value {
    let found = kind(objects, what);
    assert_eq!(found.len(), 1, "want one {what}, found {}", found.len());
    found[0]
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().expect("a name")
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

/// The ConfigMap the Deployment mounts (its generated name carries a hash).
fn pipeline_configmap(objects: &[Value]) -> &Value {
    let found: Vec<_> = kind(objects, "ConfigMap")
        .into_iter()
        .filter(|c| name(c).starts_with("tracescale-pipeline-"))
        .collect();
    assert_eq!(found.len(), 1, "one generated pipeline ConfigMap");
    found[0]
}

fn pipeline_text(objects: &[Value]) -> &str {
    str_of(
        &pipeline_configmap(objects)["data"]["pipeline.toml"],
        "pipeline.toml",
    )
}

fn pod_template(objects: &[Value]) -> &Value {
    &one(objects, "Deployment")["spec"]["template"]
}

fn container(objects: &[Value]) -> &Value {
    let containers = pod_template(objects)["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// Every pair of `selector` is among `labels`, and there is at least one.
fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(selector) = selector.as_object().filter(|s| !s.is_empty()) else {
        return false;
    };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// (API group, resource, verb) for every rule of the one Role; no cluster-wide grants.
fn grants(objects: &[Value]) -> BTreeSet<(String, String, String)> {
    for cluster_wide in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(kind(objects, cluster_wide).is_empty(), "no {cluster_wide}");
    }
    let role = one(objects, "Role");
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("a list")
            .iter()
            .map(|s| str_of(s, "a rule entry").to_string())
            .collect()
    };
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert!(
            rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
            "{rule}"
        );
        for group in list(&rule["apiGroups"]) {
            for resource in list(&rule["resources"]) {
                for verb in list(&rule["verbs"]) {
                    assert!(
                        !group.contains('*') && !resource.contains('*') && !verb.contains('*'),
                        "no wildcards: {rule}"
                    );
                    grants.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    grants
}

fn triples(list: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    list.iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect()
}

/// What the kubernetes exporter calls (its README, Permissions): the scale subresource of
/// Deployments and StatefulSets, Events, and the list of HorizontalPodAutoscalers it reads at
/// start to find other autoscalers.
const EXPORTER: &[(&str, &str, &str)] = &[
    ("apps", "deployments/scale", "get"),
    ("apps", "deployments/scale", "patch"),
    ("apps", "deployments/scale", "update"),
    ("apps", "statefulsets/scale", "get"),
    ("apps", "statefulsets/scale", "patch"),
    ("apps", "statefulsets/scale", "update"),
    ("", "events", "create"),
    ("autoscaling", "horizontalpodautoscalers", "list"),
];

/// And with `leader_election`, the Lease.
const LEASE: &[(&str, &str, &str)] = &[
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
];

#[test]
fn the_configmap_carries_the_kubernetes_config_byte_for_byte() {
    let Some(objects) = render(BASE) else { return };
    let config = read("configs/kubernetes.toml");
    assert!(
        pipeline_text(objects) == config,
        "the rendered pipeline differs from configs/kubernetes.toml"
    );
}

#[test]
fn the_leader_election_variant_appends_leader_election_to_the_same_config() {
    let Some(objects) = render(LEADER_ELECTION) else {
        return;
    };
    let config = read("configs/kubernetes.toml");
    let fragment = read(&format!("{LEADER_ELECTION}/leader-election.toml"));
    let pipeline = pipeline_text(objects);
    assert_eq!(pipeline, format!("{config}\n{fragment}"));
    // It loads, and only the Lease was added.
    let path = Path::new("leader-election/pipeline.toml");
    if let Err(err) = tracescale_core::config::load_str(path, pipeline) {
        panic!("{}", err.render(false));
    }
    let mut variant: toml::Table = toml::from_str(pipeline).unwrap();
    let base: toml::Table = toml::from_str(&config).unwrap();
    let exporter = variant["exporters"]["cluster"].as_table().unwrap();
    assert!(
        base["exporters"]["cluster"]
            .get("leader_election")
            .is_none()
    );
    assert!(exporter.contains_key("leader_election"), "{pipeline}");
    variant
        .get_mut("exporters")
        .and_then(|e| e.get_mut("cluster"))
        .and_then(|c| c.as_table_mut())
        .unwrap()
        .remove("leader_election");
    assert_eq!(variant, base);
    // Several replicas, where the base runs one.
    let replicas = |objects: &[Value]| one(objects, "Deployment")["spec"]["replicas"].clone();
    assert_eq!(replicas(objects), 2);
    if let Some(base) = render(BASE) {
        assert_eq!(replicas(base), 1);
        assert_eq!(
            one(base, "Deployment")["spec"]["strategy"]["type"],
            "Recreate"
        );
    }
}

#[test]
fn rbac_grants_what_the_exporter_needs_and_the_lease_only_with_leader_election() {
    let Some(base) = render(BASE) else { return };
    assert_eq!(grants(base), triples(EXPORTER));
    let Some(variant) = render(LEADER_ELECTION) else {
        return;
    };
    let mut expected = triples(EXPORTER);
    expected.extend(triples(LEASE));
    assert_eq!(grants(variant), expected);

    for objects in [base, variant] {
        // The binding gives that Role to the account the pods run as, in their namespace.
        let binding = one(objects, "RoleBinding");
        let account = one(objects, "ServiceAccount");
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(
            binding["roleRef"]["name"],
            one(objects, "Role")["metadata"]["name"]
        );
        let subjects = binding["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(subjects[0]["name"], account["metadata"]["name"]);
        assert_eq!(subjects[0]["namespace"], account["metadata"]["namespace"]);
        assert_eq!(
            pod_template(objects)["spec"]["serviceAccountName"],
            account["metadata"]["name"]
        );
    }
}

#[test]
fn the_deployment_runs_the_mounted_pipeline_as_the_image_expects() {
    let Some(objects) = render(BASE) else { return };
    let c = container(objects);
    // The command reads the file the ConfigMap's key becomes under the mount.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| str_of(a, "an argument"))
        .collect();
    assert_eq!(args[..2], ["run", "-c"]);
    let file = Path::new(args[2]);
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| file.parent() == Some(Path::new(str_of(&m["mountPath"], "mountPath"))))
        .unwrap_or_else(|| panic!("nothing is mounted where {} is read", file.display()));
    assert_eq!(mount["readOnly"], true);
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount would not see updates"
    );
    let volume = pod_template(objects)["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let configmap = pipeline_configmap(objects);
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);
    let key = file.file_name().unwrap().to_str().unwrap();
    assert!(configmap["data"].get(key).is_some(), "no key {key}");
    // The image's default command is the same.
    let cmd = format!("CMD {}", serde_json::to_string(&args).unwrap()).replace(",", ", ");
    assert!(read("Dockerfile").contains(&cmd), "Dockerfile: want {cmd}");

    // Non-root as the image's user, read-only, probes on the telemetry port.
    let pod = &pod_template(objects)["spec"]["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true);
    assert_eq!(pod["runAsUser"], 65532);
    assert!(read("Dockerfile").contains("USER 65532:65532"));
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let config: toml::Table = toml::from_str(&read("configs/kubernetes.toml")).unwrap();
    let telemetry = config["service"]["telemetry_address"].as_str().unwrap();
    let port = |name: &str| {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["containerPort"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    for probe in ["readinessProbe", "livenessProbe"] {
        let named = str_of(&c[probe]["httpGet"]["port"], "probe port");
        assert!(telemetry.ends_with(&format!(":{}", port(named))), "{probe}");
    }
    assert!(telemetry.ends_with(&format!(":{}", port("metrics"))));
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert!(c["resources"]["requests"]["cpu"].is_string());
}

#[test]
fn the_receiver_takes_its_token_from_the_secret_the_collector_sends() {
    let Some(objects) = render(BASE) else { return };
    let config: toml::Table = toml::from_str(&read("configs/kubernetes.toml")).unwrap();
    let token = config["receivers"]["otlp"]["bearer_token"]
        .as_str()
        .unwrap();
    let var = token
        .strip_prefix("${env:")
        .and_then(|t| t.split([':', '}']).next())
        .expect("bearer_token from the environment");
    let env = container(objects)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == var)
        .unwrap_or_else(|| panic!("the container does not set {var}"));
    let secret = &env["valueFrom"]["secretKeyRef"];
    assert!(
        secret["optional"] != true,
        "a missing Secret must stop the pod"
    );
    assert!(
        kind(objects, "Secret").is_empty(),
        "no token in the package"
    );
    let collector = read("examples/kubernetes/otel-collector.yaml");
    assert!(
        collector.contains(&format!("authorization: \"Bearer ${{env:{var}}}\"")),
        "the Collector sends the token from {var}"
    );
    assert!(collector.contains(&format!("name: {var}")));
    let secret_name = str_of(&secret["name"], "Secret name");
    assert!(collector.contains(&format!(
        "name: {secret_name}, key: {}",
        secret["key"].as_str().unwrap()
    )));
}

#[test]
fn the_service_monitor_and_budget_select_the_deployments_pods() {
    for dir in [BASE, LEADER_ELECTION, KEDA] {
        let Some(objects) = render(dir) else { return };
        let deployment = one(objects, "Deployment");
        let pods = &pod_template(objects)["metadata"]["labels"];
        assert!(
            selects(&deployment["spec"]["selector"]["matchLabels"], pods),
            "{dir}"
        );
        // The main Service, and in the leader-election variant a headless one for routing
        // whole traces to each pod: all of them reach the Deployment's pods.
        let services = kind(objects, "Service");
        for s in &services {
            assert!(
                selects(&s["spec"]["selector"], pods),
                "{dir}: Service {}",
                name(s)
            );
        }
        let service = *services
            .iter()
            .find(|s| name(s) == "tracescale")
            .unwrap_or_else(|| panic!("{dir}: no Service tracescale"));
        let pdb = one(objects, "PodDisruptionBudget");
        assert!(
            selects(&pdb["spec"]["selector"]["matchLabels"], pods),
            "{dir}: PDB"
        );
        // A ServiceMonitor selects Services, and scrapes a named port of theirs.
        let monitor = one(objects, "ServiceMonitor");
        assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
        assert!(
            selects(
                &monitor["spec"]["selector"]["matchLabels"],
                &service["metadata"]["labels"]
            ),
            "{dir}: ServiceMonitor"
        );
        for other in services.iter().filter(|s| name(s) != "tracescale") {
            assert!(
                !selects(
                    &monitor["spec"]["selector"]["matchLabels"],
                    &other["metadata"]["labels"]
                ),
                "{dir}: the ServiceMonitor also scrapes {}",
                name(other)
            );
        }
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["path"], "/metrics");
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == endpoint["port"])
            .expect("the ServiceMonitor's port is the Service's");
        assert_eq!(port["targetPort"], "metrics");
        // Every object lands in one namespace.
        for object in objects {
            assert_eq!(object["metadata"]["namespace"], "shop", "{}", name(object));
        }
    }
}

/// Every metric name the package's dashboard and alerts use.
fn used_metrics(objects: &[Value]) -> BTreeSet<String> {
    let dashboards: Vec<_> = kind(objects, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    assert_eq!(dashboards.len(), 1, "one dashboard ConfigMap");
    let json = str_of(&dashboards[0]["data"]["tracescale.json"], "the dashboard");
    let dashboard: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(str_of(&target["expr"], "an expr").to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            exprs.push(query.to_string());
        }
    }
    let rule = one(objects, "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for alert in group["rules"].as_array().unwrap() {
            exprs.push(str_of(&alert["expr"], "an alert's expr").to_string());
        }
    }
    exprs.iter().flat_map(|e| metric_names(e)).collect()
}

/// `tracescale_…` identifiers in a text.
fn metric_names(text: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("tracescale_") {
        let preceded = rest[..at].chars().next_back().is_some_and(ident);
        let tail = &rest[at..];
        let end = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
        if !preceded {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The names the code registers: every `"tracescale_…"` string literal under core/ and
/// components/, and the engine's per-component counters, which core spells with a format.
fn exported_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut core = Vec::new();
    walk(&repo().join("core/src"), &mut core);
    let mut components = Vec::new();
    walk(&repo().join("components/src"), &mut components);
    let mut names = BTreeSet::new();
    for source in core.iter().chain(&components) {
        for (at, _) in source.match_indices("\"tracescale_") {
            let literal = &source[at + 1..];
            let name = &metric_names(literal)[0];
            if literal[name.len()..].starts_with('"') {
                names.insert(name.clone());
            }
        }
    }
    let core = core.concat();
    for template in [
        "\"tracescale_{kind}_{what}_total\"",
        "\"tracescale_{}_dropped_total\"",
    ] {
        assert!(
            core.contains(template),
            "core no longer spells {template}: update this list"
        );
    }
    for kind in ["receiver", "processor", "exporter"] {
        for what in ["received", "emitted", "failed", "dropped"] {
            names.insert(format!("tracescale_{kind}_{what}_total"));
        }
    }
    names
}

#[test]
fn the_dashboard_and_alerts_use_only_metrics_the_code_exports() {
    let Some(objects) = render(BASE) else { return };
    let used = used_metrics(objects);
    let exported = exported_metrics();
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "not exported by the code: {unknown:?}");
    // What the dashboard and alerts are for: intake, refusals, queues, decisions by rule and
    // target, the API, the leader.
    for needed in [
        "tracescale_receiver_received_total",
        "tracescale_receiver_dropped_total",
        "tracescale_receiver_otlp_refused_requests_total",
        "tracescale_queue_items",
        "tracescale_latency_rules_decisions_total",
        "tracescale_latency_rules_rule_stale",
        "tracescale_scale_current_replicas",
        "tracescale_scale_api_retries_total",
        "tracescale_scale_leader",
    ] {
        assert!(
            used.contains(needed),
            "neither dashboard nor alerts use {needed}"
        );
    }
    let alerts: BTreeSet<&str> = one(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(&r["alert"], "alert"))
        .collect();
    for alert in [
        "TracescaleRefusingSpans",
        "TracescaleRulesStale",
        "TracescaleKubernetesAPIUnavailable",
        "TracescaleNoLeader",
    ] {
        assert!(alerts.contains(alert), "no alert {alert}");
    }
}

#[test]
fn metric_names_are_found_whole() {
    assert_eq!(
        metric_names("rate(tracescale_a_total{x=\"y\"}[5m]) / my_tracescale_b + tracescale_c"),
        ["tracescale_a_total", "tracescale_c"]
    );
}

#[test]
fn the_keda_variant_runs_the_keda_config_with_no_access_to_workloads() {
    use tracescale_components::scaling::AllowPattern;
    use tracescale_components::scaling::target::parse_workload;

    let Some(objects) = render(KEDA) else { return };
    for rbac in ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"] {
        assert!(kind(objects, rbac).is_empty(), "no {rbac}: KEDA acts");
    }
    // The container runs configs/keda.toml, byte for byte, from the mounted ConfigMap.
    let text = read("configs/keda.toml");
    let configmap = pipeline_configmap(objects);
    assert!(
        configmap["data"]["keda.toml"].as_str() == Some(text.as_str()),
        "the rendered keda.toml differs from configs/keda.toml"
    );
    let c = container(objects);
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "-c", "/etc/tracescale/keda.toml"])
    );
    if let Err(err) = tracescale_core::config::load_str(Path::new("configs/keda.toml"), &text) {
        panic!("{}", err.render(false));
    }
    let config: toml::Table = toml::from_str(&text).unwrap();
    let exporters = config["exporters"].as_table().unwrap();
    assert_eq!(exporters.keys().collect::<Vec<_>>(), ["keda"]);
    let exporter = &exporters["keda"];
    // The exporter's port is the container's `keda` port, which the Service exposes.
    let endpoint = exporter["endpoint"].as_str().unwrap();
    let container_port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "keda")
        .expect("a container port `keda`");
    assert!(endpoint.ends_with(&format!(":{}", container_port["containerPort"])));
    let service = one(objects, "Service");
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["targetPort"] == "keda")
        .expect("the Service exposes the `keda` port");
    let address = format!(
        "{}.{}.svc.cluster.local:{}",
        name(service),
        str_of(&service["metadata"]["namespace"], "namespace"),
        port["port"]
    );
    // Each ScaledObject asks tracescale about a workload it may answer for, in its namespace,
    // with the bounds the exporter applies to it.
    let allow: Vec<AllowPattern> = exporter["allow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| AllowPattern::parse(p.as_str().unwrap()).unwrap())
        .collect();
    let policy = &exporter["policy"];
    let targets = exporter["targets"].as_array().unwrap();
    let scaled = kind(objects, "ScaledObject");
    assert_eq!(scaled.len(), 2);
    let mut types = BTreeSet::new();
    for so in scaled {
        assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
        let namespace = str_of(&so["metadata"]["namespace"], "namespace");
        let triggers = so["spec"]["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1, "{}", name(so));
        let trigger = &triggers[0];
        types.insert(str_of(&trigger["type"], "type").to_string());
        assert!(
            trigger.get("metricType").is_none(),
            "AverageValue, the default"
        );
        assert_eq!(trigger["metadata"]["scalerAddress"], address.as_str());
        let target =
            parse_workload(str_of(&trigger["metadata"]["target"], "target"), namespace).unwrap();
        assert_eq!(target.namespace, namespace);
        assert!(allow.iter().any(|p| p.matches(&target)), "{target}");
        let reference = &so["spec"]["scaleTargetRef"];
        assert_eq!(reference["name"], target.name.as_str());
        let kind_of = reference["kind"].as_str().unwrap_or("Deployment");
        assert_eq!(kind_of, target.kind);
        let bound = |key: &str, default: i64| {
            targets
                .iter()
                .find(|t| t["target"].as_str() == Some(target.to_string().as_str()))
                .and_then(|t| t.get(key))
                .or_else(|| policy.get(key))
                .and_then(|v| v.as_integer())
                .unwrap_or(default)
        };
        assert_eq!(
            so["spec"]["minReplicaCount"],
            bound("min_replicas", 1),
            "{target}"
        );
        assert_eq!(
            so["spec"]["maxReplicaCount"],
            bound("max_replicas", 10),
            "{target}"
        );
    }
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["external", "external-push"]
    );
}
