//! The session loop of one logged-in client: wait for a request, take a server, relay the
//! transaction, give the server back clean.

use super::cancel::CancelHandle;
use super::conn::{ClientConn, Request};
use super::drain::{self, Watch};
use super::handover::Offered;
use super::steady::{self, Exit};
use super::timers::{Phase, Timeouts};
use super::transaction::{self, acquire, send_answer, timeout_error, Flow, Hot};
use super::{ClientSlot, Shared};
use crate::backend::Settings;
use crate::boxed::in_place;
use crate::pool::Lease;
use crate::protocol::messages::PgError;
use std::future::{poll_fn, Future};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
/// The steady state (wait for a request, take a free server, relay, give it back) is one poll
/// (`steady`); every other await is boxed: the future is the whole task of an idle client,
/// allocated in jemalloc's size classes (`executor`).
#[allow(clippy::manual_async_fn)] // the arguments would be stored twice
pub fn run(mut s: Session) -> impl Future<Output = ()> + Send {
    async move {
        logged_in(&mut s);
        // Apart from the session, so that a steady exit may borrow the pool's checkout.
        let cancel = &s.cancel.clone();
        let mut hot: Option<Box<Hot>> = None;
        // The request about to be served is a read sent again (`Flow::Retry`).
        let mut retried = false;
        let end = loop {
            let exit = poll_fn(|cx| steady::poll(cx, &mut s, cancel, &mut hot)).await;
            // Boxed: every path but the steady one, whose state would weigh on every idle
            // client's task.
            if let Some(end) = in_place(|| slow(&mut s, cancel, &mut hot, &mut retried, exit)).await {
                break end;
            }
        };
        Box::pin(last_words(&mut s, end)).await
    }
}

/// What the steady poll left to the session loop: the session goes on (None), or its end.
async fn slow<'c>(
    s: &mut Session,
    cancel: &'c CancelHandle,
    hot: &mut Option<Box<Hot>>,
    retried: &mut bool,
    mut exit: Exit<'c>,
) -> Option<End> {
    loop {
        let flow = match exit {
            Exit::Idle => {
                exit = Exit::Request(wait(s).await);
                continue;
            }
            Exit::Request(request) => match Step::of(request) {
                Err(end) => return Some(end),
                Ok(Step::HandOver) => match hand_over(s).await {
                    Ok(request) => {
                        exit = Exit::Request(request);
                        continue;
                    }
                    Err(end) => return Some(end),
                },
                Ok(Step::News) => match super::listen::deliver(s).await {
                    Ok(()) => return None,
                    Err(_) => return Some(End::Left(None)),
                },
                Ok(Step::Serve) => match steady::serve(s, cancel, std::mem::take(retried)) {
                    Ok(h) => {
                        *hot = Some(h);
                        return None;
                    }
                    Err(next) => {
                        exit = next;
                        continue;
                    }
                },
            },
            Exit::Write(out) => send_answer(&mut s.client, out).await,
            Exit::Acquire(pick, asked, started, again) => match acquire(s, pick, asked, started, again).await {
                Ok(h) => {
                    *hot = Some(h);
                    return None;
                }
                Err(flow) => flow,
            },
            Exit::Relayed(end) => match hot.take() {
                Some(h) => transaction::finish(s, h, end).await,
                None => Flow::Stop,
            },
            Exit::Draining => match hot.take() {
                Some(h) => transaction::to_deadline(s, h).await,
                None => Flow::Next,
            },
        };
        match flow {
            Flow::Next => return None,
            Flow::Stop => return Some(End::Left(None)),
            // A read whose replica died before answering: once more, elsewhere.
            Flow::Retry => {
                *retried = true;
                exit = Exit::Request(Request::Ready);
            }
        }
    }
}

/// Waits for the client's next request the slow way: during a shutdown, or with
/// client_idle_timeout set.
async fn wait(s: &mut Session) -> Request {
    let watch = Watch::new(&s.shared.shutdown, &s.cancel);
    let news = s.listen.as_deref();
    match s.shared.knobs.client_idle() {
        limit if limit.is_zero() => drain::next_request(&mut s.client, watch, news).await,
        limit => wait_idle(&mut s.client, watch, news, limit).await,
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
async fn last_words(s: &mut Session, end: End) {
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
