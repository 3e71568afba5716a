//! userlist.txt (`config::userlist::parse`, and the secrets it reads).
//!
//! Never panics; every error is `file:line: problem` and never shows a secret; each user
//! accepted appears in the file between double quotes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::config::userlist::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, "fuzz.txt") {
        Ok(users) => {
            for name in users.keys() {
                assert!(!name.is_empty());
                assert!(text.contains(&format!("\"{}\"", name.replace('"', "\"\""))), "{name:?}");
            }
        }
        Err(e) => {
            let rest = e
                .strip_prefix("fuzz.txt:")
                .unwrap_or_else(|| panic!("no file in {e:?}"));
            let (line, _) = rest.split_once(": ").unwrap_or_else(|| panic!("no line in {e:?}"));
            let line: usize = line.parse().unwrap_or_else(|_| panic!("no line in {e:?}"));
            assert!(line >= 1 && line <= text.lines().count().max(1), "{e:?}");
        }
    }
});
