//! Pools of server connections, one per (database, user), and the registry that holds them.

pub mod gate;
pub mod janitor;
pub mod limits;
mod open;
pub mod permits;
#[allow(clippy::module_inception)] // pool/pool.rs, as ARCHITECTURE.md lays it out
pub mod pool;
pub mod registry;

pub use gate::Gate;
pub use limits::{Limit, LimitKind};
pub use pool::{Checkout, IdleServer, Lease, Pool, PoolError, PoolSettings};
pub use registry::{PoolKey, Pools, Reconfigured};
