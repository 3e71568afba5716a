//! TLS to clients (tls_mode) and to servers (server_tls_mode), against real PostgreSQL, psql and
//! raw sockets. Certificates are made here with rcgen: one CA, a certificate for DNS name
//! "localhost" only (no IP address) signed by it, shown by pgmux and by PostgreSQL alike, and a
//! second CA that signed nothing.

mod support;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::fs;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Certs {
    ca: String,
    other_ca: String,
    cert: String,
    key: String,
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = cluster().dir.join("certs");
        fs::create_dir_all(&dir).unwrap();
        let (ca_pem, issuer) = ca("pgmux test CA");
        let (other_ca_pem, _) = ca("some other CA");
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            fs::write(&path, pem).unwrap();
            path.to_str().unwrap().to_owned()
        };
        Certs {
            ca: write("ca.pem", &ca_pem),
            other_ca: write("other-ca.pem", &other_ca_pem),
            cert: write("server.pem", &cert.pem()),
            key: write("server.key", &key.serialize_pem()),
        }
    })
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// The cluster with TLS on (once per binary), and a role `tlsuser` that PostgreSQL refuses in
/// plain text.
fn tls_cluster() -> &'static Cluster {
    static ON: OnceLock<()> = OnceLock::new();
    let c = cluster();
    ON.get_or_init(|| {
        let certs = certs();
        c.psql("postgres", "CREATE ROLE tlsuser LOGIN PASSWORD 'tlspass'");
        let (cert, key) = (
            fs::read_to_string(&certs.cert).unwrap(),
            fs::read_to_string(&certs.key).unwrap(),
        );
        c.enable_tls(&cert, &key, "hostnossl all tlsuser 127.0.0.1/32 reject\n");
    });
    c
}

const USERS: &str = "[users.app]\npassword = \"app\"\n[users.tlsuser]\npassword = \"tlspass\"\n";

/// pgmux showing the test certificate to clients, with tls_mode = `mode`.
fn client_tls(mode: &str) -> Pgmux {
    let c = certs();
    Pgmux::start(
        &format!(
            "auth_type = \"scram-sha-256\"\ntls_mode = \"{mode}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            c.cert, c.key
        ),
        &format!("{USERS}[databases.bench]\nport = {{pg_port}}\n"),
    )
}

/// pgmux to the TLS cluster with server_tls_mode = `mode`; `db` is the [databases.bench] body.
fn server_tls(mode: &str, ca: &str, db: &str) -> Pgmux {
    tls_cluster();
    Pgmux::start(
        &format!("auth_type = \"scram-sha-256\"\nserver_tls_mode = \"{mode}\"\nserver_tls_ca_file = \"{ca}\""),
        &format!("{USERS}[databases.bench]\n{db}\n"),
    )
}

/// psql as app to pgmux's bench with extra connection settings, running each command.
fn psql(px: &Pgmux, conn: &str, commands: &[&str]) -> (i32, String, String) {
    let dsn = format!("port={} user=app password=app dbname=bench {conn}", px.port);
    let mut args = vec![dsn.as_str(), "-X", "-A", "-t"];
    for command in commands {
        args.extend(["-c", command]);
    }
    run_cmd("psql", &args, &[], Duration::from_secs(20))
}

/// Asserts psql got through with TLS (`\conninfo` says so) and ran `SELECT 41 + 1`.
fn psql_over_tls(px: &Pgmux, conn: &str) {
    let (code, out, err) = psql(px, conn, &["\\conninfo", "SELECT 41 + 1"]);
    assert_eq!(code, 0, "psql {conn}: {err}");
    assert!(out.contains("SSL connection"), "psql {conn}: not encrypted: {out}");
    assert!(out.lines().any(|l| l == "42"), "psql {conn}: {out}");
}

/// The one error message a refused login got from pgmux.
async fn refused(url: &str) -> (String, String) {
    match try_connect(url).await {
        Ok(_) => panic!("{url}: login succeeded"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{url}: not a server error: {e:?}"));
            (db.code().code().to_owned(), db.message().to_owned())
        }
    }
}

fn ssl_in_use() -> &'static str {
    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_of_clients() {
    let px = client_tls("require");
    let ca = &certs().ca;
    psql_over_tls(&px, "host=127.0.0.1 sslmode=require");
    psql_over_tls(&px, &format!("host=localhost sslmode=verify-full sslrootcert={ca}"));

    // The certificate names localhost, not 127.0.0.1; and another CA signed nothing here.
    let (code, _, err) = psql(
        &px,
        &format!("host=127.0.0.1 sslmode=verify-full sslrootcert={ca}"),
        &["SELECT 1"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("does not match host name"), "{err}");
    let other = &certs().other_ca;
    let (code, _, err) = psql(
        &px,
        &format!("host=localhost sslmode=verify-full sslrootcert={other}"),
        &["SELECT 1"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("certificate verify failed"), "{err}");

    // Plain text is refused, with 28000.
    let (code, _, err) = psql(&px, "host=127.0.0.1 sslmode=disable", &["SELECT 1"]);
    assert_ne!(code, 0);
    assert!(err.contains("TLS required (tls_mode = require)"), "{err}");
    let (code, message) = refused(&px.url("app", "app", "bench")).await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("28000", "TLS required (tls_mode = require)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_offered_to_clients_plain_text_still_welcome() {
    for mode in ["prefer", "allow"] {
        let px = client_tls(mode);
        psql_over_tls(&px, "host=127.0.0.1 sslmode=require");
        let (code, out, err) = psql(&px, "host=127.0.0.1 sslmode=disable", &["\\conninfo", "SELECT 41 + 1"]);
        assert_eq!(code, 0, "{mode}: {err}");
        assert!(!out.contains("SSL connection") && out.contains("42"), "{mode}: {out}");
        // tokio-postgres without TLS: no SSLRequest at all.
        let client = connect(&px.url("app", "app", "bench")).await;
        assert_eq!(value(&client, "SELECT 6 * 7").await, "42");
    }
    // With tls_mode = disable an SSLRequest is still answered N (libpq goes on in plain text).
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"",
        &format!("{USERS}[databases.bench]\nport = {{pg_port}}\n"),
    );
    let (code, out, err) = psql(&px, "host=127.0.0.1 sslmode=prefer", &["\\conninfo"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("SSL connection"), "{out}");
    let (code, _, err) = psql(&px, "host=127.0.0.1 sslmode=require", &["SELECT 1"]);
    assert_ne!(code, 0);
    assert!(err.contains("server does not support SSL"), "{err}");
}

fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for s in ["user", user, "database", database, ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

/// Fields of an ErrorResponse: (SQLSTATE, message).
fn error_fields(frame: &[u8]) -> (String, String) {
    assert_eq!(frame.first(), Some(&b'E'), "not an ErrorResponse: {frame:?}");
    let (mut code, mut message) = (String::new(), String::new());
    for field in frame[5..].split(|&b| b == 0) {
        match field.split_first() {
            Some((b'C', text)) => code = String::from_utf8_lossy(text).into_owned(),
            Some((b'M', text)) => message = String::from_utf8_lossy(text).into_owned(),
            _ => {}
        }
    }
    (code, message)
}

/// CVE-2021-23214: plain-text bytes sent right behind the SSLRequest must never be taken as
/// if they had come through TLS.
#[test]
fn plain_text_behind_an_ssl_request_is_refused() {
    let px = client_tls("require");
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", px.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut packet = SSL_REQUEST.to_vec();
    packet.extend(startup_message("app", "bench"));
    sock.write_all(&packet).unwrap();
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).expect("pgmux closes the connection");
    assert_eq!(answer.first(), Some(&b'S'), "{answer:?}");
    let (code, message) = error_fields(&answer[1..]);
    assert_eq!(code, "08P01");
    assert_eq!(message, "received unencrypted data after SSL request");
}

fn rustls_client(ca: &str) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let pem = fs::read(ca).unwrap();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A second SSLRequest inside TLS is a protocol violation; a StartupMessage logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustls_client_inside_tls() {
    let px = client_tls("require");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    for second in [SSL_REQUEST.to_vec(), startup_message("app", "bench")] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", px.port)).await.unwrap();
        tcp.write_all(&SSL_REQUEST).await.unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"S");
        let mut tls = rustls_client(&certs().ca).connect(name.clone(), tcp).await.unwrap();
        tls.write_all(&second).await.unwrap();
        let mut reply = vec![0u8; 5];
        tls.read_exact(&mut reply).await.unwrap();
        if second.len() == 8 {
            tls.read_to_end(&mut reply).await.unwrap_or_default();
            let (code, message) = error_fields(&reply);
            assert_eq!(code, "08P01");
            assert!(message.contains("already encrypted"), "{message}");
        } else {
            // AuthenticationSASL: the login goes on over TLS.
            assert_eq!(reply[0], b'R');
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_required() {
    // The server refuses tlsuser in plain text: pgmux without server TLS cannot log it in.
    let px = server_tls("disable", "", "port = {pg_port}");
    let (code, message) = refused(&px.url("tlsuser", "tlspass", "bench")).await;
    assert_eq!(code, "28000", "{message}");
    assert!(message.contains("no encryption"), "{message}");
    drop(px);

    for mode in ["require", "prefer"] {
        let px = server_tls(mode, "", "port = {pg_port}\npool_size = 1");
        let url = px.url("tlsuser", "tlspass", "bench");
        let client = connect(&url).await;
        assert_eq!(value(&client, ssl_in_use()).await, "t", "{mode}");
        assert_eq!(value(&client, "SELECT current_user").await, "tlsuser");
        let pid = value(&client, "SELECT pg_backend_pid()").await;
        drop(client);
        // An idle TLS server connection is found healthy, by the janitor (every second) and at
        // checkout, and reused ...
        if mode == "require" {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let client = connect(&url).await;
        assert_eq!(
            value(&client, "SELECT pg_backend_pid()").await,
            pid,
            "{mode}: not reused"
        );
        drop(client);
        // ... and found dead once the server closed it (FATAL and close_notify over TLS).
        let c = tls_cluster();
        c.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
        let t0 = Instant::now();
        while c.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        ) != "0"
        {
            assert!(t0.elapsed() < Duration::from_secs(10), "backend {pid} still there");
            std::thread::sleep(Duration::from_millis(20));
        }
        let client = connect(&url).await;
        assert_ne!(value(&client, "SELECT pg_backend_pid()").await, pid, "{mode}");
        assert_eq!(value(&client, ssl_in_use()).await, "t", "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_verify_full() {
    let c = certs();
    let px = server_tls("verify-full", &c.ca, "host = \"localhost\"\nport = {pg_port}");
    let client = connect(&px.url("tlsuser", "tlspass", "bench")).await;
    assert_eq!(value(&client, ssl_in_use()).await, "t");
    drop(px);

    // The certificate names localhost, not 127.0.0.1.
    let px = server_tls("verify-full", &c.ca, "host = \"127.0.0.1\"\nport = {pg_port}");
    let (code, message) = refused(&px.url("tlsuser", "tlspass", "bench")).await;
    assert_eq!(code, "08006", "{message}");
    assert!(
        message.contains("TLS") && message.contains("not valid for name \"127.0.0.1\""),
        "{message}"
    );
    drop(px);

    // A CA that did not sign it.
    let px = server_tls("verify-full", &c.other_ca, "host = \"localhost\"\nport = {pg_port}");
    let (code, message) = refused(&px.url("tlsuser", "tlspass", "bench")).await;
    assert_eq!(code, "08006", "{message}");
    assert!(
        message.contains("TLS") && message.contains("UnknownIssuer"),
        "{message}"
    );
}

/// A stand-in server: reads the SSLRequest, answers `answer`, then, when `relay`, passes bytes
/// on to PostgreSQL in plain text (so PostgreSQL sees a connection without TLS).
async fn fake_server(answer: &'static [u8], relay: bool) -> u16 {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pg_port = cluster().port;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if sock.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
                    return;
                }
                let _ = sock.write_all(answer).await;
                if relay {
                    let mut pg = tokio::net::TcpStream::connect(("127.0.0.1", pg_port)).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut pg).await;
                } else {
                    let _ = sock.read_to_end(&mut Vec::new()).await;
                }
            });
        }
    });
    port
}

/// A server that answers N: prefer goes on in plain text, require refuses. A server that
/// answers S with plain-text bytes behind it (CVE-2021-23222): they go to the handshake, which
/// fails, and never pass as the server's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_without_tls() {
    tls_cluster();
    let no_tls = fake_server(b"N", true).await;
    let px = server_tls("prefer", "", &format!("port = {no_tls}"));
    let client = connect(&px.url("app", "app", "bench")).await;
    assert_eq!(value(&client, ssl_in_use()).await, "f");
    drop(px);

    let px = server_tls("require", "", &format!("port = {no_tls}"));
    let (code, message) = refused(&px.url("app", "app", "bench")).await;
    assert_eq!(code, "08006", "{message}");
    assert!(
        message.contains("does not support TLS (server_tls_mode = require)"),
        "{message}"
    );
    drop(px);

    let mut injected = b"S".to_vec();
    injected.push(b'E');
    let body = b"SFATAL\0C28P01\0Minjected by a man in the middle\0\0";
    injected.extend(((body.len() + 4) as i32).to_be_bytes());
    injected.extend(body);
    let injected: &'static [u8] = injected.leak();
    let mitm = fake_server(injected, false).await;
    let px = server_tls("require", "", &format!("port = {mitm}"));
    let (code, message) = refused(&px.url("app", "app", "bench")).await;
    assert_eq!(code, "08006", "{message}");
    assert!(
        message.contains("TLS handshake") && !message.contains("injected"),
        "{message}"
    );
}

/// Large answers and a large query through TLS on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_both_sides_carry_big_data() {
    tls_cluster();
    let c = certs();
    let px = Pgmux::start(
        &format!(
            "auth_type = \"scram-sha-256\"\ndefault_pool_size = 1\ntls_mode = \"require\"\ntls_cert_file = \"{}\"\n\
             tls_key_file = \"{}\"\nserver_tls_mode = \"require\"",
            c.cert, c.key
        ),
        &format!("{USERS}[databases.bench]\nport = {{pg_port}}\n"),
    );
    let dsn = format!(
        "host=localhost port={} user=tlsuser password=tlspass dbname=bench sslmode=verify-full sslrootcert={}",
        px.port, c.ca
    );
    let rows = "SELECT repeat('x', 1000) || i FROM generate_series(1, 20000) i";
    let (code, out, err) = run_cmd("psql", &[&dsn, "-XAt", "-c", rows], &[], Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 20000);
    assert!(out
        .lines()
        .last()
        .is_some_and(|l| l.len() == 1005 && l.ends_with("20000")));

    let query = px.dir.join("big.sql");
    fs::write(&query, format!("SELECT length('{}');\n", "y".repeat(3_000_000))).unwrap();
    let (code, out, err) = run_cmd(
        "psql",
        &[&dsn, "-XAt", "-f", query.to_str().unwrap()],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!((code, out.trim()), (0, "3000000"), "{err}");
}

/// A proxy to PostgreSQL that records the first 8 bytes of each connection (an SSLRequest, or
/// the start of a StartupMessage or CancelRequest).
async fn recording_proxy() -> (u16, Arc<Mutex<Vec<[u8; 8]>>>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pg_port = cluster().port;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 8];
                if sock.read_exact(&mut first).await.is_err() {
                    return;
                }
                record.lock().unwrap().push(first);
                let mut pg = tokio::net::TcpStream::connect(("127.0.0.1", pg_port)).await.unwrap();
                if pg.write_all(&first).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut pg).await;
                }
            });
        }
    });
    (port, seen)
}

/// A client killed with a query running: pgmux cancels it, over TLS with server_tls_mode =
/// require, and closes that server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_query_cancelled_over_tls() {
    tls_cluster();
    let (proxy, seen) = recording_proxy().await;
    let px = server_tls("require", "", &format!("port = {proxy}\npool_size = 1"));
    let url = px.url("tlsuser", "tlspass", "bench");
    let (victim, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(value(&victim, ssl_in_use()).await, "t");
    let sleeper = tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(29)").await });
    let running = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(29)' AND state = 'active'";
    let t0 = Instant::now();
    while tls_cluster().psql("postgres", running) != "1" {
        assert!(t0.elapsed() < Duration::from_secs(10), "the query never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    conn.abort();
    sleeper.abort();
    let t0 = Instant::now();
    while tls_cluster().psql("postgres", running) != "0" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the abandoned query was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = connect(&url).await;
    assert_eq!(value(&next, ssl_in_use()).await, "t");
    // Two logins and the cancel, each opened with an SSLRequest.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![SSL_REQUEST; 3]);
}

/// A client's CancelRequest (cancel forwarding) reaches a TLS server and lands: the query ends
/// with 57014 at once, and pgmux does not take PostgreSQL's close of the cancel connection
/// for a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_cancel_over_tls() {
    for mode in ["require", "verify-full"] {
        let px = server_tls(mode, &certs().ca, "host = \"localhost\"\nport = {pg_port}");
        let client = connect(&px.url("tlsuser", "tlspass", "bench")).await;
        assert_eq!(value(&client, ssl_in_use()).await, "t");
        let token = client.cancel_token();
        let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(27)").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        token.cancel_query(tokio_postgres::NoTls).await.expect("cancel request");
        let err = query.await.unwrap().expect_err("the cancelled query must fail");
        assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{mode}: {err:?}");
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{mode}: cancel took {:?}",
            sent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = px.log();
        assert!(
            !log.contains("cancel request to the server failed"),
            "{mode}: {}",
            tail(&log, 10)
        );
    }
}

/// `pgmux upgrade` cannot move a TLS session to the new process: an idle TLS client is told
/// so (57P01) at once and closed; it reconnects to the new process at the same address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_closes_an_idle_tls_client_with_57p01() {
    let c = certs();
    let old = Pgmux::start(
        &format!(
            "auth_type = \"trust\"\ntls_mode = \"require\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            c.cert, c.key
        ),
        "[databases.bench]\nport = {pg_port}\n",
    );
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", old.port)).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let mut tls = rustls_client(&c.ca).connect(name, tcp).await.unwrap();
    tls.write_all(&startup_message("trustuser", "bench")).await.unwrap();
    // Up to ReadyForQuery.
    loop {
        let mut head = [0u8; 5];
        tls.read_exact(&mut head).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4];
        tls.read_exact(&mut body).await.unwrap();
        assert_ne!(head[0], b'E', "login: {}", String::from_utf8_lossy(&body));
        if head[0] == b'Z' {
            break;
        }
    }
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_pgmux"));
    let new = tokio::task::block_in_place(|| old.upgrade(&bin)).expect("pgmux upgrade");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the TLS client was not closed");
    let (code, message) = error_fields(&rest);
    assert_eq!(code, "57P01", "{message}");
    assert!(message.contains("TLS connection cannot move"), "{message}");
    let mut old = old;
    let exited = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(10)));
    assert!(exited.is_some_and(|s| s.success()), "{}", old.log());
    // The new process speaks TLS on the same port.
    psql_over_tls(&new, "host=localhost sslmode=require user=trustuser");
}
