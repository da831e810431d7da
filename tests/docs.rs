//! The docs stay true: every component README opens with its status table, every TOML block in
//! it builds, and every config key is documented.

use std::collections::{BTreeMap, BTreeSet};

use tracescale_core::config::build_from_toml;
use tracescale_core::registry::{self, ComponentFactory};
use tracescale_core::signal::SignalKind;

use crate::conformance::{component_tables, readme, toml_blocks};

/// The stabilities a component README may declare.
const STABILITIES: [&str; 4] = ["development", "alpha", "beta", "stable"];

#[test]
fn every_component_readme_has_a_status_table() {
    let mut wrong = Vec::new();
    for factory in registry::all() {
        let path = readme(factory);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(why) = check_status_table(factory, &text) {
            wrong.push(format!("{}: {why}", path.display()));
        }
    }
    assert!(wrong.is_empty(), "status tables:\n{}", wrong.join("\n"));
}

#[test]
fn every_component_folder_is_a_registered_component() {
    let repo = crate::util::repo();
    let registered: BTreeSet<(String, String)> = registry::all()
        .into_iter()
        .map(|f| (f.kind().section().to_string(), f.type_name.to_string()))
        .collect();
    for section in ["receivers", "processors", "exporters"] {
        let dir = repo.join("components/src").join(section);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if !entry.path().join("README.md").is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                registered.contains(&(section.to_string(), name.clone())),
                "{}: a component folder with a README, but no component `{name}` is registered",
                entry.path().display()
            );
        }
    }
}

/// The `| status | |` table: its type, kind and signals match the factory, and it declares a
/// stability.
fn check_status_table(factory: &ComponentFactory, markdown: &str) -> Result<(), String> {
    let rows = status_rows(markdown).ok_or("no `| status | |` table")?;
    let row = |key: &str| {
        rows.get(key)
            .map(String::as_str)
            .ok_or(format!("the status table has no `{key}` row"))
    };
    let want = format!("`{}`", factory.type_name);
    if row("type")? != want {
        return Err(format!("type is {:?}, not {want:?}", row("type")?));
    }
    let kind = factory.kind().to_string();
    if row("kind")? != kind {
        return Err(format!("kind is {:?}, not {kind:?}", row("kind")?));
    }
    let signals = row("signals")?;
    let (takes, emits) = signals.split_at(signals.find("emits").unwrap_or(signals.len()));
    let named = |part: &str| -> BTreeSet<SignalKind> {
        SignalKind::ALL
            .into_iter()
            .filter(|s| {
                part.split(|c: char| !c.is_alphanumeric())
                    .any(|w| w == s.as_str())
            })
            .collect()
    };
    let takes_want: BTreeSet<SignalKind> = factory.takes.iter().copied().collect();
    let emits_want: BTreeSet<SignalKind> = factory.emits.iter().copied().collect();
    if named(takes) != takes_want || named(emits) != emits_want {
        return Err(format!(
            "signals {signals:?} do not say what it takes ({takes_want:?}) and emits ({emits_want:?})"
        ));
    }
    let stability = row("stability")?;
    if !STABILITIES.contains(&stability) {
        return Err(format!(
            "stability {stability:?} is none of {}",
            STABILITIES.join(", ")
        ));
    }
    Ok(())
}

/// The rows of the markdown table whose header is `| status | |`, as `key -> value`.
fn status_rows(markdown: &str) -> Option<BTreeMap<String, String>> {
    let mut lines = markdown
        .lines()
        .skip_while(|l| l.split('|').nth(1).map(str::trim) != Some("status"));
    lines.next()?;
    Some(
        lines
            .skip_while(|l| l.starts_with("|-"))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let cells: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
                match cells.as_slice() {
                    [key, value] => Some((key.trim().to_string(), value.trim().to_string())),
                    _ => None,
                }
            })
            .collect(),
    )
}

#[test]
fn every_toml_block_in_component_readmes_builds() {
    for factory in registry::all() {
        let path = readme(factory);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let blocks = toml_blocks(&text);
        assert!(
            blocks.len() >= 2,
            "{}: give a minimal and a full example",
            path.display()
        );
        for block in blocks {
            let tables = component_tables(&block);
            assert!(
                !tables.is_empty(),
                "{}: a block without a component",
                path.display()
            );
            for (kind, id, ty, table) in tables {
                let f = registry::lookup(kind, &ty)
                    .unwrap_or_else(|| panic!("{}: unknown {kind} {ty}", path.display()));
                if let Err(e) = build_from_toml(f, &id, &table) {
                    panic!(
                        "{}: example [{}.{id}] does not build:\n{}",
                        path.display(),
                        kind.section(),
                        e.render(false)
                    );
                }
            }
        }
    }
}

#[test]
fn every_config_key_is_documented_in_the_readme() {
    for factory in registry::all() {
        let path = readme(factory);
        let text = std::fs::read_to_string(&path).unwrap();
        for key in (factory.config_keys)() {
            assert!(
                text.contains(&format!("| `{key}` |")),
                "{}: key `{key}` has no row in a config table",
                path.display()
            );
        }
    }
}

/// The package's pipeline ConfigMap is generated from configs/kubernetes.toml itself, not kept
/// beside it (tests/package.rs renders it and compares the bytes).
#[test]
fn the_kubernetes_package_generates_its_pipeline_from_the_kubernetes_config() {
    let repo = crate::util::repo();
    let generator = std::fs::read_to_string(repo.join("configs/kustomization.yaml")).unwrap();
    assert!(
        generator.contains("- pipeline.toml=kubernetes.toml"),
        "{generator}"
    );
    let base =
        std::fs::read_to_string(repo.join("examples/kubernetes/base/kustomization.yaml")).unwrap();
    assert!(base.contains("- ../../../configs\n"), "{base}");
    let deployment =
        std::fs::read_to_string(repo.join("examples/kubernetes/base/deployment.yaml")).unwrap();
    assert!(
        !deployment.contains("kind: ConfigMap"),
        "no ConfigMap kept by hand"
    );
}

#[test]
fn the_rbac_example_grants_only_what_the_exporter_uses() {
    let rbac =
        std::fs::read_to_string(crate::util::repo().join("examples/kubernetes/base/rbac.yaml"))
            .unwrap();
    let rules: Vec<&str> = rbac
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("- apiGroups") || l.starts_with("resources") || l.starts_with("verbs")
        })
        .collect();
    assert_eq!(
        rules,
        [
            r#"- apiGroups: ["apps"]"#,
            r#"resources: ["deployments/scale", "statefulsets/scale"]"#,
            r#"verbs: ["get", "patch", "update"]"#,
            r#"- apiGroups: [""]"#,
            r#"resources: ["events"]"#,
            r#"verbs: ["create"]"#,
            r#"- apiGroups: ["autoscaling"]"#,
            r#"resources: ["horizontalpodautoscalers"]"#,
            r#"verbs: ["list"]"#,
        ]
    );
    assert!(!rbac.contains("ClusterRole"), "namespaced only");
    assert!(!rbac.contains('*'), "no wildcards");
}

#[test]
fn the_image_runs_as_the_deployment_expects() {
    let repo = crate::util::repo();
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).unwrap();
    let manifest =
        std::fs::read_to_string(repo.join("examples/kubernetes/base/deployment.yaml")).unwrap();
    // The user the Deployment's securityContext demands is the image's.
    assert!(manifest.contains("runAsUser: 65532"), "{manifest}");
    assert!(dockerfile.contains("USER 65532:65532"), "{dockerfile}");
    // The image's command is the Deployment's, against the ConfigMap's mount.
    assert!(
        manifest.contains(r#"args: ["run", "-c", "/etc/tracescale/pipeline.toml"]"#),
        "{manifest}"
    );
    assert!(
        dockerfile.contains(r#"CMD ["run", "-c", "/etc/tracescale/pipeline.toml"]"#),
        "{dockerfile}"
    );
    assert!(
        manifest.contains("mountPath: /etc/tracescale"),
        "{manifest}"
    );
    // It builds the binary from the locked dependency set.
    assert!(
        dockerfile.contains("cargo build --release --locked --bin tracescale"),
        "{dockerfile}"
    );
}
