//! md5 authentication (`auth::md5`).
//!
//! `md5_verify` accepts exactly postgres-protocol's (libpq's) answer for the password, user
//! and salt, and nothing else; `md5_inner_from_secret` reads back what `md5<hex>` it is given
//! (any case) and refuses everything else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::auth::md5::{md5_inner, md5_inner_from_secret, md5_verify};
use postgres_protocol::authentication::md5_hash;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let salt = [data[0], data[1], data[2], data[3]];
    let split = usize::from(data[4]).min(data.len() - 5);
    let (a, b) = data[5..].split_at(split);
    let (Ok(user), Ok(password)) = (std::str::from_utf8(a), std::str::from_utf8(b)) else {
        // Bytes as a client response and as a secret.
        let _ = md5_inner_from_secret(&String::from_utf8_lossy(data));
        assert!(!md5_verify(&md5_inner("p", "u"), salt, data) || data == md5_hash(b"u", b"p", salt).as_bytes());
        return;
    };
    let inner = md5_inner(password, user);
    let expected = md5_hash(user.as_bytes(), password.as_bytes(), salt);
    assert!(md5_verify(&inner, salt, expected.as_bytes()));
    // Any other response is refused: the fuzz bytes, or the right one with a byte changed.
    assert_eq!(md5_verify(&inner, salt, b), b == expected.as_bytes());
    let mut wrong = expected.clone().into_bytes();
    let i = usize::from(data[4]) % wrong.len();
    wrong[i] ^= data[0] | 1;
    assert!(!md5_verify(&inner, salt, &wrong));
    assert!(!md5_verify(&inner, salt, &expected.as_bytes()[..34]));

    let hex: String = inner.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(md5_inner_from_secret(&format!("md5{hex}")), Some(inner));
    assert_eq!(
        md5_inner_from_secret(&format!("md5{}", hex.to_uppercase())),
        Some(inner)
    );
    if let Some(parsed) = md5_inner_from_secret(password) {
        let back: String = parsed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            format!("md5{back}"),
            format!("md5{}", password[3..].to_ascii_lowercase())
        );
    }
});
