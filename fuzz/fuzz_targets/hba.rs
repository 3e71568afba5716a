//! pg_hba.conf (`config::hba::Hba::parse`).
//!
//! Never panics; every error is `file:line: problem`, with a line of the file; `@file` lists
//! are read through the callback only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::config::hba::Hba;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let read = |name: &str| -> Result<String, String> {
        match name {
            "users" => Ok("alice, bob\n+admins\n".into()),
            _ => Err(format!("{name}: no such file")),
        }
    };
    if let Err(e) = Hba::parse(text, "fuzz.hba", &read) {
        let rest = e
            .strip_prefix("fuzz.hba:")
            .unwrap_or_else(|| panic!("no file in {e:?}"));
        let (line, _) = rest.split_once(": ").unwrap_or_else(|| panic!("no line in {e:?}"));
        let line: usize = line.parse().unwrap_or_else(|_| panic!("no line in {e:?}"));
        assert!(
            line >= 1 && line <= text.lines().count().max(1) + 1,
            "{e:?} for {text:?}"
        );
    }
});
