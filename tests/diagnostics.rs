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
