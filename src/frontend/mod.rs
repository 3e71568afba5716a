//! One task per client (the login's, then the session's: `executor`): startup,
//! authentication, then the session loop.

pub mod auth;
pub mod auth_query;
pub mod cancel;
pub mod conn;
pub mod drain;
pub mod handover;
pub mod listen;
pub mod login;
pub mod peer;
pub mod pick;
pub mod relay;
pub mod release;
pub mod session;
pub mod set;
pub mod spare;
pub mod startup;
pub mod steady;
pub mod throttle;
pub mod timers;
pub mod track;
pub mod transaction;

use crate::auth::KeyCache;
use crate::config::Config;
use crate::pool::Pools;
use crate::shutdown::Shutdown;
use crate::tls::Tls;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// What every client task shares.
pub struct Shared {
    /// Replaced with `set_config`, which keeps `knobs` in step.
    pub config: ArcSwap<Config>,
    /// The settings every transaction reads, as plain atomics.
    pub knobs: Knobs,
    pub pools: Arc<Pools>,
    pub keys: KeyCache,
    /// Clients connected now (logged in or not), for max_client_conn.
    pub clients: AtomicU32,
    next_client: AtomicU64,
    /// Random per process: decoy SCRAM salts and passthrough password fingerprints.
    pub secret: [u8; 32],
    /// Draining and closing on SIGINT/SIGTERM; the client tasks' tracker.
    pub shutdown: Arc<Shutdown>,
    /// The file `--config` named, re-read by a reload; None with the embedded default.
    pub config_path: Option<PathBuf>,
    /// The certificate and key shown to clients that ask for TLS; None when tls_mode = disable.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub cancels: cancel::CancelRegistry,
    /// [pooler] peer_id as at start (0: peering off): in every cancel key handed out.
    pub peer_id: u16,
    /// Cancel requests forwarded to the other [peers].
    pub peers: peer::Peers,
    /// Reload outcomes, for the metrics.
    pub reloads: crate::reload::ReloadStats,
    /// auth_query's recent answers.
    pub auth_cache: auth_query::Cache,
    /// The dashboard's series and logins.
    pub dashboard: crate::dashboard::State,
    /// Failed logins per client address and user: auth_failure_limit.
    pub throttle: throttle::Throttle,
}

impl Shared {
    /// `tls` is loaded once at startup (see `Tls::load`): to clients here, to servers in the pools.
    pub fn new(config: Config, tls: Tls) -> Shared {
        crate::tcp::set(crate::tcp::TcpOptions::of(&config.pooler));
        // Starts the stats clock now: the dashboard's uptime counts from here.
        crate::stats::now_us();
        let peer_id = config.pooler.peer_id;
        Shared {
            knobs: Knobs::new(&config.pooler),
            config: ArcSwap::from_pointee(config),
            pools: Arc::new(Pools::new(tls.to_servers)),
            tls: tls.to_clients,
            cancels: cancel::CancelRegistry::new(peer_id),
            peer_id,
            peers: peer::Peers::default(),
            reloads: crate::reload::ReloadStats::default(),
            auth_cache: auth_query::Cache::default(),
            dashboard: crate::dashboard::State::default(),
            throttle: throttle::Throttle::default(),
            keys: KeyCache::default(),
            clients: AtomicU32::new(0),
            next_client: AtomicU64::new(1),
            secret: rand::random(),
            shutdown: Arc::new(Shutdown::default()),
            config_path: None,
        }
    }

    /// Remembers the configuration file, for reloads.
    pub fn with_config_path(mut self, path: Option<PathBuf>) -> Shared {
        self.config_path = path;
        self
    }

    /// A reload or the console's SET: new logins and transactions see `config` from now on.
    pub fn set_config(&self, config: Arc<Config>) {
        self.knobs.set(&config.pooler);
        crate::tcp::set(crate::tcp::TcpOptions::of(&config.pooler));
        self.config.store(config);
    }

    /// The next process id a client is told (BackendKeyData): positive, as PostgreSQL's, but
    /// above any pid a server can have (Linux's pid_max is at most 2^22), so a driver that
    /// calls pg_terminate_backend(its backend_pid) kills nothing rather than an unrelated
    /// backend; wrapping after about 2^31 logins (the registry skips one still in use).
    /// The count of client ids handed out (an upgrade's new process continues from it).
    pub fn next_client_count(&self) -> u64 {
        self.next_client.load(Ordering::Relaxed)
    }

    /// Continues the ids from an old process's count (see `next_client_count`).
    pub fn continue_ids(&self, count: u64) {
        self.next_client.fetch_max(count, Ordering::Relaxed);
    }

    pub fn next_process_id(&self) -> i32 {
        process_id(self.next_client.fetch_add(1, Ordering::Relaxed))
    }
}

impl Shared {
    /// The process id of a new pool client: the next one, or with peering a random one (the
    /// secret keeps only 15 random bits then, see `peer`), above any pid a server can have.
    pub fn client_id(&self) -> i32 {
        match self.peer_id {
            0 => self.next_process_id(),
            _ => process_id(u64::from(rand::random::<u32>())),
        }
    }
}

/// Process ids start above the largest pid a PostgreSQL backend can have.
const FIRST_PROCESS_ID: u64 = (1 << 22) + 1;

/// The `n`th process id handed out.
fn process_id(n: u64) -> i32 {
    let span = i32::MAX as u64 - FIRST_PROCESS_ID + 1;
    i32::try_from(FIRST_PROCESS_ID + n % span).unwrap_or(i32::MAX)
}

/// The [pooler] settings a session reads at every transaction, kept as atomics beside the
/// configuration so that reading them costs a load each, not a reference to the whole file.
#[derive(Default)]
pub struct Knobs {
    query_timeout: AtomicU64,
    idle_transaction_timeout: AtomicU64,
    client_idle_timeout: AtomicU64,
    slow_query_threshold: AtomicU64,
}

impl Knobs {
    fn new(pooler: &crate::config::PoolerConfig) -> Knobs {
        let knobs = Knobs::default();
        knobs.set(pooler);
        knobs
    }

    fn set(&self, p: &crate::config::PoolerConfig) {
        let us = crate::stats::clock::as_us;
        self.query_timeout.store(us(p.query_timeout), Ordering::Relaxed);
        self.idle_transaction_timeout
            .store(us(p.idle_transaction_timeout), Ordering::Relaxed);
        self.client_idle_timeout
            .store(us(p.client_idle_timeout), Ordering::Relaxed);
        self.slow_query_threshold
            .store(us(p.slow_query_threshold), Ordering::Relaxed);
    }

    /// The timeouts in force now (a reload changes them for the next transaction).
    pub fn timeouts(&self) -> timers::Timeouts {
        timers::Timeouts {
            query_us: self.query_timeout.load(Ordering::Relaxed),
            idle_transaction_us: self.idle_transaction_timeout.load(Ordering::Relaxed),
            client_idle_us: self.client_idle_timeout.load(Ordering::Relaxed),
        }
    }

    /// Whether client_idle_timeout is set (the steady poll's question, without the division).
    pub fn client_idle_on(&self) -> bool {
        self.client_idle_timeout.load(Ordering::Relaxed) > 0
    }

    pub fn client_idle(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.client_idle_timeout.load(Ordering::Relaxed))
    }

    /// slow_query_threshold in µs (0: off).
    pub fn slow_threshold_us(&self) -> u64 {
        self.slow_query_threshold.load(Ordering::Relaxed)
    }
}

/// Counts a connected client for as long as it lives (once logged in, its `Session` does).
pub struct ClientSlot(Option<Arc<Shared>>);

impl ClientSlot {
    pub fn take(shared: &Arc<Shared>) -> (ClientSlot, u32) {
        let now = shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
        (ClientSlot(Some(shared.clone())), now)
    }

    /// Hands the count over to the client's session (which holds `Shared` anyway): an idle
    /// client's state then carries one pointer less.
    pub fn into_session(mut self) -> Option<Arc<Shared>> {
        self.0.take()
    }

    /// Ends the count of a session.
    pub fn release(shared: &Shared) {
        shared.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some(shared) = &self.0 {
            ClientSlot::release(shared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ids_stay_above_any_server_pid_and_wrap() {
        // Issue 23: small sequential ids looked like real backend pids.
        assert_eq!(process_id(0), (1 << 22) + 1);
        assert!(process_id(0) > 4_194_304, "above Linux's largest pid_max");
        let span = i32::MAX as u64 - FIRST_PROCESS_ID + 1;
        assert_eq!(process_id(span - 1), i32::MAX);
        assert_eq!(process_id(span), process_id(0), "wraps");
        assert!((0..1000u64).map(|n| process_id(n * 7_919_113)).all(|id| id > 4_194_304));
    }
}
