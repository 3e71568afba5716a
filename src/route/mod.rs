//! Which server a transaction goes to: the primary, or a replica for what only reads.

pub mod classify;
pub(crate) mod lexer;

pub use classify::{classify, hint, DenyList, Target};
