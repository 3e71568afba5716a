//! Thread-per-core: each worker thread runs its own single-threaded runtime, accepts on its own
//! listening socket and serves its clients only on itself, so a transaction's wake-ups never
//! cross threads and no work-stealing scheduler sits on the data path.
//!
//! A server connection is registered with the reactor of the worker that opened it (or last
//! used it). The pools prefer an idle connection of the asking worker; one from another worker
//! is moved to the asker's reactor before use (`Stream::rehome`), so its readiness is reported
//! by the thread that polls it.

use crate::frontend::Shared;
use std::cell::Cell;
use std::sync::{Arc, OnceLock};

thread_local! {
    static WORKER: Cell<u16> = const { Cell::new(NONE) };
}

/// The id of threads that are not workers (the main thread: signals, janitor, metrics).
const NONE: u16 = u16::MAX;

/// This thread's worker, or None outside the workers.
#[inline]
pub fn current() -> Option<u16> {
    let id = WORKER.with(Cell::get);
    (id != NONE).then_some(id)
}

/// The main thread's runtime (`set_main`).
static MAIN: OnceLock<tokio::runtime::Handle> = OnceLock::new();

/// Names the main thread's runtime, where `spawn_off_workers` puts its tasks.
pub fn set_main(handle: tokio::runtime::Handle) {
    let _ = MAIN.set(handle);
}

/// Spawns a long-lived task that serves no one client (a pool's LISTEN connection, the replica
/// monitor) on the main thread's runtime: a tokio task on a worker would keep its runner from
/// sleeping in its own epoll while it lives (`executor`). Without a main runtime (tests), here.
pub fn spawn_off_workers<F>(future: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match MAIN.get() {
        Some(main) => drop(main.spawn(future)),
        None => drop(tokio::spawn(future)),
    }
}

/// The number of workers `workers = 0` means: one per two cores, at least one. A pooler
/// shares its host with the clients or PostgreSQL more often than not; on the 2-core bench
/// machine one worker beat two in every pgbench scenario (less CPU per transaction, fewer
/// context switches), as the second worker competes with PostgreSQL and pgbench for the cores.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2))
}

/// The running workers: each resolves its receiver in `closed` once its listener has closed
/// (a shutdown began); its runtime (`handles`) keeps serving the clients it holds until the
/// process exits.
pub struct Started {
    pub closed: Vec<tokio::sync::oneshot::Receiver<()>>,
    pub handles: Vec<tokio::runtime::Handle>,
}

/// Starts one worker thread per group of listening sockets.
/// The Unix socket, when there is one, is the first worker's too.
pub fn start(
    listeners: Vec<Vec<std::net::TcpListener>>,
    mut unix: Option<(std::os::unix::net::UnixListener, std::path::PathBuf)>,
    shared: &Arc<Shared>,
) -> std::io::Result<Started> {
    let mut closed = Vec::with_capacity(listeners.len());
    let mut handles = Vec::with_capacity(listeners.len());
    for (id, listener) in listeners.into_iter().enumerate() {
        let unix = unix.take();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_unpark(crate::stats::clock::tick)
            .on_thread_park(before_sleep)
            .build()?;
        handles.push(runtime.handle().clone());
        let shared = shared.clone();
        let (done, on_done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("pgmux-worker-{id}"))
            .spawn(move || {
                WORKER.with(|w| w.set(id as u16));
                crate::stats::clock::tick();
                runtime.block_on(async move {
                    use crate::listener::{run, Listener};
                    crate::executor::start();
                    let unix = unix.and_then(|(l, path)| match crate::stream::Acceptor::new_unix(l) {
                        Ok(l) => Some(Listener::Unix(l, path)),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot watch the Unix socket");
                            None
                        }
                    });
                    let mut all: Vec<Listener> = unix.into_iter().collect();
                    for l in listener {
                        match crate::stream::Acceptor::new(l) {
                            Ok(l) => all.push(Listener::Tcp(l)),
                            Err(e) => tracing::error!(error = %e, worker = id, "cannot watch a listening socket"),
                        }
                    }
                    // Each listener a task of this worker's executor (not of tokio: its runner
                    // sleeps in its own reactor only while it is tokio's one task); done when all
                    // have closed.
                    let listening = tokio_util::task::TaskTracker::new();
                    for l in all {
                        crate::executor::spawn(listening.token(), run(l, shared.clone()));
                    }
                    listening.close();
                    listening.wait().await;
                    let _ = done.send(());
                    // Clients of this worker finish their transactions here while pgmux drains.
                    std::future::pending::<()>().await
                })
            })?;
        closed.push(on_done);
    }
    Ok(Started { closed, handles })
}

/// The worker has no ready task and is about to block in the reactor: let a thread that is
/// ready to run on this core (pgbench, PostgreSQL, a client: often the one about to send the
/// next request) go first, so the worker more often finds work when it comes back than sleeps
/// and is woken. Where nothing else waits for the core this returns at once. Measured
/// (`benches/ctxsw.sh`, pgbench -S -c 50 on two shared cores): 0.29 to 0.35 context switches per
/// transaction instead of 0.38 to 0.43 (PgBouncer 0.37 to 0.39), TPS a few per cent higher.
fn before_sleep() {
    std::thread::yield_now();
}
