//! Every pool pgmux has made, keyed by (database, user) as the client named them, and the
//! limits they share (per database, per server login user).

use super::gate::Gate;
use super::limits::{Limit, LimitKind};
use super::pool::{Links, Pool, PoolSettings};
use crate::backend::{Credentials, Target};
use crate::breaker::{Breaker, Role};
use crate::config::{Config, DatabaseConfig, Secret};
use crate::route::choose::Route;
use crate::route::replicas::Replicas;
use crate::route::DenyList;
use crate::tls::ServerTls;
use dashmap::DashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
}

#[derive(Default)]
pub struct Pools {
    map: DashMap<PoolKey, Arc<Pool>>,
    /// Pools a reload took out of the map (database removed or moved) that clients still use;
    /// the janitor keeps pruning them until the last client leaves.
    retired: Mutex<Vec<Weak<Pool>>>,
    db_limits: DashMap<String, Arc<Limit>>,
    user_limits: DashMap<String, Arc<Limit>>,
    /// TLS to servers (server_tls_mode), loaded once at startup; every pool's target gets it.
    server_tls: Option<ServerTls>,
    /// The console's PAUSE/KILL/DISABLE state per database, and for all of them.
    gates: DashMap<String, Arc<Gate>>,
    pub all_gate: Arc<Gate>,
    /// read_write_split: each database's replicas and their lag monitor.
    replica_sets: DashMap<String, Arc<Replicas>>,
    /// The circuit breaker of each server address.
    breakers: DashMap<(String, u16), Breaker>,
}

/// What a reload changed in the pools, for its log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconfigured {
    pub updated: usize,
    pub retired: usize,
}

impl Pools {
    pub fn new(server_tls: Option<ServerTls>) -> Pools {
        Pools {
            server_tls,
            ..Pools::default()
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
        let entry = self.map.entry(key).or_insert_with(|| {
            let pool = Arc::new(self.make_pool(config, db, database, user, password));
            pool.db_limit.register(&pool);
            pool.user_limit.register(&pool);
            pool
        });
        entry.clone()
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
            Arc::ptr_eq(p, pool)
                && Arc::strong_count(p) <= 2
                && p.counts.clients.load(Ordering::Relaxed) == 0
                && p.counts.servers.load(Ordering::Relaxed) == 0
        });
    }

    /// The pools new clients get.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map.iter().map(|entry| entry.value().clone()).collect()
    }

    /// The console's gate of a database (made on first use, so a database can be paused or
    /// disabled before any client came).
    pub fn gate(&self, database: &str) -> Arc<Gate> {
        if let Some(gate) = self.gates.get(database) {
            return gate.clone();
        }
        self.gates.entry(database.to_owned()).or_default().clone()
    }

    /// The gate of a database if one was made (a login must not make one per name tried).
    /// Where a connection to `database` of `db` goes (host, port, TLS), outside any pool.
    pub fn target_of(&self, config: &Config, db: &DatabaseConfig, database: &str) -> Target {
        target(config, db, database, &self.server_tls)
    }

    pub fn find_gate(&self, database: &str) -> Option<Arc<Gate>> {
        self.gates.get(database).map(|g| g.clone())
    }

    /// The breaker of an address, made on first use.
    pub fn breaker(&self, host: &str, port: u16, role: Role, config: &Config) -> Breaker {
        self.breakers
            .entry((host.to_owned(), port))
            .or_insert_with(|| Breaker::new(host, port, role, &config.breaker))
            .clone()
    }

    /// Every breaker (SHOW BREAKERS), by address.
    pub fn breakers(&self) -> Vec<Breaker> {
        let mut all: Vec<Breaker> = self.breakers.iter().map(|e| e.value().clone()).collect();
        all.sort_by(|a, b| (a.host(), a.port()).cmp(&(b.host(), b.port())));
        all
    }

    /// Every database's replicas (SHOW REPLICAS).
    pub fn replica_sets(&self) -> Vec<Arc<Replicas>> {
        self.replica_sets.iter().map(|e| e.value().clone()).collect()
    }

    /// Databases with a gate, and their gates.
    pub fn gates(&self) -> Vec<(String, Arc<Gate>)> {
        self.gates
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// Pools a reload retired that clients still use.
    pub fn retired(&self) -> Vec<Arc<Pool>> {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|p| p.strong_count() > 0);
        retired.iter().filter_map(Weak::upgrade).collect()
    }

    /// Applies a reloaded configuration: each pool takes its new settings (size, timeouts,
    /// mode, server password); a pool whose database is gone, or now points at another server
    /// or login user, is retired: clients connected to it keep it until they leave, new clients
    /// get a new pool (or 3D000). The limits take their new maxima.
    pub fn reconfigure(&self, config: &Config) -> Reconfigured {
        let mut done = Reconfigured::default();
        let mut retire = Vec::new();
        for entry in self.map.iter() {
            let (key, pool) = (entry.key(), entry.value());
            let Some(db) = config.database(&key.database) else {
                retire.push(key.clone());
                continue;
            };
            let target = target(config, db, &key.database, &self.server_tls);
            let credentials = server_credentials(config, db, &key.user, None);
            let same_server = target.host == pool.target.host
                && target.port == pool.target.port
                && target.database == pool.target.database;
            let same_replicas = match &pool.route {
                Some(route) => {
                    route.split == db.read_write_split
                        && route.set.list.len() == db.replicas.len()
                        && route
                            .set
                            .list
                            .iter()
                            .zip(&db.replicas)
                            .all(|(r, (h, p))| r.host == *h && r.port == *p)
                }
                None => db.replicas.is_empty(),
            };
            if let (Some(route), true) = (&pool.route, same_replicas) {
                // The monitor follows the primary and its login, kept even when the pool is not.
                let mut source = (*pool.credentials()).clone();
                if credentials.password.is_some() || credentials.user != source.user {
                    source = credentials.clone();
                }
                route.set.set_source((target.clone(), source));
            }
            if !same_server || !same_replicas || credentials.user != pool.credentials().user {
                if !same_replicas {
                    self.replica_sets.remove(&key.database);
                }
                retire.push(key.clone());
                continue;
            }
            let old = pool.credentials();
            if credentials.password.is_some()
                && (&credentials.user, &credentials.password) != (&old.user, &old.password)
            {
                pool.set_credentials(credentials);
            }
            let settings = settings(config, db, &key.database, &key.user);
            if settings != *pool.settings() {
                for replica in pool.replica_pools() {
                    replica.reconfigure(settings.clone());
                }
                pool.reconfigure(settings);
                done.updated += 1;
            }
            if let Some(route) = &pool.route {
                route.set.reconfigure(db);
            }
        }
        for key in retire {
            if let Some((_, pool)) = self.map.remove(&key) {
                tracing::info!(pool = %pool, "pool retired by the reload: its clients keep it until they leave");
                self.retired
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Arc::downgrade(&pool));
                done.retired += 1;
            }
        }
        for limit in self.db_limits.iter() {
            limit.set_max(max_db_connections(config, limit.key()));
        }
        for breaker in self.breakers.iter() {
            breaker.set_config(&config.breaker);
        }
        for limit in self.user_limits.iter() {
            limit.set_max(max_user_connections(config, limit.key()));
        }
        done
    }

    /// How often the janitor should run: half the shortest timeout it enforces, between 50 ms
    /// and 1 s, so tests with timeouts of a fraction of a second see them kept.
    pub fn janitor_interval(&self) -> Duration {
        let shortest = self
            .all()
            .iter()
            .chain(self.retired().iter())
            .flat_map(|pool| {
                let s = pool.settings();
                [
                    s.server_login_retry,
                    s.server_idle_timeout,
                    s.server_lifetime,
                    s.query_wait_timeout,
                ]
            })
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(Duration::from_secs(2));
        (shortest / 2).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    fn make_pool(
        &self,
        config: &Config,
        db: &DatabaseConfig,
        database: &str,
        user: &str,
        password: Option<&str>,
    ) -> Pool {
        let credentials = server_credentials(config, db, user, password);
        let route = self.route(config, db, database, user, &credentials);
        let db_limit = self
            .db_limits
            .entry(database.to_owned())
            .or_insert_with(|| {
                Arc::new(Limit::new(
                    LimitKind::Database,
                    database,
                    max_db_connections(config, database),
                ))
            })
            .clone();
        let login = credentials.user.clone();
        let user_limit = self
            .user_limits
            .entry(login.clone())
            .or_insert_with(|| {
                Arc::new(Limit::new(
                    LimitKind::User,
                    &login,
                    max_user_connections(config, &login),
                ))
            })
            .clone();
        let mut pool = Pool::new(
            database.to_owned(),
            user.to_owned(),
            target(config, db, database, &self.server_tls),
            credentials,
            settings(config, db, database, user),
            Links {
                db_limit,
                user_limit,
                gates: [self.gate(database), self.all_gate.clone()],
                breaker: self.breaker(&db.host, db.port, Role::Primary, config),
            },
        );
        pool.route = route;
        pool
    }

    /// read_write_split: a pool per replica for this user, sharing the database's monitor.
    /// Replica pools have their own connection limits (max_db_connections per replica).
    fn route(
        &self,
        config: &Config,
        db: &DatabaseConfig,
        database: &str,
        user: &str,
        credentials: &Credentials,
    ) -> Option<Route> {
        if db.replicas.is_empty() {
            return None;
        }
        let set = self
            .replica_sets
            .entry(database.to_owned())
            .or_insert_with(|| Arc::new(Replicas::new(database, db)))
            .clone();
        let pools = set
            .list
            .iter()
            .map(|replica| {
                let addr = format!("{database}@{}:{}", replica.host, replica.port);
                let mut target = target(config, db, database, &self.server_tls);
                target.host = replica.host.clone();
                target.port = replica.port;
                Arc::new(Pool::new(
                    database.to_owned(),
                    user.to_owned(),
                    target,
                    credentials.clone(),
                    settings(config, db, database, user),
                    Links {
                        db_limit: Arc::new(Limit::new(LimitKind::Database, &addr, config.pooler.max_db_connections)),
                        user_limit: Arc::new(Limit::new(LimitKind::User, user, 0)),
                        gates: [self.gate(database), self.all_gate.clone()],
                        breaker: self.breaker(&replica.host, replica.port, Role::Replica, config),
                    },
                ))
            })
            .collect();
        Some(Route {
            set,
            pools,
            deny: DenyList::new(&db.write_functions),
            read_your_writes: db.read_your_writes,
            split: db.read_write_split,
        })
    }
}

fn target(config: &Config, db: &DatabaseConfig, database: &str, tls: &Option<ServerTls>) -> Target {
    Target {
        host: db.host.clone(),
        port: db.port,
        database: db.server_dbname(database).to_owned(),
        connect_timeout: config.pooler.server_connect_timeout,
        tls: tls.clone(),
    }
}

/// The settings a pool for this database and user gets from the configuration.
pub fn settings(config: &Config, db: &DatabaseConfig, database: &str, user: &str) -> PoolSettings {
    let p = &config.pooler;
    let size = config.pool_size_for(database);
    PoolSettings {
        mode: config.pool_mode_for(database, user),
        size,
        min_size: db.min_pool_size.unwrap_or(p.min_pool_size).min(size),
        reserve_size: db.reserve_pool.unwrap_or(p.reserve_pool_size),
        reserve_timeout: p.reserve_pool_timeout,
        query_wait_timeout: p.query_wait_timeout,
        server_idle_timeout: p.server_idle_timeout,
        server_lifetime: p.server_lifetime,
        server_reset_query: p.server_reset_query.clone(),
        server_connect_timeout: p.server_connect_timeout,
        server_login_retry: p.server_login_retry,
        server_check_delay: p.server_check_delay,
        server_check_query: p.server_check_query.clone(),
        max_prepared_statements: p.max_prepared_statements,
    }
}

/// The database's own `max_db_connections`, else `pooler.max_db_connections` (0: unlimited).
fn max_db_connections(config: &Config, database: &str) -> u32 {
    let own = config.database(database).and_then(|d| d.max_db_connections);
    own.unwrap_or(config.pooler.max_db_connections)
}

/// `[users.NAME] max_user_connections`, else `pooler.max_user_connections` (0: unlimited).
fn max_user_connections(config: &Config, user: &str) -> u32 {
    let own = config.users.get(user).and_then(|u| u.max_user_connections);
    own.unwrap_or(config.pooler.max_user_connections)
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
            client_key: None,
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
        client_key: None,
    }
}
