//! Server connections: connect, log in, and the state each one carries between clients.

pub mod cancel;
pub mod connect;
pub mod error;
mod scram_key;
pub mod server;
pub mod settings;

pub use connect::{connect, Credentials, Target};
pub use error::BackendError;
pub use server::ServerConn;
pub use settings::Settings;
