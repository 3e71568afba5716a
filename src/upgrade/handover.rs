//! The old process's side: the upgrade socket, the listening sockets it gives away, and the
//! thread that offers clients to the new process one at a time.

use super::wire::{own_uid, peer_uid, Channel, Msg, VERSION};
use crate::frontend::Shared;
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a new process inherits: copies of the listening sockets.
pub struct Inheritable {
    /// Each worker's TCP listening sockets.
    pub groups: Vec<Vec<std::net::TcpListener>>,
    pub unix: Option<(std::os::unix::net::UnixListener, std::path::PathBuf)>,
    pub metrics: Option<std::net::TcpListener>,
}

impl Inheritable {
    pub fn try_clone(&self) -> std::io::Result<Inheritable> {
        Ok(Inheritable {
            groups: self
                .groups
                .iter()
                .map(|g| g.iter().map(|l| l.try_clone()).collect())
                .collect::<std::io::Result<_>>()?,
            unix: match &self.unix {
                Some((l, path)) => Some((l.try_clone()?, path.clone())),
                None => None,
            },
            metrics: self.metrics.as_ref().map(|l| l.try_clone()).transpose()?,
        })
    }
}

/// What a session at a transaction boundary sends to the handover thread.
pub enum Item {
    /// Take this client: `reply` says whether the new process adopted it. `fd` stays open
    /// until then (the session holds its socket).
    Offer {
        id: u64,
        state: Vec<u8>,
        fd: RawFd,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
    /// The session let go of the adopted client; `leftovers` go out first.
    Release { id: u64, leftovers: Vec<u8> },
}

/// The copies a later upgrade gives away. Closed when a shutdown starts (`close_inherited`):
/// a copy left open would keep the port listening after the workers closed theirs, and new
/// connections would wait in its queue instead of being refused.
static INHERIT: std::sync::Mutex<Option<Inheritable>> = std::sync::Mutex::new(None);

/// Keeps the copies for a later upgrade (until `close_inherited`).
pub fn keep(inherit: Inheritable) {
    *INHERIT.lock().unwrap_or_else(|e| e.into_inner()) = Some(inherit);
}

/// A shutdown (or a handover) began: this process's copies of its listening sockets go.
pub fn close_inherited() {
    INHERIT.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// How long the new process may take to answer (starting its workers, adopting a client).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Listens for `pgmux upgrade` on `name` until the process exits, retrying while the name is
/// taken (by the predecessor this process is still taking over from). `main` is the main
/// thread's runtime, where forwarded cancel requests run.
pub fn serve(shared: Arc<Shared>, name: String, inherit: Option<Inheritable>, main: tokio::runtime::Handle) {
    let _ = super::NAME.set(name.clone());
    if let Some(inherit) = inherit {
        keep(inherit);
    }
    if shared.shutdown.is_draining() {
        close_inherited();
        return;
    }
    let started = std::thread::Builder::new().name("pgmux-upgrade".into()).spawn(move || {
        let listener = match bind(&name) {
            Some(listener) => listener,
            None => return,
        };
        let busy = Arc::new(AtomicBool::new(false));
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            if peer_uid(&conn).ok() != Some(own_uid()) {
                continue; // only our own user may take our sockets
            }
            let (shared, busy, main) = (shared.clone(), busy.clone(), main.clone());
            let _ = std::thread::Builder::new()
                .name("pgmux-upgrade-conn".into())
                .spawn(move || answer(conn, &shared, &busy, &main));
        }
    });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start the upgrade thread: pgmux upgrade will not find this process");
    }
}

fn bind(name: &str) -> Option<UnixListener> {
    let addr = match SocketAddr::from_abstract_name(name.as_bytes()) {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!(error = %e, "bad upgrade socket name {name}");
            return None;
        }
    };
    let mut warned = false;
    loop {
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => return Some(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                // Our predecessor still holds it (or another process shares the port).
                if !warned && super::predecessor().is_none() {
                    tracing::info!(
                        "another pgmux holds the upgrade socket {name}: pgmux upgrade reaches it, not this process"
                    );
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for pgmux upgrade on {name}");
                return None;
            }
        }
    }
}

fn answer(conn: UnixStream, shared: &Arc<Shared>, busy: &AtomicBool, main: &tokio::runtime::Handle) {
    let _ = conn.set_read_timeout(Some(ANSWER_TIMEOUT));
    let mut ch = Channel::new(conn);
    let (hello, _) = match ch.recv() {
        Ok(first) => first,
        Err(e) => return tracing::debug!(error = %e, "upgrade socket: nothing readable"),
    };
    let new_pid = match hello {
        Msg::Cancel { process_id, secret_key } => {
            let shared = shared.clone();
            main.spawn(async move { crate::frontend::peer::accept(&shared, process_id, secret_key).await });
            return;
        }
        Msg::Hello { version, pid } if version == VERSION => pid,
        Msg::Hello { version, .. } => {
            let why =
                format!("this pgmux speaks upgrade protocol {VERSION}, the new one {version}: stop and start instead");
            return refuse(&ch, why);
        }
        other => return tracing::debug!(?other, "upgrade socket: unexpected first message"),
    };
    let own = std::process::id();
    if let Some(old) = super::predecessor() {
        return refuse(
            &ch,
            format!("pgmux {own} is itself still taking over from pgmux {old}: try again when that has exited"),
        );
    }
    if busy.swap(true, Ordering::AcqRel) {
        return refuse(&ch, format!("an upgrade of pgmux {own} is already in progress"));
    }
    if shared.shutdown.is_draining() {
        return refuse(&ch, format!("pgmux {own} is shutting down"));
    }
    tracing::info!(
        new = new_pid,
        "upgrade: handing the listening sockets to pgmux {new_pid}"
    );
    // Copies, so the lock is not held while the new process starts (a shutdown takes it).
    let copies = match INHERIT.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(inherit) => inherit.try_clone(),
        None => Err(std::io::Error::other(format!("pgmux {own} is shutting down"))),
    };
    let given = copies.and_then(|inherit| give_listeners(&mut ch, shared, &inherit));
    match given {
        Ok(()) => hand_over(ch, shared, new_pid),
        Err(e) => {
            tracing::warn!(error = %e, "upgrade to pgmux {new_pid} failed before it took over: carrying on");
            let _ = ch.send(&Msg::Refused { why: e.to_string() }, &[]);
            busy.store(false, Ordering::Release);
        }
    }
}

fn refuse(ch: &Channel, why: String) {
    tracing::warn!("pgmux upgrade refused: {why}");
    let _ = ch.send(&Msg::Refused { why }, &[]);
}

/// Sends the listening sockets and waits for the new process to accept on them.
fn give_listeners(ch: &mut Channel, shared: &Shared, inherit: &Inheritable) -> std::io::Result<()> {
    let mut fds: Vec<RawFd> = inherit.groups.iter().flatten().map(AsRawFd::as_raw_fd).collect();
    fds.extend(inherit.unix.iter().map(|(l, _)| l.as_raw_fd()));
    fds.extend(inherit.metrics.iter().map(AsRawFd::as_raw_fd));
    let msg = Msg::Listeners {
        pid: std::process::id(),
        next_client: shared.next_client_count(),
        groups: inherit.groups.iter().map(|g| g.len() as u32).collect(),
        unix: inherit.unix.as_ref().map(|(_, p)| p.to_string_lossy().into_owned()),
        metrics: inherit.metrics.is_some(),
    };
    ch.send(&msg, &fds)?;
    match ch.recv()? {
        (Msg::Ready, _) => Ok(()),
        (Msg::Refused { why }, _) => Err(std::io::Error::other(why)),
        (other, _) => Err(std::io::Error::other(format!("unexpected {other:?}"))),
    }
}

/// The new process accepts: stop accepting, and offer every client at its next boundary.
fn hand_over(mut ch: Channel, shared: &Shared, new_pid: u32) {
    close_inherited();
    let (tx, rx) = std::sync::mpsc::channel();
    let timeout = shared.config.load().pooler.shutdown_timeout;
    shared.shutdown.begin_handover(tx, timeout);
    shared.cancels.wake_all();
    tracing::info!(
        "upgrade: pgmux {new_pid} accepts now; handing clients over at their next transaction boundary \
         (session-mode clients stay here until they leave, within shutdown_timeout: {} s)",
        timeout.as_secs_f64()
    );
    let mut broken = false;
    let (mut handed, mut kept) = (0u64, 0u64);
    while let Ok(item) = rx.recv() {
        match item {
            Item::Offer { id, state, fd, reply } => {
                let adopted = !broken && offer(&mut ch, id, state, fd, &mut broken);
                match adopted {
                    true => handed += 1,
                    false => kept += 1,
                }
                let _ = reply.send(adopted);
            }
            Item::Release { id, leftovers } => {
                if let Err(e) = ch.send(&Msg::Release { id, leftovers }, &[]) {
                    tracing::warn!(error = %e, "upgrade: the new process stopped answering");
                    broken = true;
                }
            }
        }
        if broken {
            shared.shutdown.handover_failed();
        }
        tracing::debug!(handed, kept, "upgrade: a client offered");
    }
}

fn offer(ch: &mut Channel, id: u64, state: Vec<u8>, fd: RawFd, broken: &mut bool) -> bool {
    if let Err(e) = ch.send(&Msg::Offer { id, state }, &[fd]) {
        tracing::warn!(error = %e, "upgrade: cannot reach the new process; the clients left stay here");
        *broken = true;
        return false;
    }
    match ch.recv() {
        Ok((Msg::Adopted { id: got }, _)) if got == id => true,
        Ok((Msg::Declined { why, .. }, _)) => {
            tracing::info!("upgrade: the new process did not take a client ({why}); it stays here");
            false
        }
        Ok((other, _)) => {
            tracing::warn!(
                ?other,
                "upgrade: unexpected answer from the new process; the clients left stay here"
            );
            *broken = true;
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "upgrade: the new process stopped answering; the clients left stay here");
            *broken = true;
            false
        }
    }
}
