//! LISTEN/NOTIFY in transaction mode, pool of one: a client that LISTENs gets the NOTIFYs of
//! other clients and of direct connections while it runs transactions on a server it shares;
//! UNLISTEN and a rolled-back LISTEN count as in PostgreSQL; the pooled server forgets the
//! LISTEN; a client that does not read is bounded; the listener connection's loss is survived.

mod support;

use std::collections::HashMap;
use std::future::poll_fn;
use std::time::Duration;
use support::*;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

const DB: &str = "listen_notify";
/// Every wait for a notification gives up after this.
const WAIT: Duration = Duration::from_secs(15);

fn pgmux(extra: &str) -> Pgmux {
    ensure_database(DB);
    Pgmux::start(
        &format!(
            "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\ndefault_pool_size = 1\n\
             query_wait_timeout = 20\n{extra}"
        ),
        &format!(
            "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n\
             [databases.{DB}]\nport = {{pg_port}}\n"
        ),
    )
}

/// What a listening client receives besides its answers.
#[derive(Debug)]
enum Heard {
    Notification { channel: String, payload: String },
    Notice(String),
}

/// A client whose connection task forwards notifications and notices; `pause` stops it from
/// reading its socket (while true).
struct Listener {
    client: Client,
    heard: mpsc::UnboundedReceiver<Heard>,
    pause: watch::Sender<bool>,
}

async fn listener(url: &str) -> Listener {
    let (client, mut conn) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(url, NoTls))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let (tx, heard) = mpsc::unbounded_channel();
    let (pause, mut paused) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            if *paused.borrow() {
                if paused.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let message = tokio::select! {
                m = poll_fn(|cx| conn.poll_message(cx)) => m,
                _ = paused.changed() => continue,
            };
            let heard = match message {
                Some(Ok(AsyncMessage::Notification(n))) => Heard::Notification {
                    channel: n.channel().to_owned(),
                    payload: n.payload().to_owned(),
                },
                Some(Ok(AsyncMessage::Notice(n))) => Heard::Notice(n.message().to_owned()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            };
            if tx.send(heard).is_err() {
                return;
            }
        }
    });
    Listener { client, heard, pause }
}

impl Listener {
    /// The next notification (notices are skipped), or a panic after WAIT.
    async fn next(&mut self, what: &str) -> (String, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.heard.recv()).await {
                Ok(Some(Heard::Notification { channel, payload })) => return (channel, payload),
                Ok(Some(Heard::Notice(_))) => {}
                Ok(None) => panic!("{what}: the connection ended"),
                Err(_) => panic!("{what}: no notification within {WAIT:?}"),
            }
        }
    }

    /// The next notice (notifications before it are returned with it), or a panic after WAIT.
    async fn notice(&mut self, what: &str) -> (String, usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut skipped = 0;
        loop {
            match tokio::time::timeout_at(deadline, self.heard.recv()).await {
                Ok(Some(Heard::Notice(text))) => return (text, skipped),
                Ok(Some(Heard::Notification { .. })) => skipped += 1,
                Ok(None) => panic!("{what}: the connection ended"),
                Err(_) => panic!("{what}: no notice within {WAIT:?}"),
            }
        }
    }
}

async fn exec(c: &Client, sql: &str) {
    tokio::time::timeout(WAIT, c.batch_execute(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql}: no answer within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn rows(c: &Client, sql: &str) -> Vec<HashMap<String, String>> {
    let msgs = tokio::time::timeout(WAIT, c.simple_query(sql))
        .await
        .expect("in time")
        .unwrap();
    text_rows(&msgs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_in_transaction_mode() {
    let px = pgmux("");
    let url = px.url("app", "app", DB);
    let mut a = listener(&url).await;
    let b = connect(&url).await;
    let console = connect(&px.url("admin", "admin", "pgbouncer")).await;

    // Simple protocol; the pool's one server goes back to the pool after it.
    exec(&a.client, "LISTEN jobs").await;
    exec(&b, "NOTIFY jobs, 'from b'").await;
    assert_eq!(
        a.next("NOTIFY from another client").await,
        ("jobs".into(), "from b".into())
    );
    // A transaction of its own meanwhile, on the server b used.
    assert_eq!(rows(&a.client, "SELECT 1 AS one").await[0]["one"], "1");
    cluster().psql(DB, "NOTIFY jobs, 'direct'");
    assert_eq!(a.next("NOTIFY from psql").await, ("jobs".into(), "direct".into()));
    exec(&b, "SELECT pg_notify('jobs', 'in a function')").await;
    assert_eq!(a.next("pg_notify").await.1, "in a function");

    // The pooled server does not listen: the LISTEN was pgmux's to keep.
    let on_server = rows(&b, "SELECT count(*) AS n FROM pg_listening_channels()").await;
    assert_eq!(on_server[0]["n"], "0", "the pooled server still listens");

    // Extended protocol, and a LISTEN in a transaction that rolls back does not count.
    a.client.execute("LISTEN \"Ext\"", &[]).await.unwrap();
    exec(&a.client, "BEGIN; LISTEN rolled; ROLLBACK").await;
    exec(&b, "NOTIFY rolled, 'no'; NOTIFY \"Ext\", 'yes'").await;
    assert_eq!(a.next("extended LISTEN").await, ("Ext".into(), "yes".into()));

    // Inside a transaction that commits; NOTIFYs sent within it arrive at commit.
    exec(&a.client, "BEGIN; LISTEN inside; NOTIFY inside, 'self'; COMMIT").await;
    assert_eq!(
        a.next("LISTEN and NOTIFY in one transaction").await,
        ("inside".into(), "self".into())
    );

    // UNLISTEN stops a channel; the others go on, in order.
    exec(&a.client, "UNLISTEN jobs").await;
    exec(&b, "NOTIFY jobs, 'not for a'").await;
    exec(&b, "NOTIFY inside, 'after'").await;
    assert_eq!(a.next("after UNLISTEN").await, ("inside".into(), "after".into()));

    let show = show(&console, "SHOW LISTENERS").await;
    let channels: Vec<&str> = show.iter().map(|r| r["channel"].as_str()).collect();
    assert_eq!(channels, ["Ext", "inside"], "{show:?}");
    assert!(
        show.iter().all(|r| r["clients"] == "1" && r["database"] == DB),
        "{show:?}"
    );

    // UNLISTEN * ends them all; a client that leaves takes its channels with it.
    exec(&a.client, "UNLISTEN *").await;
    let show = self::show(&console, "SHOW LISTENERS").await;
    assert!(show.is_empty(), "{show:?}");
    exec(&b, "LISTEN gone").await;
    drop(b);
    let mut empty = false;
    for _ in 0..100 {
        if self::show(&console, "SHOW LISTENERS").await.is_empty() {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(empty, "a departed client's channel stays");
}

/// An UNLISTEN that reaches pgmux while the client waits for the pool's one server (sent
/// behind a query that waits) counts as one sent alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisten_sent_while_waiting_for_a_server_counts() {
    let px = pgmux("");
    let url = px.url("app", "app", DB);
    let a = listener(&url).await;
    let holder = connect(&url).await;
    let console = connect(&px.url("admin", "admin", "pgbouncer")).await;
    exec(&a.client, "LISTEN queued").await;
    let show_listeners = show(&console, "SHOW LISTENERS").await;
    assert_eq!(show_listeners.len(), 1, "{show_listeners:?}");
    // The holder keeps the only server in a transaction block: a's query waits for it, and
    // its UNLISTEN follows on the wire while it waits.
    exec(&holder, "BEGIN").await;
    let (first, second, ()) = tokio::join!(
        a.client.simple_query("SELECT 1"),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            a.client.simple_query("UNLISTEN queued").await
        },
        async {
            tokio::time::sleep(Duration::from_millis(900)).await;
            exec(&holder, "COMMIT").await;
        },
    );
    first.expect("the waiting query ran");
    second.expect("the UNLISTEN ran");
    let show_listeners = show(&console, "SHOW LISTENERS").await;
    assert!(
        show_listeners.is_empty(),
        "the UNLISTEN sent during the wait was lost: {show_listeners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_bounded_and_told() {
    let px = pgmux("");
    let url = px.url("app", "app", DB);
    let mut slow = listener(&url).await;
    let sender = connect(&url).await;
    let console = connect(&px.url("admin", "admin", "pgbouncer")).await;
    exec(&slow.client, "LISTEN flood").await;
    slow.pause.send_replace(true);
    // 3,000 notifications of 7,900 bytes: far more than the socket buffers and the queue hold.
    exec(
        &sender,
        "SELECT pg_notify('flood', i::text || repeat('x', 7900)) FROM generate_series(1, 3000) i",
    )
    .await;
    let mut dropped = 0;
    for _ in 0..200 {
        let rows = show(&console, "SHOW LISTENERS").await;
        dropped = rows.first().map_or(0, |r| r["dropped"].parse::<u64>().unwrap_or(0));
        if dropped > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped > 0, "nothing dropped for a client that does not read");
    slow.pause.send_replace(false);
    let (text, before) = slow.notice("the dropped notice").await;
    assert!(text.contains("dropped") && text.contains("notifications"), "{text}");
    assert!(before > 0 && before < 3000, "{before} notifications before the notice");
    // Still subscribed, and served in order after the drop.
    exec(&sender, "NOTIFY flood, 'last'").await;
    let mut last = None;
    for _ in 0..3000 {
        let (_, payload) = slow.next("the rest of the flood").await;
        if payload == "last" {
            last = Some(payload);
            break;
        }
    }
    assert!(last.is_some(), "the notification after the flood never came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_connection_loss_is_survived_with_a_notice() {
    let px = pgmux("");
    let url = px.url("app", "app", DB);
    let mut a = listener(&url).await;
    let b = connect(&url).await;
    exec(&a.client, "LISTEN survive").await;
    exec(&b, "NOTIFY survive, 'before'").await;
    assert_eq!(a.next("before the loss").await.1, "before");
    // The listener connection: its last statement was its LISTEN (the other tests of this
    // file listen on other channels, in the same database).
    let killed = cluster().psql(
        DB,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE usename = 'app' AND datname = 'listen_notify' AND query = 'LISTEN \"survive\";'",
    );
    assert_eq!(killed, "1", "the listener connection was not found");
    let (text, _) = a.notice("the missed notice").await;
    assert!(text.contains("missed"), "{text}");
    // Reopened with the same channel: a NOTIFY gets through again.
    let mut got = false;
    for i in 0..50 {
        exec(&b, &format!("NOTIFY survive, 'after {i}'")).await;
        if let Ok(Some(Heard::Notification { payload, .. })) =
            tokio::time::timeout(Duration::from_millis(300), a.heard.recv()).await
        {
            assert!(payload.starts_with("after"), "{payload}");
            got = true;
            break;
        }
    }
    assert!(got, "no notification after the listener connection came back");
    assert!(px.log().contains("listener connection lost"), "{}", tail(&px.log(), 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_its_own_server() {
    let px = pgmux("pool_mode = \"session\"");
    let url = px.url("app", "app", DB);
    let mut a = listener(&url).await;
    exec(&a.client, "LISTEN own").await;
    // The client's server itself listens: nothing of pgmux's in between.
    assert_eq!(
        rows(&a.client, "SELECT count(*) AS n FROM pg_listening_channels()").await[0]["n"],
        "1"
    );
    cluster().psql(DB, "NOTIFY own, 'session'");
    assert_eq!(a.next("session mode").await, ("own".into(), "session".into()));
}

type Row = HashMap<String, String>;

async fn show(c: &Client, cmd: &str) -> Vec<Row> {
    rows(c, cmd).await
}
