//! Every registered component goes through the same life: build from the first TOML example in
//! its README, start, one batch, shutdown twice.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use tracescale_components::exporters::kubernetes::testing::FakeApiServer;
use tracescale_components::receivers::demo_traces::Generator;
use tracescale_core::component::{ComponentKind, Emitter};
use tracescale_core::config::{Built, build_from_toml};
use tracescale_core::registry::{self, ComponentFactory};
use tracescale_core::signal::{
    Decision, Evidence, ReplicaLimits, ScaleChange, Signal, SignalKind, Target,
};
use tracescale_core::testing;

use crate::util::repo;

/// The README of a built-in component.
pub(crate) fn readme(factory: &ComponentFactory) -> PathBuf {
    repo()
        .join("components/src")
        .join(factory.kind().section())
        .join(factory.type_name)
        .join("README.md")
}

/// The ```toml blocks of a markdown file.
pub(crate) fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The component tables of a TOML block: (kind, id, type, table as TOML text).
pub(crate) fn component_tables(block: &str) -> Vec<(ComponentKind, String, String, String)> {
    let doc: toml::Table = toml::from_str(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
    let mut out = Vec::new();
    for kind in ComponentKind::ALL {
        let Some(section) = doc.get(kind.section()).and_then(|s| s.as_table()) else {
            continue;
        };
        for (id, table) in section {
            let mut table = table.as_table().cloned().unwrap_or_default();
            let ty = match table.remove("type") {
                Some(t) => t.as_str().unwrap().to_string(),
                None => id.split('/').next().unwrap().to_string(),
            };
            if kind == ComponentKind::Exporter {
                // The engine's keys, read by the loader, not by the exporter.
                for key in ["queue_size", "queue_items", "when_full", "signals"] {
                    table.remove(key);
                }
            }
            out.push((kind, id.clone(), ty, toml::to_string(&table).unwrap()));
        }
    }
    out
}

fn first_example(factory: &ComponentFactory) -> (String, String) {
    let path = readme(factory);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml_blocks(&text)
        .iter()
        .flat_map(|b| component_tables(b))
        .find(|(kind, _, ty, _)| *kind == factory.kind() && ty == factory.type_name)
        .map(|(_, id, _, table)| (id, table))
        .unwrap_or_else(|| panic!("{} has no example of the component", path.display()))
}

fn batch() -> Signal {
    Signal::Traces(Generator::new(1, 0.1).batch(20))
}

fn decision() -> Decision {
    Decision {
        target: Target {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "checkout".into(),
            namespace: "shop".into(),
        },
        change: ScaleChange::Step(1),
        limits: ReplicaLimits::default(),
        rule: "conformance".into(),
        reason: "one decision".into(),
        evidence: Evidence::default(),
        resources: None,
        timestamp_unix_nano: u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        )
        .unwrap(),
    }
}

#[tokio::test]
async fn every_registered_component_builds_starts_takes_a_batch_and_stops_twice() {
    let all = registry::all();
    assert!(
        registry::duplicates().is_empty(),
        "{:?}",
        registry::duplicates()
    );
    for factory in all {
        let (id, mut table) = first_example(factory);
        let mut grpc_port = 0;
        if factory.kind() == ComponentKind::Receiver && factory.type_name == "otlp" {
            // The README binds the well-known ports; a test binds free ones.
            let mut t: toml::Table = toml::from_str(&table).unwrap();
            grpc_port = crate::util::free_port();
            t.insert("grpc".into(), format!("127.0.0.1:{grpc_port}").into());
            t.insert(
                "http".into(),
                format!("127.0.0.1:{}", crate::util::free_port()).into(),
            );
            table = toml::to_string(&t).unwrap();
        }
        // The file receiver replays a recording made here.
        let recording = tempfile::TempDir::new().unwrap();
        if factory.kind() == ComponentKind::Receiver && factory.type_name == "file" {
            let path = recording.path().join("spans.jsonl");
            let Signal::Traces(traces) = batch() else {
                unreachable!()
            };
            let line = serde_json::to_string(
                &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
                    resource_spans: traces.resource_spans,
                },
            )
            .unwrap();
            std::fs::write(&path, line + "\n").unwrap();
            let mut t: toml::Table = toml::from_str(&table).unwrap();
            t.insert("path".into(), path.display().to_string().into());
            table = toml::to_string(&t).unwrap();
        }
        if factory.kind() == ComponentKind::Exporter && factory.type_name == "keda" {
            // The README's listener port may be taken on the machine running the tests.
            let mut t: toml::Table = toml::from_str(&table).unwrap();
            t.insert("endpoint".into(), "127.0.0.1:0".into());
            table = toml::to_string(&t).unwrap();
        }
        // The kubernetes exporter talks to an in-process API server through a kubeconfig.
        let mut _apiserver = None;
        let kube_dir = tempfile::TempDir::new().unwrap();
        if factory.kind() == ComponentKind::Exporter && factory.type_name == "kubernetes" {
            let server = FakeApiServer::start().await.unwrap();
            server.add("shop", "deployments", "checkout", 2);
            let path = kube_dir.path().join("kubeconfig");
            server.write_kubeconfig(&path, "token").unwrap();
            let mut t: toml::Table = toml::from_str(&table).unwrap();
            t.insert("kubeconfig".into(), path.display().to_string().into());
            table = toml::to_string(&t).unwrap();
            _apiserver = Some(server);
        }
        let built = build_from_toml(factory, &id, &table)
            .unwrap_or_else(|e| panic!("{id}: {}", e.render(false)));
        let deadline = || Instant::now() + Duration::from_secs(3);
        match built {
            Built::Receiver(mut r) => {
                let (output, mut rx) = testing::output(&id, 16);
                r.start(testing::receiver_context(&id, output))
                    .await
                    .unwrap();
                match factory.type_name {
                    "otlp" => {
                        let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(format!("http://127.0.0.1:{grpc_port}"))
                            .await
                            .unwrap();
                        let Signal::Traces(traces) = batch() else {
                            unreachable!()
                        };
                        client
                            .export(opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
                                resource_spans: traces.resource_spans,
                            })
                            .await
                            .unwrap();
                        let got = rx.recv().await;
                        assert!(got.is_some_and(|s| s.item_count() == 60));
                    }
                    "file" => {
                        let got = rx.recv().await;
                        assert!(got.is_some_and(|s| s.item_count() == 60));
                    }
                    "demo_traces" | "simulated_traces" => {
                        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                            .await
                            .unwrap_or_else(|_| panic!("{id} sent no batch"));
                        assert!(got.is_some_and(|s| s.item_count() > 0));
                    }
                    other => panic!("add a conformance driver that sends {other} one batch"),
                }
                r.shutdown(deadline()).await.unwrap();
                r.shutdown(deadline()).await.unwrap();
            }
            Built::Processor(mut p) => {
                let mut out = Emitter::new();
                p.start(&testing::processor_context(&id)).await.unwrap();
                p.process(batch(), &mut out).await.unwrap();
                if p.tick_interval().is_some() {
                    p.tick(&mut out).await.unwrap();
                }
                p.shutdown(&mut out, deadline()).await.unwrap();
                p.shutdown(&mut out, deadline()).await.unwrap();
            }
            Built::Exporter(mut e) => {
                e.start(&testing::exporter_context(&id)).await.unwrap();
                let signal = if factory.takes.contains(&SignalKind::Decisions)
                    && !factory.takes.contains(&SignalKind::Traces)
                {
                    Signal::Decisions(vec![decision()])
                } else {
                    batch()
                };
                e.export(signal).await.unwrap();
                // Nothing listens at a default endpoint: an exporter may report what it gave up
                // on at the deadline, and nothing else; the second stop has nothing left.
                if let Err(err) = e.shutdown(deadline()).await {
                    let message = err.to_string();
                    assert!(
                        message.contains("before the shutdown deadline"),
                        "{id}: {message}"
                    );
                }
                e.shutdown(deadline()).await.unwrap();
            }
        }
    }
}

#[test]
fn every_built_in_component_is_registered() {
    let all = registry::all();
    for (kind, ty) in tracescale_components::BUILT_IN {
        assert!(
            all.iter()
                .any(|f| f.kind().as_str() == *kind && f.type_name == *ty),
            "{kind} {ty} is not registered: is its module declared and its crate linked?"
        );
    }
    assert_eq!(
        all.len(),
        tracescale_components::BUILT_IN.len(),
        "BUILT_IN is out of date"
    );
}
