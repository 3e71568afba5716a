//! The accept loop.

use crate::frontend::{login, Shared};
use crate::stream::tokio_io::Counted;
use crate::stream::Stream;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The addresses `listen_addr` names: an IP, a comma-separated list of them, or `*` (every
/// IPv4 and IPv6 address), as PgBouncer reads it.
pub fn addresses(listen_addr: &str) -> std::io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in listen_addr.split(',').map(str::trim) {
        if part == "*" {
            out.extend([IpAddr::from([0u8; 4]), IpAddr::from([0u16; 8])]);
            continue;
        }
        let ip = part.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("listen_addr {part:?} is not an IP address (or *)"),
            )
        })?;
        out.push(ip);
    }
    out.dedup();
    Ok(out)
}

/// The listening sockets, one list per worker, and what keeps other processes off them.
pub struct Bound {
    pub workers: Vec<Vec<std::net::TcpListener>>,
    /// Without so_reuseport: the marks that keep a sharing pgmux out (see `port_mark`).
    pub marks: Option<crate::port_mark::Marks>,
}

/// Binds the listening sockets: for each worker, one per address (SO_REUSEADDR, a deep backlog
/// for connection storms). Several workers share an address through SO_REUSEPORT, and the
/// kernel spreads new connections over them.
///
/// `share` is `so_reuseport`. Without it the port must be ours alone: a plain bind first
/// makes sure nobody holds it, and a mark keeps a sharing pgmux from joining our workers'
/// group later. With it every socket sets SO_REUSEPORT, so other processes that set it too
/// (and run as the same user: the kernel's rule) take their share of the connections.
pub fn bind(listen_addr: &str, port: u16, workers: usize, share: bool) -> std::io::Result<Bound> {
    let ips = addresses(listen_addr)?;
    let addrs: Vec<SocketAddr> = ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect();
    if share {
        // Checked before binding, so as not to take connections we would then drop, and after.
        crate::port_mark::check_unclaimed(&ips, port)?;
        let workers = (0..workers.max(1))
            .map(|_| addrs.iter().map(|&a| socket(a, true, share)).collect())
            .collect::<std::io::Result<_>>()?;
        crate::port_mark::check_unclaimed(&ips, port)?;
        return Ok(Bound { workers, marks: None });
    }
    let marks = Some(crate::port_mark::claim(&ips, port)?);
    if workers <= 1 {
        let one = addrs
            .iter()
            .map(|&a| socket(a, false, share))
            .collect::<Result<_, _>>()?;
        return Ok(Bound {
            workers: vec![one],
            marks,
        });
    }
    for &addr in &addrs {
        drop(socket(addr, false, share)?);
    }
    let workers = (0..workers)
        .map(|_| addrs.iter().map(|&a| socket(a, true, share)).collect())
        .collect::<std::io::Result<_>>()?;
    Ok(Bound { workers, marks })
}

fn socket(addr: SocketAddr, reuse_port: bool, share: bool) -> std::io::Result<std::net::TcpListener> {
    bind_one(addr, reuse_port).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse if share => std::io::Error::new(
            e.kind(),
            format!(
                "address in use: another process listens on {addr} without SO_REUSEPORT \
                 (or runs as another user); so_reuseport shares the port only with processes that set it too"
            ),
        ),
        std::io::ErrorKind::AddrInUse => std::io::Error::new(
            e.kind(),
            format!(
                "address in use: another process listens on {addr}; several pgmux processes \
                 share a port only with [pooler] so_reuseport = true in each of them"
            ),
        ),
        _ => e,
    })
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `::` beside `0.0.0.0` (listen_addr = *): each family on its own socket.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// The Unix socket `DIR/.s.PGSQL.PORT`, as PostgreSQL and PgBouncer name it, with `mode` as
/// its permissions. A socket file nobody answers on (left by a process that died) is replaced;
/// one that answers is another server's, and is an error.
pub fn bind_unix(dir: &str, port: u16, mode: u32) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = unix_path(dir, port);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use by another server; a Unix socket cannot be shared, so each pgmux \
                     process needs its own unix_socket_dir (also with so_reuseport), or unix_socket_dir = \"\"",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Where the Unix socket of `unix_socket_dir` lives.
pub fn unix_path(dir: &str, port: u16) -> std::path::PathBuf {
    std::path::Path::new(dir).join(format!(".s.PGSQL.{port}"))
}

/// Something clients connect to: a TCP listener or the Unix socket.
pub enum Listener {
    Tcp(crate::stream::Acceptor),
    Unix(
        crate::stream::Acceptor<std::os::unix::net::UnixListener>,
        std::path::PathBuf,
    ),
}

impl Listener {
    async fn accept(&mut self) -> std::io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(Stream::Plain),
            Listener::Unix(l, _) => l.accept_unix().await.map(|s| Stream::Unix(Counted::new(s))),
        }
    }
}

/// Accepts clients, one tracked task each, until a shutdown starts; then the listening socket
/// closes, so new connections are refused (the Unix socket's file is removed).
pub async fn run(mut listener: Listener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.shutdown.no_more_clients() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(stream) => {
                crate::executor::spawn(shared.shutdown.tracker.token(), login::serve(stream, shared.clone()));
            }
            Err(e) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // After an upgrade's handover the socket (and its file) is the new process's.
    let upgrade = shared.shutdown.is_upgrade();
    if let (Listener::Unix(_, path), false) = (&listener, upgrade) {
        let _ = std::fs::remove_file(path);
    }
    drop(listener);
    match upgrade {
        true => tracing::info!("listener handed to the new process"),
        false => tracing::info!("listener closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_forms() {
        let ips = |s: &str| {
            addresses(s)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(ips("127.0.0.1"), ["127.0.0.1"]);
        assert_eq!(ips("*"), ["0.0.0.0", "::"]);
        assert_eq!(ips("127.0.0.1, ::1"), ["127.0.0.1", "::1"]);
        assert!(addresses("localhost")
            .unwrap_err()
            .to_string()
            .contains("not an IP address"));
    }

    #[test]
    fn star_binds_both_families_on_one_port() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        match bind("*", port, 2, false).map(|b| b.workers) {
            Ok(workers) => {
                assert_eq!(workers.len(), 2);
                assert!(
                    workers.iter().all(|w| w.len() == 2),
                    "each worker listens on 0.0.0.0 and ::"
                );
            }
            // A machine without IPv6 cannot bind `::`; that is its answer, not a bug here.
            Err(e) => assert!(
                e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(97),
                "{e}"
            ),
        }
    }
}
