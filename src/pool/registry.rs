//! Every pool pgmux has made, keyed by (database, user) as the client named them.

use super::pool::{Pool, PoolSettings};
use crate::backend::{Credentials, Target};
use crate::config::{Config, DatabaseConfig, Secret};
use crate::tls::ServerTls;
use dashmap::DashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
}

#[derive(Default)]
pub struct Pools {
    map: DashMap<PoolKey, Arc<Pool>>,
    /// TLS to servers (server_tls_mode), loaded once at startup; every pool's target gets it.
    server_tls: Option<ServerTls>,
}

impl Pools {
    pub fn new(server_tls: Option<ServerTls>) -> Pools {
        Pools {
            map: DashMap::new(),
            server_tls,
        }
    }

    /// The pool for this database and user, made from the configuration on first use.
    /// `password` is the client's own (passthrough), used when the config names none.
    pub fn get_or_create(
        &self,
        config: &Config,
        db: &DatabaseConfig,
        database: &str,
        user: &str,
        password: Option<&str>,
    ) -> Arc<Pool> {
        let key = PoolKey {
            database: database.to_owned(),
            user: user.to_owned(),
        };
        if let Some(pool) = self.map.get(&key) {
            return pool.clone();
        }
        let pool = Arc::new(make_pool(config, db, database, user, password, &self.server_tls));
        self.map.entry(key).or_insert(pool).clone()
    }

    /// Drops a pool nobody uses: a passthrough login the server refused must not leave a pool
    /// behind per guessed user name.
    pub fn forget_if_unused(&self, pool: &Arc<Pool>) {
        let key = PoolKey {
            database: pool.database.clone(),
            user: pool.user.clone(),
        };
        // Two references: the registry's and the caller's; any other is a login in progress.
        self.map.remove_if(&key, |_, p| {
            Arc::strong_count(p) <= 2
                && p.counts.clients.load(Ordering::Relaxed) == 0
                && p.counts.servers.load(Ordering::Relaxed) == 0
        });
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map.iter().map(|entry| entry.value().clone()).collect()
    }
}

fn make_pool(
    config: &Config,
    db: &DatabaseConfig,
    database: &str,
    user: &str,
    password: Option<&str>,
    tls: &Option<ServerTls>,
) -> Pool {
    let p = &config.pooler;
    let target = Target {
        host: db.host.clone(),
        port: db.port,
        database: db.server_dbname(database).to_owned(),
        connect_timeout: p.server_connect_timeout,
        tls: tls.clone(),
    };
    let credentials = server_credentials(config, db, user, password);
    let size = config.pool_size_for(database);
    let settings = PoolSettings {
        mode: config.pool_mode_for(database, user),
        size,
        min_size: db.min_pool_size.unwrap_or(p.min_pool_size).min(size),
        query_wait_timeout: p.query_wait_timeout,
        server_idle_timeout: p.server_idle_timeout,
        server_lifetime: p.server_lifetime,
        server_reset_query: p.server_reset_query.clone(),
    };
    Pool::new(database.to_owned(), user.to_owned(), target, credentials, settings)
}

/// Who pgmux logs in to the server as: the database's forced user and password if set, else the
/// client's user with its password from [users] or, for passthrough, the one it just gave.
pub fn server_credentials(config: &Config, db: &DatabaseConfig, user: &str, password: Option<&str>) -> Credentials {
    if let Some(forced) = &db.user {
        let password = db
            .password
            .clone()
            .or_else(|| config.users.get(forced).and_then(|u| u.password.clone()));
        return Credentials {
            user: forced.clone(),
            password,
        };
    }
    let password = db
        .password
        .clone()
        .or_else(|| config.users.get(user).and_then(|u| u.password.clone()))
        .or_else(|| password.map(|p| Secret::Plain(p.to_owned())));
    Credentials {
        user: user.to_owned(),
        password,
    }
}
