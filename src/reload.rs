//! Re-reading the configuration file (SIGHUP, and the console's RELOAD later) without dropping
//! anyone: new logins see the new users, passwords and databases at once; each pool takes its
//! new size, timeouts and mode (see `Pools::reconfigure`). A file that does not parse is refused
//! and the running configuration stays.

use crate::config::{Config, ConfigError};
use crate::frontend::Shared;
use crate::pool::Reconfigured;
use std::sync::Arc;

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
    let inert = config.inert_settings();
    if !inert.is_empty() {
        tracing::warn!(
            "these settings are accepted but not acted on by this version: {}",
            inert.join(", ")
        );
    }
    let config = Arc::new(config);
    // New logins see the new file first, then the pools follow.
    shared.config.store(config.clone());
    Ok(shared.pools.reconfigure(&config))
}
