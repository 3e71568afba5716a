//! The hot path: one task moves a transaction's bytes both ways between a client and the server
//! it holds, with no channel in between, until the transaction ends.
//!
//! Each read lands in one buffer that is scanned in place for frame boundaries; the scanned
//! bytes go out in one write. Both sockets are polled from a single future, so a peer that
//! stops reading stalls only its own direction.

use super::conn::{protocol_violation, ClientConn};
use super::set;
use super::spare;
use super::timers::{Phase, Timeouts, Watch};
use super::track::{error_class, scan_client, Intercept, ServerScan, ServerStop, Tracker};
use crate::backend::{ServerConn, Settings};
use crate::pool::Pool;
use crate::prepared::{self, rewrite::Position};
use crate::protocol::frame::{peek_header, HEADER_LEN};
use crate::protocol::messages::PgError;
use crate::stats::meter::{Captured, Meter};
use bytes::{Buf, BytesMut};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// Stop reading a peer while this much of its data waits for the other side.
const HIGH_WATER: usize = 256 * 1024;
/// Rounds of the relay's loop in one poll (each moves up to `spare::READ_BUFFER` one way or the
/// other).
const YIELD_AFTER: u32 = 64;

#[derive(Debug)]
pub enum RelayEnd {
    /// The transaction is over and every client byte forwarded: the server may go back to the
    /// pool. The last bytes of its answer wait in `RelayState::out`, to be written after that, so a
    /// client slow to take them (or a write preempted by the peer it wakes) never keeps the
    /// server from the next client.
    Release,
    /// The client closed its socket or sent Terminate.
    ClientGone,
    /// Statement mode: the client opened a transaction block (its ReadyForQuery was held back).
    TransactionBlock,
    /// The client sent something malformed. (Boxed: the end is moved through every layer of
    /// the relay's polls, on every transaction.)
    ClientInvalid(Box<PgError>),
    /// The server closed or failed.
    ServerGone(io::Error),
    /// The transaction stayed in this phase longer than its timeout allows.
    Timeout(Phase),
}

/// Where the relay stands with one server, kept across calls (a timeout returns mid-way).
pub struct RelayState {
    /// Scanned server bytes at the front of server.buf, not yet written to the client.
    to_client: usize,
    scan: ServerScan,
    stop: ServerStop,
    watch: Watch,
    pub release_at_idle: bool,
    pub statement_mode: bool,
    /// The first call of this checkout has run (prepared-statement replies reset).
    started: bool,
    /// Bytes for the client that outlived the server they came from (see RelayEnd::Release).
    pub out: BytesMut,
    /// A SET or RESET waiting for its ReadyForQuery (`ServerScan::watch`).
    /// (Boxed: most transactions have none, and the state is written at every checkout.)
    set: Option<Box<set::Command>>,
    /// Counts and latencies for the pool's stats.
    pub meter: Meter,
    /// LISTEN and UNLISTEN statements the client sent (transaction and statement modes).
    /// Boxed: most transactions have none, and the state is moved at every transaction.
    pub listen_ops: Option<Box<Vec<crate::listen::statement::Op>>>,
    /// SET LOCAL and SET TRANSACTION statements the client sent, and tracked SETs that took:
    /// the server's SET tags beyond these changed settings pgmux does not know.
    harmless_sets: u16,
    tracked_sets: u16,
}

impl RelayState {
    /// A SET, RESET or DISCARD ALL ran that pgmux did not follow (a SET inside a transaction
    /// block, one sent with other statements or with the extended protocol): the server's
    /// settings are unknown, and it goes back to the pool only after a RESET ALL.
    pub fn settings_unknown(&self) -> bool {
        self.scan.set_tags > self.harmless_sets.saturating_add(self.tracked_sets)
    }

    /// What the server's CommandComplete tags said of LISTEN (`track::listen_tags`).
    pub fn listen_flags(&self) -> u8 {
        self.scan.listen
    }

    /// The timeouts this transaction runs under.
    pub fn timeouts(&self) -> Timeouts {
        self.watch.timeouts()
    }

    /// See `Watch::rearm`.
    pub fn rearm_timeouts(&mut self) {
        self.watch.rearm();
    }

    #[inline(always)]
    pub fn new(release_at_idle: bool, statement_mode: bool, timeouts: Timeouts, meter: Meter) -> RelayState {
        RelayState {
            to_client: 0,
            scan: ServerScan::default(),
            stop: ServerStop::More,
            watch: Watch::new(timeouts),
            release_at_idle,
            statement_mode,
            started: false,
            out: BytesMut::new(),
            set: None,
            meter,
            listen_ops: None,
            harmless_sets: 0,
            tracked_sets: 0,
        }
    }
}

/// Relays until the transaction ends (or a timeout, or an error): `start`, then `poll` until it
/// is ready. Called again with the same state after a timeout, it goes on where it stopped.
pub fn relay<'a>(
    client: &'a mut ClientConn,
    server: &'a mut ServerConn,
    settings: &'a mut Settings,
    state: &'a mut RelayState,
    pool: &'a Pool,
) -> impl std::future::Future<Output = RelayEnd> + Send + 'a {
    start(client, server, state);
    poll_fn(move |cx| poll(cx, client, server, settings, state, pool))
}

/// What runs once per checkout before the first poll (nothing when it ran already), and the
/// translation of frames scanned while the client waited for this server.
pub fn start(client: &mut ClientConn, server: &mut ServerConn, state: &mut RelayState) {
    if !state.started {
        state.started = true;
        server.prepared.replies.clear();
        let (set, listen) = (std::mem::take(&mut client.set), std::mem::take(&mut client.listen));
        follow(client, state, 0, true, set, listen);
    }
    if std::mem::take(&mut client.rewrite) && tracking(state, server) {
        translate(client, server, state, 0);
    }
}

/// Client frames `client.buf[from..client.ready]` go to the server: counted (`idle_before`: the
/// server owed nothing before them), and the SET and LISTEN statements the scan found in them
/// (`set`, `listen`) followed in transaction and statement modes.
#[inline(always)]
fn follow(client: &ClientConn, state: &mut RelayState, from: usize, idle_before: bool, set: bool, listen: bool) {
    let frames = client.buf.get(from..client.ready).unwrap_or_default();
    state.meter.from_client(frames.len());
    state.meter.requests(frames, idle_before);
    if state.release_at_idle && set {
        watch_set(frames, &client.tracker, &mut state.scan, &mut state.set);
        state.harmless_sets = state.harmless_sets.saturating_add(set::harmless(frames));
    }
    if state.release_at_idle && listen {
        super::listen::collect(frames, state.listen_ops.get_or_insert_with(Default::default));
    }
}

/// Translates the prepared-statement names of `client.buf[from..client.ready]` for this server.
fn translate(client: &mut ClientConn, server: &mut ServerConn, state: &RelayState, from: usize) {
    let at = Position {
        answered: state.scan.answered,
        pending: client.tracker.pending,
    };
    let end = client.ready;
    client.ready = prepared::translate(
        &mut client.buf,
        from,
        end,
        &mut client.prepared,
        &mut server.prepared,
        at,
    );
}

/// Prepared statements are tracked where a client may change servers between transactions.
#[inline(always)]
fn tracking(state: &RelayState, server: &ServerConn) -> bool {
    state.release_at_idle && server.prepared.limit > 0
}

/// One poll of the relay (see `relay`).
pub fn poll(
    cx: &mut Context<'_>,
    client: &mut ClientConn,
    server: &mut ServerConn,
    settings: &mut Settings,
    state: &mut RelayState,
    pool: &Pool,
) -> Poll<RelayEnd> {
    // A socket whose read said Pending stays unready until the reactor runs again, which
    // is not before this poll returns (the worker's runtime is single-threaded): it is not
    // asked twice. Its waker is registered by that first Pending.
    let (mut client_unready, mut server_unready) = (false, false);
    let mut turns = 0u32;
    loop {
        // A read that succeeds spends no tokio budget (`stream::raw`): a transaction
        // whose bytes keep coming lets the worker's other clients run now and then.
        turns += 1;
        if turns > YIELD_AFTER {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut progress = false;
        // Nothing to write and nothing a TLS stream holds back: no call (most rounds).
        let to_server = client.ready > 0 || server.stream.is_tls();
        match flush_if(to_server, cx, &mut server.stream, &mut client.buf, &mut client.ready) {
            Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ServerGone(e)),
            Poll::Ready(Ok(moved)) => progress |= moved,
            Poll::Pending => {}
        }
        if state.stop == ServerStop::Release && client.ready == 0 {
            return Poll::Ready(release(client, server, state));
        }
        let to_client_now = state.to_client > 0 || client.stream.is_tls();
        match flush_if(
            to_client_now,
            cx,
            &mut client.stream,
            &mut server.buf,
            &mut state.to_client,
        ) {
            Poll::Ready(Err(_)) => return Poll::Ready(RelayEnd::ClientGone),
            Poll::Ready(Ok(moved)) => progress |= moved,
            Poll::Pending => {}
        }
        if state.to_client == 0 && client.ready == 0 {
            if state.stop == ServerStop::TransactionBlock {
                return Poll::Ready(RelayEnd::TransactionBlock);
            }
            if client.terminate {
                return Poll::Ready(RelayEnd::ClientGone);
            }
        }

        if !server_unready && state.stop == ServerStop::More && server.buf.len() < HIGH_WATER {
            spare::reserve(&mut server.buf);
            match server.stream.poll_read_buf(cx, &mut server.buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(RelayEnd::ServerGone(io::ErrorKind::UnexpectedEof.into())),
                Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ServerGone(e)),
                Poll::Ready(Ok(n)) => {
                    if let Err(end) = from_server(client, server, settings, state, pool, n) {
                        return Poll::Ready(end);
                    }
                    progress = true;
                }
                Poll::Pending => server_unready = true,
            }
        }
        // After the server's read that ends the transaction the client is not polled: the
        // server goes back first (the next request is read by the session's wait).
        if !client_unready
            && !client.terminate
            && state.stop != ServerStop::Release
            && (client.buf.len() < HIGH_WATER || client.ready == 0)
        {
            spare::reserve(&mut client.buf);
            match client.stream.poll_read_buf(cx, &mut client.buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(RelayEnd::ClientGone),
                Poll::Ready(Ok(_)) => {
                    if let Err(e) = from_client(client, server, state) {
                        return Poll::Ready(RelayEnd::ClientInvalid(Box::new(protocol_violation(&e))));
                    }
                    progress = true;
                }
                Poll::Pending => client_unready = true,
            }
        }

        if !progress {
            if let Poll::Ready(phase) = state.watch.poll(cx, &client.tracker) {
                return Poll::Ready(RelayEnd::Timeout(phase));
            }
            return Poll::Pending;
        }
    }
}

/// The server's answer ended the transaction and every client byte went out: the answer's tail
/// goes out now if the client's socket takes it (nearly always); what it does not take leaves
/// with the client, sharing the server buffer's memory (no copy), and the buffer gets it back
/// once that is written and dropped. (A failed write leaves it all there: the session's write
/// then fails the same.) Not after a LISTEN or UNLISTEN: the client may hear of it only once
/// pgmux listens for it (`listen::settle`, after the relay), or a notification sent at once
/// could be missed.
fn release(client: &mut ClientConn, server: &mut ServerConn, state: &mut RelayState) -> RelayEnd {
    let to_client = &mut state.to_client;
    let now = match state.scan.listen == 0 && state.listen_ops.is_none() {
        true => client
            .stream
            .write_now(server.buf.get(..*to_client).unwrap_or_default()),
        false => Ok(0),
    };
    let written = now.unwrap_or(0).min(*to_client);
    server.buf.advance(written);
    *to_client -= written;
    state.stop = ServerStop::More;
    if *to_client == 0 && state.out.is_empty() {
        return RelayEnd::Release;
    }
    let tail = server.buf.split_to(*to_client);
    if state.out.is_empty() {
        state.out = tail;
    } else {
        state.out.extend_from_slice(&tail);
    }
    *to_client = 0;
    RelayEnd::Release
}

/// `n` bytes the server sent: scanned for the frames the client may have, the end of the
/// transaction, and what pgmux follows (prepared statements, SET, LISTEN, errors, stats).
#[inline(never)]
fn from_server(
    client: &mut ClientConn,
    server: &mut ServerConn,
    settings: &mut Settings,
    state: &mut RelayState,
    pool: &Pool,
    n: usize,
) -> Result<(), RelayEnd> {
    let (release_at_idle, statement_mode) = (state.release_at_idle, state.statement_mode);
    let tracking = tracking(state, server);
    let RelayState {
        to_client,
        scan,
        stop,
        set: pending_set,
        meter,
        tracked_sets,
        ..
    } = state;
    meter.to_client(n);
    let answered_before = scan.answered;
    let mut from = *to_client;
    loop {
        scan.intercept = match (tracking, server.prepared.replies.is_empty()) {
            (false, _) => Intercept::Off,
            (true, true) => Intercept::Commands,
            (true, false) => Intercept::Replies,
        };
        let server_settings = &mut server.settings;
        let found = scan.scan(
            &server.buf,
            from,
            &mut client.tracker,
            release_at_idle,
            statement_mode,
            |name, value| follow_parameter(settings, server_settings, name, value),
        );
        match found {
            Ok((at, ServerStop::Intercept)) => {
                count_intercepted(&server.buf, at, scan);
                let answered = scan.answered;
                from = prepared::on_reply(
                    &mut server.buf,
                    at,
                    &mut client.prepared,
                    &mut server.prepared,
                    answered,
                );
            }
            Ok((at, ServerStop::Notification)) => {
                from = super::listen::on_notification(&mut server.buf, at, &pool.listen);
            }
            Ok((end, why)) => {
                if let Some(ok) = scan.watched.take() {
                    match pending_set.take() {
                        Some(command) if ok => {
                            set::apply(*command, settings, &mut server.settings);
                            *tracked_sets += 1;
                        }
                        _ => {}
                    }
                }
                *to_client = end;
                *stop = why;
                break;
            }
            Err(e) => return Err(RelayEnd::ServerGone(io::Error::other(e.to_string()))),
        }
    }
    meter.server_parsed(std::mem::take(&mut scan.parses));
    for (class, n) in scan.errors.take() {
        pool.stats.errors_of(&class, n.into());
    }
    let answered = scan.answered.wrapping_sub(answered_before);
    let t = &client.tracker;
    if let Some(us) = meter.answered(answered, t.pending, t.status, &pool.stats) {
        slow_query(pool, meter, &client.prepared, us);
    }
    Ok(())
}

/// Bytes the client sent while its transaction runs: scanned for frame boundaries, counted, and
/// SET, LISTEN and prepared statements followed.
#[inline(never)]
fn from_client(
    client: &mut ClientConn,
    server: &mut ServerConn,
    state: &mut RelayState,
) -> Result<(), crate::protocol::frame::FrameError> {
    let quiet_before = client.tracker.quiet();
    let found = scan_client(
        &client.buf,
        client.ready,
        client.max_message_size as usize,
        &mut client.tracker,
    )?;
    let from = client.ready;
    client.ready = found.end;
    client.terminate = found.terminate;
    follow(client, state, from, quiet_before, found.set, found.listen);
    if found.rewrite && tracking(state, server) {
        translate(client, server, state, from);
    }
    Ok(())
}

#[inline(always)]
fn flush_if(
    wanted: bool,
    cx: &mut Context<'_>,
    to: &mut crate::stream::Stream,
    buf: &mut BytesMut,
    ready: &mut usize,
) -> Poll<io::Result<bool>> {
    match wanted {
        true => flush(cx, to, buf, ready),
        false => Poll::Ready(Ok(false)),
    }
}

/// Writes `buf[..*ready]` to `to`, as far as the socket takes it, then flushes what a TLS stream
/// holds back (nothing to do on plain TCP). Ready(Ok(true)) when some bytes moved,
/// Ready(Ok(false)) when there was nothing to write.
fn flush<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    to: &mut W,
    buf: &mut bytes::BytesMut,
    ready: &mut usize,
) -> Poll<io::Result<bool>> {
    let mut moved = false;
    while *ready > 0 {
        match Pin::new(&mut *to).poll_write(cx, &buf[..*ready]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                *ready -= n;
                moved = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending if moved => return Poll::Ready(Ok(true)),
            Poll::Pending => return Poll::Pending,
        }
    }
    // TLS accepts bytes into its own buffer when the socket is full; they must still go out
    // (and wake us when the socket drains) though nothing is left in `buf`.
    match Pin::new(&mut *to).poll_flush(cx) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(moved)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending if moved => Poll::Ready(Ok(true)),
        Poll::Pending => Poll::Pending,
    }
}

/// Transaction and statement modes: a session SET or RESET sent as a Query alone, with nothing
/// else in flight and no transaction block open, is answered by the next ReadyForQuery; if that
/// says idle and no error came, the setting follows the client (see `set`). `frames` passed
/// `set::candidate` (`ClientScan::set`).
fn watch_set(frames: &[u8], t: &Tracker, scan: &mut ServerScan, pending: &mut Option<Box<set::Command>>) {
    if t.pending != 1 || t.unsynced || t.status != b'I' {
        return;
    }
    let Ok(Some((b'Q', total))) = peek_header(frames, usize::MAX >> 1) else {
        return;
    };
    let Some(body) = frames.get(HEADER_LEN..).filter(|_| total == frames.len()) else {
        return;
    };
    if let Some(command) = set::parse(body) {
        *pending = Some(Box::new(command));
        scan.watch = Some(scan.answered.wrapping_add(1));
        scan.watch_failed = false;
        scan.watched = None;
    }
}

/// A frame the scan stopped at for prepared-statement tracking is counted here (the scan
/// counts the ones it passes).
fn count_intercepted(buf: &[u8], at: usize, scan: &mut ServerScan) {
    let Ok(Some((tag, total))) = peek_header(buf.get(at..).unwrap_or_default(), usize::MAX >> 1) else {
        return;
    };
    match tag {
        b'1' => scan.parses += 1,
        b'E' => scan
            .errors
            .push(error_class(buf.get(at + HEADER_LEN..at + total).unwrap_or_default())),
        _ => {}
    }
}

/// A query ran past slow_query_threshold: into the pool's list, and logged the first time.
fn slow_query(pool: &Pool, meter: &Meter, prepared: &prepared::ClientStatements, us: u64) {
    let text: &[u8] = match meter.captured() {
        Some(Captured::Text(text)) => text,
        Some(Captured::Statement(name)) => match prepared.get(name) {
            Some(statement) => statement.text(),
            None => name,
        },
        None => return,
    };
    if let Some(query) = pool.stats.slow.record(text, us) {
        tracing::warn!(pool = %pool, ms = us / 1000, %query, "slow query (slower than slow_query_threshold)");
    }
}

/// A ParameterStatus the server sent (the client ran SET on a reported parameter): the new value
/// is the client's from now on, and it is what this server holds.
fn follow_parameter(client: &mut Settings, server: &mut Settings, name: &[u8], value: &[u8]) {
    let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
        return;
    };
    let name = name.to_ascii_lowercase();
    if client.tracks(&name) {
        client.keep_startup();
        client.set(&name, value);
        server.set(&name, value);
    }
}
