//! Session SET/RESET tracking (`frontend::set::parse`, `candidate`).
//!
//! `candidate` (the cheap filter every Query passes) lets through whatever `parse` tracks; a
//! tracked value is ASCII, at most 4096 bytes, and the `SET "name" TO value;` pgmux re-applies
//! on the next server (`apply_sql`) reads back as the same command (so it is one statement, nothing smuggled).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::frontend::set::{candidate, parse, Command};

fuzz_target!(|text: &[u8]| {
    let parsed = parse(text);
    if parsed.is_some() {
        assert!(
            candidate(text),
            "tracked but not a candidate: {:?}",
            String::from_utf8_lossy(text)
        );
    }
    match parsed {
        Some(Command::Set { name, value }) => {
            assert!(value.is_ascii() && value.len() <= 4096);
            assert!(name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'.'));
            // As `backend::settings::apply_sql` writes it: each dotted part of the name quoted.
            let quoted: Vec<String> = name.split('.').map(|p| format!("\"{p}\"")).collect();
            let again = format!("SET {} TO {value};", quoted.join("."));
            assert_eq!(
                parse(again.as_bytes()),
                Some(Command::Set {
                    name: name.clone(),
                    value: value.clone()
                }),
                "re-applied as {again:?} from {:?}",
                String::from_utf8_lossy(text)
            );
            let mut with_nul = again.into_bytes();
            with_nul.push(0);
            assert!(parse(&with_nul).is_some());
        }
        Some(Command::Reset(name)) => {
            let quoted: Vec<String> = name.split('.').map(|p| format!("\"{p}\"")).collect();
            assert_eq!(
                parse(format!("RESET {};", quoted.join(".")).as_bytes()),
                Some(Command::Reset(name))
            );
        }
        Some(Command::ResetAll) | None => {}
    }
});
