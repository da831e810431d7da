//! One bad pipeline file per kind of error, its rendered diagnostics snapshotted.

use std::path::Path;

#[test]
fn bad_files_render_precise_diagnostics() {
    let dir = Path::new("tests/fixtures/config");
    let mut files: Vec<_> = std::fs::read_dir(crate::util::repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    for name in files {
        // A relative path keeps the snapshots free of this machine's directories.
        let path = dir.join(&name);
        let full = crate::util::repo().join(&path);
        let text = std::fs::read_to_string(&full).unwrap();
        let err = match tracescale_core::config::load_str(&path, &text) {
            Ok(_) => panic!("{} loaded, but it is a bad file", path.display()),
            Err(err) => err,
        };
        let stem = Path::new(&name)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        insta::assert_snapshot!(stem, err.render(false));
    }
}

#[test]
fn warnings_point_at_the_key_that_causes_them() {
    let dir = Path::new("tests/fixtures/warnings");
    let mut files: Vec<_> = std::fs::read_dir(crate::util::repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for name in files {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(crate::util::repo().join(&path)).unwrap();
        let config = match tracescale_core::config::load_str(&path, &text) {
            Ok(config) => config,
            Err(err) => panic!("{} does not load:\n{}", path.display(), err.render(false)),
        };
        assert!(
            !config.warnings.is_empty(),
            "{} loads without a warning",
            path.display()
        );
        let stem = Path::new(&name)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        insta::assert_snapshot!(format!("warning_{stem}"), config.warnings);
    }
}
