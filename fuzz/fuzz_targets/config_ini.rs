//! pgbouncer.ini conversion (`config::ini::convert`, its reader and value parsers).
//!
//! Never panics; an error has a line (or is the one file-level error, a missing [pgbouncer]
//! section); a converted file is valid TOML (values quoted and escaped: an ini value cannot
//! inject TOML), and reading it as a pooler.toml does not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::fuzzing::ini_convert;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ini_convert(text) {
        Ok(converted) => {
            if let Err(e) = converted.toml.parse::<toml::Table>() {
                panic!(
                    "converted TOML does not parse: {e}\n--- ini\n{text}\n--- toml\n{}",
                    converted.toml
                );
            }
            if let Err(e) = converted.config() {
                assert_eq!(e.origin, "fuzz.ini", "{e}");
            }
        }
        Err(e) => {
            assert!(
                e.line.is_some() || e.message.starts_with("no [pgbouncer] section"),
                "{e} for {text:?}"
            );
            if let Some(line) = e.line {
                assert!(
                    line >= 1 && line <= text.lines().count().max(1) + 1,
                    "line {line}: {e} for {text:?}"
                );
            }
        }
    }
});
