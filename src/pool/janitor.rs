//! Periodic upkeep of every pool: close stale idle connections, keep min_pool_size open.

use super::registry::Pools;
use std::sync::Arc;
use std::time::Duration;

/// Runs until the process ends. `interval` comes from the caller so tests can run it fast.
pub async fn run(pools: Arc<Pools>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for pool in pools.all() {
            let open = pool.prune_idle();
            if open >= pool.settings.min_size {
                continue;
            }
            // One connection per pool per tick: a server that refuses logins is not hammered.
            let Some(_permit) = pool.try_permit() else { continue };
            match pool.open().await {
                Ok(conn) => pool.add_idle(conn),
                Err(e) => tracing::warn!(pool = %pool, error = %e, "could not open a connection for min_pool_size"),
            }
        }
    }
}
