//! Protocol-level prepared statements in transaction and statement pooling modes.
//!
//! A client's named statement lives on whichever server happens to serve it, so pgmux keeps
//! the client's own view (`client`: its names, each mapped to a pooler-wide statement named
//! after a hash of its text and parameter types) and what each server holds (`server`: an LRU
//! set of pooler-wide names). On the way to the server (`rewrite`), named Parse, Bind, Describe
//! and Close messages are renamed and a Parse is injected where the server lacks the statement;
//! on the way back (`replies`), the answers to what pgmux injected are swallowed and a few are
//! rewritten, guided by a queue of the replies pgmux expects (`Reply`).
//!
//! Safety rule of the server set: it never claims a statement the server lacks. Every Parse
//! pgmux sends is preceded by a Close of the same name, so a statement the server holds without
//! the set knowing (a skipped eviction, a failed DISCARD ALL) costs a re-parse, never an error.

pub mod client;
mod inplace;
pub mod keyhash;
pub mod local;
pub mod query;
pub mod replies;
pub mod rewrite;
pub mod server;
pub mod statement;

#[cfg(test)]
mod tests;

pub use client::ClientStatements;
pub use replies::on_reply;
pub use rewrite::translate;
pub use server::ServerStatements;
pub use statement::Statement;
