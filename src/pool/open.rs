//! The slow paths of a checkout: waiting for a permit (and the reserve), checking an idle
//! connection that sat too long, waiting for room under the connection limits, and logging in a
//! new connection: the breaker gates the failures it counts (the address is down), and
//! server_login_retry the others (the server refused these credentials or this database).

use super::limits::Limit;
use super::permits::{Acquire, Acquired, Permit};
use super::pool::{Pool, PoolError, PoolSettings};
use crate::backend::{connect, BackendError, Credentials, ServerConn};
use crate::breaker::{Admission, BreakerState, ProbeGuard};
use crate::stats::{now_us, CloseReason};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long server_check_query may take when server_connect_timeout is 0.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// When the client began to wait (`stats::now_us`), if it did: query_wait_timeout counts from
/// there (made an instant only on the rare paths that need one).
type Deadline = Option<u64>;

impl Pool {
    /// Waits in FIFO order for a permit. A client that waited longer than reserve_pool_timeout
    /// may take a reserve permit instead. Returns the permit, whether it is a reserve one, and
    /// when the wait began (query_wait_timeout, which the janitor enforces on this wait through
    /// `Permits::expire`, also bounds the rest of the checkout).
    pub(super) async fn wait_for_permit(&self) -> Result<(Permit<'_>, bool, Deadline), PoolError> {
        let since = now_us();
        self.counts.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = scopeguard(|| {
            self.counts.waiting.fetch_sub(1, Ordering::Relaxed);
        });
        let main = self.permits.acquire(since);
        let got = match self.has_reserve() {
            // Without a reserve pool no reserve timer is armed: the common wait has no timer.
            false => (main.await, false),
            // Boxed: its timer would be copied into the box of every wait.
            true => Box::pin(self.main_or_reserve(main, since)).await,
        };
        drop(waiting);
        match got {
            (Acquired::Permit(permit), reserve) => {
                if reserve {
                    tracing::info!(pool = %self, waited_ms = now_us().saturating_sub(since) / 1000,
                        "client waited longer than reserve_pool_timeout: using the reserve pool");
                }
                Ok((permit, reserve, Some(since)))
            }
            (Acquired::TimedOut, _) => Err(self.wait_timeout(&self.settings(), None)),
        }
    }

    /// The wait with a reserve pool: after reserve_pool_timeout, a reserve permit too.
    async fn main_or_reserve<'a>(&'a self, main: Acquire<'a>, since: u64) -> (Acquired<'a>, bool) {
        let reserve_timeout = self.settings.load().reserve_timeout;
        let reserve = async {
            tokio::time::sleep(reserve_timeout).await;
            self.reserve.acquire(since).await
        };
        tokio::select! {
            biased;
            got = main => (got, false),
            got = reserve => (got, true),
        }
    }

    fn wait_timeout(&self, settings: &PoolSettings, limit: Option<&Limit>) -> PoolError {
        PoolError::WaitTimeout {
            secs: settings.query_wait_timeout.as_secs_f64(),
            pool: self.to_string(),
            cause: limit.map(|l| format!("; {}", l.describe())).unwrap_or_default(),
        }
    }

    /// With a permit in hand: an idle connection that passes its check, or a new one.
    /// The check and the login are boxed: rare, and their futures would otherwise make every
    /// waiting checkout's future kilobytes large.
    pub(super) async fn find_server(&self, deadline: Deadline) -> Result<Box<ServerConn>, PoolError> {
        while let Some((conn, needs_check)) = self.take_idle() {
            if !needs_check {
                return Ok(conn);
            }
            if let Some(conn) = Box::pin(self.check(conn)).await {
                return Ok(conn);
            }
        }
        Box::pin(self.open_new(deadline)).await
    }

    /// Runs server_check_query on a connection that sat idle longer than server_check_delay
    /// (never when it is "", as in PgBouncer); one that fails is closed, and the client never
    /// hears of it.
    pub(super) async fn check(&self, mut conn: Box<ServerConn>) -> Option<Box<ServerConn>> {
        let settings = self.settings();
        let limit = match settings.server_connect_timeout {
            t if t.is_zero() => CHECK_TIMEOUT,
            t => t,
        };
        self.counts.testing.fetch_add(1, Ordering::Relaxed);
        let checked = tokio::time::timeout(limit, conn.run(&settings.server_check_query)).await;
        self.counts.testing.fetch_sub(1, Ordering::Relaxed);
        let why = match checked {
            Ok(Ok(outcome)) if outcome.error.is_none() && outcome.status == b'I' && conn.buf.is_empty() => {
                return Some(conn)
            }
            Ok(Ok(outcome)) => match outcome.error {
                Some(error) => format!("server_check_query failed: {error}"),
                None => format!(
                    "server_check_query left the server in state {:?}",
                    outcome.status as char
                ),
            },
            Ok(Err(e)) => format!("server_check_query failed: {e}"),
            Err(_) => format!("server_check_query took longer than {} s", limit.as_secs_f64()),
        };
        self.breaker
            .record_failure(crate::breaker::FailureCause::CheckFailed, why.clone());
        self.discard(conn, &why, CloseReason::Broken);
        self.after_failure();
        None
    }

    /// Whether the breaker lets this pool open a connection now: Ok(Some) when this caller is
    /// the half-open probe; the breaker's refusal otherwise.
    fn admit(&self) -> Result<Option<ProbeGuard>, PoolError> {
        match self.breaker.try_acquire() {
            Admission::Allowed => Ok(None),
            Admission::Probe(guard) => Ok(Some(guard)),
            Admission::Rejected(info) => {
                self.stats.refused_by_breaker.fetch_add(1, Ordering::Relaxed);
                Err(PoolError::Breaker(info, self.database.clone()))
            }
        }
    }

    /// A counted failure may have opened the breaker: then the idle connections to the address
    /// are closed (they would fail their clients one by one).
    fn after_failure(&self) {
        if self.breaker.state() != BreakerState::Closed {
            while self.close_one_idle("the circuit breaker opened", CloseReason::Broken) {}
        }
    }

    /// A server connection of this pool failed while in use (closed, or said it is shutting
    /// down): it counts against the address.
    pub fn server_failed(&self, cause: crate::breaker::FailureCause, detail: String) {
        self.breaker.record_failure(cause, detail);
        self.after_failure();
    }

    /// Opens a connection once both limits have room, or takes an idle one that came back
    /// while waiting for that room.
    async fn open_new(&self, deadline: Deadline) -> Result<Box<ServerConn>, PoolError> {
        // An open breaker answers at once; its probe ignores server_login_retry.
        let probe = self.admit()?;
        if probe.is_none() {
            if let Some(e) = self.login_blocked() {
                self.stats.refused_by_login_retry.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        if self.take_slots().is_err() {
            if let Some(conn) = self.wait_for_slot(deadline).await? {
                if let Some(probe) = probe {
                    probe.success();
                }
                return Ok(conn);
            }
        }
        self.open_with_slots(probe).await
    }

    /// Takes a slot under both limits, or names the one that is full.
    pub(super) fn take_slots(&self) -> Result<(), &Arc<Limit>> {
        if !self.db_limit.try_take() {
            return Err(&self.db_limit);
        }
        if !self.user_limit.try_take() {
            self.db_limit.untake();
            return Err(&self.user_limit);
        }
        Ok(())
    }

    /// Waits until a limit has room (Ok(None): the slots are taken) or an idle connection of
    /// this pool comes back (Ok(Some)). First closes idle connections of other pools under the
    /// full limit, as PgBouncer does.
    async fn wait_for_slot(&self, deadline: Deadline) -> Result<Option<Box<ServerConn>>, PoolError> {
        let settings = self.settings();
        let deadline = {
            let wait = settings.query_wait_timeout;
            let waited = Duration::from_micros(deadline.map_or(0, |since| now_us().saturating_sub(since)));
            (!wait.is_zero()).then(|| Instant::now() + wait.saturating_sub(waited))
        };
        let _db = self.db_limit.waiter();
        let _user = self.user_limit.waiter();
        self.counts.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = scopeguard(|| {
            self.counts.waiting.fetch_sub(1, Ordering::Relaxed);
        });
        loop {
            let db_freed = self.db_limit.notified();
            let user_freed = self.user_limit.notified();
            tokio::pin!(db_freed, user_freed);
            db_freed.as_mut().enable();
            user_freed.as_mut().enable();
            if let Some((conn, needs_check)) = self.take_idle() {
                if !needs_check {
                    return Ok(Some(conn));
                }
                if let Some(conn) = self.check(conn).await {
                    return Ok(Some(conn));
                }
                continue;
            }
            let full = match self.take_slots() {
                Ok(()) => return Ok(None),
                Err(limit) => limit.clone(),
            };
            if full.evict_idle(self) {
                continue;
            }
            let freed = async {
                tokio::select! {
                    _ = db_freed => {}
                    _ = user_freed => {}
                }
            };
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline.into(), freed).await.is_err() {
                        return Err(self.wait_timeout(&settings, Some(&full)));
                    }
                }
                None => freed.await,
            }
        }
    }

    /// Logs in with the pool's own credentials, the limits' slots already taken (given back on
    /// failure). A failure the breaker counts is the breaker's to gate; any other starts the
    /// server_login_retry window.
    pub(super) async fn open_with_slots(&self, probe: Option<ProbeGuard>) -> Result<Box<ServerConn>, PoolError> {
        let settings = self.settings();
        let mut target = self.target.clone();
        target.connect_timeout = settings.server_connect_timeout;
        // Given back on every way out, a dropped future (the client left, client_login_timeout)
        // included; a connection that logged in keeps its slots.
        let opening = Opening::new(self);
        let connected = connect(&target, &self.credentials()).await;
        match connected {
            Ok((conn, reported)) => {
                opening.keep_slots();
                match probe {
                    Some(probe) => probe.success(),
                    None => self.breaker.record_success(),
                }
                self.login_failure.lock().unwrap_or_else(|e| e.into_inner()).take();
                Ok(self.opened(conn, reported))
            }
            Err(e) => {
                let counted = crate::breaker::counts(&e);
                match probe {
                    Some(probe) => probe.backend_error(&e),
                    None if counted => {
                        self.breaker.record_backend_error(&e);
                    }
                    None => {}
                }
                self.after_failure();
                drop(opening);
                if counted {
                    let b = self.breaker.snapshot();
                    tracing::warn!(pool = %self, error = %e,
                        "server login failed (consecutive failure {} of the address, counted by its breaker)", b.consecutive_failures);
                } else {
                    let retry = settings.server_login_retry.as_secs_f64();
                    tracing::warn!(pool = %self, error = %e,
                        "server login refused; no new attempt before server_login_retry ({retry} s)");
                    *self.login_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), e.to_pg()));
                }
                Err(PoolError::Backend(e))
            }
        }
    }

    /// The last login failure, while server_login_retry has not passed since.
    pub(super) fn login_blocked(&self) -> Option<PoolError> {
        let retry = self.settings.load().server_login_retry;
        let failure = self.login_failure.lock().unwrap_or_else(|e| e.into_inner());
        let (at, error) = failure.as_ref()?;
        let ago = at.elapsed();
        (ago < retry).then(|| PoolError::LoginRetry {
            pool: self.to_string(),
            ago: ago.as_secs_f64(),
            retry: retry.as_secs_f64(),
            last: Box::new(error.clone()),
        })
    }

    /// Logs in with these credentials (passthrough tries the client's password this way). The
    /// connection counts under the limits even if it overshoots them for a moment (`add_idle`
    /// closes it then), and a failure does not start the server_login_retry window: a wrong
    /// password from one client says nothing about the server.
    pub async fn open_as(&self, credentials: &Credentials) -> Result<Box<ServerConn>, BackendError> {
        let mut target = self.target.clone();
        target.connect_timeout = self.settings.load().server_connect_timeout;
        let (conn, reported) = connect(&target, credentials).await?;
        self.db_limit.force_take();
        self.user_limit.force_take();
        Ok(self.opened(conn, reported))
    }

    fn opened(&self, mut conn: Box<ServerConn>, reported: Vec<(String, String)>) -> Box<ServerConn> {
        conn.generation = self.generation();
        self.counts.servers.fetch_add(1, Ordering::Relaxed);
        self.stats.server_opens.fetch_add(1, Ordering::Relaxed);
        self.set_welcome(reported);
        tracing::info!(pool = %self, server = conn.id, backend_pid = conn.process_id, "new server connection");
        conn
    }

    /// The janitor's part for min_pool_size: when the pool holds fewer connections, a task
    /// opens them (one task per pool at a time, so a server that hangs on connect delays only
    /// its own pool).
    /// It also runs the breaker's probe once due, so that a breaker closes by itself after a
    /// partition heals, with or without traffic.
    pub fn spawn_fill_min(self: &Arc<Self>) {
        let short = self.counts.servers.load(Ordering::Relaxed) < self.settings.load().min_size;
        if !(short || self.breaker.probe_due()) || self.paused() || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            pool.fill_min().await;
            pool.filling.store(false, Ordering::Release);
        });
    }

    /// Opens connections until the pool holds min_pool_size (or one, closed again, as the
    /// breaker's probe when it is due), without waiting for anything (a permit, a limit) and
    /// not during server_login_retry.
    async fn fill_min(&self) {
        let mut probe_due = self.breaker.probe_due();
        loop {
            let short = self.counts.servers.load(Ordering::Relaxed) < self.settings.load().min_size;
            if !short && !std::mem::take(&mut probe_due) {
                return;
            }
            // The janitor may be the breaker's probe: recovery needs no client. It asks the
            // breaker only when it would not be turned away (refusals count clients).
            if self.breaker.state() != BreakerState::Closed && !self.breaker.probe_due() {
                return;
            }
            let Some(permit) = self.try_permit() else { return };
            let probe = match self.breaker.try_acquire() {
                Admission::Allowed => None,
                Admission::Probe(guard) => Some(guard),
                Admission::Rejected(_) => return drop(permit),
            };
            if (probe.is_none() && self.login_blocked().is_some()) || self.take_slots().is_err() {
                return drop(permit);
            }
            let opened = self.open_with_slots(probe).await;
            match opened {
                // Only a probe: it closed the breaker, and the pool had all it needs.
                Ok(conn) if !short => {
                    self.discard(conn, "the breaker's probe succeeded", crate::stats::CloseReason::Idle);
                    drop(permit);
                }
                Ok(conn) => {
                    self.add_idle(conn);
                    drop(permit);
                }
                Err(_) => return drop(permit),
            }
        }
    }
}

/// A login in progress: counted in `opening` (sv_login), holding a slot under each limit.
struct Opening<'a> {
    pool: &'a Pool,
    slots: bool,
}

impl<'a> Opening<'a> {
    fn new(pool: &'a Pool) -> Opening<'a> {
        pool.counts.opening.fetch_add(1, Ordering::Relaxed);
        Opening { pool, slots: true }
    }

    /// The login succeeded: the connection holds the slots from now on.
    fn keep_slots(mut self) {
        self.slots = false;
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.pool.counts.opening.fetch_sub(1, Ordering::Relaxed);
        if self.slots {
            self.pool.db_limit.put_back(1);
            self.pool.user_limit.put_back(1);
        }
    }
}

/// Runs `f` when dropped (the waiting count survives a cancelled checkout).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
