//! Graceful shutdown, shared by the listener, every client task and `main`.
//!
//! The first SIGINT or SIGTERM starts draining: the listener closes, clients finish the
//! transactions they are in (up to `shutdown_timeout`), and each client that reaches its
//! waiting point between transactions parks there. SIGINT holds a parked client's new request
//! until the end; SIGTERM refuses it at once with `57P01`. When every client is parked (or the
//! deadline passes, and the transactions still running are cut with `57P01`), the parked clients
//! get `57P01`, idle server connections are closed and pgmux exits. `frontend::drain` is the
//! client side of this.

use crate::frontend::Shared;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Which signal started the shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SIGINT: transactions in flight finish; new requests wait for the end.
    Graceful,
    /// SIGTERM: the same, but new requests are refused at once.
    Refuse,
}

#[derive(Default)]
pub struct Shutdown {
    draining: CancellationToken,
    /// SHUTDOWN WAIT_FOR_CLIENTS: the listener closes before draining starts.
    accepting_ends: CancellationToken,
    closing: CancellationToken,
    refuse: AtomicBool,
    deadline: OnceLock<(Instant, Duration)>,
    parked: AtomicU32,
    /// An upgrade in place: idle clients are offered to the new process here (`upgrade`).
    handover: OnceLock<std::sync::mpsc::Sender<crate::upgrade::Item>>,
    /// The new process stopped answering: the clients left are drained as in a shutdown.
    handover_failed: AtomicBool,
    /// Every client task, so the end can wait for them to say goodbye.
    pub tracker: TaskTracker,
}

impl Shutdown {
    /// Starts draining; false if a shutdown had already started.
    pub fn begin(&self, mode: Mode, timeout: Duration) -> bool {
        if self.deadline.set((Instant::now() + timeout, timeout)).is_err() {
            return false;
        }
        self.refuse.store(mode == Mode::Refuse, Ordering::Release);
        self.draining.cancel();
        true
    }

    /// An upgrade in place: draining, with idle clients handed to the new process through
    /// `offers` instead of parked; those it cannot take park as in a shutdown.
    pub fn begin_handover(&self, offers: std::sync::mpsc::Sender<crate::upgrade::Item>, timeout: Duration) {
        let _ = self.handover.set(offers);
        self.begin(Mode::Graceful, timeout);
    }

    /// Where an idle client is offered, while an upgrade hands clients over.
    pub fn handover(&self) -> Option<&std::sync::mpsc::Sender<crate::upgrade::Item>> {
        match self.handover_failed.load(Ordering::Acquire) {
            true => None,
            false => self.handover.get(),
        }
    }

    /// Whether this drain is an upgrade's (even one whose new process stopped answering).
    pub fn is_upgrade(&self) -> bool {
        self.handover.get().is_some()
    }

    pub fn handover_failed(&self) {
        self.handover_failed.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.deadline.get().is_some()
    }

    /// SIGTERM: a request from a parked client is refused at once.
    pub fn refusing(&self) -> bool {
        self.refuse.load(Ordering::Acquire)
    }

    /// When transactions still running are cut, and the shutdown_timeout that set it.
    pub fn deadline(&self) -> Option<(Instant, Duration)> {
        self.deadline.get().copied()
    }

    /// Resolves when draining starts.
    pub async fn draining(&self) {
        self.draining.cancelled().await
    }

    /// Closes the listener without draining (SHUTDOWN WAIT_FOR_CLIENTS).
    pub fn stop_accepting(&self) {
        self.accepting_ends.cancel();
    }

    /// Resolves when the listener should close.
    pub async fn no_more_clients(&self) {
        tokio::select! {
            _ = self.draining.cancelled() => {}
            _ = self.accepting_ends.cancelled() => {}
        }
    }

    /// Resolves when pgmux closes the parked clients.
    pub async fn closing(&self) {
        self.closing.cancelled().await
    }

    /// Counts a client parked at its waiting point until the guard drops.
    pub fn park(&self) -> Parked<'_> {
        self.parked.fetch_add(1, Ordering::AcqRel);
        Parked(self)
    }

    /// The end of a drain: waits until every client is parked or gone, or the deadline, then
    /// closes the parked clients, waits for the client tasks (a second at most: a client that
    /// does not read its goodbye is not waited for) and closes the idle server connections.
    pub async fn drain(shared: &Shared) {
        let this = &shared.shutdown;
        let Some((deadline, timeout)) = this.deadline() else {
            return;
        };
        loop {
            let (clients, parked) = (
                shared.clients.load(Ordering::Acquire),
                this.parked.load(Ordering::Acquire),
            );
            if clients <= parked {
                tracing::info!(clients, "every transaction in flight has finished");
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    busy = clients - parked,
                    "shutdown_timeout ({} s) passed: cutting the transactions and sessions still running",
                    timeout.as_secs_f64()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        this.closing.cancel();
        this.tracker.close();
        if tokio::time::timeout(Duration::from_secs(1), this.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(left = this.tracker.len(), "client tasks still running at exit");
        }
        for pool in shared.pools.all().into_iter().chain(shared.pools.retired()) {
            let replicas = pool.replica_pools();
            for pool in std::iter::once(&pool).chain(replicas) {
                while pool.close_one_idle("pgmux is shutting down", crate::stats::CloseReason::Admin) {}
            }
        }
    }
}

pub struct Parked<'a>(&'a Shutdown);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::AcqRel);
    }
}
