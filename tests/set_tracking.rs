//! Transaction mode: a client's session SET follows it from server to server, RESET forgets it,
//! and what is not a tracked SET (SET LOCAL, rolled back, failed, SET ROLE) is not carried over.

mod support;

use support::*;
use tokio_postgres::{Client, SimpleQueryMessage};

const CHECK: &str = "SELECT pg_backend_pid()::text, current_setting('search_path'), \
    current_setting('statement_timeout'), current_setting('work_mem'), \
    coalesce(current_setting('myapp.x', true), '')";

/// (pid, search_path, statement_timeout, work_mem, myapp.x), read in one transaction.
async fn check(c: &Client) -> (String, [String; 4]) {
    let rows = c.simple_query(CHECK).await.unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .expect("a row");
    let col = |i: usize| row.get(i).unwrap_or_default().to_owned();
    (col(0), [col(1), col(2), col(3), col(4)])
}

fn values(v: [&str; 4]) -> [String; 4] {
    v.map(str::to_owned)
}

async fn exec(c: &Client, sql: &str) {
    c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Opens a transaction on the server with `pid` (pool of two), so the next client's
/// transaction runs on the other one. Returns the holder; COMMIT it to let go.
async fn hold<'a>(pid: &str, h1: &'a Client, h2: &'a Client) -> &'a Client {
    exec(h1, "BEGIN").await;
    if value(h1, "SELECT pg_backend_pid()::text").await == pid {
        return h1;
    }
    exec(h2, "BEGIN").await;
    assert_eq!(value(h2, "SELECT pg_backend_pid()::text").await, pid);
    exec(h1, "COMMIT").await;
    h2
}

struct Clients {
    a: Client,
    own: Client,
    plain: Client,
    h1: Client,
    h2: Client,
    /// Settings of `own` and `plain`.
    own_values: [String; 4],
    plain_values: [String; 4],
}

impl Clients {
    /// Moves `a` to the server it did not use last, `rounds` times, checking each time that it
    /// sees `want` while the other clients, on the same server right after it, see theirs.
    async fn moves(&self, mut last: String, rounds: usize, want: &[String; 4]) -> String {
        for round in 0..rounds {
            let holder = hold(&last, &self.h1, &self.h2).await;
            let (pid, seen) = check(&self.a).await;
            assert_ne!(pid, last, "round {round}: the client moved");
            assert_eq!(&seen, want, "round {round}: the client's own settings");
            let (own_pid, own) = check(&self.own).await;
            assert_eq!(
                (own_pid.as_str(), &own),
                (pid.as_str(), &self.own_values),
                "round {round}"
            );
            let (plain_pid, plain) = check(&self.plain).await;
            assert_eq!(
                (plain_pid.as_str(), &plain),
                (pid.as_str(), &self.plain_values),
                "round {round}"
            );
            exec(holder, "COMMIT").await;
            last = pid;
        }
        last
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_follows_the_client_between_servers() {
    ensure_database("settrack");
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\ndefault_pool_size = 2\npool_mode = \"transaction\"",
        "[users.app]\npassword = \"app\"\n[databases.settrack]\nport = {pg_port}\n",
    );
    let url = px.url("app", "app", "settrack");
    let a = connect(&format!("{url} options='-c statement_timeout=7s'")).await;
    let (own, plain, h1, h2) = (
        connect(&url).await,
        connect(&url).await,
        connect(&url).await,
        connect(&url).await,
    );
    let (_, plain_values) = check(&plain).await;
    assert_eq!(plain_values[3], "", "myapp.x unset at first");
    exec(&own, "SET work_mem = '5MB'").await;
    exec(&own, "SET myapp.x = 'own'").await;
    let (_, own_values) = check(&own).await;
    assert_eq!(own_values[2..], values(["", "", "5MB", "own"])[2..]);
    let c = Clients {
        a,
        own,
        plain,
        h1,
        h2,
        own_values,
        plain_values: plain_values.clone(),
    };
    let (last, start) = check(&c.a).await;
    assert_eq!(start[1], "7s", "startup option applied");

    exec(&c.a, "SET search_path = a_schema, \"Quoted Schema\", public").await;
    exec(&c.a, "SET SESSION statement_timeout TO '5s'").await;
    exec(&c.a, "set work_mem = '3MB';").await;
    exec(&c.a, "/* custom */ SET myapp.x = 'it''s mine'").await;
    let mine = values(["a_schema, \"Quoted Schema\", public", "5s", "3MB", "it's mine"]);
    let last = c.moves(last, 4, &mine).await;

    // A failed SET changes nothing.
    assert!(c.a.batch_execute("SET statement_timeout = 'banana'").await.is_err());
    assert!(c.a.batch_execute("SET work_mem = 'lots'").await.is_err());
    let last = c.moves(last, 2, &mine).await;

    // SET LOCAL dies with its transaction; a SET in a transaction rolled back is gone.
    exec(&c.a, "BEGIN").await;
    exec(&c.a, "SET LOCAL work_mem = '9MB'").await;
    assert_eq!(value(&c.a, "SHOW work_mem").await, "9MB");
    exec(&c.a, "COMMIT").await;
    exec(&c.a, "BEGIN").await;
    exec(&c.a, "SET myapp.x = 'rolled back'").await;
    exec(&c.a, "SET work_mem = '10MB'").await;
    exec(&c.a, "ROLLBACK").await;
    let last = c.moves(last, 2, &mine).await;

    // SET ROLE is not a setting pgmux carries: it lasts its own transaction, and the server
    // gets RESET ROLE (RESET ALL leaves the role) before anyone else uses it.
    let holder = hold(&last, &c.h1, &c.h2).await;
    // (The holder keeps the other server: a's transactions all run on the same one.)
    assert_eq!(value(&c.a, "SET ROLE app; SHOW role").await, "app");
    assert_eq!(value(&c.a, "SHOW role").await, "none");
    let (last, _) = check(&c.a).await;
    exec(holder, "COMMIT").await;

    // RESET goes back to the startup value, or to the server's default.
    exec(&c.a, "RESET statement_timeout").await;
    exec(&c.a, "RESET work_mem").await;
    let default_mem = c.plain_values[2].as_str();
    let partly = values(["a_schema, \"Quoted Schema\", public", "7s", default_mem, "it's mine"]);
    let last = c.moves(last, 2, &partly).await;
    exec(&c.a, "SET work_mem TO DEFAULT").await;
    let last = c.moves(last, 1, &partly).await;

    exec(&c.a, "SET work_mem = '6MB'").await;
    exec(&c.a, "RESET ALL").await;
    let (_, reset) = check(&c.a).await;
    assert_eq!(reset, values([c.plain_values[0].as_str(), "7s", default_mem, ""]));
    c.moves(last, 2, &reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_set_still_runs() {
    ensure_database("settrack");
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\ndefault_pool_size = 1\npool_mode = \"statement\"",
        "[users.app]\npassword = \"app\"\n[databases.settrack]\nport = {pg_port}\n",
    );
    let url = px.url("app", "app", "settrack");
    let a = connect(&url).await;
    let b = connect(&url).await;
    // Statement mode tracks too; a value pgmux will not re-apply (E'') still runs, for its own
    // transaction, and is reset (RESET ALL) before the server serves anyone else.
    exec(&a, "SET myapp.y = 'a'").await;
    assert_eq!(value(&a, "SET myapp.z = E'z'; SHOW myapp.z").await, "z");
    assert_eq!(
        value(&b, "SELECT coalesce(current_setting('myapp.y', true), '') || '/' || coalesce(current_setting('myapp.z', true), '')").await,
        "/"
    );
    assert_eq!(value(&a, "SHOW myapp.y").await, "a");
    assert_eq!(
        value(&a, "SELECT coalesce(current_setting('myapp.z', true), '')").await,
        "",
        "an untracked SET is not carried, not even on the same server"
    );
}
