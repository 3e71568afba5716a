//! Real client drivers through pgmux in transaction mode, with a pool of `POOL_SIZE` servers for
//! more clients than that: tokio-postgres (here), psycopg 3, asyncpg, node-postgres and pgjdbc
//! (programs in tests/drivers/, run as subprocesses). Each uses server-side prepared statements
//! (the same name on different connections with different SQL where the driver picks names),
//! a rolled-back transaction and an error inside a transaction, and checks every result; this
//! file then checks the rows they left.
//!
//! The runtimes come from `scripts/drivers-setup.sh` (run by scripts/test.sh) into
//! target/drivers/. Java is skipped when `java` is absent.
//!
//! `PGMUX_DRIVERS_TARGET=session` or `=direct` (pgmux in session mode, or PostgreSQL itself)
//! tells a driver program's own bug from a pgmux one; the default is transaction mode.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

const POOL_SIZE: i64 = 5;
/// Each program takes a few seconds; this bounds a hang on a loaded machine.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Target {
    Transaction,
    Session,
    Direct,
}

fn target() -> Target {
    match std::env::var("PGMUX_DRIVERS_TARGET").as_deref() {
        Err(_) | Ok("transaction") => Target::Transaction,
        Ok("session") => Target::Session,
        Ok("direct") => Target::Direct,
        Ok(other) => panic!("PGMUX_DRIVERS_TARGET={other}: want transaction, session or direct"),
    }
}

/// Where a driver connects: a fresh database `db` with an empty `drv` table, behind a pgmux
/// of its own (or PostgreSQL itself for `Target::Direct`).
struct Setup {
    target: Target,
    db: String,
    port: u16,
    _pgmux: Option<Pgmux>,
}

fn setup(db: &str) -> Setup {
    let target = target();
    ensure_database(db);
    cluster().psql(
        db,
        "DROP TABLE IF EXISTS drv; \
         CREATE TABLE drv(client int NOT NULL, seq int NOT NULL, v text NOT NULL, PRIMARY KEY (client, seq)); \
         ALTER TABLE drv OWNER TO app",
    );
    let (port, pgmux) = match target {
        Target::Direct => (cluster().port, None),
        Target::Transaction | Target::Session => {
            let mode = if target == Target::Session {
                "session"
            } else {
                "transaction"
            };
            let px = Pgmux::start(
                &format!(
                    "auth_type = \"scram-sha-256\"\npool_mode = \"{mode}\"\ndefault_pool_size = {POOL_SIZE}\n\
                     max_client_conn = 200\nquery_wait_timeout = 30"
                ),
                &format!("[users.app]\npassword = \"app\"\n[databases.{db}]\nport = {{pg_port}}\n"),
            );
            (px.port, Some(px))
        }
    };
    eprintln!("[drivers] {db}: {target:?} on port {port}");
    Setup {
        target,
        db: db.to_owned(),
        port,
        _pgmux: pgmux,
    }
}

impl Setup {
    /// libpq-style environment, read by every driver program.
    fn env(&self, clients: usize, rounds: usize) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", "127.0.0.1".into()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", "app".into()),
            ("PGPASSWORD", "app".into()),
            ("PGDATABASE", self.db.clone()),
            ("PGSSLMODE", "disable".into()),
            ("DRIVER_CLIENTS", clients.to_string()),
            ("DRIVER_ROUNDS", rounds.to_string()),
        ]
    }

    /// Runs a driver program to completion and asserts it exited 0, printing its output.
    fn run(&self, program: &Path, args: &[&str], env: &[(&'static str, String)]) {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let t0 = Instant::now();
        let (code, out, err) = run_cmd(program.to_str().unwrap(), args, &env, DRIVER_TIMEOUT);
        let report = format!(
            "{} {} ({:?}, {:?})\n--- stdout ---\n{out}\n--- stderr (first 80 lines) ---\n{}",
            program.display(),
            args.join(" "),
            self.target,
            t0.elapsed(),
            err.lines().take(80).collect::<Vec<_>>().join("\n")
        );
        assert_eq!(code, 0, "driver program failed with exit code {code}:\n{report}");
        eprintln!("{report}");
    }

    /// Every client committed exactly its rounds (seq 0..rounds, v = c<client>r<seq>), nothing
    /// of the rolled-back or failed transactions; and pgmux used at most its pool.
    fn check_rows(&self, clients: usize, rounds: usize) {
        let got = cluster().psql(
            &self.db,
            "SELECT count(*) || ' ' || count(DISTINCT client) || ' ' || coalesce(max(seq), -1) || ' ' \
             || coalesce(bool_and(v = 'c' || client || 'r' || seq), true) FROM drv",
        );
        let want = format!("{} {clients} {} true", clients * rounds, rounds - 1);
        assert_eq!(
            got, want,
            "rows in {}.drv (count, clients, max seq, all values right)",
            self.db
        );
        if self.target != Target::Direct {
            let servers = cluster().backend_count(&self.db, "app");
            assert!(
                (1..=POOL_SIZE).contains(&servers),
                "{servers} server connections on {} for a pool of {POOL_SIZE}",
                self.db
            );
        }
    }
}

/// A file under target/drivers/ made by scripts/drivers-setup.sh; panics saying so if missing.
fn installed(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/drivers").join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/drivers-setup.sh (scripts/test.sh does) to install the drivers",
        path.display()
    );
    path
}

fn program(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/drivers")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn psycopg_prepared_and_pipeline() {
    let python = installed("venv/bin/python");
    let s = setup("drv_psycopg");
    let (clients, rounds) = (20, 20);
    s.run(&python, &[&program("psycopg_test.py")], &s.env(clients, rounds));
    s.check_rows(clients, rounds);
}

#[test]
fn asyncpg_statement_cache_50_tasks() {
    let python = installed("venv/bin/python");
    let s = setup("drv_asyncpg");
    let (clients, rounds) = (50, 10);
    s.run(&python, &[&program("asyncpg_test.py")], &s.env(clients, rounds));
    s.check_rows(clients, rounds);
}

#[test]
fn psycopg_notifies_and_asyncpg_add_listener() {
    let python = installed("venv/bin/python");
    let s = setup("drv_notify");
    s.run(&python, &[&program("notify_test.py")], &s.env(1, 1));
}

/// `program --version` runs; else panics saying to run the setup script.
fn on_path(program: &str) -> PathBuf {
    let ok = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{program}` not found: run scripts/drivers-setup.sh (scripts/test.sh does) to install the drivers"
    );
    PathBuf::from(program)
}

#[test]
fn node_pg_named_queries() {
    let node = on_path("node");
    let modules = installed("node/node_modules/pg")
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let s = setup("drv_node");
    let (clients, rounds) = (20, 20);
    let mut env = s.env(clients, rounds);
    env.push(("NODE_PATH", modules));
    s.run(&node, &[&program("pg_test.js")], &env);
    s.check_rows(clients, rounds);
}

const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[test]
fn pgjdbc_prepare_threshold_1() {
    // Java is optional: a machine without it skips this one (the setup script installs it as root).
    if std::process::Command::new("java").arg("-version").output().is_err() {
        eprintln!(
            "SKIPPED pgjdbc_prepare_threshold_1: `java` not found (scripts/drivers-setup.sh installs it as root)"
        );
        return;
    }
    assert!(
        Path::new(JDBC_JAR).exists(),
        "{JDBC_JAR} is missing: run scripts/drivers-setup.sh (apt-get install libpostgresql-jdbc-java)"
    );
    let s = setup("drv_jdbc");
    let (clients, rounds) = (20, 20);
    // The source launcher compiles JdbcTest.java in memory: nothing to keep up to date.
    s.run(
        Path::new("java"),
        &["-cp", JDBC_JAR, &program("JdbcTest.java")],
        &s.env(clients, rounds),
    );
    s.check_rows(clients, rounds);
}

/// A server error's SQLSTATE and message (tokio-postgres displays only "db error").
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Checks the client's row count and sum of `seq`, through `c`: the client or its transaction.
async fn count_is(
    c: &impl tokio_postgres::GenericClient,
    count: &tokio_postgres::Statement,
    i: i32,
    want: (i32, i32),
    what: &str,
) -> Result<(), String> {
    let row = c
        .query_one(count, &[&i])
        .await
        .map_err(|e| format!("{what}: count: {}", error_text(&e)))?;
    let got = (row.get::<_, i32>(0), row.get::<_, i32>(1));
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// One tokio-postgres client's rounds, the same workload as the driver programs. tokio-postgres
/// names its statements s0, s1, ... across the process, so names never repeat here.
async fn tokio_postgres_client(url: &str, i: i32, rounds: i32) -> Result<(), String> {
    use futures_util::future::try_join3;
    let db = |what: &str| {
        let what = what.to_owned();
        move |e: tokio_postgres::Error| format!("{what}: {}", error_text(&e))
    };
    let mut client = connect(url).await;
    let even = i % 2 == 0;
    let calc_sql = if even {
        format!("SELECT $1::int * 1000 + {i}")
    } else {
        format!("SELECT $1::text || ':{i}'")
    };
    let calc = client.prepare(&calc_sql).await.map_err(db("prepare calc"))?;
    let insert = client
        .prepare("INSERT INTO drv (client, seq, v) VALUES ($1, $2, $3)")
        .await
        .map_err(db("prepare insert"))?;
    let count = client
        .prepare("SELECT count(*)::int, coalesce(sum(seq), 0)::int FROM drv WHERE client = $1")
        .await
        .map_err(db("prepare count"))?;
    let divide = client
        .prepare("SELECT 10 / $1::int")
        .await
        .map_err(db("prepare divide"))?;
    // Both result types as text, so one comparison covers odd and even clients.
    let calc_want = |n: i32| {
        if even {
            (n * 1000 + i).to_string()
        } else {
            format!("{n}:{i}")
        }
    };
    let calc_get = |row: tokio_postgres::Row| -> String {
        if even {
            row.get::<_, i32>(0).to_string()
        } else {
            row.get(0)
        }
    };
    let counted = |row: tokio_postgres::Row| (row.get::<_, i32>(0), row.get::<_, i32>(1));
    let check = |what: String, got: String, want: String| {
        if got == want {
            Ok(())
        } else {
            Err(format!("{what}: got {got}, want {want}"))
        }
    };
    for r in 0..rounds {
        let tag = format!("client {i} round {r}");
        let text_r = r.to_string();
        let arg: &(dyn tokio_postgres::types::ToSql + Sync) = if even { &r } else { &text_r };
        let row = client
            .query_one(&calc, &[arg])
            .await
            .map_err(db(&format!("{tag}: calc")))?;
        check(format!("{tag}: calc"), calc_get(row), calc_want(r))?;
        let v = format!("c{i}r{r}");
        client
            .execute(&insert, &[&i, &r, &v])
            .await
            .map_err(db(&format!("{tag}: insert")))?;
        let want = (r + 1, r * (r + 1) / 2);

        // Three statements pipelined: each Bind/Execute/Sync sent before the first answer.
        let (c1, c2, c3) = try_join3(
            client.query_one(&calc, &[arg]),
            client.query_one(&count, &[&i]),
            client.query_one(&divide, &[&5i32]),
        )
        .await
        .map_err(db(&format!("{tag}: pipelined")))?;
        check(format!("{tag}: pipelined calc"), calc_get(c1), calc_want(r))?;
        check(
            format!("{tag}: pipelined count"),
            format!("{:?}", counted(c2)),
            format!("{want:?}"),
        )?;
        check(
            format!("{tag}: pipelined divide"),
            c3.get::<_, i32>(0).to_string(),
            "2".into(),
        )?;

        if r % 4 == 1 {
            let tx = client.transaction().await.map_err(db(&format!("{tag}: begin")))?;
            tx.execute(&insert, &[&i, &(1000 + r), &"rolled back"])
                .await
                .map_err(db(&format!("{tag}: insert in transaction")))?;
            let inside = (want.0 + 1, want.1 + 1000 + r);
            count_is(&tx, &count, i, inside, &format!("{tag}: count inside the transaction")).await?;
            tx.rollback().await.map_err(db(&format!("{tag}: rollback")))?;
            count_is(&client, &count, i, want, &format!("{tag}: count after rollback")).await?;
        }

        if r % 4 == 3 {
            let tx = client.transaction().await.map_err(db(&format!("{tag}: begin")))?;
            tx.execute(&insert, &[&i, &(2000 + r), &"lost"])
                .await
                .map_err(db(&format!("{tag}: insert in transaction")))?;
            for (what, res, want_state) in [
                ("10 / 0", tx.query_one(&divide, &[&0i32]).await, "22012"),
                ("after the error", tx.query_one(&calc, &[arg]).await, "25P02"),
            ] {
                match res {
                    Err(e) if sqlstate(&e).as_deref() == Some(want_state) => {}
                    Err(e) => return Err(format!("{tag}: {what}: want {want_state}, got {}", error_text(&e))),
                    Ok(_) => return Err(format!("{tag}: {what}: want {want_state}, got a row")),
                }
            }
            tx.rollback().await.map_err(db(&format!("{tag}: rollback")))?;
            let row = client
                .query_one(&calc, &[arg])
                .await
                .map_err(db(&format!("{tag}: calc")))?;
            check(
                format!("{tag}: calc after the failed transaction"),
                calc_get(row),
                calc_want(r),
            )?;
            count_is(
                &client,
                &count,
                i,
                want,
                &format!("{tag}: count after the failed transaction"),
            )
            .await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_statements() {
    let s = setup("drv_tokio_postgres");
    let (clients, rounds) = (20, 20);
    let url = format!(
        "host=127.0.0.1 port={} user=app password=app dbname={} sslmode=disable",
        s.port, s.db
    );
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { tokio_postgres_client(&url, i, rounds).await })
        })
        .collect();
    let run = futures_util::future::join_all(tasks);
    let results = tokio::time::timeout(DRIVER_TIMEOUT, run).await.unwrap_or_else(|_| {
        panic!(
            "tokio-postgres clients not done after {DRIVER_TIMEOUT:?} ({:?})",
            s.target
        )
    });
    let failures: Vec<String> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, res)| match res {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("client {i}: {e}")),
            Err(e) => Some(format!("client {i}: task: {e}")),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {clients} tokio-postgres clients failed ({:?}):\n  {}",
        failures.len(),
        s.target,
        failures.join("\n  ")
    );
    s.check_rows(clients as usize, rounds as usize);
}
