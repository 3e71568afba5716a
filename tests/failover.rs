//! Following a failover (a binary of its own: it stops the primary and promotes the replica).
//! pgmux never promotes; once the primary cannot be read as one and the listed replica left
//! recovery, writes go to that replica; when the old primary comes back, still a primary on the
//! lower timeline, it is fenced off from writes.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// The server port a query through pgmux ran on, after an insert of `id` (a write).
async fn write_through(url: &str, id: i32) -> Result<String, String> {
    let client = try_connect(url).await.map_err(|e| e.to_string())?;
    let sql = format!("INSERT INTO fo VALUES ({id}); SELECT current_setting('port')");
    let work = client.simple_query(&sql);
    let messages = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    messages
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| "no row".to_string())
}

fn pg_ctl(data: &std::path::Path, args: &str) {
    let cmd = format!("{PG_BIN}/pg_ctl {args} -D {} -w", data.display());
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--", "sh", "-c", &cmd])
        .status()
        .expect("runuser");
    assert!(status.success(), "{cmd}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_promoted_replica_and_the_old_primary_is_fenced() {
    let (primary, replica) = cluster_with_replica();
    primary.psql("bench", "CREATE TABLE fo(id int); GRANT ALL ON fo TO app");
    let px = Pgmux::start_with(
        primary,
        Some(replica.port),
        "auth_type = \"scram-sha-256\"\nserver_login_retry = 0\nserver_connect_timeout = 2",
        "[users.app]\npassword = \"app\"\n[breaker]\nfailure_threshold = 2\nopen_timeout = 0.5\n\
         [databases.bench]\nport = {pg_port}\nreplicas = [\"127.0.0.1:{replica_port}\"]\nlag_check_interval = 0.1\n",
    );
    let url = px.url("app", "app", "bench");
    let (primary_port, replica_port) = (primary.port.to_string(), replica.port.to_string());
    assert_eq!(write_through(&url, 1).await.unwrap(), primary_port);

    // The primary goes away; the replica is promoted (by the operator, not by pgmux).
    primary.stop();
    pg_ctl(&replica.data, "promote");
    let t0 = Instant::now();
    let mut id = 100;
    let port = loop {
        id += 1;
        match write_through(&url, id).await {
            Ok(port) => break port,
            Err(e) if t0.elapsed() < Duration::from_secs(15) => {
                println!("write during the failover: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("writes did not resume on the promoted replica: {e}"),
        }
    };
    println!("writes resumed {:?} after the promotion", t0.elapsed());
    assert_eq!(port, replica_port, "writes go to the promoted replica");

    // The old primary comes back, still a primary, on the lower timeline: fenced.
    primary.start();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for n in 0..5 {
        let port = write_through(&url, 1000 + n).await.unwrap();
        assert_eq!(port, replica_port, "a write went to the fenced old primary");
    }
    assert_eq!(primary.psql("bench", "SELECT count(*) FROM fo WHERE id >= 100"), "0");
    assert_eq!(replica.psql("bench", "SELECT count(*) FROM fo WHERE id >= 1000"), "5");
    let log = px.log();
    assert!(log.contains("FAILOVER FOLLOWED"), "the failover is logged");
    assert!(log.contains("SPLIT BRAIN"), "the split brain is logged");
}
