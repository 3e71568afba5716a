//! The session's side of an upgrade in place (`crate::upgrade`): the old process offers an
//! idle client to the new one; the new one builds the same session around the same socket.

use super::cancel::ClientFacts;
use super::conn::ClientConn;
use super::session::Session;
use super::{ClientSlot, Shared};
use crate::backend::Settings;
use crate::config::{PoolMode, Secret};
use crate::protocol::messages::PgError;
use crate::stats::now_us;
use crate::stream::Stream;
use crate::upgrade::state::State;
use crate::upgrade::Item;
use bytes::BytesMut;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::oneshot;

/// How an offer of a client at its transaction boundary ended.
pub enum Offered {
    /// The new process has it: end the session without a word to the client.
    Handed,
    /// It stays here (session mode, a request already read, the new process declined).
    Kept,
    /// Closed with this error (TLS: its session cannot move).
    Closed(Box<PgError>),
}

/// Offers an idle client to the new process.
pub async fn offer(s: &mut Session) -> Offered {
    let Some(queue) = s.shared.shutdown.handover().cloned() else {
        return Offered::Kept;
    };
    if s.client.stream.is_tls() {
        return Offered::Closed(Box::new(
            PgError::fatal(
                "57P01",
                "pgmux is being upgraded: a TLS connection cannot move to the new process",
            )
            .with_hint("reconnect: the new pgmux answers at the same address"),
        ));
    }
    let client = &s.client;
    let movable = s.cancel.pool.mode() != PoolMode::Session
        && s.linked.is_none()
        && client.buf.is_empty()
        && client.ready == 0
        && !client.terminate
        && client.tracker.status == b'I'
        && client.tracker.quiet()
        && !s.cancel.killed.load(Ordering::Acquire);
    if !movable {
        return Offered::Kept;
    }
    // What is queued now goes out from here; what comes during the offer travels along.
    if super::listen::deliver(s).await.is_err() {
        return Offered::Kept;
    }
    let id = s.cancel.process_id as u32 as u64;
    let (reply, answer) = oneshot::channel();
    let item = Item::Offer {
        id,
        state: pack(s).encode(),
        fd: s.client.stream.raw_fd(),
        reply,
    };
    if queue.send(item).is_err() || answer.await != Ok(true) {
        return Offered::Kept;
    }
    let mut leftovers = BytesMut::new();
    if let Some(mailbox) = s.listen.take() {
        s.cancel.pool.listen.leave(&mailbox);
        mailbox.take(&mut leftovers);
    }
    let _ = queue.send(Item::Release {
        id,
        leftovers: leftovers.to_vec(),
    });
    Offered::Handed
}

fn pack(s: &Session) -> State {
    let pool = &s.cancel.pool;
    let credentials = pool.credentials();
    let wrote_at = s.cancel.wrote_at.load(Ordering::Acquire);
    State {
        tcp: matches!(s.client.stream, Stream::Plain(_)),
        database: pool.database.clone(),
        user: pool.user.clone(),
        process_id: s.cancel.process_id,
        backend_pid: s.cancel.backend_pid,
        secret_key: s.cancel.secret_key(),
        route: s.cancel.route,
        wrote_ago_us: (wrote_at != 0).then(|| now_us().saturating_sub(wrote_at)),
        settings: pairs(&s.settings),
        startup: s.settings.kept_startup().map(|st| pairs(&st)),
        prepared: s
            .client
            .prepared
            .iter()
            .map(|(name, statement)| (name.to_vec(), statement.tail().to_vec()))
            .collect(),
        channels: s.listen.as_ref().map(|m| m.channels()).unwrap_or_default(),
        password: credentials.password.clone(),
        client_key: credentials.client_key,
    }
}

fn pairs(settings: &Settings) -> Vec<(String, String)> {
    settings.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// The new process: builds the session of an offered client, says whether it could
/// (`registered`), and serves it once the old process has let go (`released`).
pub async fn adopt(
    shared: Arc<Shared>,
    state: State,
    fd: OwnedFd,
    registered: oneshot::Sender<Result<(), String>>,
    released: oneshot::Receiver<Vec<u8>>,
) {
    let mut session = match build(shared, state, fd).await {
        Ok(session) => session,
        Err(why) => {
            let _ = registered.send(Err(why));
            return;
        }
    };
    if registered.send(Ok(())).is_err() {
        return;
    }
    // Also when the old process died before releasing: it no longer touches the socket.
    let leftovers = released.await.unwrap_or_default();
    if !leftovers.is_empty() && session.client.write(&leftovers).await.is_err() {
        return;
    }
    tracing::debug!(client = %session.client.peer(), pool = %session.cancel.pool, "client adopted from the old process");
    super::session::run(session).await;
}

async fn build(shared: Arc<Shared>, state: State, fd: OwnedFd) -> Result<Session, String> {
    let config = shared.config.load_full();
    let db = config
        .database(&state.database)
        .ok_or_else(|| format!("database \"{}\" is not in the new configuration", state.database))?;
    let plain = match &state.password {
        Some(Secret::Plain(p)) => Some(p.as_str()),
        _ => None,
    };
    let pool = shared
        .pools
        .get_or_create(&config, db, &state.database, &state.user, plain);
    if pool.mode() == PoolMode::Session {
        return Err(format!("pool {pool} is in session mode here"));
    }
    pool.inherit_credentials(state.password.clone(), state.client_key);
    let stream = socket(fd, state.tcp).map_err(|e| format!("its socket: {e}"))?;
    let mut client = ClientConn::new(stream, config.pooler.max_message_size);
    for (name, tail) in &state.prepared {
        let statement = Arc::new(crate::prepared::Statement::new(tail));
        client.prepared.insert(name, statement);
    }
    let settings = Settings::from_pairs(&state.settings, state.startup.as_deref());
    let facts = ClientFacts {
        route: state.route,
        tls: false,
        settings: pool.share_settings(settings.startup()),
        socket: client.stream.raw_fd(),
    };
    let (slot, _) = ClientSlot::take(&shared);
    let cancel = shared
        .cancels
        .adopt(
            state.process_id,
            state.backend_pid,
            state.secret_key,
            pool.clone(),
            facts,
        )
        .ok_or("its cancel key is taken by a client of the new process")?
        .keep();
    if let Some(ago) = state.wrote_ago_us {
        cancel
            .wrote_at
            .store(now_us().saturating_sub(ago).max(1), Ordering::Release);
    }
    let mut listen = None;
    if !state.channels.is_empty() {
        // Served once covered (or after the wait a LISTEN gets), as at a LISTEN.
        let mailbox: Arc<crate::listen::Mailbox> = Arc::default();
        let wait = super::listen::subscribe(&pool, &mailbox, None, &state.channels);
        super::listen::wait_covered(&pool, wait).await;
        listen = Some(mailbox);
    }
    Ok(Session {
        client,
        settings,
        cancel,
        shared: slot.into_session().unwrap_or(shared),
        counted: false,
        listen,
        linked: None,
    })
}

fn socket(fd: OwnedFd, tcp: bool) -> std::io::Result<Stream> {
    let raw = fd.as_raw_fd();
    if raw < 0 {
        return Err(std::io::Error::other("no descriptor"));
    }
    Ok(match tcp {
        true => {
            let s = std::net::TcpStream::from(fd);
            s.set_nonblocking(true)?;
            Stream::Plain(crate::stream::Tcp::new(s)?)
        }
        false => {
            let s = std::os::unix::net::UnixStream::from(fd);
            s.set_nonblocking(true)?;
            let s = tokio::net::UnixStream::from_std(s)?;
            Stream::Unix(crate::stream::tokio_io::Counted::new(s))
        }
    })
}
