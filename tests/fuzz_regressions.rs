//! Inputs the fuzzers found (and seed inputs) replayed through the fuzz targets' checks, so a
//! fixed crash stays fixed.

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = crate::util::repo().join("fuzz/regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn every_regression_input_is_handled_cleanly() {
    use tracescale_components::receivers::otlp::body::check_body;
    let mut replayed = 0;
    for (_, data) in inputs("otlp_protobuf") {
        check_body(None, &data, false);
        replayed += 1;
    }
    for (_, data) in inputs("otlp_json") {
        check_body(None, &data, true);
        replayed += 1;
    }
    for (_, data) in inputs("otlp_compressed") {
        if let Some((&selector, body)) = data.split_first() {
            let encoding = if selector & 1 == 0 { "gzip" } else { "zstd" };
            check_body(Some(encoding), body, selector & 2 == 2);
        }
        replayed += 1;
    }
    for (name, data) in inputs("config") {
        let text = String::from_utf8_lossy(&data);
        if let Err(err) = tracescale_core::config::load_str(Path::new("fuzz.toml"), &text) {
            assert!(!err.render(false).is_empty(), "{name}");
        }
        replayed += 1;
    }
    assert!(replayed >= 4, "the seed inputs are missing");
}
