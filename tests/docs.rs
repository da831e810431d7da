//! The docs stay true: every TOML block in a component README builds, and every config key is
//! documented.

use tracescale_core::config::build_from_toml;
use tracescale_core::registry;

use crate::conformance::{component_tables, readme, toml_blocks};

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
