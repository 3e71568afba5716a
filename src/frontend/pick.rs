//! Where a transaction goes (read_write_split): the primary, or a replica that passes the lag
//! check and has replayed the client's writes.

use super::cancel::CancelHandle;
use super::conn::ClientConn;
use crate::config::PoolMode;
use crate::pool::Pool;
use crate::route::choose::{first_request, Preference};
use crate::route::replicas::Replica;
use crate::route::Target;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Where a transaction goes. No borrow: it is kept beside the session for the transaction.
#[derive(Clone, Copy)]
pub enum Pick {
    /// `wrote`: the request may write, so read-your-writes holds the client's next reads.
    Primary { wrote: bool },
    /// The index of a replica in the client's pool's route.
    Replica(usize),
}

impl Pick {
    /// The pool that serves it; `primary` is the client's own.
    pub fn pool(self, primary: &Arc<Pool>) -> &Arc<Pool> {
        match self {
            Pick::Replica(i) => primary
                .route
                .as_ref()
                .and_then(|route| route.pools.get(i))
                .unwrap_or(primary),
            Pick::Primary { .. } => write_pool(primary),
        }
    }

    /// The replica, if it is one.
    pub fn replica(self, primary: &Pool) -> Option<&Arc<Replica>> {
        let Pick::Replica(i) = self else { return None };
        primary.route.as_ref()?.set.list.get(i)
    }

    /// Counts the transaction on its replica (least_outstanding) until the guard drops.
    pub fn begin(self, primary: &Pool) -> Option<Outstanding> {
        let replica = self.replica(primary)?.clone();
        replica.outstanding.fetch_add(1, Ordering::Relaxed);
        replica.reads_served.fetch_add(1, Ordering::Relaxed);
        Some(Outstanding(replica))
    }
}

pub struct Outstanding(Arc<Replica>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where writes go: after a followed failover, the promoted replica's pool.
pub fn write_pool(primary: &Arc<Pool>) -> &Arc<Pool> {
    primary.route.as_ref().and_then(|r| r.write_pool()).unwrap_or(primary)
}

/// Transaction and statement modes with read_write_split: a transaction that starts with a
/// read may go to a replica that passes the lag check (and has replayed the client's writes).
/// Writes go to the primary, or to the replica that replaced it (`route::failover`).
pub fn pick(cancel: &CancelHandle, client: &ClientConn, mode: PoolMode) -> Pick {
    let primary = &cancel.pool;
    let Some(route) = primary.route.as_ref() else {
        return Pick::Primary { wrote: false };
    };
    // Also without read_write_split: the monitor follows a failover.
    route
        .set
        .monitor(|| (primary.target.clone(), (*primary.credentials()).clone()));
    if !route.split || mode == PoolMode::Session || client.tracker.status != b'I' {
        return Pick::Primary { wrote: route.split };
    }
    let frames = client.buf.get(..client.ready).unwrap_or_default();
    let target = match cancel.route {
        Preference::Primary => Target::Primary,
        Preference::Replica => Target::Replica,
        Preference::Auto => first_request(frames, &client.prepared, &route.deny),
    };
    if target == Target::Primary {
        return Pick::Primary { wrote: true };
    }
    let wrote_at = match route.read_your_writes {
        true => cancel.wrote_at.load(Ordering::Acquire),
        false => 0,
    };
    match route
        .set
        .choose(wrote_at, primary.counts.active.load(Ordering::Relaxed))
    {
        Some(i) => Pick::Replica(i),
        None => Pick::Primary { wrote: false },
    }
}
