//! A pipeline file, as `tracescale validate` loads it: a config or diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
// Link the built-in components so that their tables are built and validated too.
use tracescale_components as _;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(err) = tracescale_core::config::load_str(std::path::Path::new("fuzz.toml"), &text) {
        let _ = err.render(false);
    }
});
