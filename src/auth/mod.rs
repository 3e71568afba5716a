//! Authentication as a server to clients. (As a client to servers: backend/connect.rs, on
//! postgres-protocol.)

pub mod cache;
pub mod md5;
pub mod scram;

pub use cache::KeyCache;

/// Whether a clear-text password is the one `secret` was made from (plain, md5 or SCRAM), in
/// constant time. Against a SCRAM secret that costs its iteration count of HMACs (milliseconds,
/// any number the secret names), on a blocking thread: a client that has proved nothing yet
/// must not hold up the worker's other clients.
pub async fn password_matches(secret: &crate::config::Secret, user: &str, given: &str) -> bool {
    use crate::config::Secret;
    match secret {
        Secret::Plain(p) => ct_eq(p.as_bytes(), given.as_bytes()),
        Secret::Md5(inner) => ct_eq(&md5::md5_inner(given, user), inner),
        Secret::Scram(s) => {
            let (s, given) = (s.clone(), given.to_owned());
            let check = move || {
                let keys = scram::ScramKeys::derive(&given, &s.salt, s.iterations);
                ct_eq(&keys.stored_key, &s.stored_key)
            };
            tokio::task::spawn_blocking(check).await.unwrap_or(false)
        }
    }
}

/// Constant-time equality; the length itself is not secret.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
