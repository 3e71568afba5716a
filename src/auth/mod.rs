//! Authentication as a server to clients. (As a client to servers: backend/connect.rs, on
//! postgres-protocol.)

pub mod cache;
pub mod md5;
pub mod scram;

pub use cache::KeyCache;
