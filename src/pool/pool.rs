//! One pool: idle server connections, a FIFO of clients waiting for one, and the size limit.
//!
//! A permit of `permits` is the right to own one server connection. A client takes a permit
//! (waiting in FIFO order; after `reserve_pool_timeout` a permit of `reserve` will do too), then
//! an idle connection or, when none is idle, opens a new one; so open connections never exceed
//! the pool size plus the reserve. Opening also needs a slot under `max_db_connections` and
//! `max_user_connections` (see `limits`). The connection moves into the client task inside a
//! `Lease`; dropping a lease without `release` closes the connection, so every error path leaves
//! nothing half-used behind.
//!
//! The hot path (a free permit, an idle connection, no check due) is one semaphore CAS, one
//! short lock of the idle list and a settings load; `open.rs` holds the slow paths.

use super::gate::Gate;
use super::limits::Limit;
use super::permits::Permit;
use super::permits::Permits;
use crate::backend::{BackendError, Credentials, ServerConn, Settings, Target};
use crate::boxed::in_place;
use crate::config::PoolMode;
use crate::protocol::messages::PgError;
use crate::stats::{now_us, CloseReason, PoolStats};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("no server connection within query_wait_timeout ({secs} s) for pool {pool}{cause}")]
    WaitTimeout {
        secs: f64,
        pool: String,
        /// "" or "; max_db_connections (2) reached for database bench".
        cause: String,
    },
    #[error(
        "server login for pool {pool} failed {ago:.1} s ago and is not retried before server_login_retry ({retry} s) has passed: {last}"
    )]
    LoginRetry {
        pool: String,
        ago: f64,
        retry: f64,
        last: Box<PgError>,
    },
    #[error("circuit breaker open for {}:{}", .0.host, .0.port)]
    Breaker(Box<crate::breaker::OpenInfo>, String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl PoolError {
    pub fn to_pg(&self) -> PgError {
        match self {
            PoolError::WaitTimeout { cause, .. } => {
                let hint = if cause.is_empty() {
                    "raise default_pool_size (or the database's pool_size) or query_wait_timeout in pooler.toml"
                } else {
                    "raise the limit named above or query_wait_timeout in pooler.toml"
                };
                PgError::fatal("57014", format!("canceling statement: {self}")).with_hint(hint)
            }
            PoolError::LoginRetry { .. } => PgError::fatal("08006", self.to_string()).with_hint(
                "the server refused the pool's login (credentials, database name, privileges): fix that; \
                 pgmux tries again once server_login_retry has passed",
            ),
            PoolError::Breaker(info, database) => info.to_pg(database),
            PoolError::Backend(e) => e.to_pg(),
        }
    }
}

/// What a pool takes from the configuration; a reload stores a new one.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub size: u32,
    pub min_size: u32,
    pub reserve_size: u32,
    pub reserve_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub server_idle_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_reset_query: String,
    pub server_connect_timeout: Duration,
    pub server_login_retry: Duration,
    pub server_check_delay: Duration,
    pub server_check_query: String,
    /// Per server connection, in transaction and statement modes; 0 passes statements through.
    pub max_prepared_statements: u32,
}

/// Counts the console and the metrics read.
#[derive(Debug, Default)]
pub struct PoolCounts {
    pub clients: AtomicU32,
    pub waiting: AtomicU32,
    /// Open server connections: idle, in use, being checked; not those logging in.
    pub servers: AtomicU32,
    /// Lent to a client.
    pub active: AtomicU32,
    /// Logging in (sv_login).
    pub opening: AtomicU32,
    /// Running server_check_query (sv_tested).
    pub testing: AtomicU32,
    /// Cancel requests on their way to a server of this pool.
    pub cancels: AtomicU32,
    /// Returned by their clients, waiting for cancels aimed at them to land (sv_being_canceled).
    pub settling: AtomicU32,
    /// Connections a RECONNECT marked for closing that are still open (WAIT_CLOSE).
    pub stale: AtomicU32,
}

pub struct Pool {
    pub database: String,
    pub user: String,
    /// Where the connections go; a reload that changes it replaces the pool instead.
    pub target: Target,
    pub(super) settings: ArcSwap<PoolSettings>,
    /// What every check-out and check-in reads of `settings`, as atomics.
    hot: HotSettings,
    credentials: ArcSwap<Credentials>,
    pub(super) permits: Permits,
    /// Extra permits for clients that waited longer than reserve_pool_timeout.
    pub(super) reserve: Permits,
    /// Boxed: a check-out and a check-in move the connection by pointer, not its 288 bytes.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<ServerConn>>>,
    /// ParameterStatus values of the first login, sent to every client at its own login.
    welcome: OnceLock<Arc<Vec<(String, String)>>>,
    /// Passthrough: fingerprint of the last password the server accepted.
    passthrough: Mutex<Option<[u8; 32]>>,
    /// The last failed login with the pool's own credentials, for server_login_retry.
    pub(super) login_failure: Mutex<Option<(Instant, PgError)>>,
    pub(super) db_limit: Arc<Limit>,
    pub(super) user_limit: Arc<Limit>,
    /// A janitor task is opening connections for min_pool_size.
    pub(super) filling: AtomicBool,
    /// Settings its clients logged in with, shared among clients that agree.
    shared_settings: Mutex<Vec<Settings>>,
    /// How the server writes the settings clients give raw: (lower-case name, raw value) to the
    /// value its ParameterStatus reports, for the welcome of later clients (issue 23).
    normalized: Mutex<std::collections::HashMap<(String, String), String>>,
    /// Prepared statements some server of the pool parsed without error.
    pub known_statements: Arc<crate::prepared::local::Known>,
    pub counts: PoolCounts,
    pub stats: PoolStats,
    /// PAUSE, KILL, DISABLE: this database's gate and the one for every database.
    pub gates: [Arc<Gate>; 2],
    /// Bumped by RECONNECT: connections opened before are closed when they come back.
    generation: AtomicU32,
    /// read_write_split: the replicas' pools for the same user (None for a replica's pool).
    pub route: Option<crate::route::choose::Route>,
    pub breaker: crate::breaker::Breaker,
    /// LISTEN/NOTIFY in transaction and statement modes: its clients' subscriptions.
    pub listen: crate::listen::Hub,
}

/// What a pool shares with others: the connection limits of its database and server login
/// user, and the console's gates.
pub struct Links {
    pub db_limit: Arc<Limit>,
    pub user_limit: Arc<Limit>,
    pub gates: [Arc<Gate>; 2],
    /// The breaker of the pool's server address, shared by every pool that uses it.
    pub breaker: crate::breaker::Breaker,
}

/// How many distinct startup settings a pool shares; clients past that keep their own copy.
const SHARED_SETTINGS: usize = 16;

impl Pool {
    pub fn new(
        database: String,
        user: String,
        target: Target,
        credentials: Credentials,
        settings: PoolSettings,
        links: Links,
    ) -> Pool {
        let Links {
            db_limit,
            user_limit,
            gates,
            breaker,
        } = links;
        Pool {
            database,
            user,
            target,
            credentials: ArcSwap::from_pointee(credentials),
            permits: Permits::new(settings.size),
            reserve: Permits::new(settings.reserve_size),
            hot: HotSettings::new(&settings),
            settings: ArcSwap::from_pointee(settings),
            idle: Mutex::new(Vec::new()),
            welcome: OnceLock::new(),
            passthrough: Mutex::new(None),
            login_failure: Mutex::new(None),
            db_limit,
            user_limit,
            filling: AtomicBool::new(false),
            shared_settings: Mutex::new(Vec::new()),
            known_statements: Arc::default(),
            normalized: Mutex::default(),
            counts: PoolCounts::default(),
            stats: PoolStats::default(),
            gates,
            generation: AtomicU32::new(0),
            route: None,
            breaker,
            listen: crate::listen::Hub::default(),
        }
    }

    /// read_write_split: the pools of its replicas for the same user (none otherwise).
    pub fn replica_pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.route.iter().flat_map(|r| r.pools.iter())
    }

    /// Whether reserve_pool_size is set (a waiting client may take a reserve permit).
    pub(super) fn has_reserve(&self) -> bool {
        self.hot.reserve.load(Ordering::Relaxed)
    }

    /// PAUSE or KILL holds this pool's new transactions.
    #[inline]
    pub fn paused(&self) -> bool {
        self.gates.iter().any(|g| g.paused())
    }

    /// RECONNECT: every connection open now is closed as soon as it is idle.
    pub fn reconnect(&self) {
        self.counts
            .stale
            .store(self.counts.servers.load(Ordering::Relaxed), Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
        while self.close_one_idle("RECONNECT", CloseReason::Admin) {}
    }

    pub(super) fn generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    /// The settings now (a reload may replace them at any time).
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// The pool mode now, read from an atomic (see `HotSettings`).
    pub fn mode(&self) -> PoolMode {
        self.hot.mode()
    }

    /// max_prepared_statements now; read as `mode`.
    pub fn max_prepared_statements(&self) -> u32 {
        self.hot.max_prepared_statements.load(Ordering::Relaxed)
    }

    /// Applies reloaded settings: the size takes effect at once for growth, and as connections
    /// come back for a shrink (the janitor closes the surplus idle ones).
    pub fn reconfigure(&self, settings: PoolSettings) {
        self.permits.resize(settings.size);
        self.reserve.resize(settings.reserve_size);
        self.hot.set(&settings);
        self.settings.store(Arc::new(settings));
    }

    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.load_full()
    }

    /// SCRAM pass-through: a client of this pool's own login user proved itself against the
    /// SCRAM secret the pool logs in with; its ClientKey lets the pool log in too.
    pub fn learn_client_key(&self, user: &str, key: [u8; 32]) {
        let current = self.credentials();
        let scram = matches!(current.password, Some(crate::config::Secret::Scram(_)));
        if current.user == user && scram && current.client_key != Some(key) {
            self.set_credentials(Credentials {
                client_key: Some(key),
                ..(*current).clone()
            });
            // A login that failed for want of it says nothing about the next one.
            self.login_failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    /// An upgrade's adopted client brings what the old process's pool logged in with: taken
    /// where this pool has no secret yet (passthrough, auth_query) or lacks the ClientKey.
    pub fn inherit_credentials(&self, password: Option<crate::config::Secret>, client_key: Option<[u8; 32]>) {
        let current = self.credentials();
        let Some(password) = password else { return };
        let missing_key = current.password.as_ref() == Some(&password) && current.client_key.is_none();
        if current.password.is_none() || (missing_key && client_key.is_some()) {
            self.set_credentials(Credentials {
                user: current.user.clone(),
                password: Some(password),
                client_key: client_key.or(current.client_key),
            });
        }
    }

    /// auth_query found this secret for the pool's own login user (pgmux has none configured):
    /// the pool logs in with it, and with the ClientKey where the client proved itself by SCRAM.
    pub fn learn_secret(&self, user: &str, secret: crate::config::Secret, client_key: Option<[u8; 32]>) {
        let current = self.credentials();
        // A key proven against another (older) secret cannot answer for this one.
        let same = current.password.as_ref() == Some(&secret);
        let fresh = Credentials {
            user: current.user.clone(),
            password: Some(secret),
            client_key: client_key.or(if same { current.client_key } else { None }),
        };
        if current.user == user && *current != fresh {
            self.set_credentials(fresh);
            self.login_failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    /// Passthrough: a password that just logged in replaces the one the pool knew.
    pub fn set_credentials(&self, credentials: Credentials) {
        for replica in self.replica_pools() {
            replica.set_credentials(credentials.clone());
        }
        self.credentials.store(Arc::new(credentials));
    }

    /// The same settings, sharing their storage with an earlier client's where they agree, so
    /// a thousand clients of one application hold one copy.
    pub fn share_settings(&self, settings: Settings) -> Settings {
        let mut shared = self.shared_settings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = shared.iter().find(|known| **known == settings) {
            return known.clone();
        }
        if shared.len() < SHARED_SETTINGS {
            shared.push(settings.clone());
        }
        settings
    }

    /// The server's spelling of `raw` for setting `name` (lower case), once a server reported it.
    pub fn normalized(&self, name: &str, raw: &str) -> Option<String> {
        let known = self.normalized.lock().unwrap_or_else(|e| e.into_inner());
        known.get(&(name.to_owned(), raw.to_owned())).cloned()
    }

    /// A server reported `value` for setting `name` (lower case) after a client's `raw` was set.
    pub fn learn_normalized(&self, name: String, raw: String, value: String) {
        let mut known = self.normalized.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a client sending ever new spellings cannot grow it without end.
        if known.len() >= 1024 {
            known.clear();
        }
        known.insert((name, raw), value);
    }

    pub fn welcome(&self) -> Option<Arc<Vec<(String, String)>>> {
        self.welcome.get().cloned()
    }

    pub(super) fn set_welcome(&self, reported: Vec<(String, String)>) {
        let _ = self.welcome.set(Arc::new(reported));
    }

    /// Waits in line for a server connection (up to query_wait_timeout), then takes an idle one
    /// that is still healthy (checked with server_check_query when it sat idle longer than
    /// server_check_delay) or opens a new one.
    pub async fn checkout(self: &Arc<Self>) -> Result<Lease, PoolError> {
        match self.start_checkout() {
            Checkout::Now(lease) => Ok(lease),
            Checkout::Wait(wait) => wait.await,
        }
    }

    /// `checkout` without a future when a permit is free and an idle connection needs no
    /// check (the hot path: the caller awaits nothing); otherwise the boxed wait.
    pub fn start_checkout(self: &Arc<Self>) -> Checkout<'_> {
        if self.paused() {
            return Checkout::Wait(in_place(|| self.checkout_paused()));
        }
        let Some(permit) = self.permits.try_acquire() else {
            return Checkout::Wait(in_place(|| self.checkout_slow(None, None)));
        };
        match self.take_idle() {
            Some((conn, false)) => Checkout::Now(self.lease(conn, permit, false)),
            Some((conn, true)) => Checkout::Wait(in_place(|| self.checkout_slow(Some(permit), Some(conn)))),
            None => Checkout::Wait(in_place(|| self.checkout_slow(Some(permit), None))),
        }
    }

    /// PAUSE: the client waits (counted as waiting, with no timeout: a pause is the operator's
    /// decision) until RESUME, then checks out as usual.
    async fn checkout_paused(self: &Arc<Self>) -> Result<Lease, PoolError> {
        self.counts.waiting.fetch_add(1, Ordering::Relaxed);
        for gate in &self.gates {
            gate.opened().await;
        }
        self.counts.waiting.fetch_sub(1, Ordering::Relaxed);
        self.checkout_slow(None, None).await
    }

    /// Waiting for a permit, checking an idle connection, opening one: boxed by `checkout`, so
    /// the future every client task holds stays small (idle clients' memory).
    async fn checkout_slow(
        self: &Arc<Self>,
        permit: Option<Permit<'_>>,
        to_check: Option<Box<ServerConn>>,
    ) -> Result<Lease, PoolError> {
        let (permit, reserve, deadline) = match permit {
            Some(permit) => (permit, false, None),
            None => self.wait_for_permit().await?,
        };
        let checked = match to_check {
            // Boxed: rare (server_check_delay), and its state would be copied into the box of
            // every wait.
            Some(conn) => Box::pin(self.check(conn)).await,
            None => None,
        };
        let found = match checked {
            Some(conn) => Ok(conn),
            None => self.find_server(deadline).await,
        };
        // On an error the permit goes back as it drops.
        found.map(|conn| self.lease(conn, permit, reserve))
    }

    /// Pops the most recently used idle connection that is alive and not too old; the flag
    /// says whether server_check_delay asks for a check before use.
    pub(super) fn take_idle(&self) -> Option<(Box<ServerConn>, bool)> {
        let check_delay_us = self.hot.check_delay_us.load(Ordering::Relaxed);
        let here = crate::worker::current();
        loop {
            let mut conn = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                // The most recently used of this worker's own, else the most recent of any.
                match idle.iter().rposition(|c| c.worker == here) {
                    Some(at) => idle.remove(at),
                    None => idle.pop()?,
                }
            };
            if self.hot.expired(&conn) {
                self.discard(conn, "past server_lifetime", CloseReason::Lifetime);
            } else if conn.generation != self.generation() {
                self.discard(conn, "RECONNECT", CloseReason::Admin);
            } else if !conn.is_quiet() {
                self.discard(conn, "closed by the server", CloseReason::Broken);
            } else {
                let check = idle_us(&conn) >= check_delay_us;
                let generation = conn.generation;
                match conn.rehome() {
                    Ok(conn) => return Some((conn, check)),
                    Err(e) => {
                        tracing::warn!(pool = %self, error = %e, "cannot move a server connection to this worker: closed");
                        self.forget(generation, CloseReason::Broken);
                    }
                }
            }
        }
    }

    fn lease(self: &Arc<Self>, mut conn: Box<ServerConn>, permit: Permit<'_>, reserve: bool) -> Lease {
        permit.keep();
        self.counts.active.fetch_add(1, Ordering::Relaxed);
        self.stats.server_assignments.fetch_add(1, Ordering::Relaxed);
        conn.prepared.limit = self.max_prepared_statements();
        if conn.prepared.known.is_none() {
            conn.prepared.known = Some(self.known_statements.clone());
        }
        Lease {
            conn: Some(conn),
            reserve,
            pool: self.clone(),
        }
    }

    /// A lease ended: its permit (kept since `lease`) goes back.
    fn return_permit(&self, reserve: bool) {
        if reserve {
            self.reserve.give_back();
        } else {
            self.permits.give_back();
        }
    }

    /// Puts a clean connection back in the idle list.
    fn check_in(&self, mut conn: Box<ServerConn>) {
        let now = now_us();
        if self.hot.expired_at(&conn, now) {
            return self.discard(conn, "past server_lifetime", CloseReason::Lifetime);
        }
        if conn.generation != self.generation() || self.paused() {
            return self.discard(conn, "RECONNECT, PAUSE or KILL", CloseReason::Admin);
        }
        conn.idle_since_us = now;
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        // A checkout waiting for a slot under a limit may take this one instead.
        self.db_limit.wake();
        self.user_limit.wake();
    }

    /// Adds a connection opened outside `checkout` (passthrough verification, min_pool_size),
    /// unless the pool or a limit is already full.
    pub fn add_idle(&self, conn: Box<ServerConn>) {
        let settings = self.settings.load();
        let cap = settings.size + settings.reserve_size;
        if self.counts.servers.load(Ordering::Relaxed) > cap || self.db_limit.over() || self.user_limit.over() {
            return self.discard(conn, "the pool or a connection limit is full", CloseReason::Idle);
        }
        drop(settings);
        self.check_in(conn);
    }

    /// Closes a connection pgmux no longer wants and gives its slots back. The connection is in
    /// a known state (idle), so the server gets a Terminate rather than a dropped socket.
    pub(super) fn discard(&self, conn: Box<ServerConn>, why: &str, reason: CloseReason) {
        const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];
        let _ = conn.stream.try_write(&TERMINATE);
        tracing::info!(pool = %self, server = conn.id, backend_pid = conn.process_id, "closing server connection: {why}");
        self.forget_connection(&conn, reason);
    }

    /// A connection of this pool is gone: uncount it everywhere.
    pub(super) fn forget_connection(&self, conn: &ServerConn, reason: CloseReason) {
        self.forget(conn.generation, reason)
    }

    /// `forget_connection` of a connection opened in RECONNECT generation `generation`.
    fn forget(&self, generation: u32, reason: CloseReason) {
        self.stats.closed(reason);
        if generation != self.generation() {
            let _ = self
                .counts
                .stale
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        self.counts.servers.fetch_sub(1, Ordering::Relaxed);
        self.db_limit.put_back(1);
        self.user_limit.put_back(1);
    }

    /// Closes the idle connection that has been idle longest; false if none is idle.
    pub fn close_one_idle(&self, why: &str, reason: CloseReason) -> bool {
        let conn = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.is_empty() {
                return false;
            }
            idle.remove(0)
        };
        self.discard(conn, why, reason);
        true
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

    /// The janitor's round: closes idle connections past server_idle_timeout or
    /// server_lifetime, dead ones, and the surplus after a shrink or a lowered limit; returns how
    /// many connections the pool holds afterwards (idle and in use).
    pub fn prune_idle(&self) -> u32 {
        self.permits.collect_debt();
        self.reserve.collect_debt();
        let settings = self.settings.load_full();
        // query_wait_timeout for clients waiting for a permit (`Permits::expire`).
        self.permits
            .expire(now_us(), crate::stats::clock::as_us(settings.query_wait_timeout));
        let idle_timeout = settings.server_idle_timeout;
        let mut closing = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut kept = Vec::with_capacity(idle.len());
            for mut conn in idle.drain(..) {
                let stale = !idle_timeout.is_zero() && idle_for(&conn) >= idle_timeout;
                if stale {
                    closing.push((conn, CloseReason::Idle));
                } else if self.hot.expired(&conn) {
                    closing.push((conn, CloseReason::Lifetime));
                } else if !conn.is_quiet() {
                    closing.push((conn, CloseReason::Broken));
                } else {
                    kept.push(conn);
                }
            }
            *idle = kept;
            // After a shrink: more connections than the size allows, so close idle ones (the
            // longest idle first) until the pool fits or nothing idle is left.
            let servers = (self.counts.servers.load(Ordering::Relaxed) as usize).saturating_sub(closing.len());
            let cap = (settings.size + settings.reserve_size) as usize;
            let surplus = servers.saturating_sub(cap).min(idle.len());
            closing.extend(idle.drain(..surplus).map(|conn| (conn, CloseReason::Idle)));
        }
        for (conn, reason) in closing {
            let why = match reason {
                CloseReason::Lifetime => "past server_lifetime",
                CloseReason::Broken => "closed by the server",
                _ => "idle past server_idle_timeout, or surplus to pool_size",
            };
            self.discard(conn, why, reason);
        }
        while (self.db_limit.over() || self.user_limit.over())
            && self.close_one_idle("over max_db_connections or max_user_connections", CloseReason::Idle)
        {}
        self.counts.servers.load(Ordering::Relaxed)
    }

    /// A permit for the janitor to open a connection with, if one is free right now.
    pub fn try_permit(&self) -> Option<Permit<'_>> {
        self.permits.try_acquire()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The idle connections as the console lists them.
    pub fn idle_servers(&self) -> Vec<IdleServer> {
        let settings = self.settings.load();
        let check_delay = match settings.server_check_query.is_empty() {
            true => Duration::MAX,
            false => settings.server_check_delay,
        };
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.iter()
            .map(|conn| IdleServer {
                id: conn.id,
                process_id: conn.process_id,
                created_us: conn.created_us,
                idle_since_us: conn.idle_since_us,
                used: idle_for(conn) >= check_delay,
                tls: conn.stream.is_tls(),
            })
            .collect()
    }

    /// Permits free in the main pool right now (not counting the reserve).
    pub fn free_permits(&self) -> usize {
        self.permits.available()
    }
}

/// An idle server connection as SHOW SERVERS shows it.
pub struct IdleServer {
    pub id: u64,
    pub process_id: i32,
    pub created_us: u64,
    pub idle_since_us: u64,
    /// Idle past server_check_delay: checked before its next use (PgBouncer's `used`).
    pub used: bool,
    pub tls: bool,
}

/// The settings of `PoolSettings` that the hot path reads, kept as atomics beside it so that a
/// check-out reads them with plain loads (`reconfigure` updates both).
struct HotSettings {
    mode: std::sync::atomic::AtomicU8,
    max_prepared_statements: AtomicU32,
    lifetime_us: AtomicU64,
    check_delay_us: AtomicU64,
    /// reserve_pool_size > 0.
    reserve: AtomicBool,
}

impl HotSettings {
    fn new(settings: &PoolSettings) -> HotSettings {
        let hot = HotSettings {
            mode: Default::default(),
            max_prepared_statements: Default::default(),
            lifetime_us: Default::default(),
            check_delay_us: Default::default(),
            reserve: Default::default(),
        };
        hot.set(settings);
        hot
    }

    fn set(&self, s: &PoolSettings) {
        let us = crate::stats::clock::as_us;
        let mode = PoolMode::ALL.iter().position(|m| *m == s.mode).unwrap_or_default();
        self.mode.store(mode as u8, Ordering::Relaxed);
        self.max_prepared_statements
            .store(s.max_prepared_statements, Ordering::Relaxed);
        self.lifetime_us.store(us(s.server_lifetime), Ordering::Relaxed);
        self.reserve.store(s.reserve_size > 0, Ordering::Relaxed);
        // An empty server_check_query turns the check off, as in PgBouncer.
        let check_delay = match s.server_check_query.is_empty() {
            true => u64::MAX,
            false => us(s.server_check_delay),
        };
        self.check_delay_us.store(check_delay, Ordering::Relaxed);
    }

    fn mode(&self) -> PoolMode {
        let at = self.mode.load(Ordering::Relaxed) as usize;
        PoolMode::ALL.get(at).copied().unwrap_or(PoolMode::Transaction)
    }

    /// Past server_lifetime.
    fn expired(&self, conn: &ServerConn) -> bool {
        self.expired_at(conn, now_us())
    }

    /// `expired`, by a clock already read.
    fn expired_at(&self, conn: &ServerConn, now: u64) -> bool {
        let lifetime = self.lifetime_us.load(Ordering::Relaxed);
        lifetime > 0 && now.saturating_sub(conn.created_us) >= lifetime
    }
}

/// How long a connection has been idle, by the data path's clock.
fn idle_for(conn: &ServerConn) -> Duration {
    Duration::from_micros(idle_us(conn))
}

/// `idle_for` in microseconds (the checkout's, without building a Duration).
#[inline]
fn idle_us(conn: &ServerConn) -> u64 {
    now_us().saturating_sub(conn.idle_since_us)
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        for conn in idle {
            self.discard(conn, "pool removed", CloseReason::Admin);
        }
    }
}

impl super::limits::Member for Pool {
    fn idle_count(&self) -> usize {
        Pool::idle_count(self)
    }

    fn close_one_idle(&self, why: &str, reason: CloseReason) -> bool {
        Pool::close_one_idle(self, why, reason)
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.user, self.database)
    }
}

/// What `Pool::start_checkout` found: a connection at once, or the wait for one.
pub enum Checkout<'a> {
    Now(Lease),
    Wait(std::pin::Pin<Box<dyn std::future::Future<Output = Result<Lease, PoolError>> + Send + 'a>>),
}

/// A server connection checked out by one client.
pub struct Lease {
    conn: Option<Box<ServerConn>>,
    /// Whether the permit the lease holds is a reserve one.
    reserve: bool,
    pool: Arc<Pool>,
}

impl Lease {
    pub fn conn(&mut self) -> &mut Box<ServerConn> {
        // Only `release` and `drop` take the connection out, and both consume the lease.
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("lease without a connection"))
    }

    /// Whether the connection's settings are `settings` (nothing to SET before use).
    pub fn has_settings(&self, settings: &crate::backend::Settings) -> bool {
        self.conn.as_ref().is_some_and(|c| c.settings == *settings)
    }

    /// The connection and its pool at once (the relay takes both).
    pub fn parts(&mut self) -> (&mut ServerConn, &Arc<Pool>) {
        let conn = self
            .conn
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("lease without a connection"));
        (conn, &self.pool)
    }

    /// The pool the connection belongs to (a replica's, with read_write_split).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
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
            self.pool.forget_connection(&conn, CloseReason::Broken);
            drop(conn);
        }
        self.pool.return_permit(self.reserve);
    }
}
