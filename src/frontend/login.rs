//! From accept to the first ReadyForQuery: startup, limits, authentication, the pool, and the
//! welcome (ParameterStatus, BackendKeyData; in session mode, the server linked first).

use super::auth::{authenticate, Proof};
use super::cancel::{CancelHandle, ClientFacts};
use super::conn::{ClientConn, Waited};
use super::session::{self, Session};
use super::startup::{read_startup, Startup};
use super::{ClientSlot, Shared};
use crate::admin::{self, Console, Role};
use crate::backend::{Credentials, Settings};
use crate::config::{Config, PoolMode, Secret, TlsMode};
use crate::pool::{Lease, Pool};
use crate::protocol::messages::{self as msg, PgError};
use crate::route::choose::Preference;
use crate::stream::Stream;
use bytes::BytesMut;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Serves one client connection from accept to close.
pub fn serve(stream: Stream, shared: Arc<Shared>) -> impl Future<Output = ()> + Send {
    // Boxed: startup, TLS and authentication state is freed once the client is in, so the
    // task of an idle client holds only its session. (Not an async fn: its arguments would
    // stay in the task's state for its whole life.)
    let admitting = Box::pin(admit(stream, shared));
    async move {
        let Some(session) = admitting.await else {
            return;
        };
        // A task of its own from here on: every poll of the session would otherwise pass
        // through this future's state too (about 60 instructions per transaction).
        let token = session.shared.shutdown.tracker.token();
        crate::executor::spawn(token, session::run(session));
    }
}

/// Startup, TLS and authentication: the session of a client that got in, or None when it
/// was refused (it got its error), left, sent a cancel request, or was a console user (served
/// to the end in here, so the task of an idle pool client does not make room for it).
async fn admit(stream: Stream, shared: Arc<Shared>) -> Option<Session> {
    let (slot, connected) = ClientSlot::take(&shared);
    let config = shared.config.load_full();
    if let Stream::Plain(tcp) = &stream {
        crate::tcp::current().apply(socket2::SockRef::from(&**tcp));
    }
    let mut client = ClientConn::new(stream, config.pooler.max_message_size);
    let peer = client.peer();
    // Without certificates loaded, SSL requests get `N` whatever the (reloaded) setting says;
    // and on the Unix socket, as PostgreSQL and PgBouncer answer there.
    let tls_mode = match (&shared.tls, &client.stream) {
        (Some(_), Stream::Plain(_)) => config.pooler.tls_mode,
        _ => TlsMode::Disable,
    };
    let deadline = Deadline::new(config.pooler.client_login_timeout);
    let mut startup = deadline.run(read_startup(&mut client, tls_mode)).await;
    if let (Ok(Startup::Tls), Some(tls)) = (&startup, &shared.tls) {
        let handshake = async { client.into_tls(tls.clone()).await.map_err(tls_failed) };
        client = match deadline.run(handshake).await {
            Ok(client) => client,
            Err(error) => {
                tracing::info!(client = %peer, %error, "login refused");
                return None;
            }
        };
        startup = deadline.run(read_startup(&mut client, tls_mode)).await;
    }
    let result = match startup {
        Ok(startup) => {
            deadline
                .run(login(&mut client, startup, &shared, &config, connected))
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(Some(LoggedIn::Pool(welcome))) => {
            let (settings, cancel, linked) = welcome.send(&mut client, &shared).await?;
            Some(Session {
                client,
                settings,
                cancel,
                shared: slot.into_session().unwrap_or(shared),
                counted: false,
                // Boxed: session mode only, and every idle client's task would carry its room.
                linked: linked.map(Box::new),
                listen: None,
            })
        }
        Ok(Some(LoggedIn::Console { role, user })) => {
            // A console connection does not count against max_client_conn, nor keep a drain waiting.
            drop(slot);
            let console = Console {
                client,
                shared,
                role,
                user,
            };
            Box::pin(admin::run(console)).await;
            None
        }
        Ok(None) => None,
        Err(error) => {
            tracing::info!(client = %peer, %error, "login refused");
            client.send_error(&error).await;
            None
        }
    }
}

/// client_login_timeout, for the whole of startup, TLS handshake and authentication.
struct Deadline {
    at: Option<tokio::time::Instant>,
    limit: Duration,
}

impl Deadline {
    fn new(limit: Duration) -> Deadline {
        let at = (!limit.is_zero()).then(|| tokio::time::Instant::now() + limit);
        Deadline { at, limit }
    }

    async fn run<T>(&self, work: impl Future<Output = Result<T, PgError>>) -> Result<T, PgError> {
        let Some(at) = self.at else {
            return work.await;
        };
        tokio::time::timeout_at(at, work).await.unwrap_or_else(|_| {
            Err(PgError::fatal(
                "08006",
                format!(
                    "login not completed within client_login_timeout ({} s)",
                    self.limit.as_secs_f64()
                ),
            ))
        })
    }
}

fn tls_failed(e: std::io::Error) -> PgError {
    PgError::fatal("08006", format!("TLS handshake with the client failed: {e}"))
}

enum LoggedIn {
    Pool(Welcome),
    Console { role: Role, user: String },
}

async fn login(
    client: &mut ClientConn,
    startup: Startup,
    shared: &Shared,
    config: &Config,
    connected: u32,
) -> Result<Option<LoggedIn>, PgError> {
    let (minor, params) = match startup {
        Startup::Login { minor, params } => (minor, params),
        Startup::Cancel { process_id, secret_key } => {
            // A wrong key, or a client holding no server, is dropped silently, as PostgreSQL
            // does; a key of another peer's client goes there (see `peer`).
            tracing::debug!(client = %client.peer(), "cancel request");
            super::peer::accept(shared, process_id, secret_key).await;
            return Ok(None);
        }
        // read_startup refuses a second SSLRequest, so this is a TLS request without TLS.
        Startup::Tls => return Err(PgError::fatal("08P01", "unexpected TLS request")),
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
    let mut settings = Settings::from_startup(&params)?;
    // Checked before authentication: a bad startup packet costs no password exchange.
    let route = match param("pgmux.route") {
        None => Preference::Auto,
        Some(v) => Preference::parse(v).ok_or_else(|| {
            PgError::fatal("22023", format!("invalid value for pgmux.route: \"{v}\""))
                .with_hint("use primary, replica or auto")
        })?,
    };
    let mut out = BytesMut::new();
    if admin::is_console(database) && !config.databases.contains_key(database) {
        return console_login(client, shared, config, user, database).await.map(Some);
    }
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
    // The database's client_encoding, datestyle and timezone, where the client sent none.
    for (name, value) in [
        ("client_encoding", &db.client_encoding),
        ("datestyle", &db.datestyle),
        ("timezone", &db.timezone),
    ] {
        if let (Some(value), None) = (value, settings.get(name)) {
            settings.set(name, value);
        }
    }
    if shared.pools.find_gate(database).is_some_and(|g| g.disabled()) {
        return Err(PgError::fatal(
            "57P03",
            format!("database \"{database}\" does not allow connections: disabled from the pgmux console"),
        )
        .with_hint("ENABLE it on the console (psql -p PORT -U ADMIN pgbouncer)"));
    }
    // A throttled address gets its 53300 here; a wrong password is counted and delayed.
    let attempt = shared.throttle.begin(&client.peer(), user, &config.pooler)?;
    let proof = match authenticate(client, shared, config, user, database).await {
        Ok(proof) => proof,
        Err(e) => return Err(attempt.refused(e).await),
    };
    let password = match &proof {
        Proof::Password(p) => Some(p.as_str()),
        _ => None,
    };
    let pool = shared.pools.get_or_create(config, db, database, user, password);
    match &proof {
        Proof::ClientKey(key) => pool.learn_client_key(user, *key),
        Proof::Looked { secret, client_key } => pool.learn_secret(user, secret.clone(), *client_key),
        Proof::Nothing | Proof::Password(_) => {}
    }
    if let Some(password) = password {
        if let Err(e) = verify_passthrough(&pool, shared, password).await {
            shared.pools.forget_if_unused(&pool);
            return Err(attempt.refused(e).await);
        }
    }
    attempt.passed();
    if password.is_none() && pool.welcome().is_none() {
        pool.checkout().await.map_err(|e| e.to_pg())?.release();
    }

    msg::authentication(&mut out, msg::AUTH_OK, &[]);
    let welcome = pool.welcome().unwrap_or_default();
    // The client's own values as the server spells them (ISO, DMY for iso,dmy), as a direct
    // connection reports them: learnt from a server the first time a value is seen.
    let unknown = |w: &[(String, String)]| {
        w.iter().any(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            settings
                .get(&lower)
                .is_some_and(|raw| pool.normalized(&lower, raw).is_none())
        })
    };
    if unknown(&welcome) {
        let mut lease = super::transaction::checkout(&pool, &settings).await?;
        // A value the server already had is not reported again: asked for instead.
        for (name, _) in welcome.iter() {
            let lower = name.to_ascii_lowercase();
            let Some(raw) = settings.get(&lower) else { continue };
            if pool.normalized(&lower, raw).is_some() {
                continue;
            }
            let sql = format!("SHOW \"{}\"", lower.replace('"', "\"\""));
            let outcome = lease.conn().run(&sql).await.map_err(|e| e.to_pg())?;
            if let (None, Some(Some(value))) = (&outcome.error, outcome.row.first()) {
                pool.learn_normalized(lower, raw.to_owned(), value.clone());
            }
        }
        lease.release();
    }
    for (name, value) in welcome.iter() {
        let lower = name.to_ascii_lowercase();
        let own = settings
            .get(&lower)
            .map(|raw| pool.normalized(&lower, raw).unwrap_or_else(|| raw.to_owned()));
        msg::parameter_status(&mut out, name, own.as_deref().unwrap_or(value));
    }
    let settings = pool.share_settings(settings);
    Ok(Some(LoggedIn::Pool(Welcome {
        out,
        pool,
        settings,
        route,
    })))
}

/// An authenticated client's welcome so far (AuthenticationOk, ParameterStatus), and what the
/// rest of it needs.
struct Welcome {
    out: BytesMut,
    pool: Arc<Pool>,
    settings: Settings,
    route: Preference,
}

impl Welcome {
    /// Links a server in session mode, then registers the client and sends its BackendKeyData
    /// and ReadyForQuery. Outside client_login_timeout: the wait for a server is
    /// query_wait_timeout's, as it would be at the first query. None: the client got its error
    /// or left.
    async fn send(
        mut self,
        client: &mut ClientConn,
        shared: &Shared,
    ) -> Option<(Settings, Arc<CancelHandle>, Option<Lease>)> {
        let mut linked = match self.pool.mode() {
            PoolMode::Session => Some(self.link(client).await?),
            _ => None,
        };
        let facts = ClientFacts {
            route: self.route,
            tls: client.stream.is_tls(),
            settings: self.settings.clone(),
            socket: client.stream.raw_fd(),
        };
        let server_pid = linked.as_mut().map(|lease| lease.conn().process_id);
        // Dropped on any way out before the end, it unregisters.
        let registered = shared
            .cancels
            .register(|| shared.client_id(), server_pid, self.pool.clone(), facts);
        let cancel = registered.handle();
        if let Some(lease) = linked.as_mut() {
            let pool = lease.pool().clone();
            cancel.attach(lease.conn(), &pool); // SHOW SERVERS lists it as the client's
        }
        msg::backend_key_data(&mut self.out, cancel.backend_pid, cancel.secret_key());
        msg::ready_for_query(&mut self.out, b'I');
        if client.write(&self.out).await.is_err() {
            tracing::info!(client = %client.peer(), error = %gone(), "login refused");
            if let Some(lease) = linked {
                lease.release();
            }
            return None;
        }
        Some((self.settings, registered.keep(), linked))
    }

    /// Session mode: the client's server for its whole session, taken now so that the pid it
    /// is told is that server's (pg_backend_pid(), pg_terminate_backend of it).
    async fn link(&self, client: &mut ClientConn) -> Option<Lease> {
        let pool = super::pick::write_pool(&self.pool);
        match client
            .wait_with(super::transaction::checkout(pool, &self.settings))
            .await
        {
            Waited::Done(Ok(lease)) => Some(lease),
            Waited::Done(Err(error)) | Waited::Invalid(error) => {
                tracing::info!(client = %client.peer(), %error, "login refused");
                pool.stats.error(error.code.as_bytes());
                client.send_error(&error).await;
                None
            }
            Waited::Gone => None,
        }
    }
}

/// The console: authenticated like any client, then its role decides (42501 for neither).
async fn console_login(
    client: &mut ClientConn,
    shared: &Shared,
    config: &Config,
    user: &str,
    database: &str,
) -> Result<LoggedIn, PgError> {
    let attempt = shared.throttle.begin(&client.peer(), user, &config.pooler)?;
    let superuser = match authenticate(client, shared, config, user, database).await {
        Ok(Proof::Password(password)) => match admin::check_passthrough(shared, config, user, &password).await {
            Ok(superuser) => superuser,
            Err(e) => return Err(attempt.refused(e).await),
        },
        Ok(_) => false,
        Err(e) => return Err(attempt.refused(e).await),
    };
    attempt.passed();
    let role = admin::role(config, user, superuser)?;
    let mut out = BytesMut::new();
    admin::welcome(&mut out, shared.next_process_id());
    client.write(&out).await.map_err(|_| gone())?;
    Ok(LoggedIn::Console {
        role,
        user: user.to_owned(),
    })
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
        client_key: None,
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
        Err(e) => Err(super::auth::unverified(&pool.user, &e)),
    }
}

fn gone() -> PgError {
    PgError::fatal("08006", "client went away during login")
}
