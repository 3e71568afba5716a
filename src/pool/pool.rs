//! One pool: idle server connections, a FIFO of clients waiting for one, and the size limit.
//!
//! A permit of `permits` is the right to own one server connection. A client takes a permit
//! (waiting in FIFO order), then an idle connection or, when none is idle, opens a new one; so
//! open connections never exceed the pool size. The connection moves into the client task inside
//! a `Lease`; dropping a lease without `release` closes the connection, so every error path
//! leaves nothing half-used behind.

use crate::backend::{connect, BackendError, Credentials, ServerConn, Target};
use crate::config::PoolMode;
use crate::protocol::messages::PgError;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("no server connection became free within query_wait_timeout ({secs} s)")]
    WaitTimeout { secs: f64 },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl PoolError {
    pub fn to_pg(&self) -> PgError {
        match self {
            PoolError::WaitTimeout { .. } => PgError::fatal("57014", format!("canceling statement: {self}")).with_hint(
                "raise default_pool_size (or the database's pool_size) or query_wait_timeout in pooler.toml",
            ),
            PoolError::Backend(e) => e.to_pg(),
        }
    }
}

/// What a pool takes from the configuration when it is made.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub size: u32,
    pub min_size: u32,
    pub query_wait_timeout: Duration,
    pub server_idle_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_reset_query: String,
}

/// Counts the console and the metrics read.
#[derive(Debug, Default)]
pub struct PoolCounts {
    pub clients: AtomicU32,
    pub waiting: AtomicU32,
    pub servers: AtomicU32,
    pub active: AtomicU32,
}

pub struct Pool {
    pub database: String,
    pub user: String,
    pub target: Target,
    pub settings: PoolSettings,
    credentials: ArcSwap<Credentials>,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<ServerConn>>,
    /// ParameterStatus values of the first login, sent to every client at its own login.
    welcome: OnceLock<Arc<Vec<(String, String)>>>,
    /// Passthrough: fingerprint of the last password the server accepted.
    passthrough: Mutex<Option<[u8; 32]>>,
    pub counts: PoolCounts,
}

impl Pool {
    pub fn new(
        database: String,
        user: String,
        target: Target,
        credentials: Credentials,
        settings: PoolSettings,
    ) -> Pool {
        Pool {
            database,
            user,
            target,
            credentials: ArcSwap::from_pointee(credentials),
            permits: Arc::new(Semaphore::new(settings.size as usize)),
            settings,
            idle: Mutex::new(Vec::new()),
            welcome: OnceLock::new(),
            passthrough: Mutex::new(None),
            counts: PoolCounts::default(),
        }
    }

    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.load_full()
    }

    /// Passthrough: a password that just logged in replaces the one the pool knew.
    pub fn set_credentials(&self, credentials: Credentials) {
        self.credentials.store(Arc::new(credentials));
    }

    pub fn welcome(&self) -> Option<Arc<Vec<(String, String)>>> {
        self.welcome.get().cloned()
    }

    /// Waits in line for a server connection (up to query_wait_timeout), then takes an idle one
    /// that is still healthy or opens a new one.
    pub async fn checkout(self: &Arc<Self>) -> Result<Lease, PoolError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.wait_for_permit().await?,
        };
        if let Some(conn) = self.pop_idle() {
            return Ok(self.lease(conn, permit));
        }
        let conn = self.open().await?;
        Ok(self.lease(conn, permit))
    }

    async fn wait_for_permit(&self) -> Result<OwnedSemaphorePermit, PoolError> {
        self.counts.waiting.fetch_add(1, Ordering::Relaxed);
        let acquire = self.permits.clone().acquire_owned();
        let timeout = self.settings.query_wait_timeout;
        let result = if timeout.is_zero() {
            Ok(acquire.await)
        } else {
            tokio::time::timeout(timeout, acquire).await
        };
        self.counts.waiting.fetch_sub(1, Ordering::Relaxed);
        match result {
            // The semaphore is never closed.
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(PoolError::WaitTimeout {
                secs: timeout.as_secs_f64(),
            }),
        }
    }

    fn pop_idle(&self) -> Option<ServerConn> {
        loop {
            let mut conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if conn.is_quiet() && !self.expired(&conn) {
                return Some(conn);
            }
            tracing::info!(pool = %self, server = conn.id, "closing server connection: closed by the server or past server_lifetime");
            self.counts.servers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Logs in a new server connection for this pool.
    pub async fn open(&self) -> Result<ServerConn, BackendError> {
        self.open_as(&self.credentials()).await
    }

    /// Logs in with these credentials (passthrough tries the client's password this way).
    pub async fn open_as(&self, credentials: &Credentials) -> Result<ServerConn, BackendError> {
        let (conn, reported) = connect(&self.target, credentials).await?;
        self.counts.servers.fetch_add(1, Ordering::Relaxed);
        let _ = self.welcome.set(Arc::new(reported));
        tracing::info!(pool = %self, server = conn.id, backend_pid = conn.process_id, "new server connection");
        Ok(conn)
    }

    fn lease(self: &Arc<Self>, conn: ServerConn, permit: OwnedSemaphorePermit) -> Lease {
        self.counts.active.fetch_add(1, Ordering::Relaxed);
        Lease {
            conn: Some(conn),
            _permit: permit,
            pool: self.clone(),
        }
    }

    /// Puts a clean connection back in the idle list.
    fn check_in(&self, mut conn: ServerConn) {
        if self.expired(&conn) {
            tracing::info!(pool = %self, server = conn.id, "closing server connection: past server_lifetime");
            self.counts.servers.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        conn.idle_since = Instant::now();
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
    }

    /// Adds a connection opened outside `checkout` (passthrough verification, min_pool_size),
    /// unless the pool is already full.
    pub fn add_idle(&self, conn: ServerConn) {
        if self.counts.servers.load(Ordering::Relaxed) > self.settings.size {
            self.counts.servers.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.check_in(conn);
    }

    /// Passthrough: whether this password (by fingerprint) already logged in to the server.
    pub fn knows_password(&self, fingerprint: &[u8; 32]) -> bool {
        self.passthrough.lock().unwrap_or_else(|e| e.into_inner()).as_ref() == Some(fingerprint)
    }

    /// Passthrough: the server accepted this password; later logins with it need no server.
    pub fn learn_password(&self, fingerprint: [u8; 32], credentials: Credentials) {
        *self.passthrough.lock().unwrap_or_else(|e| e.into_inner()) = Some(fingerprint);
        self.set_credentials(credentials);
    }

    fn expired(&self, conn: &ServerConn) -> bool {
        let lifetime = self.settings.server_lifetime;
        !lifetime.is_zero() && conn.created.elapsed() >= lifetime
    }

    /// Closes idle connections past server_idle_timeout or server_lifetime; returns how many
    /// connections the pool holds afterwards (idle and in use).
    pub fn prune_idle(&self) -> u32 {
        let idle_timeout = self.settings.server_idle_timeout;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let before = idle.len();
        idle.retain_mut(|conn| {
            let stale = !idle_timeout.is_zero() && conn.idle_since.elapsed() >= idle_timeout;
            !stale && !self.expired(conn) && conn.is_quiet()
        });
        let closed = (before - idle.len()) as u32;
        drop(idle);
        if closed > 0 {
            tracing::info!(pool = %self, closed, "closed idle server connections");
            self.counts.servers.fetch_sub(closed, Ordering::Relaxed);
        }
        self.counts.servers.load(Ordering::Relaxed)
    }

    /// A permit for the janitor to open a connection with, if one is free right now.
    pub fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.user, self.database)
    }
}

/// A server connection checked out by one client.
pub struct Lease {
    conn: Option<ServerConn>,
    _permit: OwnedSemaphorePermit,
    pool: Arc<Pool>,
}

impl Lease {
    pub fn conn(&mut self) -> &mut ServerConn {
        // Only `release` and `drop` take the connection out, and both consume the lease.
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("lease without a connection"))
    }

    /// Returns the connection to the pool: the caller vouches that it is idle and clean.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.check_in(conn);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.counts.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(conn) = self.conn.take() {
            tracing::info!(pool = %self.pool, server = conn.id, "closing server connection in an unknown state");
            self.pool.counts.servers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
