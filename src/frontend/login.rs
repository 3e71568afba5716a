//! From accept to the first ReadyForQuery: startup, limits, authentication, the pool, and the
//! welcome (ParameterStatus, BackendKeyData).

use super::auth::authenticate;
use super::conn::ClientConn;
use super::startup::{read_startup, Startup};
use super::{session, ClientSlot, Shared};
use crate::backend::{Credentials, Settings};
use crate::config::{Config, Secret};
use crate::pool::Pool;
use crate::protocol::messages::{self as msg, PgError};
use bytes::BytesMut;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Serves one client connection from accept to close.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let config = shared.config.load_full();
    let (_slot, connected) = ClientSlot::take(&shared);
    let _ = stream.set_nodelay(true);
    let mut client = ClientConn::new(stream, peer, config.pooler.max_message_size as usize);
    let timeout = config.pooler.client_login_timeout;
    let login = login(&mut client, &shared, &config, connected);
    let result = if timeout.is_zero() {
        login.await
    } else {
        tokio::time::timeout(timeout, login).await.unwrap_or_else(|_| {
            Err(PgError::fatal(
                "08006",
                format!(
                    "login not completed within client_login_timeout ({} s)",
                    timeout.as_secs_f64()
                ),
            ))
        })
    };
    match result {
        Ok(Some(LoggedIn { pool, settings })) => {
            tracing::info!(client = %peer, pool = %pool, "client logged in");
            pool.counts.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let watch = super::drain::Watch::new(&shared.shutdown);
            session::run(client, pool.clone(), settings, watch).await;
            pool.counts.clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(client = %peer, pool = %pool, "client logged out");
        }
        Ok(None) => {}
        Err(error) => {
            tracing::info!(client = %peer, %error, "login refused");
            client.send_error(&error).await;
        }
    }
}

struct LoggedIn {
    pool: Arc<Pool>,
    settings: Settings,
}

async fn login(
    client: &mut ClientConn,
    shared: &Shared,
    config: &Config,
    connected: u32,
) -> Result<Option<LoggedIn>, PgError> {
    let (minor, params) = match read_startup(client).await? {
        Startup::Login { minor, params } => (minor, params),
        Startup::Cancel { .. } => {
            // Forwarding cancel requests comes with per-client keys; until then they are dropped,
            // as PostgreSQL does with a key it does not know.
            tracing::debug!(client = %client.peer, "cancel request dropped");
            return Ok(None);
        }
    };
    let max = config.pooler.max_client_conn;
    if connected > max {
        return Err(PgError::fatal(
            "53300",
            format!("sorry, too many clients already (max_client_conn = {max})"),
        ));
    }
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let user = param("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| PgError::fatal("28000", "no PostgreSQL user name specified in startup packet"))?;
    let database = param("database").filter(|d| !d.is_empty()).unwrap_or(user);
    if param("replication").is_some_and(|v| !matches!(v, "false" | "0" | "off" | "no")) {
        return Err(
            PgError::fatal("0A000", "replication connections are not supported through pgmux")
                .with_hint("connect replication clients to PostgreSQL directly"),
        );
    }
    let settings = Settings::from_startup(&params)?;
    let mut out = BytesMut::new();
    let unknown: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unknown.is_empty() {
        msg::negotiate_protocol_version(&mut out, 0, &unknown);
        client.write(&out).await.map_err(|_| gone())?;
        out.clear();
    }

    let db = config.database(database).ok_or_else(|| {
        PgError::fatal("3D000", format!("database \"{database}\" does not exist in pgmux"))
            .with_hint("add a [databases.NAME] entry (or a \"*\" entry) to pooler.toml")
    })?;
    let password = authenticate(client, shared, config, user).await?;
    let pool = shared
        .pools
        .get_or_create(config, db, database, user, password.as_deref());
    match password {
        Some(password) => {
            if let Err(e) = verify_passthrough(&pool, shared, &password).await {
                shared.pools.forget_if_unused(&pool);
                return Err(e);
            }
        }
        None if pool.welcome().is_none() => pool.checkout().await.map_err(|e| e.to_pg())?.release(),
        None => {}
    }

    msg::authentication(&mut out, msg::AUTH_OK, &[]);
    for (name, value) in pool.welcome().iter().flat_map(|w| w.iter()) {
        let own = settings.get(&name.to_ascii_lowercase());
        msg::parameter_status(&mut out, name, own.unwrap_or(value));
    }
    let id = shared.next_client_id();
    msg::backend_key_data(&mut out, id as i32, rand::random());
    msg::ready_for_query(&mut out, b'I');
    client.write(&out).await.map_err(|_| gone())?;
    Ok(Some(LoggedIn { pool, settings }))
}

/// Passthrough: the client's password is right if the server takes it. A password the server
/// took before is known by its fingerprint, so a reconnecting client costs no server login.
async fn verify_passthrough(pool: &Pool, shared: &Shared, password: &str) -> Result<(), PgError> {
    let fingerprint: [u8; 32] = Sha256::new()
        .chain_update(shared.secret)
        .chain_update(password)
        .finalize()
        .into();
    if pool.knows_password(&fingerprint) && pool.welcome().is_some() {
        return Ok(());
    }
    let credentials = Credentials {
        user: pool.credentials().user.clone(),
        password: Some(Secret::Plain(password.to_owned())),
    };
    match pool.open_as(&credentials).await {
        Ok(conn) => {
            pool.learn_password(fingerprint, credentials);
            pool.add_idle(conn);
            Ok(())
        }
        Err(e) if e.is_auth_failure() => Err(PgError::fatal(
            "28P01",
            format!("password authentication failed for user \"{}\"", pool.user),
        )),
        Err(e) => Err(e.to_pg()),
    }
}

fn gone() -> PgError {
    PgError::fatal("08006", "client went away during login")
}
