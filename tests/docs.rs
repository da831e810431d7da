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
