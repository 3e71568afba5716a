//! Authentication as a server to clients. (As a client to servers: backend/connect.rs, on
//! postgres-protocol.)

pub mod cache;
pub mod md5;
pub mod scram;

pub use cache::KeyCache;

/// Constant-time equality; the length itself is not secret.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
