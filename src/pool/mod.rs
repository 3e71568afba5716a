//! Pools of server connections, one per (database, user), and the registry that holds them.

pub mod janitor;
pub mod pool;
pub mod registry;

pub use pool::{Lease, Pool, PoolError, PoolSettings};
pub use registry::{PoolKey, Pools};
