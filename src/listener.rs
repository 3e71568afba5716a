//! The accept loop.

use crate::frontend::{login, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Binds the listening sockets, one per worker (SO_REUSEADDR, a deep backlog for connection
/// storms). Several workers share the address through SO_REUSEPORT, and the kernel spreads new
/// connections over them; a plain bind first makes sure nobody else holds the port (another
/// process's SO_REUSEPORT group would otherwise take us in silently).
pub fn bind(addr: &str, port: u16, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let ip: std::net::IpAddr = addr.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("listen_addr {addr:?} is not an IP address"),
        )
    })?;
    let addr = SocketAddr::new(ip, port);
    if workers <= 1 {
        return Ok(vec![socket(addr, false)?]);
    }
    drop(socket(addr, false)?);
    (0..workers).map(|_| socket(addr, true)).collect()
}

fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Accepts clients, one tracked task each, until a shutdown starts; then the listening socket
/// closes, so new connections are refused.
pub async fn run(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.shutdown.no_more_clients() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                shared
                    .shutdown
                    .tracker
                    .spawn(login::serve(stream, peer, shared.clone()));
            }
            Err(e) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    tracing::info!("listener closed");
}
