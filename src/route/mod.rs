//! Which server a transaction goes to: the primary, or a replica for what only reads.

pub mod choose;
pub mod classify;
pub mod failover;
pub(crate) mod lexer;
pub mod replicas;

pub use classify::{classify, hint, DenyList, Target};
