//! Any text as a policy file: parsing, validating, rendering diagnostics
//! and describing what it grants must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::load::PolicyFile;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    match PolicyFile::from_text("fuzz.toml".into(), "/nonexistent".into(), text) {
        Ok(file) => {
            let _ = file.render_warnings();
            let _ = warden::check::describe(&file);
        }
        Err(error) => {
            let _ = error.render();
        }
    }
});
