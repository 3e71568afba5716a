//! Peering, PgBouncer's `peer_id` and `[peers]`: several pgmux processes behind one load
//! balancer forward each other's cancel requests. A CancelRequest comes on a new connection,
//! which the balancer may send to any process; the key says which process handed it out.
//!
//! The key: with `peer_id` set, the 32-bit secret of every BackendKeyData this process hands
//! out is `peer_id << 16 | forwarded << 15 | 15 random bits`, the forwarded bit clear (in
//! PgBouncer the peer id sits in bytes 1 and 2 of its random 8-byte key and two bits of the
//! last byte count forwards; pgmux cannot use the process id, which in session mode is the
//! server's real pid). In transaction mode the process id is then random too (above 2^22), so
//! a key keeps about 46 bits nobody can guess, as PgBouncer's 45; in session mode it is the
//! server's pid and 15 random bits.
//!
//! A process that receives a key naming another peer sends the same 16 bytes, with the
//! forwarded bit set, to that peer on a new connection, once: a key with the bit set is never
//! forwarded again, so two processes whose `[peers]` disagree cannot bounce a cancel between
//! them. A key naming no configured peer, or naming this process but no client of it,
//! cancels nothing (as PostgreSQL, nothing is answered either way).

use super::Shared;
use crate::backend::cancel::cancel;
use crate::backend::connect::Target;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The bit of a secret set on a cancel request one peer forwarded to another.
pub const FORWARDED: u32 = 1 << 15;

/// How long a forward may take: waiting for a slot, connecting, and the peer's own cancel.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The secret of a new cancel key of process `peer_id` (0: peering off, all of `random`).
pub fn secret(peer_id: u16, random: u32) -> i32 {
    let bits = match peer_id {
        0 => random,
        id => (u32::from(id) << 16) | (random & (FORWARDED - 1)),
    };
    bits as i32
}

/// The peer id a secret names and whether it was forwarded already.
pub fn decode(secret: i32) -> (u16, bool) {
    let bits = secret as u32;
    ((bits >> 16) as u16, bits & FORWARDED != 0)
}

/// What to do with a CancelRequest whose key no client of this process holds as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Forwarded here by a peer: look for this secret (the forwarded bit cleared).
    Local(i32),
    /// Send to that peer this secret (the forwarded bit set).
    Forward { peer: u16, secret: i32 },
    /// Cancel nothing, for this reason.
    Drop(&'static str),
}

/// `own` is this process's peer_id.
pub fn route(own: u16, secret: i32) -> Route {
    if own == 0 {
        return Route::Drop("no client has this key (peering is off)");
    }
    let (peer, forwarded) = decode(secret);
    let cleared = (secret as u32 & !FORWARDED) as i32;
    if peer == own {
        return match forwarded {
            true => Route::Local(cleared),
            false => Route::Drop("no client has this key"),
        };
    }
    if forwarded {
        return Route::Drop("a forwarded cancel request names another peer: not forwarded again");
    }
    if peer == 0 {
        return Route::Drop("the key names no peer");
    }
    Route::Forward {
        peer,
        secret: (secret as u32 | FORWARDED) as i32,
    }
}

/// A CancelRequest: cancels the query of the client of this process that has the key, or
/// forwards the request to the peer the key names.
pub async fn accept(shared: &Shared, process_id: i32, secret_key: i32) {
    if let Some(handle) = shared.cancels.find(process_id, secret_key) {
        let canceled = handle.cancel_held().await;
        tracing::debug!(canceled, "cancel request");
        return;
    }
    // While an upgrade's old process still serves some clients, the key may be one of theirs;
    // the old process applies the peering rules itself.
    if crate::upgrade::predecessor().is_some() {
        let forwarded = tokio::task::spawn_blocking(move || crate::upgrade::forward_cancel(process_id, secret_key));
        if matches!(forwarded.await, Ok(true)) {
            tracing::debug!("cancel request sent on to the process this one is taking over from");
            return;
        }
    }
    match route(shared.peer_id, secret_key) {
        Route::Local(secret) => {
            let canceled = match shared.cancels.find(process_id, secret) {
                Some(handle) => handle.cancel_held().await,
                None => false,
            };
            tracing::debug!(canceled, "cancel request forwarded by a peer");
        }
        Route::Forward { peer, secret } => shared.peers.forward(shared, peer, process_id, secret).await,
        Route::Drop(why) => tracing::debug!("cancel request dropped: {why}"),
    }
}

/// Forwarding to one peer: a slot per connection (its pool_size), and what SHOW PEER_POOLS counts.
pub struct PeerPool {
    size: u32,
    slots: Semaphore,
    /// Cancel requests waiting for a slot.
    pub waiting: AtomicU32,
    /// Cancel requests being forwarded, each on its own connection to the peer.
    pub active: AtomicU32,
    /// Cancel requests forwarded (sent, or tried) since start.
    pub forwarded: AtomicU64,
    /// Forwards that failed (connect, send, or the timeout).
    pub failed: AtomicU64,
}

/// The peers cancel requests went to, by peer id.
#[derive(Default)]
pub struct Peers {
    pools: Mutex<HashMap<u16, Arc<PeerPool>>>,
}

/// Counts one up while it lives.
struct Counted<'a>(&'a AtomicU32);

impl<'a> Counted<'a> {
    fn new(n: &'a AtomicU32) -> Counted<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        Counted(n)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Peers {
    /// The forwarding state of `peer`, made with `size` slots (again when pool_size changed).
    pub fn pool(&self, peer: u16, size: u32) -> Arc<PeerPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(&peer).filter(|p| p.size == size) {
            return pool.clone();
        }
        let pool = Arc::new(PeerPool {
            size,
            slots: Semaphore::new(size as usize),
            waiting: AtomicU32::new(0),
            active: AtomicU32::new(0),
            forwarded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        pools.insert(peer, pool.clone());
        pool
    }

    /// The pool of `peer` if a cancel was forwarded there.
    pub fn get(&self, peer: u16) -> Option<Arc<PeerPool>> {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.get(&peer).cloned()
    }

    /// Sends the CancelRequest `(process_id, secret)` to `peer`, as `[peers]` names it now.
    async fn forward(&self, shared: &Shared, peer: u16, process_id: i32, secret: i32) {
        let config = shared.config.load_full();
        let Some(to) = config.peers.get(&peer) else {
            tracing::debug!(peer, "cancel request dropped: the key names a peer not in [peers]");
            return;
        };
        let pool = self.pool(peer, config.peer_pool_size(to));
        pool.forwarded.fetch_add(1, Ordering::Relaxed);
        let target = Target {
            host: to.host.clone(),
            port: to.port,
            database: String::new(),
            connect_timeout: FORWARD_TIMEOUT,
            tls: None,
        };
        let sent = tokio::time::timeout(FORWARD_TIMEOUT, async {
            let permit = {
                let _waiting = Counted::new(&pool.waiting);
                pool.slots.acquire().await
            };
            let _permit = permit.map_err(std::io::Error::other)?;
            let _active = Counted::new(&pool.active);
            cancel(&target, process_id, secret).await
        })
        .await;
        match sent {
            Ok(Ok(())) => tracing::debug!(peer, "cancel request forwarded"),
            Ok(Err(error)) => {
                pool.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer, addr = %target.addr(), %error, "forwarding a cancel request to a peer failed");
            }
            Err(_) => {
                pool.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer, addr = %target.addr(), "forwarding a cancel request to a peer timed out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_carries_the_peer_id_and_fifteen_random_bits() {
        assert_eq!(
            secret(0, 0xdead_beef),
            0xdead_beef_u32 as i32,
            "peering off: all random"
        );
        let s = secret(1, 0xffff_ffff);
        assert_eq!(s as u32, 0x0001_7fff, "the forwarded bit is never set in a new key");
        assert_eq!(decode(s), (1, false));
        assert_eq!(decode(secret(65535, 0)), (65535, false));
        assert_eq!(secret(65535, 0) as u32, 0xffff_0000);
        assert_eq!(decode(secret(258, 0x1234_5678)), (258, false));
        assert_eq!(secret(258, 0x1234_5678) as u32 & 0x7fff, 0x5678);
        // Keys of one peer differ in their random bits only.
        let keys: std::collections::HashSet<i32> = (0..40_000u32).map(|r| secret(7, r)).collect();
        assert_eq!(keys.len(), 1 << 15);
        assert!(keys.iter().all(|k| decode(*k) == (7, false)));
    }

    #[test]
    fn a_key_is_forwarded_once_to_the_peer_it_names() {
        let key = secret(2, 0x4242);
        // On peer 1: forwarded to 2 with the bit set.
        let Route::Forward { peer, secret: sent } = route(1, key) else {
            panic!("{:?}", route(1, key))
        };
        assert_eq!(peer, 2);
        assert_eq!(decode(sent), (2, true));
        assert_eq!(sent as u32 & !FORWARDED, key as u32, "only the bit changes");
        // On peer 2: its own client's key, the bit cleared for the lookup.
        assert_eq!(route(2, sent), Route::Local(key));
        // On peer 3 (a balancer or a [peers] that disagrees): never forwarded again.
        assert!(matches!(route(3, sent), Route::Drop(_)));
        assert!(matches!(route(1, sent), Route::Drop(_)), "no way back either");
        // A key of this process that no client holds: nothing.
        assert!(matches!(route(2, key), Route::Drop(_)));
        // Peering off: nothing is forwarded.
        assert!(matches!(route(0, key), Route::Drop(_)));
        assert!(matches!(route(0, sent), Route::Drop(_)));
        // A key naming peer 0 (handed out before peering, or forged).
        assert!(matches!(route(1, 0x0000_1234), Route::Drop(_)));
    }

    #[test]
    fn a_pool_is_remade_when_its_size_changes() {
        let peers = Peers::default();
        let a = peers.pool(3, 2);
        assert!(Arc::ptr_eq(&a, &peers.pool(3, 2)));
        let b = peers.pool(3, 4);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.slots.available_permits(), 4);
        assert!(peers.get(3).is_some_and(|p| Arc::ptr_eq(&p, &b)));
        assert!(peers.get(4).is_none());
    }
}
