//! The new process's side: ask the running pgmux for its listening sockets, then adopt the
//! clients it offers until it exits.

use super::state::State;
use super::wire::{Channel, Msg, VERSION};
use super::PREDECESSOR;
use crate::frontend::Shared;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running pgmux's listening sockets, now also ours, and the channel to it.
pub struct Takeover {
    ch: Channel,
    pub old_pid: u32,
    /// The old process's next client id: ours continue from there, so no adopted client's
    /// cancel key meets a new client's.
    pub next_client: u64,
    pub groups: Vec<Vec<std::net::TcpListener>>,
    pub unix: Option<(std::os::unix::net::UnixListener, std::path::PathBuf)>,
    pub metrics: Option<std::net::TcpListener>,
}

/// Connects to the pgmux running on `name` and takes its listening sockets. The error says
/// why in words for the operator.
pub fn takeover(name: &str) -> Result<Takeover, String> {
    let sock = super::connect(name).map_err(|e| {
        format!("no running pgmux to take over from answers on the upgrade socket @{name} ({e}): is it running, as this user, with the same listen_addr and listen_port?")
    })?;
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let mut ch = Channel::new(sock);
    let hello = Msg::Hello {
        version: VERSION,
        pid: std::process::id(),
    };
    ch.send(&hello, &[]).map_err(|e| format!("upgrade socket: {e}"))?;
    let (msg, fds) = ch.recv().map_err(|e| format!("upgrade socket: {e}"))?;
    let (pid, next_client, groups, unix, metrics) = match msg {
        Msg::Listeners {
            pid,
            next_client,
            groups,
            unix,
            metrics,
        } => (pid, next_client, groups, unix, metrics),
        Msg::Refused { why } => return Err(format!("the running pgmux refused: {why}")),
        other => return Err(format!("upgrade socket: unexpected {other:?}")),
    };
    let mut fds = fds.into_iter();
    let mut take = || {
        fds.next()
            .ok_or_else(|| "upgrade socket: a listening socket is missing".to_owned())
    };
    let mut tcp = Vec::with_capacity(groups.len());
    for count in groups {
        let group = (0..count)
            .map(|_| take().map(std::net::TcpListener::from))
            .collect::<Result<Vec<_>, _>>()?;
        tcp.push(group);
    }
    let unix = match unix {
        Some(path) => Some((std::os::unix::net::UnixListener::from(take()?), path.into())),
        None => None,
    };
    let metrics = match metrics {
        true => Some(std::net::TcpListener::from(take()?)),
        false => None,
    };
    PREDECESSOR.store(pid, Ordering::Release);
    let _ = super::NAME.set(name.to_owned());
    Ok(Takeover {
        ch,
        old_pid: pid,
        next_client,
        groups: tcp,
        unix,
        metrics,
    })
}

impl Takeover {
    /// The workers accept on the inherited sockets: tell the old process, then adopt what it
    /// offers (spread over `workers`) until it exits. Then this process answers upgrades
    /// itself (`serve` with `inherit`).
    pub fn ready(mut self, shared: Arc<Shared>, workers: Vec<Handle>, inherit: super::Inheritable, main: Handle) {
        if let Err(e) = self.ch.send(&Msg::Ready, &[]) {
            tracing::error!(error = %e, "upgrade: cannot tell the old process we accept; it keeps its clients");
        }
        let _ = self.ch.socket().set_read_timeout(None);
        // Kept now, so a shutdown during the takeover closes them too.
        super::keep(inherit);
        let name = super::NAME.get().cloned().unwrap_or_default();
        let started = std::thread::Builder::new().name("pgmux-adopt".into()).spawn(move || {
            adopt_all(&mut self.ch, &shared, &workers, self.old_pid);
            PREDECESSOR.store(0, Ordering::Release);
            super::serve(shared, name, None, main);
        });
        if let Err(e) = started {
            tracing::error!(error = %e, "upgrade: cannot start the adopting thread");
        }
    }
}

fn adopt_all(ch: &mut Channel, shared: &Arc<Shared>, workers: &[Handle], old_pid: u32) {
    let mut pending: HashMap<u64, oneshot::Sender<Vec<u8>>> = HashMap::new();
    let (mut adopted, mut declined) = (0u64, 0u64);
    let mut turn = 0usize;
    loop {
        let (msg, fds) = match ch.recv() {
            Ok(received) => received,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                tracing::warn!(error = %e, "upgrade: the channel to the old process failed");
                break;
            }
        };
        match msg {
            Msg::Offer { id, state } => {
                let Some(worker) = workers.get(turn % workers.len().max(1)) else {
                    break;
                };
                turn += 1;
                let answer = match adopt_one(shared, worker, &state, fds.into_iter().next()) {
                    Ok(release) => {
                        pending.insert(id, release);
                        adopted += 1;
                        Msg::Adopted { id }
                    }
                    Err(why) => {
                        declined += 1;
                        tracing::info!("upgrade: a client stays on the old process: {why}");
                        Msg::Declined { id, why }
                    }
                };
                if let Err(e) = ch.send(&answer, &[]) {
                    tracing::warn!(error = %e, "upgrade: the channel to the old process failed");
                    break;
                }
            }
            Msg::Release { id, leftovers } => {
                if let Some(release) = pending.remove(&id) {
                    let _ = release.send(leftovers);
                }
            }
            other => tracing::warn!(?other, "upgrade: unexpected message from the old process"),
        }
    }
    // Clients adopted but never released start now: the old process is gone.
    drop(pending);
    tracing::info!(
        adopted,
        declined,
        "upgrade: pgmux {old_pid} has exited; the upgrade is complete"
    );
}

/// Registers the client on a worker; the session starts once the old process releases it.
fn adopt_one(
    shared: &Arc<Shared>,
    worker: &Handle,
    state: &[u8],
    fd: Option<OwnedFd>,
) -> Result<oneshot::Sender<Vec<u8>>, String> {
    let state = State::decode(state).map_err(|e| e.to_string())?;
    let fd = fd.ok_or("the offer came without its socket")?;
    let (done, registered) = oneshot::channel();
    let (release, released) = oneshot::channel();
    let adopt = crate::frontend::handover::adopt(shared.clone(), state, fd, done, released);
    // Onto the worker's thread, then into its executor with the sessions it accepted.
    let token = shared.shutdown.tracker.token();
    worker.spawn(async move { crate::executor::spawn(token, adopt) });
    // Its runner may be asleep in its own epoll, where tokio's wake-up does not reach.
    crate::executor::nudge_all();
    match registered.blocking_recv() {
        Ok(Ok(())) => Ok(release),
        Ok(Err(why)) => Err(why),
        Err(_) => Err("the worker dropped the client".into()),
    }
}
