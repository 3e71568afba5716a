//! Read/write split when the replica goes away and when it is promoted. Its own test binary
//! (its own primary and replica), and one test function: the steps change the replica for
//! good (it ends promoted), so they run in order.

mod support;

use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_stopped_then_started_then_promoted() {
    let (primary, replica) = cluster_with_replica();
    let db = "route_failover";
    routed_database(db);
    let px = routing_pgmux(primary, replica, db, "lag_check_interval = 0.1");
    let admin = console(&px).await;
    let reader = app_client(&px, db).await;
    wait_replica_ok(&admin, &reader, db).await;
    wait_reads_on_replica(&reader, true, Duration::from_secs(5)).await;

    // 4. The replica stops (immediate): reads keep succeeding, on the primary.
    replica.stop_immediate();
    let t0 = Instant::now();
    let mut on_replica_count = 0;
    for i in 0..50 {
        let res = within("read", reader.simple_query("SELECT pg_is_in_recovery()")).await;
        match res {
            Ok(msgs) => {
                let v = msgs.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                });
                // Only the primary is up: "t" cannot happen, but count it if it does.
                if v.as_deref() == Some("t") {
                    on_replica_count += 1;
                }
            }
            Err(e) => panic!("read {i} after the replica stopped failed: {e} [{e:?}]"),
        }
    }
    assert_eq!(on_replica_count, 0);
    eprintln!("50 reads with the replica stopped in {:?}", t0.elapsed());
    let row = wait_replica(&admin, &reader, db, "down", Duration::from_secs(2), |r| {
        r["state"] == "down"
    })
    .await;
    eprintln!("SHOW REPLICAS with the replica stopped: {row:?}");
    // A fresh client too (new connection, nothing cached).
    let fresh = app_client(&px, db).await;
    assert!(!on_replica(&fresh).await);

    replica.start();
    let took = wait_reads_on_replica(&reader, true, Duration::from_secs(5)).await;
    eprintln!("reads back on the replica {took:?} after its start");
    wait_replica_ok(&admin, &reader, db).await;

    // 5. The replica is promoted: excluded (role primary), reads go to the real primary.
    replica.promote();
    let t0 = Instant::now();
    let row = wait_replica(&admin, &reader, db, "promoted", Duration::from_secs(2), |r| {
        r["role"] == "primary" && r["state"] == "excluded"
    })
    .await;
    eprintln!("promotion seen in {:?}: {row:?}", t0.elapsed());
    for i in 0..20 {
        assert!(!on_replica(&reader).await, "read {i} after the promotion");
        // The promoted server answers false too: tell the servers apart by their port.
        let port = first(&reader, "SELECT inet_server_port()").await;
        assert_eq!(port, primary.port.to_string(), "read {i} went to the promoted replica");
    }
    let fresh = app_client(&px, db).await;
    let port = first(&fresh, "SELECT inet_server_port()").await;
    assert_eq!(port, primary.port.to_string(), "a fresh client's read");
}
