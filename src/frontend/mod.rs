//! One tokio task per client: startup, authentication, then the session loop.

pub mod auth;
pub mod cancel;
pub mod conn;
pub mod drain;
pub mod login;
pub mod relay;
pub mod session;
pub mod set;
pub mod spare;
pub mod startup;
pub mod timers;
pub mod track;

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
    pub config: ArcSwap<Config>,
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
    /// Reload outcomes, for the metrics.
    pub reloads: crate::reload::ReloadStats,
}

impl Shared {
    /// `tls` is loaded once at startup (see `Tls::load`): to clients here, to servers in the pools.
    pub fn new(config: Config, tls: Tls) -> Shared {
        Shared {
            config: ArcSwap::from_pointee(config),
            pools: Arc::new(Pools::new(tls.to_servers)),
            tls: tls.to_clients,
            cancels: cancel::CancelRegistry::default(),
            reloads: crate::reload::ReloadStats::default(),
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

    pub fn next_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
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
