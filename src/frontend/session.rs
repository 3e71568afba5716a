//! The session loop of one logged-in client: wait for a request, take a server, relay the
//! transaction, give the server back clean.

use super::cancel::CancelHandle;
use super::conn::{ClientConn, Request, Waited};
use super::drain::{self, Watch};
use super::handover::Offered;
use super::relay::{relay, RelayEnd, RelayState};
use super::timers::{Phase, Timeouts};
use super::track::listen_tags::LISTENED;
use super::{ClientSlot, Shared};
use crate::backend::Settings;
use crate::boxed::in_place;
use crate::config::PoolMode;
use crate::pool::{Checkout, Lease, Pool};
use crate::prepared;
use crate::protocol::frame::peek_header;
use crate::protocol::messages::PgError;
use crate::route::choose::{first_request, Preference, Route};
use crate::route::Target;
use crate::stats::{meter::Meter, now_us};
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long pgmux's own clean-up (ROLLBACK, server_reset_query, a cancel landing) may take
/// before the server is closed instead.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// One logged-in client. It counts against max_client_conn until it is dropped.
pub struct Session {
    pub client: ClientConn,
    pub settings: Settings,
    /// Also the client's pool (`cancel.pool`). Registered until the session is dropped.
    pub cancel: Arc<CancelHandle>,
    pub shared: Arc<Shared>,
    /// Counted in its pool's clients (from `run` on).
    pub counted: bool,
    /// Its notifications, once it listens (transaction and statement modes: `crate::listen`).
    pub listen: Option<Arc<crate::listen::Mailbox>>,
    /// Session mode: the server linked at login (the client was told its pid), until used.
    pub linked: Option<Box<Lease>>,
}

impl Drop for Session {
    /// However the session ends (its task finished, cancelled, or panicked), its registry
    /// entry, its pool's client count and its max_client_conn slot go with it.
    fn drop(&mut self) {
        // Never used, so clean: back to the pool rather than closed.
        if let Some(lease) = self.linked.take() {
            (*lease).release();
        }
        // Before the socket closes (the fields drop after this).
        self.cancel.forget_socket();
        self.shared.cancels.unregister(&self.cancel);
        if let Some(mailbox) = self.listen.take() {
            self.cancel.pool.listen.leave(&mailbox);
        }
        if std::mem::take(&mut self.counted) {
            self.cancel.pool.counts.clients.fetch_sub(1, Ordering::Relaxed);
        }
        ClientSlot::release(&self.shared);
    }
}

/// Serves a logged-in client until it leaves. (Not an async fn: its argument would be stored
/// twice in the client task's state.)
///
/// The loop keeps no local across an await but the idle wait itself (and a one-byte step), and
/// every other await is boxed: the future is the whole task of an idle client, allocated in
/// jemalloc's size classes (the task is 256 bytes with 224 of future; `executor`).
#[allow(clippy::manual_async_fn)] // the arguments would be stored twice
pub fn run(mut s: Session) -> impl Future<Output = ()> + Send {
    async move {
        logged_in(&mut s);
        // The session loop, inline: an idle client's task waits in `next_request`, holding its
        // session and the two polls of that wait, nothing else.
        let end = loop {
            let watch = Watch::new(&s.shared.shutdown, &s.cancel);
            let news = s.listen.as_deref();
            let request = if s.shared.knobs.client_idle().is_zero() {
                drain::next_request(&mut s.client, watch, news).await
            } else {
                // Boxed: the timer would weigh on every idle client's task where it is off.
                Box::pin(wait_idle(&mut s.client, watch, news, s.shared.knobs.client_idle())).await
            };
            // A one-byte step, not the request, lives across the awaits below (a request is 16
            // bytes, and the task's allocation grows in size classes).
            let mut step = match Step::of(request) {
                Ok(step) => step,
                Err(end) => break end,
            };
            if let Step::HandOver = step {
                // Boxed: only an upgrade in place gets here.
                step = match Box::pin(hand_over(&mut s)).await.and_then(Step::of) {
                    Ok(step) => step,
                    Err(end) => break end,
                };
            }
            match step {
                Step::HandOver => continue,
                Step::News => {
                    // Boxed: held inline, its state would weigh on every idle client's task.
                    if Box::pin(super::listen::deliver(&mut s)).await.is_err() {
                        break End::Left(None);
                    }
                    continue;
                }
                Step::Serve => {}
            }
            // Boxed, once per transaction, for the same reason.
            match in_place(|| transaction(&mut s, false)).await {
                Flow::Next => {}
                Flow::Stop => break End::Left(None),
                // A read whose replica died before answering: once more, elsewhere.
                Flow::Retry => {
                    if let Flow::Stop = in_place(|| transaction(&mut s, true)).await {
                        break End::Left(None);
                    }
                }
            }
        };
        Box::pin(finish(&mut s, end)).await
    }
}

/// What the session loop does with a request.
enum Step {
    Serve,
    News,
    HandOver,
}

impl Step {
    fn of(request: Request) -> Result<Step, End> {
        match request {
            Request::Ready => Ok(Step::Serve),
            Request::News => Ok(Step::News),
            Request::HandOver => Ok(Step::HandOver),
            Request::Gone => Err(End::Left(None)),
            Request::Invalid(e) => Err(End::Left(Some(e))),
        }
    }
}

/// How a session ended: handed to a new process (`pgmux upgrade`), or left with the error it
/// gets, if any.
enum End {
    Handed,
    Left(Option<Box<PgError>>),
}

/// An upgrade asks for the client: the request to serve if it stays here, or the end.
async fn hand_over(s: &mut Session) -> Result<Request, End> {
    match super::handover::offer(s).await {
        Offered::Handed => Err(End::Handed),
        Offered::Closed(e) => Err(End::Left(Some(e))),
        Offered::Kept => {
            let news = s.listen.as_deref();
            Ok(drain::until_closing(&mut s.client, &s.shared.shutdown, news).await)
        }
    }
}

/// The session's last words: its error, if it has one, and the log line.
async fn finish(s: &mut Session, end: End) {
    let invalid = match end {
        // A handed-over client's socket is the new process's: not a word from here.
        End::Handed => {
            tracing::info!(client = %s.client.peer(), pool = %s.cancel.pool, "client handed to the new process");
            return;
        }
        End::Left(_) if s.cancel.killed.load(Ordering::Acquire) => Some(Box::new(PgError::fatal(
            "57P01",
            "terminated by the pgmux console (KILL_CLIENT or KILL)",
        ))),
        End::Left(invalid) => invalid,
    };
    if let Some(e) = invalid {
        s.cancel.pool.stats.error(e.code.as_bytes());
        s.client.send_error(&e).await;
    }
    tracing::info!(client = %s.client.peer(), pool = %s.cancel.pool, "client logged out");
}

fn logged_in(s: &mut Session) {
    let tls = s.client.stream.is_tls();
    tracing::info!(client = %s.client.peer(), pool = %s.cancel.pool, tls, "client logged in");
    s.cancel.pool.counts.clients.fetch_add(1, Ordering::Relaxed);
    s.counted = true;
}

/// Whether the session goes on after a transaction.
enum Flow {
    Next,
    Stop,
    /// The request is back in the client's buffer, to be sent again (see `Replay`).
    Retry,
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
    fn take(pick: &Pick, retried: bool, client: &ClientConn) -> Option<Replay> {
        if retried || !matches!(pick, Pick::Replica(..)) || client.rewrite || client.ready > REPLAY_MAX {
            return None;
        }
        Some(Replay {
            frames: BytesMut::from(client.buf.get(..client.ready)?),
            tracker: client.tracker,
        })
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

/// Takes a server, relays the client's transaction (in session mode: the rest of the session)
/// and gives the server back clean.
async fn transaction(s: &mut Session, retried: bool) -> Flow {
    let timeouts = s.shared.knobs.timeouts();
    let mode = s.cancel.pool.mode();
    if s.client.rewrite && mode != PoolMode::Session {
        if let Some(out) = answer_alone(s) {
            // Boxed: its state would weigh on every transaction's future.
            return Box::pin(send_answer(&mut s.client, out)).await;
        }
    }
    let watch = &Watch::new(&s.shared.shutdown, &s.cancel);
    let mut pick = pick(&s.cancel, &s.client, mode);
    let asked = now_us();
    s.cancel.request_s.store((asked / 1_000_000) as u32, Ordering::Relaxed);
    s.cancel.wait_since.store(asked, Ordering::Relaxed);
    // The common case (a free server at once) breaks out with its lease alone: a `Waited`
    // (112 bytes, its error inline) is built and moved only when the client waited.
    let (mut lease, pool) = loop {
        let pool = pick.pool(&s.cancel.pool);
        if let Some(lease) = s.linked.take().map(|lease| *lease) {
            if Arc::ptr_eq(lease.pool(), pool) {
                break (lease, pool);
            }
            lease.release(); // a failover since login
        }
        // A free idle server with the client's settings: taken without a future (no wait,
        // no watch of the client); anything else waits as below.
        let waited = match pool.start_checkout() {
            Checkout::Now(lease) if lease.has_settings(&s.settings) => break (lease, pool),
            // Boxed: a wait is the slow path, and its state would weigh on every transaction's
            // future (copied into its box once per transaction).
            started => {
                in_place(|| async {
                    let work = pin!(s.client.wait_with(checkout_from(started, pool, &s.settings)));
                    drain::until_deadline(watch, work).await
                })
                .await
            }
        };
        // A replica that cannot lend a connection: the primary takes the read.
        if let (Pick::Replica(route, i), Some(Waited::Done(Err(e)))) = (&pick, &waited) {
            if let Some(replica) = route.set.list.get(*i) {
                replica.ok.store(false, Ordering::Release);
                tracing::warn!(pool = %pool, replica = %pool.target.addr(), error = %e.message,
                    "replica unavailable: the read goes to the primary");
            }
            pick = Pick::Primary { wrote: false };
            continue;
        }
        match waited {
            Some(Waited::Done(Ok(lease))) => break (lease, pool),
            Some(Waited::Done(Err(e)) | Waited::Invalid(e)) => {
                waited_until_now(&s.cancel, pool, asked);
                pool.stats.error(e.code.as_bytes());
                Box::pin(s.client.send_error(&e)).await;
                return Flow::Stop;
            }
            Some(Waited::Gone) => {
                waited_until_now(&s.cancel, pool, asked);
                return Flow::Stop;
            }
            None => {
                waited_until_now(&s.cancel, pool, asked);
                drain::cut(&mut s.client, None, pool, watch).await;
                return Flow::Stop;
            }
        }
    };
    waited_until_now(&s.cancel, pool, asked);
    let _outstanding = pick.begin();
    let replay = Replay::take(&pick, retried, &s.client);
    s.cancel.attach(lease.conn(), pool);
    let mut state = RelayState::new(mode != PoolMode::Session, mode == PoolMode::Statement, timeouts);
    state.meter = Meter::new(
        s.shared.knobs.slow_threshold_us(),
        std::mem::take(&mut lease.conn().capture),
    );
    // Session mode never sees Release: the relay runs until the client leaves.
    let mut cancelled = false;
    let end = loop {
        let relayed = {
            let work = pin!(relay(&mut s.client, lease.conn(), &mut s.settings, &mut state, pool));
            drain::until_deadline(watch, work).await
        };
        let Some(end) = relayed else {
            s.cancel.detach();
            drain::cut(&mut s.client, Some(lease), pool, watch).await;
            return Flow::Stop;
        };
        match end {
            RelayEnd::Timeout(Phase::Busy) if !cancelled => {
                let secs = timeouts.limit(Phase::Busy).as_secs_f64();
                tracing::warn!(pool = %pool, "query running longer than query_timeout ({secs} s): cancelling it");
                // Sent beside the relay: a cancel that cannot reach the server (it may take
                // server_connect_timeout to fail) does not hold up the client's answer. That
                // answer gets query_timeout again; then the server is given up.
                let handle = s.cancel.clone();
                tokio::spawn(async move { handle.cancel_held().await });
                cancelled = true;
                state.rearm_timeouts();
            }
            end => break end,
        }
    };
    s.cancel.detach();
    let listen = state.listen_flags();
    let mut keep = true;
    if state.settings_unknown() {
        if let RelayEnd::Release = end {
            keep = Box::pin(reset_settings(&mut lease)).await;
        }
    }
    if listen != 0 && keep {
        // A server that ran LISTEN goes back to the pool only through `listen::settle`.
        lease.conn().listening |= listen & LISTENED != 0;
        if let RelayEnd::Release = end {
            let ops = state.listen_ops.take().map(|ops| *ops).unwrap_or_default();
            keep = Box::pin(super::listen::settle(
                &mut s.listen,
                &s.cancel.pool,
                &mut lease,
                listen,
                &ops,
            ))
            .await;
            lease.conn().listening &= !keep;
        }
    }
    let client = &mut s.client;
    if let (RelayEnd::ServerGone(e), Some(replay), Pick::Replica(route, i)) = (&end, replay, &pick) {
        if state.meter.untouched(replay.frames.len()) {
            if let Some(replica) = route.set.list.get(*i) {
                replica.ok.store(false, Ordering::Release);
            }
            tracing::warn!(pool = %pool, error = %e, "replica connection lost before it answered: the read goes elsewhere");
            replay.restore(client);
            return Flow::Retry;
        }
    }
    state.meter.flush(&pool.stats);
    lease.conn().capture = state.meter.take_capture();
    if let Pick::Primary { wrote: true } = pick {
        s.cancel.wrote_at.store(now_us(), Ordering::Release);
    }
    match end {
        RelayEnd::Release => {
            if keep {
                if let Some(lease) = give_back_now(lease, &s.cancel) {
                    Box::pin(settle_then_give_back(lease, &s.cancel)).await;
                }
            } else {
                drop(lease);
            }
            if let Some(mailbox) = &s.listen {
                mailbox.take(&mut state.out);
            }
            // Plain TCP takes the answer's tail at once, nearly always: no future for it.
            let written = match client.stream.write_now(&state.out) {
                Ok(n) if n == state.out.len() && !client.stream.is_tls() => Ok(()),
                Ok(n) => client.write(state.out.get(n..).unwrap_or_default()).await,
                Err(e) => Err(e),
            };
            if written.is_ok() {
                return Flow::Next;
            }
        }
        RelayEnd::ClientGone => clean_up(lease, client, &s.cancel, pool, &pool.settings().server_reset_query).await,
        RelayEnd::TransactionBlock => {
            pool.stats.error(b"0A000");
            let error = PgError::fatal(
                "0A000",
                "transaction blocks are not allowed in statement pooling mode (pool_mode = \"statement\")",
            )
            .with_hint("run each statement on its own, or use pool_mode = \"transaction\" for this database or user");
            Box::pin(client.send_error(&error)).await;
            drop_frame(lease.conn());
            clean_up(lease, client, &s.cancel, pool, "").await;
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
            Box::pin(client.send_error(&error)).await;
            clean_up(lease, client, &s.cancel, pool, "").await;
        }
        RelayEnd::Timeout(phase) => {
            let error = timeout_error(phase, &timeouts);
            pool.stats.error(error.code.as_bytes());
            Box::pin(client.send_error(&error)).await;
            clean_up(lease, client, &s.cancel, pool, &pool.settings().server_reset_query).await;
        }
        RelayEnd::ClientInvalid(e) => {
            pool.stats.error(e.code.as_bytes());
            Box::pin(client.send_error(&e)).await;
            clean_up(lease, client, &s.cancel, pool, &pool.settings().server_reset_query).await;
        }
        RelayEnd::ServerGone(e) => {
            let addr = lease.conn().addr.clone();
            tracing::warn!(pool = %pool, server = %addr, error = %e, "server connection lost");
            pool.server_failed(crate::breaker::FailureCause::UnexpectedClose, e.to_string());
            let mut error = PgError::fatal("08006", format!("server connection lost ({addr}): {e}"))
                .with_hint("the server closed the connection or crashed; reconnect to get a new one");
            if client.tracker.status != b'I' || !client.tracker.quiet() {
                error = error.with_detail(
                    "the transaction in progress is lost: PostgreSQL rolled back whatever it had not committed",
                );
            }
            pool.stats.error(b"08006");
            Box::pin(client.send_error(&error)).await;
        }
    }
    Flow::Stop
}

/// The client's wait for a server (since `asked`) is over: SHOW CLIENTS stops showing it, and
/// the pool's wait time counts it.
#[inline]
fn waited_until_now(cancel: &CancelHandle, pool: &Pool, asked: u64) {
    cancel.wait_since.store(0, Ordering::Relaxed);
    pool.stats
        .wait_time
        .fetch_add(now_us().saturating_sub(asked), Ordering::Relaxed);
}

/// Where a transaction goes (read_write_split).
enum Pick<'a> {
    /// `wrote`: the request may write, so read-your-writes holds the client's next reads.
    Primary {
        wrote: bool,
    },
    Replica(&'a Route, usize),
}

impl<'a> Pick<'a> {
    fn pool(&self, primary: &'a Arc<Pool>) -> &'a Arc<Pool> {
        match self {
            Pick::Replica(route, i) => route.pools.get(*i).unwrap_or(primary),
            Pick::Primary { .. } => write_pool(primary),
        }
    }

    /// Counts the transaction on its replica (least_outstanding) until the guard drops.
    fn begin(&self) -> Option<Outstanding> {
        let Pick::Replica(route, i) = self else { return None };
        let replica = route.set.list.get(*i)?.clone();
        replica.outstanding.fetch_add(1, Ordering::Relaxed);
        replica.reads_served.fetch_add(1, Ordering::Relaxed);
        Some(Outstanding(replica))
    }
}

struct Outstanding(Arc<crate::route::replicas::Replica>);

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
fn pick<'a>(cancel: &'a CancelHandle, client: &ClientConn, mode: PoolMode) -> Pick<'a> {
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
        Some(i) => Pick::Replica(route, i),
        None => Pick::Primary { wrote: false },
    }
}

/// A lone Parse and Sync of statements the pool knows, answered without a server (see
/// `prepared::local`): the answer to write, or None when the request needs a server.
fn answer_alone(s: &mut Session) -> Option<BytesMut> {
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

async fn send_answer(client: &mut ClientConn, out: BytesMut) -> Flow {
    match client.write(&out).await {
        Ok(()) => Flow::Next,
        Err(_) => Flow::Stop,
    }
}

/// Waits for the client's next request (or a shutdown), closing it after client_idle_timeout.
async fn wait_idle(
    client: &mut ClientConn,
    watch: Watch<'_>,
    news: Option<&crate::listen::Mailbox>,
    limit: Duration,
) -> Request {
    match tokio::time::timeout(limit, drain::next_request(client, watch, news)).await {
        Ok(request) => request,
        Err(_) => {
            let timeouts = Timeouts {
                client_idle_us: limit.as_micros().try_into().unwrap_or(u64::MAX),
                ..Timeouts::default()
            };
            client.send_error(&timeout_error(Phase::Idle, &timeouts)).await;
            Request::Gone
        }
    }
}

fn timeout_error(phase: Phase, t: &Timeouts) -> PgError {
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

/// Returns a server whose transaction ended, once any cancel aimed at it has landed: at once
/// when none is in flight, else after the boxed wait.
async fn give_back(lease: Lease, cancel: &CancelHandle) {
    if let Some(lease) = give_back_now(lease, cancel) {
        // Boxed (only when a cancel is in flight): the wait would weigh on every idle client's task.
        Box::pin(settle_then_give_back(lease, cancel)).await
    }
}

/// `give_back` without a future: the lease back when a cancel in flight must land first. The
/// client's handle must be detached from the server already (`CancelHandle::detach`).
fn give_back_now(mut lease: Lease, cancel: &CancelHandle) -> Option<Lease> {
    let server = lease.conn();
    // Bytes after the last ReadyForQuery: the server is not in a state we know.
    if !server.buf.is_empty() || server.listening {
        return None;
    }
    if cancel.cancels_in_flight() > 0 {
        return Some(lease);
    }
    lease.release();
    None
}

async fn settle_then_give_back(lease: Lease, cancel: &CancelHandle) {
    let pool = lease.pool().clone();
    // SHOW POOLS' sv_being_canceled: it waits for the cancels aimed at it to land.
    pool.counts.settling.fetch_add(1, Ordering::Relaxed);
    // Polled: rare (a cancel in flight as the transaction ended), and a waiter list in every
    // client's handle would weigh on every idle client.
    let settled = tokio::time::timeout(CLEANUP_TIMEOUT, async {
        while cancel.cancels_in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .is_ok();
    pool.counts.settling.fetch_sub(1, Ordering::Relaxed);
    if settled {
        lease.release();
    }
}

/// A SET pgmux did not follow changed the server's settings: RESET ALL brings it back to
/// what the pool logged in with (nothing applied), RESET ROLE and SESSION AUTHORIZATION (which
/// RESET ALL leaves) back to the pool's user. False when the server must be closed.
async fn reset_settings(lease: &mut Lease) -> bool {
    let server = lease.conn();
    let sql = "RESET ALL; RESET ROLE; RESET SESSION AUTHORIZATION";
    let reset = tokio::time::timeout(CLEANUP_TIMEOUT, server.run(sql)).await;
    match reset {
        Ok(Ok(outcome)) if outcome.error.is_none() && outcome.status == b'I' => {
            server.settings = Settings::default();
            true
        }
        _ => false,
    }
}

/// The client left while holding this server: roll back what it left open, then give the
/// server back; anything in an unknown state is closed instead.
fn clean_up<'a>(
    lease: Lease,
    client: &'a ClientConn,
    cancel: &'a CancelHandle,
    pool: &'a Pool,
    reset_query: &'a str,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(roll_back(lease, client, cancel, pool, reset_query))
}

async fn roll_back(mut lease: Lease, client: &ClientConn, cancel: &CancelHandle, pool: &Pool, reset_query: &str) {
    let mode = pool.mode();
    let tracker = client.tracker;
    let server = lease.conn();
    if !tracker.quiet() || !server.buf.is_empty() {
        // A query is in flight. Closing the socket alone would leave the backend running it
        // until it next writes, so cancel it, then drop the lease to close the connection.
        let target = pool.target.clone();
        let (pid, key) = (server.process_id, server.secret_key);
        tokio::spawn(async move {
            if let Err(e) = crate::backend::cancel::cancel(&target, pid, key).await {
                tracing::debug!(error = %e, "cancel of an abandoned query failed");
            }
        });
        return;
    }
    let work = async {
        if tracker.status != b'I' {
            let outcome = server.run("ROLLBACK").await.ok()?;
            (outcome.error.is_none() && outcome.status == b'I').then_some(())?;
        }
        if mode == PoolMode::Session && !reset_query.is_empty() {
            let outcome = server.run(reset_query).await.ok()?;
            (outcome.status == b'I').then_some(())?;
            server.settings = Settings::default();
        }
        Some(())
    };
    if let Ok(Some(())) = tokio::time::timeout(CLEANUP_TIMEOUT, work).await {
        give_back(lease, cancel).await;
    }
}

/// Drops the frame at the front of the server's buffer (a ReadyForQuery held back).
fn drop_frame(server: &mut crate::backend::ServerConn) {
    if let Ok(Some((_, total))) = peek_header(&server.buf, usize::MAX >> 1) {
        if server.buf.len() >= total {
            server.buf.advance(total);
        }
    }
}
