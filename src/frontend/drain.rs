//! The session loop's side of a shutdown (see `crate::shutdown`): park at the waiting point
//! between transactions, let a transaction in flight run until shutdown_timeout, and say
//! `57P01` to every client before its connection closes.

use super::cancel::CancelHandle;
use super::conn::{ClientConn, Request};
use crate::listen::Mailbox;
use crate::pool::{Lease, Pool};
use crate::protocol::messages::PgError;
use crate::shutdown::Shutdown;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long a goodbye to a client (or a cancel to a server) may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// One client's view of the shutdown: references only, so it costs an idle client nothing.
/// A waiting session leaves its waker in its cancel handle, which a shutdown wakes
/// (`CancelRegistry::wake_all`): no waiter list is joined and left per transaction.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    handle: &'a CancelHandle,
    shutdown: &'a Shutdown,
}

impl<'a> Watch<'a> {
    pub fn new(shutdown: &'a Shutdown, handle: &'a CancelHandle) -> Watch<'a> {
        Watch { handle, shutdown }
    }

    /// Whether draining has started; if not, the task is woken when it does.
    pub fn draining(&self, cx: &mut Context<'_>) -> bool {
        self.handle.wake_on_shutdown(cx.waker());
        self.shutdown.is_draining()
    }
}

/// `ClientConn::wait_for_request`, unless pgmux is shutting down: then the client parks, and
/// gets `57P01` at once (SIGTERM) or when pgmux closes (SIGINT); the session ends (`Gone`).
/// Every idle client's task waits in here, so it is kept small: one poll of the socket and
/// one of the shutdown token, no nested futures.
#[allow(clippy::manual_async_fn)] // the arguments would be stored twice
/// A client that listens (`news`) is also woken by its notifications: `Request::News`.
pub fn next_request<'a>(
    client: &'a mut ClientConn,
    watch: Watch<'a>,
    news: Option<&'a Mailbox>,
) -> impl Future<Output = Request> + Send + 'a {
    async move {
        if !watch.shutdown.is_draining() {
            let request = std::future::poll_fn(|cx| match client.poll_request(cx) {
                Poll::Ready(request) => Poll::Ready(Some(request)),
                Poll::Pending if news.is_some_and(|m| m.poll_news(cx)) => Poll::Ready(Some(Request::News)),
                Poll::Pending if watch.draining(cx) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            match request {
                Some(Request::Ready) if watch.shutdown.is_draining() => {}
                Some(other) => return other,
                None => {}
            }
        }
        if watch.shutdown.handover().is_some() {
            // An upgrade: a request read meanwhile is served here first.
            return match client.ready > 0 {
                true => Request::Ready,
                false => Request::HandOver,
            };
        }
        // Boxed: only a shutdown gets here.
        Box::pin(park(client, watch.shutdown)).await
    }
}

/// An upgrade could not move this idle client: it is served here, parked between requests,
/// until the old process closes (then `57P01`).
pub async fn until_closing(client: &mut ClientConn, shutdown: &Shutdown, news: Option<&Mailbox>) -> Request {
    if client.ready > 0 {
        return Request::Ready;
    }
    let _parked = shutdown.park();
    let closing = shutdown.closing();
    tokio::pin!(closing);
    let request = std::future::poll_fn(|cx| match client.poll_request(cx) {
        Poll::Ready(request) => Poll::Ready(Some(request)),
        Poll::Pending if news.is_some_and(|m| m.poll_news(cx)) => Poll::Ready(Some(Request::News)),
        Poll::Pending => closing.as_mut().poll(cx).map(|()| None),
    })
    .await;
    match request {
        Some(request) => request,
        None => {
            let error = PgError::fatal(
                "57P01",
                "pgmux was upgraded: this connection could not move to the new process",
            )
            .with_hint("reconnect: the new pgmux answers at the same address");
            goodbye(client, error).await;
            Request::Gone
        }
    }
}

async fn park(client: &mut ClientConn, shutdown: &Shutdown) -> Request {
    let _parked = shutdown.park();
    let closing = shutdown.closing();
    tokio::pin!(closing);
    loop {
        if client.ready > 0 {
            if !shutdown.refusing() {
                // SIGINT: the request waits for the end, then gets its answer: 57P01.
                closing.as_mut().await;
            }
            break;
        }
        tokio::select! {
            _ = closing.as_mut() => break,
            request = client.wait_for_request() => match request {
                Request::Ready => {}
                other => return other,
            },
        }
    }
    goodbye(client, PgError::fatal("57P01", "pgmux is shutting down")).await;
    Request::Gone
}

/// Runs `work` (a checkout, a relayed transaction) to its end, unless a shutdown's deadline
/// comes first: then None, and the caller cuts the client with `cut`. The caller pins `work`
/// (a future moved in here would be stored twice in the client task's state).
pub async fn until_deadline<F: Future>(watch: &Watch<'_>, mut work: Pin<&mut F>) -> Option<F::Output> {
    let out = std::future::poll_fn(|cx| match work.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending if watch.draining(cx) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await;
    if out.is_some() {
        return out;
    }
    // Boxed: only a shutdown gets here, and the timer would weigh on every idle client's task.
    match watch.shutdown.deadline() {
        Some((deadline, _)) => Box::pin(tokio::time::timeout_at(deadline, work)).await.ok(),
        None => Some(work.await),
    }
}

/// The shutdown deadline passed while this client waited for a server or ran a transaction:
/// it gets `57P01` naming shutdown_timeout, a query still running is cancelled, and the server
/// connection is closed (PostgreSQL rolls back what was open).
pub fn cut<'a>(
    client: &'a mut ClientConn,
    lease: Option<Lease>,
    pool: &'a Pool,
    watch: &'a Watch<'a>,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    // Boxed: only a shutdown gets here.
    Box::pin(cut_now(client, lease, pool, watch))
}

async fn cut_now(client: &mut ClientConn, lease: Option<Lease>, pool: &Pool, watch: &Watch<'_>) {
    let secs = watch
        .shutdown
        .deadline()
        .map(|(_, t)| t.as_secs_f64())
        .unwrap_or_default();
    let error = PgError::fatal(
        "57P01",
        format!("pgmux is shutting down: the transaction did not finish within shutdown_timeout ({secs} s)"),
    );
    tracing::info!(client = %client.peer(), pool = %pool, "transaction cut by the shutdown");
    goodbye(client, error).await;
    let Some(mut lease) = lease else { return };
    if !client.tracker.quiet() || !lease.conn().buf.is_empty() {
        let server = lease.conn();
        let (pid, key) = (server.process_id, server.secret_key);
        let cancel = crate::backend::cancel::cancel(&pool.target, pid, key);
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, cancel).await;
    }
    drop(lease);
}

async fn goodbye(client: &mut ClientConn, error: PgError) {
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, client.send_error(&error)).await;
}
