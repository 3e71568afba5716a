//! Periodic upkeep of every pool: close stale, dead and surplus idle connections, pay back
//! permits owed after a shrink, keep min_pool_size open (also after a server restart, at most
//! one login attempt per server_login_retry).

use super::registry::Pools;
use std::sync::Arc;

/// Runs until the process ends. Its interval follows the shortest timeout it enforces, among
/// them query_wait_timeout for clients waiting for a permit (`Pools::janitor_interval`), so
/// tests that use fractions of a second run it fast.
pub async fn run(pools: Arc<Pools>) {
    loop {
        tokio::time::sleep(pools.janitor_interval()).await;
        for pool in pools.retired() {
            pool.prune_idle();
        }
        for pool in pools.all() {
            pool.prune_idle();
            pool.spawn_fill_min();
            for replica in pool.replica_pools() {
                replica.prune_idle();
            }
        }
    }
}
