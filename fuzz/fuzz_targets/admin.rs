//! Console commands (`admin::command::parse`).
//!
//! Any UTF-8 text parses or is refused without a panic (multi-byte characters anywhere, as in
//! the `SET x €` panic fixed before); a final `;` changes nothing; errors are syntax errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::admin::command::parse;

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);
    let parsed = parse(&sql);
    if let Err(e) = &parsed {
        assert_eq!(e.code, "42601", "{e:?}");
    }
    if !sql.trim_end().ends_with(';') {
        let with_semi = format!("{sql};");
        assert_eq!(parse(&with_semi).ok(), parsed.ok(), "{sql:?}");
    }
});
