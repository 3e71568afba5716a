//! pooler.toml (`config::Config::parse`).
//!
//! Never panics; a file that is not TOML at all (by the toml crate, which pgmux also uses) is
//! refused with the line of the problem; every error names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = Config::parse(text, "fuzz.toml");
    let syntax_error = text.parse::<toml::Table>().is_err();
    match result {
        Ok(_) => assert!(!syntax_error, "not TOML, yet accepted: {text:?}"),
        Err(e) => {
            assert_eq!(e.origin, "fuzz.toml");
            if syntax_error {
                assert!(e.line.is_some(), "TOML syntax error without a line: {e} for {text:?}");
            }
            if let Some(line) = e.line {
                assert!(
                    line >= 1 && line <= text.lines().count().max(1) + 1,
                    "line {line} of {text:?}: {e}"
                );
            }
        }
    }
});
