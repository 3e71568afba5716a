//! The session's steady state as one poll: wait for a request, take a free server, relay the
//! transaction, give the server back clean, and wait again, with no future per step. Anything
//! else (a wait for a server, a shutdown, an error, LISTEN, an upgrade) leaves this poll with an
//! `Exit` for the session loop's futures (`session`, `transaction`).

use super::cancel::CancelHandle;
use super::conn::Request;
use super::drain::Watch;
use super::pick::{pick, Pick};
use super::relay::{self, RelayEnd};
use super::release::known_state;
use super::session::Session;
use super::transaction::{answer_alone, begin, write_tail, Hot};
use crate::config::PoolMode;
use crate::pool::Checkout;
use crate::stats::now_us;
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

/// Why the steady poll stopped.
pub enum Exit<'c> {
    /// The next request is waited for by the session loop (a shutdown, client_idle_timeout).
    Idle,
    /// A request other than a plain one to serve now (or one read during a shutdown).
    Request(Request),
    /// Bytes for the client the socket did not take at once (or an answer given without a
    /// server): the rest to write.
    Write(BytesMut),
    /// No server free at once: `transaction::acquire` waits, from what the pool said.
    /// The last field: the request is a read sent again.
    Acquire(Pick, u64, Option<Checkout<'c>>, bool),
    /// The relay ended other than with a release this poll can finish (`transaction::finish`).
    Relayed(RelayEnd),
    /// A shutdown began while the transaction ran (`transaction::to_deadline`).
    Draining,
}

/// Polls the session's steady state. `cancel` is the session's own handle, borrowed apart from
/// the session so that an `Exit` may hold the pool's checkout.
pub fn poll<'c>(
    cx: &mut Context<'_>,
    s: &mut Session,
    cancel: &'c CancelHandle,
    hot: &mut Option<Box<Hot>>,
) -> Poll<Exit<'c>> {
    loop {
        if let Some(h) = hot.as_deref_mut() {
            let (server, pool) = h.lease.parts();
            let end = match relay::poll(cx, &mut s.client, server, &mut s.settings, &mut h.state, pool) {
                Poll::Ready(end) => end,
                Poll::Pending if Watch::new(&s.shared.shutdown, cancel).draining(cx) => {
                    return Poll::Ready(Exit::Draining)
                }
                Poll::Pending => return Poll::Pending,
            };
            match end {
                RelayEnd::Release => {
                    if let Some(exit) = release(s, hot) {
                        return Poll::Ready(exit);
                    }
                }
                end => match h.busy(end, &s.cancel) {
                    Some(end) => return Poll::Ready(Exit::Relayed(end)),
                    None => continue,
                },
            }
        }
        if s.shared.knobs.client_idle_on() || s.shared.shutdown.is_draining() {
            return Poll::Ready(Exit::Idle);
        }
        let request = match s.client.poll_request(cx) {
            Poll::Ready(request) => request,
            Poll::Pending if s.listen.as_deref().is_some_and(|m| m.poll_news(cx)) => Request::News,
            Poll::Pending if Watch::new(&s.shared.shutdown, cancel).draining(cx) => return Poll::Ready(Exit::Idle),
            Poll::Pending => return Poll::Pending,
        };
        if !matches!(request, Request::Ready) {
            return Poll::Ready(Exit::Request(request));
        }
        // A request read as a shutdown began waits in the buffer for the shutdown's own path.
        if s.shared.shutdown.is_draining() {
            return Poll::Ready(Exit::Idle);
        }
        match serve(s, cancel, false) {
            Ok(h) => *hot = Some(h),
            Err(exit) => return Poll::Ready(exit),
        }
    }
}

/// Starts serving the client's request: a free server with the client's settings at once, or
/// the answer without a server, or what the session loop must wait for.
pub fn serve<'c>(s: &mut Session, cancel: &'c CancelHandle, retried: bool) -> Result<Box<Hot>, Exit<'c>> {
    let mode = cancel.pool.mode();
    if s.client.rewrite && mode != PoolMode::Session {
        if let Some(out) = answer_alone(s) {
            return Err(Exit::Write(out));
        }
    }
    let pick = pick(cancel, &s.client, mode);
    let asked = now_us();
    cancel.request_s.store((asked / 1_000_000) as u32, Ordering::Relaxed);
    cancel.wait_since.store(asked, Ordering::Relaxed);
    let pool = pick.pool(&cancel.pool);
    if s.linked.is_some() {
        return Err(Exit::Acquire(pick, asked, None, retried));
    }
    match pool.start_checkout() {
        Checkout::Now(lease) if lease.has_settings(&s.settings) => Ok(begin(s, lease, pick, asked, retried)),
        started => Err(Exit::Acquire(pick, asked, Some(started), retried)),
    }
}

/// The transaction ended and its server may go back: done here when nothing needs a future
/// (no settings to reset, no LISTEN to settle, no cancel in flight, the answer's tail taken by
/// the socket at once); else the exit that finishes it.
fn release<'c>(s: &mut Session, hot: &mut Option<Box<Hot>>) -> Option<Exit<'c>> {
    let h = hot.as_deref()?;
    if h.state.settings_unknown() || h.state.listen_flags() != 0 {
        return Some(Exit::Relayed(RelayEnd::Release));
    }
    // Detached first: no cancel aimed at this server starts after it.
    s.cancel.detach();
    if s.cancel.cancels_in_flight() > 0 {
        return Some(Exit::Relayed(RelayEnd::Release));
    }
    let mut h = hot.take()?;
    let out = std::mem::take(&mut h.state.out);
    h.account(&s.cancel);
    let Hot { mut lease, .. } = *h;
    if known_state(lease.conn()) {
        lease.release();
    }
    match write_tail(s, out) {
        Ok(None) => None,
        Ok(Some(rest)) => Some(Exit::Write(rest)),
        Err(_) => Some(Exit::Request(Request::Gone)),
    }
}
