//! Upgrade in place: `pgmux upgrade` starts a new pgmux (possibly a new binary) that takes
//! over from the one running on the same port, dropping nobody.
//!
//! The running pgmux listens on an abstract Unix socket named after its address and port
//! (`pgmux-upgrade/PORT/IP`), answering only processes of its own user. The new one connects
//! and says hello; the old sends its listening sockets (TCP, the Unix socket, the metrics
//! listener) with SCM_RIGHTS. The new accepts on them at once, so no connection is refused in
//! between (they are the same sockets, with the same queue), and says it is ready. The old then
//! stops accepting and drains as in a graceful shutdown, except that each client reaching a
//! transaction boundary is handed over: its socket and its session (`state`) go to the new
//! process, which registers it under the same cancel key and serves it from its next request.
//! A TLS client is closed there instead (57P01: its TLS session cannot move); a session-mode
//! client keeps its server, so it stays on the old process until it leaves or
//! shutdown_timeout passes. The old exits when it holds nothing; meanwhile the new forwards to
//! it the cancel requests it cannot match, and refuses to be upgraded itself.

mod adopt;
mod handover;
pub mod state;
pub mod wire;

pub use adopt::{takeover, Takeover};
pub use handover::{close_inherited, keep, serve, Inheritable, Item};

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::atomic::{AtomicU32, Ordering};
use wire::{Channel, Msg};

/// The abstract socket name of the pgmux on `listen_addr:port`.
pub fn socket_name(listen_addr: &str, port: u16) -> String {
    let first = listen_addr.split(',').next().unwrap_or_default().trim();
    format!("pgmux-upgrade/{port}/{first}")
}

fn connect(name: &str) -> std::io::Result<UnixStream> {
    UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
}

/// The process this one is taking over from, while it runs (0: none).
static PREDECESSOR: AtomicU32 = AtomicU32::new(0);
static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The pid of the pgmux this one is still taking clients from, if any.
pub fn predecessor() -> Option<u32> {
    match PREDECESSOR.load(Ordering::Acquire) {
        0 => None,
        pid => Some(pid),
    }
}

/// A CancelRequest nobody here holds the key of, while a predecessor still runs: it may be
/// its client's, so it goes there (blocking: a local socket, answered at once).
pub fn forward_cancel(process_id: i32, secret_key: i32) -> bool {
    let Some(name) = NAME.get() else { return false };
    if predecessor().is_none() {
        return false;
    }
    let sent = connect(name).and_then(|sock| Channel::new(sock).send(&Msg::Cancel { process_id, secret_key }, &[]));
    if let Err(e) = &sent {
        tracing::debug!(error = %e, "upgrade: cannot forward a cancel request to the old process");
    }
    sent.is_ok()
}
