//! One transaction's slow paths: waiting for a server, the ends other than a clean release, a
//! shutdown's deadline. The steady state (a free server at once, a clean release) runs without
//! a future of its own in `steady`.

use super::cancel::CancelHandle;
use super::conn::{ClientConn, Waited};
use super::drain::{self, Watch};
use super::pick::{Outstanding, Pick};
use super::relay::{self, RelayEnd, RelayState};
use super::release::{clean_up, drop_frame, give_back, reset_settings};
use super::session::Session;
use super::timers::{Phase, Timeouts};
use super::track::listen_tags::LISTENED;
use crate::backend::Settings;
use crate::boxed::{in_place, new_in_place};
use crate::config::PoolMode;
use crate::pool::{Checkout, Lease, Pool};
use crate::prepared;
use crate::protocol::messages::PgError;
use crate::stats::{meter::Meter, now_us};
use bytes::BytesMut;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Whether the session goes on after a transaction.
pub enum Flow {
    Next,
    Stop,
    /// The request is back in the client's buffer, to be sent again (see `Replay`).
    Retry,
}

/// A transaction that holds its server: where it went and the relay's state. Boxed beside the
/// session while it runs, so an idle client's task does not carry it.
pub struct Hot {
    pub lease: Lease,
    pub state: RelayState,
    pub pick: Pick,
    /// (Boxed: only reads sent to a replica have one.)
    replay: Option<Box<Replay>>,
    _outstanding: Option<Outstanding>,
    /// query_timeout passed once and the query's cancel was sent.
    cancelled: bool,
}

impl Hot {
    /// The relay ended in `end`: None when it goes on (the first query_timeout: the query is
    /// cancelled and the client's answer gets query_timeout again; then the server is given up).
    pub fn busy(&mut self, end: RelayEnd, cancel: &Arc<CancelHandle>) -> Option<RelayEnd> {
        if !matches!(end, RelayEnd::Timeout(Phase::Busy)) || self.cancelled {
            return Some(end);
        }
        let secs = self.state.timeouts().limit(Phase::Busy).as_secs_f64();
        tracing::warn!(pool = %self.lease.pool(), "query running longer than query_timeout ({secs} s): cancelling it");
        // Sent beside the relay: a cancel that cannot reach the server (it may take
        // server_connect_timeout to fail) does not hold up the client's answer.
        let handle = cancel.clone();
        tokio::spawn(async move { handle.cancel_held().await });
        self.cancelled = true;
        self.state.rearm_timeouts();
        None
    }
}

impl Hot {
    /// The transaction's counts go to its pool's stats, the slow-query buffer back to its
    /// server, and a write on the primary starts read-your-writes.
    #[inline(always)]
    pub fn account(&mut self, cancel: &CancelHandle) {
        let (server, pool) = self.lease.parts();
        self.state.meter.flush(&pool.stats);
        server.capture = self.state.meter.take_capture();
        if let Pick::Primary { wrote: true } = self.pick {
            cancel.wrote_at.store(now_us(), Ordering::Release);
        }
    }
}

/// Writes the answer's tail `out` and the client's waiting notifications as far as the socket
/// takes them now (plain TCP nearly always takes all): None when all went, else what is left
/// to write the usual way (over TLS, all of it, which also flushes what the relay's last write
/// left in the stream). Err when the client is gone.
#[inline(always)]
pub fn write_tail(s: &Session, mut out: BytesMut) -> std::io::Result<Option<BytesMut>> {
    if let Some(mailbox) = &s.listen {
        mailbox.take(&mut out);
    }
    let n = s.client.stream.write_now(&out)?;
    Ok((n < out.len() || s.client.stream.is_tls()).then(|| out.split_off(n)))
}

/// A read sent to a replica, kept until the replica answers, so that a replica dying before
/// any byte of its answer reached the client costs the client nothing: the request goes again,
/// to another target. Not for requests that name prepared statements (their translation
/// changed the client's view of them) nor for large ones.
struct Replay {
    frames: BytesMut,
    tracker: super::track::Tracker,
}

const REPLAY_MAX: usize = 64 * 1024;

impl Replay {
    fn take(pick: Pick, retried: bool, client: &ClientConn) -> Option<Box<Replay>> {
        if retried || !matches!(pick, Pick::Replica(..)) || client.rewrite || client.ready > REPLAY_MAX {
            return None;
        }
        Some(Box::new(Replay {
            frames: BytesMut::from(client.buf.get(..client.ready)?),
            tracker: client.tracker,
        }))
    }

    /// Puts the request back in front of whatever the client sent after it.
    fn restore(self, client: &mut ClientConn) {
        let mut buf = self.frames;
        client.ready = buf.len();
        buf.extend_from_slice(&client.buf);
        client.buf = buf;
        client.tracker = self.tracker;
    }
}

/// The client holds `lease` from now on (asked for at `asked`): counted, its cancel key aimed at
/// the server, the relay started.
pub fn begin(s: &mut Session, mut lease: Lease, pick: Pick, asked: u64, retried: bool) -> Box<Hot> {
    let timeouts = s.shared.knobs.timeouts();
    let mode = s.cancel.pool.mode();
    let (server, pool) = lease.parts();
    waited_until_now(&s.cancel, pool, asked);
    s.cancel.attach(server, pool);
    let capture = std::mem::take(&mut server.capture);
    let slow_threshold = s.shared.knobs.slow_threshold_us();
    let release_at_idle = mode != PoolMode::Session;
    // Written straight into its box: the relay's state is a few hundred bytes.
    let mut hot = new_in_place(|| Hot {
        _outstanding: pick.begin(&s.cancel.pool),
        replay: Replay::take(pick, retried, &s.client),
        lease,
        state: RelayState::new(
            release_at_idle,
            mode == PoolMode::Statement,
            timeouts,
            Meter::new(slow_threshold, capture),
        ),
        pick,
        cancelled: false,
    });
    relay::start(&mut s.client, hot.lease.conn(), &mut hot.state);
    hot
}

/// The client's wait for a server (since `asked`) is over: SHOW CLIENTS stops showing it, and
/// the pool's wait time counts it.
#[inline]
pub fn waited_until_now(cancel: &CancelHandle, pool: &Pool, asked: u64) {
    cancel.wait_since.store(0, Ordering::Relaxed);
    // Served in the turn it asked (the clock is the turn's): nothing to add.
    let waited = now_us().saturating_sub(asked);
    if waited > 0 {
        pool.stats.wait_time.fetch_add(waited, Ordering::Relaxed);
    }
}

/// Takes a server for the client's request when none was free at once: the linked server of a
/// session-mode login, a wait in the pool's queue, settings applied, another target when a
/// replica cannot lend one. `started` is what `Pool::start_checkout` gave for `pick`.
pub async fn acquire(
    s: &mut Session,
    mut pick: Pick,
    asked: u64,
    mut started: Option<Checkout<'_>>,
    retried: bool,
) -> Result<Box<Hot>, Flow> {
    let cancel = s.cancel.clone();
    let watch = &Watch::new(&s.shared.shutdown, &cancel);
    let lease = loop {
        let pool = pick.pool(&cancel.pool);
        if let Some(lease) = s.linked.take().map(|lease| *lease) {
            if Arc::ptr_eq(lease.pool(), pool) {
                break lease;
            }
            lease.release(); // a failover since login
        }
        let waited = match started.take().unwrap_or_else(|| pool.start_checkout()) {
            Checkout::Now(lease) if lease.has_settings(&s.settings) => break lease,
            started => {
                let work = pin!(s.client.wait_with(checkout_from(started, pool, &s.settings)));
                drain::until_deadline(watch, work).await
            }
        };
        // A replica that cannot lend a connection: the primary takes the read.
        if let (Some(replica), Some(Waited::Done(Err(e)))) = (pick.replica(&cancel.pool), &waited) {
            replica.ok.store(false, Ordering::Release);
            tracing::warn!(pool = %pool, replica = %pool.target.addr(), error = %e.message,
                "replica unavailable: the read goes to the primary");
            pick = Pick::Primary { wrote: false };
            continue;
        }
        match waited {
            Some(Waited::Done(Ok(lease))) => break lease,
            Some(Waited::Done(Err(e)) | Waited::Invalid(e)) => {
                waited_until_now(&cancel, pool, asked);
                pool.stats.error(e.code.as_bytes());
                Box::pin(s.client.send_error(&e)).await;
                return Err(Flow::Stop);
            }
            Some(Waited::Gone) => {
                waited_until_now(&cancel, pool, asked);
                return Err(Flow::Stop);
            }
            None => {
                waited_until_now(&cancel, pool, asked);
                drain::cut(&mut s.client, None, pool, watch).await;
                return Err(Flow::Stop);
            }
        }
    };
    Ok(begin(s, lease, pick, asked, retried))
}

/// A shutdown began while the transaction ran: it goes on until shutdown_timeout, then the
/// client is cut.
pub async fn to_deadline(s: &mut Session, mut hot: Box<Hot>) -> Flow {
    let cancel = s.cancel.clone();
    let watch = &Watch::new(&s.shared.shutdown, &cancel);
    loop {
        let relayed = {
            let (server, pool) = hot.lease.parts();
            let work = pin!(relay::relay(
                &mut s.client,
                server,
                &mut s.settings,
                &mut hot.state,
                pool
            ));
            drain::until_deadline(watch, work).await
        };
        let Some(end) = relayed else {
            cancel.detach();
            let Hot { lease, .. } = *hot;
            let pool = lease.pool().clone();
            drain::cut(&mut s.client, Some(lease), &pool, watch).await;
            return Flow::Stop;
        };
        if let Some(end) = hot.busy(end, &cancel) {
            return in_place(|| finish(s, hot, end)).await;
        }
    }
}

/// The relay ended other than with a clean release (or a release that needs a future: a RESET,
/// a LISTEN to settle, a cancel to land): the server goes back, is cleaned or is closed, and the
/// client hears why when it must.
pub async fn finish(s: &mut Session, mut hot: Box<Hot>, end: RelayEnd) -> Flow {
    s.cancel.detach();
    let listen = hot.state.listen_flags();
    let mut keep = true;
    if hot.state.settings_unknown() {
        if let RelayEnd::Release = end {
            keep = Box::pin(reset_settings(&mut hot.lease)).await;
        }
    }
    if listen != 0 && keep {
        // A server that ran LISTEN goes back to the pool only through `listen::settle`.
        hot.lease.conn().listening |= listen & LISTENED != 0;
        if let RelayEnd::Release = end {
            let ops = hot.state.listen_ops.take().map(|ops| *ops).unwrap_or_default();
            keep = Box::pin(super::listen::settle(
                &mut s.listen,
                &s.cancel.pool,
                &mut hot.lease,
                listen,
                &ops,
            ))
            .await;
            hot.lease.conn().listening &= !keep;
        }
    }
    if let (RelayEnd::ServerGone(e), Some(replica)) = (&end, hot.pick.replica(&s.cancel.pool)) {
        if let Some(replay) = hot.replay.take() {
            if hot.state.meter.untouched(replay.frames.len()) {
                replica.ok.store(false, Ordering::Release);
                tracing::warn!(pool = %hot.lease.pool(), error = %e, "replica connection lost before it answered: the read goes elsewhere");
                replay.restore(&mut s.client);
                return Flow::Retry;
            }
        }
    }
    hot.account(&s.cancel);
    let Hot { mut lease, state, .. } = *hot;
    let timeouts = state.timeouts();
    let pool = lease.pool().clone();
    let pool = &pool;
    match end {
        RelayEnd::Release => {
            if keep {
                give_back(lease, &s.cancel).await;
            } else {
                drop(lease);
            }
            let written = match write_tail(s, state.out) {
                Ok(Some(rest)) => s.client.write(&rest).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if written.is_ok() {
                return Flow::Next;
            }
        }
        RelayEnd::ClientGone => clean_up(lease, &s.client, &s.cancel, pool, &pool.settings().server_reset_query).await,
        RelayEnd::TransactionBlock => {
            pool.stats.error(b"0A000");
            let error = PgError::fatal(
                "0A000",
                "transaction blocks are not allowed in statement pooling mode (pool_mode = \"statement\")",
            )
            .with_hint("run each statement on its own, or use pool_mode = \"transaction\" for this database or user");
            Box::pin(s.client.send_error(&error)).await;
            drop_frame(lease.conn());
            clean_up(lease, &s.client, &s.cancel, pool, "").await;
        }
        RelayEnd::Timeout(Phase::Busy) => {
            // Only after the cancel: a server that answers neither the query nor its cancel is
            // unreachable or stuck, and its connection is closed (clean_up drops it).
            let secs = timeouts.limit(Phase::Busy).as_secs_f64();
            let why = format!("no answer to a query nor to its cancel within twice query_timeout ({secs} s)");
            tracing::warn!(pool = %pool, server = %lease.conn().addr, "{why}: closing the server connection");
            pool.server_failed(crate::breaker::FailureCause::Timeout, why);
            let error = PgError::fatal(
                "57014",
                format!(
                    "canceling statement: it ran longer than query_timeout ({secs} s), and the server did not answer \
                     the cancel within another {secs} s: the server connection is closed"
                ),
            )
            .with_detail("the transaction in progress is lost")
            .with_hint("the server may be unreachable; reconnect to get another connection");
            pool.stats.error(error.code.as_bytes());
            Box::pin(s.client.send_error(&error)).await;
            clean_up(lease, &s.client, &s.cancel, pool, "").await;
        }
        RelayEnd::Timeout(phase) => {
            let error = timeout_error(phase, &timeouts);
            pool.stats.error(error.code.as_bytes());
            Box::pin(s.client.send_error(&error)).await;
            clean_up(lease, &s.client, &s.cancel, pool, &pool.settings().server_reset_query).await;
        }
        RelayEnd::ClientInvalid(e) => {
            pool.stats.error(e.code.as_bytes());
            Box::pin(s.client.send_error(&e)).await;
            clean_up(lease, &s.client, &s.cancel, pool, &pool.settings().server_reset_query).await;
        }
        RelayEnd::ServerGone(e) => {
            let addr = lease.conn().addr.clone();
            tracing::warn!(pool = %pool, server = %addr, error = %e, "server connection lost");
            pool.server_failed(crate::breaker::FailureCause::UnexpectedClose, e.to_string());
            let mut error = PgError::fatal("08006", format!("server connection lost ({addr}): {e}"))
                .with_hint("the server closed the connection or crashed; reconnect to get a new one");
            if s.client.tracker.status != b'I' || !s.client.tracker.quiet() {
                error = error.with_detail(
                    "the transaction in progress is lost: PostgreSQL rolled back whatever it had not committed",
                );
            }
            pool.stats.error(b"08006");
            Box::pin(s.client.send_error(&error)).await;
        }
    }
    Flow::Stop
}

/// A lone Parse and Sync of statements the pool knows, answered without a server (see
/// `prepared::local`): the answer to write, or None when the request needs a server.
pub fn answer_alone(s: &mut Session) -> Option<BytesMut> {
    let client = &mut s.client;
    if client.tracker.status != b'I' || s.cancel.pool.max_prepared_statements() == 0 {
        return None;
    }
    let mut out = BytesMut::new();
    let frames = client.buf.get(..client.ready)?;
    if !prepared::local::answer(frames, &mut client.prepared, &s.cancel.pool.known_statements, &mut out) {
        return None;
    }
    let mut meter = Meter::default();
    meter.requests(frames, false);
    meter.from_client(frames.len());
    meter.flush(&s.cancel.pool.stats);
    client.consume(client.ready);
    client.ready = 0;
    client.rewrite = false;
    // The Sync is answered.
    client.tracker.pending = client.tracker.pending.saturating_sub(1);
    Some(out)
}

pub async fn send_answer(client: &mut ClientConn, out: BytesMut) -> Flow {
    match client.write(&out).await {
        Ok(()) => Flow::Next,
        Err(_) => Flow::Stop,
    }
}

pub fn timeout_error(phase: Phase, t: &Timeouts) -> PgError {
    match phase {
        Phase::IdleInTransaction => PgError::fatal(
            "25P03",
            format!(
                "terminating connection: idle in transaction longer than idle_transaction_timeout ({} s)",
                t.limit(phase).as_secs_f64()
            ),
        )
        .with_detail("the transaction was rolled back"),
        Phase::Idle => PgError::fatal(
            "57P05",
            format!(
                "terminating connection: idle longer than client_idle_timeout ({} s)",
                t.limit(phase).as_secs_f64()
            ),
        ),
        Phase::Busy => PgError::fatal(
            "57014",
            format!(
                "canceling statement: it ran longer than query_timeout ({} s)",
                t.limit(phase).as_secs_f64()
            ),
        ),
    }
}

/// Takes a server and brings its session settings to the client's.
pub async fn checkout(pool: &Arc<Pool>, settings: &Settings) -> Result<Lease, PgError> {
    checkout_from(pool.start_checkout(), pool, settings).await
}

/// `checkout` from what `Pool::start_checkout` found.
async fn checkout_from(started: Checkout<'_>, pool: &Arc<Pool>, settings: &Settings) -> Result<Lease, PgError> {
    let mut lease = match started {
        Checkout::Now(lease) => lease,
        Checkout::Wait(wait) => wait.await.map_err(|e| e.to_pg())?,
    };
    let server = lease.conn();
    if let Some(sql) = settings.apply_sql(&server.settings) {
        // Boxed, as is clean_up: rare paths whose state would weigh on every idle client's task.
        match Box::pin(server.run(&sql)).await {
            Ok(outcome) if outcome.error.is_none() && outcome.status == b'I' => {
                server.settings = settings.clone();
                // The server's spelling of the values just set, for later welcomes.
                for (name, value) in outcome.reported {
                    let name = name.to_ascii_lowercase();
                    if let Some(raw) = settings.get(&name) {
                        pool.learn_normalized(name, raw.to_owned(), value);
                    }
                }
            }
            Ok(outcome) => {
                let mut error = outcome
                    .error
                    .unwrap_or_else(|| PgError::new("08P01", "could not apply settings"));
                error.fatal = true;
                return Err(error.with_hint("a startup parameter of this connection was refused by the server"));
            }
            Err(e) => return Err(e.to_pg()),
        }
    }
    Ok(lease)
}
