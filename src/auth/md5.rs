//! Server side of PostgreSQL `AuthenticationMD5Password`.
//!
//! The client sends `"md5" + hex(md5(hex(md5(password + user)) + salt))`. The
//! server only needs `md5(password + user)` (the "inner" hash), which is also
//! what a `md5<hex>` secret in `pg_authid` (or in pgmux's config) holds.

use super::ct_eq;
use ::md5::{Digest, Md5};

/// `md5(password + user)` as 16 raw bytes.
pub fn md5_inner(password: &str, user: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    h.finalize().into()
}

/// Parses a `pg_authid`-style secret `"md5" + 32 hex digits` into the inner
/// hash. Returns `None` for anything else.
pub fn md5_inner_from_secret(secret: &str) -> Option<[u8; 16]> {
    let hex = secret.strip_prefix("md5")?.as_bytes();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let hi = hex_val(*pair.first()?)?;
        let lo = hex_val(*pair.get(1)?)?;
        *o = (hi << 4) | lo;
    }
    Some(out)
}

/// Checks the client's `PasswordMessage` (without its trailing NUL) against
/// the expected response for `salt`. Constant time in the response contents.
pub fn md5_verify(inner: &[u8; 16], salt: [u8; 4], client_response: &[u8]) -> bool {
    let expected = expected_response(inner, salt);
    ct_eq(&expected, client_response)
}

fn expected_response(inner: &[u8; 16], salt: [u8; 4]) -> [u8; 35] {
    let mut h = Md5::new();
    h.update(to_hex(inner));
    h.update(salt);
    let outer: [u8; 16] = h.finalize().into();
    let mut out = [0u8; 35];
    out[..3].copy_from_slice(b"md5");
    out[3..].copy_from_slice(&to_hex(&outer));
    out
}

fn to_hex(bytes: &[u8; 16]) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;

    #[test]
    fn matches_postgres_protocol() {
        for (user, pass) in [("alice", "secret"), ("", ""), ("bob", "pässwörd ✓")] {
            let inner = md5_inner(pass, user);
            for salt in [[0u8; 4], [1, 2, 3, 4], [0xff, 0, 0x7f, 0x80]] {
                let resp = md5_hash(user.as_bytes(), pass.as_bytes(), salt);
                assert!(md5_verify(&inner, salt, resp.as_bytes()), "{user}/{pass}");
                assert_eq!(&expected_response(&inner, salt)[..], resp.as_bytes());
            }
        }
    }

    #[test]
    fn secret_roundtrip() {
        let secret = postgres_protocol::password::md5(b"secret", "alice");
        assert_eq!(md5_inner_from_secret(&secret), Some(md5_inner("secret", "alice")));
        let upper = format!("md5{}", secret[3..].to_uppercase());
        assert_eq!(md5_inner_from_secret(&upper), Some(md5_inner("secret", "alice")));
        for bad in [
            "",
            "md5",
            "md5abc",
            "xyz0123456789abcdef0123456789abcdef",
            &secret[..34],
        ] {
            assert_eq!(md5_inner_from_secret(bad), None, "{bad}");
        }
        let mut bad = secret.clone();
        bad.replace_range(10..11, "g");
        assert_eq!(md5_inner_from_secret(&bad), None);
        assert_eq!(md5_inner_from_secret("md5é123456789abcdef0123456789abcde"), None);
    }

    #[test]
    fn wrong_password_or_salt_fails() {
        let inner = md5_inner("secret", "alice");
        let salt = [9, 8, 7, 6];
        let wrong = md5_hash(b"alice", b"Secret", salt);
        assert!(!md5_verify(&inner, salt, wrong.as_bytes()));
        let other_user = md5_hash(b"alicE", b"secret", salt);
        assert!(!md5_verify(&inner, salt, other_user.as_bytes()));
        let right = md5_hash(b"alice", b"secret", salt);
        assert!(!md5_verify(&inner, [9, 8, 7, 5], right.as_bytes()));
        // Trailing NUL must be stripped by the caller.
        let mut with_nul = right.clone().into_bytes();
        with_nul.push(0);
        assert!(!md5_verify(&inner, salt, &with_nul));
    }

    #[test]
    fn garbage_fails() {
        let inner = md5_inner("secret", "alice");
        let salt = [1, 2, 3, 4];
        let right = md5_hash(b"alice", b"secret", salt);
        let upper = right.to_uppercase();
        let garbage: [&[u8]; 6] = [
            b"",
            b"md5",
            &[0xff; 35],
            &right.as_bytes()[..34],
            upper.as_bytes(),
            b"secret",
        ];
        for g in garbage {
            assert!(!md5_verify(&inner, salt, g));
        }
    }
}
