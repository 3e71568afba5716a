//! The lag monitor follows a reload: new credentials for the login it checks the servers with
//! reach the running monitor (issue 22: it kept the first primary address and password while
//! the replica list stayed the same). A binary of its own: it changes a role's password.

mod support;

use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_password_reaches_the_lag_monitor() {
    let (primary, replica) = cluster_with_replica();
    primary.psql(
        "postgres",
        "DROP ROLE IF EXISTS monuser; CREATE ROLE monuser LOGIN PASSWORD 'one'",
    );
    routed_database("rmon");
    primary.psql("rmon", "GRANT SELECT ON items TO monuser");
    let pooler = "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\n";
    let rest = |password: &str| {
        format!(
            "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n\
             [databases.rmon]\nport = {{pg_port}}\nreplicas = [\"127.0.0.1:{{replica_port}}\"]\n\
             read_write_split = true\nlag_check_interval = 0.2\nuser = \"monuser\"\npassword = \"{password}\"\n"
        )
    };
    let px = Pgmux::start_with(primary, Some(replica.port), pooler, &rest("one"));
    let console = console(&px).await;
    let reader = app_client(&px, "rmon").await;
    wait_replica_ok(&console, &reader, "rmon").await;
    // SHOW POOLS and SHOW DATABASES say how reads are spread (issue 22: always NULL before).
    for command in ["SHOW POOLS", "SHOW DATABASES"] {
        let rows = console.simple_query(command).await.unwrap();
        let balance = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("rmon") => {
                Some(r.get("load_balance_hosts").map(str::to_owned))
            }
            _ => None,
        });
        assert_eq!(balance, Some(Some("least_outstanding".to_owned())), "{command}");
    }

    // The password changes on the server and in the file; the file is reloaded.
    primary.psql("postgres", "ALTER ROLE monuser PASSWORD 'two'");
    px.write_config(pooler, &rest("two"));
    px.signal("HUP");
    assert!(px.wait_for_log("configuration reloaded", Duration::from_secs(10)));
    // Every session of monuser ends (the monitor's too): it must log in again, with "two".
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'monuser'";
    primary.psql("postgres", kill);
    replica.psql("postgres", kill);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reader = app_client(&px, "rmon").await;
    let row = wait_replica_ok(&console, &reader, "rmon").await;
    assert_eq!(row["state"], "ok", "{row:?}");
    // And it stays so: the monitor's checks pass with the new password.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rows = show_replicas(&console, "rmon").await;
    assert_eq!(rows[0]["state"], "ok", "{rows:?}");
}
