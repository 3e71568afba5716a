//! The floor on tokio: the same job as `floor` (src/main.rs), written the plain way on tokio, to
//! tell how much of a pooler's cost per transaction is tokio and the least async structure
//! around it. A current-thread runtime, one task per client; clients get AuthenticationOk at
//! once; servers are opened at start (PostgreSQL's Unix socket, trust) and kept in a pool behind
//! an `Arc<Mutex>`. Per transaction the client's task reads a request (its complete frames),
//! takes a server (or waits in a FIFO on a oneshot the releasing task hands a server to), writes
//! the request, and relays both ways (`select!` over the two reads) until the server's
//! ReadyForQuery says idle; then it gives the server back. No timeouts, no stats, no TLS, no
//! tracking: a yardstick. The protocol helpers are copies of `floor`'s.
//!
//!   floor-tokio LISTEN_PORT PG_SOCKET_PATH DATABASE POOL_SIZE
use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::oneshot;

#[path = "../cli.rs"]
mod cli;
#[path = "../wire.rs"]
mod wire;
use wire::{be32, frames, welcome};

const BUF: usize = 16 * 1024;

struct Server {
    stream: UnixStream,
    buf: BytesMut,
}

struct Pool {
    idle: Vec<Server>,
    waiting: VecDeque<oneshot::Sender<Server>>,
}

type Shared = Arc<Mutex<Pool>>;

static WELCOME: LazyLock<Vec<u8>> = LazyLock::new(welcome);

fn main() {
    let cli::Args {
        port,
        socket,
        database,
        size,
    } = cli::args("floor-tokio");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(port, &socket, &database, size));
}

async fn run(port: u16, socket: &str, database: &str, size: usize) {
    let mut idle = Vec::with_capacity(size);
    for _ in 0..size {
        idle.push(open_server(socket, database).await);
    }
    let pool = Arc::new(Mutex::new(Pool {
        idle,
        waiting: VecDeque::new(),
    }));
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        stream.set_nodelay(true).ok();
        tokio::spawn(serve(stream, pool.clone()));
    }
}

/// One client: its startup answered, then its transactions, each on a server from the pool.
async fn serve(mut client: TcpStream, pool: Shared) {
    let mut buf = BytesMut::with_capacity(BUF);
    if startup(&mut client, &mut buf).await.is_err() {
        return;
    }
    while request(&mut client, &mut buf).await {
        let mut server = acquire(&pool).await;
        transaction(&mut client, &mut buf, &mut server).await;
        release(&pool, server);
    }
}

/// SSLRequest gets 'N'; the startup message gets AuthenticationOk and the rest of a login.
async fn startup(client: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<()> {
    loop {
        while buf.len() < 8 || buf.len() < be32(&buf[0..4]) as usize {
            if !read(client, buf).await {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let len = be32(&buf[0..4]) as usize;
        let code = be32(&buf[4..8]);
        buf.advance(len);
        if code == 80877103 {
            client.write_all(b"N").await?;
        } else {
            return client.write_all(&WELCOME).await;
        }
    }
}

/// Reads until `buf` starts with complete frames; false when the client is gone or terminates.
async fn request(client: &mut TcpStream, buf: &mut BytesMut) -> bool {
    loop {
        match frames(buf) {
            (_, true) => return false,
            (0, false) => {}
            _ => return true,
        }
        if !read(client, buf).await {
            return false;
        }
    }
}

/// The client's frames to the server and the server's to the client, from the request at the
/// front of `buf` until a ReadyForQuery that says idle. Both ways at once, as `floor` does: a
/// request can come in pieces (the server answers an extended query only at its Sync), and a
/// transaction block or a COPY goes back and forth on the one server.
async fn transaction(client: &mut TcpStream, buf: &mut BytesMut, server: &mut Server) {
    forward(buf, server).await;
    loop {
        server.buf.reserve(BUF / 4);
        tokio::select! {
            more = read(client, buf) => {
                // Gone mid-transaction: a real pooler would roll back; the floor only sees
                // pgbench's Terminate between transactions.
                if !more || !forward(buf, server).await {
                    return;
                }
            }
            got = server.stream.read_buf(&mut server.buf) => {
                match got {
                    Ok(n) if n > 0 => {}
                    Ok(_) => server_lost(std::io::ErrorKind::UnexpectedEof.into()),
                    Err(e) => server_lost(e),
                }
                let (at, status) = answers(&server.buf);
                if at > 0 {
                    // A client that is gone shows at its next read.
                    let _ = client.write_all(&server.buf[..at]).await;
                    server.buf.advance(at);
                }
                if status == Some(b'I') && server.buf.is_empty() {
                    return;
                }
            }
        }
    }
}

/// The client's complete frames to the server; false at a Terminate.
async fn forward(buf: &mut BytesMut, server: &mut Server) -> bool {
    let (end, terminate) = frames(buf);
    if end > 0 {
        if let Err(e) = server.stream.write_all(&buf[..end]).await {
            server_lost(e);
        }
        buf.advance(end);
    }
    !terminate
}

/// One read from the client, with room for a few frames; false when the client is gone.
async fn read(client: &mut TcpStream, buf: &mut BytesMut) -> bool {
    buf.reserve(BUF / 4);
    matches!(client.read_buf(buf).await, Ok(n) if n > 0)
}

async fn acquire(pool: &Shared) -> Server {
    let wait = {
        let mut p = pool.lock().unwrap();
        if let Some(server) = p.idle.pop() {
            return server;
        }
        let (tx, rx) = oneshot::channel();
        p.waiting.push_back(tx);
        rx
    };
    wait.await.expect("the pool hands a server to every waiting client")
}

/// The server to the first waiting client, or back to the list.
fn release(pool: &Shared, mut server: Server) {
    let mut p = pool.lock().unwrap();
    while let Some(tx) = p.waiting.pop_front() {
        match tx.send(server) {
            Ok(()) => return,
            Err(back) => server = back,
        }
    }
    p.idle.push(server);
}

fn server_lost(e: std::io::Error) -> ! {
    eprintln!("server lost: {e}");
    std::process::exit(1);
}

/// The end of the server's complete frames at the front of `buf`, and the status of the last
/// ReadyForQuery among them.
fn answers(buf: &[u8]) -> (usize, Option<u8>) {
    let mut at = 0;
    let mut status = None;
    while buf.len() - at >= 5 {
        let total = 1 + be32(&buf[at + 1..at + 5]) as usize;
        if buf.len() - at < total {
            break;
        }
        if buf[at] == b'Z' {
            status = Some(buf[at + 5]);
        }
        at += total;
    }
    (at, status)
}

async fn open_server(socket: &str, database: &str) -> Server {
    let mut stream = UnixStream::connect(socket).await.expect("connect to PostgreSQL");
    let startup = wire::startup(database);
    stream.write_all(&startup).await.expect("startup");
    // Until ReadyForQuery (trust: AuthenticationOk comes at once).
    let mut buf = BytesMut::with_capacity(BUF);
    loop {
        let n = stream.read_buf(&mut buf).await.expect("read");
        assert!(n > 0, "PostgreSQL closed during login");
        while buf.len() >= 5 {
            let total = 1 + be32(&buf[1..5]) as usize;
            if buf.len() < total {
                break;
            }
            assert!(
                buf[0] != b'E',
                "login refused: {}",
                String::from_utf8_lossy(&buf[..total])
            );
            let ready = buf[0] == b'Z';
            buf.advance(total);
            if ready {
                return Server { stream, buf };
            }
        }
    }
}
