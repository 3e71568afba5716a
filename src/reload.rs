//! Re-reading the configuration file (SIGHUP, and the console's RELOAD later) without dropping
//! anyone: new logins see the new users, passwords and databases at once; each pool takes its
//! new size, timeouts and mode (see `Pools::reconfigure`). A file that does not parse is refused
//! and the running configuration stays.

use crate::config::{Config, ConfigError};
use crate::frontend::Shared;
use crate::pool::Reconfigured;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Reload outcomes for the metrics. The start counts as a successful load, so an alert on
/// `last_ok == 0` fires only after a reload failed.
#[derive(Debug)]
pub struct ReloadStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub last_ok: AtomicBool,
    /// Unix seconds of the last reload attempt, or of the start.
    pub last_at: AtomicU64,
}

impl Default for ReloadStats {
    fn default() -> Self {
        ReloadStats {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
            last_at: AtomicU64::new(unix_now()),
        }
    }
}

impl ReloadStats {
    fn record(&self, ok: bool) {
        let n = if ok { &self.ok } else { &self.failed };
        n.fetch_add(1, Relaxed);
        self.last_ok.store(ok, Relaxed);
        self.last_at.store(unix_now(), Relaxed);
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why a reload did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("pgmux was started without --config: there is no file to reload")]
    NoFile,
    /// One line: `file:line: key: problem`.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Reloads `shared.config_path`, logging one line with the result either way.
pub fn reload(shared: &Shared) -> Result<Reconfigured, ReloadError> {
    let result = try_reload(shared);
    shared.reloads.record(result.is_ok());
    match &result {
        Ok(done) => tracing::info!(
            pools_updated = done.updated,
            pools_retired = done.retired,
            "configuration reloaded"
        ),
        Err(e) => tracing::error!("reload refused, the previous configuration stays: {e}"),
    }
    result
}

fn try_reload(shared: &Shared) -> Result<Reconfigured, ReloadError> {
    let path = shared.config_path.as_ref().ok_or(ReloadError::NoFile)?;
    let config = Config::load(path)?;
    let old = shared.config.load_full();
    if (config.pooler.listen_addr.as_str(), config.pooler.listen_port)
        != (old.pooler.listen_addr.as_str(), old.pooler.listen_port)
    {
        tracing::warn!("listen_addr and listen_port take effect at the next start, not on reload");
    }
    if config.pooler.so_reuseport != old.pooler.so_reuseport {
        tracing::warn!("so_reuseport takes effect at the next start, not on reload");
    }
    if config.pooler.peer_id != old.pooler.peer_id {
        tracing::warn!("peer_id takes effect at the next start, not on reload");
    }
    if config.pooler.workers != old.pooler.workers {
        tracing::warn!("workers takes effect at the next start, not on reload");
    }
    if config.metrics.listen != old.metrics.listen {
        tracing::warn!("metrics.listen takes effect at the next start, not on reload");
    }
    for note in &config.notes {
        tracing::warn!("{note}");
    }
    let config = Arc::new(config);
    // New logins see the new file first, then the pools follow.
    shared.set_config(config.clone());
    Ok(shared.pools.reconfigure(&config))
}
