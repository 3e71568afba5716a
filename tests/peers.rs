//! Peering (issue 18): two pgmux processes, peer_id 1 and 2, each in the other's [peers]. A
//! CancelRequest that reaches the process that did not hand out the key is forwarded to the
//! one that did, once; forged keys cancel nothing, and a forwarded request is never forwarded
//! again, so peers whose [peers] disagree cannot bounce it between them.

mod support;

use std::time::Duration;
use support::*;

/// SHOW PEER_POOLS of `px`: cancel requests forwarded to each peer since start.
fn forwarded(px: &Pgmux) -> Vec<(i64, i64)> {
    let rows = console_rows(px, "SHOW PEER_POOLS");
    rows.iter()
        .map(|r| (cell(r, "peer_id"), cell(r, "forwarded")))
        .collect()
}

#[test]
fn a_query_is_cancelled_by_a_cancel_request_sent_to_the_other_peer() {
    let f = fleet(2, "peers", |_, _| String::new());
    for (db, mode) in [("peers_tx", "transaction"), ("peers_session", "session")] {
        let mut c = Raw::login(f[0].port, db);
        assert_eq!(peer_of(c.secret), 1, "{mode}: the key names peer 1: {:#x}", c.secret);
        assert_eq!(c.secret & FORWARDED, 0, "{mode}");
        match mode {
            "transaction" => assert!(c.pid > 4_194_304, "a pgmux id: {}", c.pid),
            _ => assert!(c.pid <= 4_194_304, "the server's pid: {}", c.pid),
        }
        let sql = format!("SELECT pg_sleep(30) -- {mode}");
        c.send(&sql);
        wait_running(&sql, 1);
        send_cancel(f[1].port, c.pid, c.secret);
        assert_eq!(c.outcome().map(|_| ()), Err("57014".to_string()), "{mode}");
        // The client goes on, through the process it is connected to.
        let rows = c.query("SELECT 7 AS n").expect("the client goes on");
        assert_eq!(rows[0]["n"].as_deref(), Some("7"));
    }
    // Process 2 forwarded both to peer 1; process 1 forwarded nothing.
    assert_eq!(forwarded(&f[1]), vec![(1, 2)]);
    assert_eq!(forwarded(&f[0]), vec![(2, 0)]);
    // And the other way: a client of process 2 cancelled through process 1.
    let mut c = Raw::login(f[1].port, "peers_tx");
    assert_eq!(peer_of(c.secret), 2);
    let sql = "SELECT pg_sleep(30) -- the other way";
    c.send(sql);
    wait_running(sql, 1);
    send_cancel(f[0].port, c.pid, c.secret);
    assert_eq!(c.outcome().map(|_| ()), Err("57014".to_string()));
    assert_eq!(forwarded(&f[0]), vec![(2, 1)]);
}

#[test]
fn forged_keys_cancel_nothing_and_a_forwarded_request_is_not_forwarded_again() {
    // Both processes also list a peer 3, each at the other's port: [peers] tables that
    // disagree, where a cancel for peer 3 would go round for ever if it were forwarded again.
    let f = fleet(2, "peersloop", |id, ports| {
        let other = ports[2 - id];
        format!("[peers.3]\nhost = \"127.0.0.1\"\nport = {other}\npool_size = 2\n")
    });
    let peers = console_rows(&f[0], "SHOW PEERS");
    let listed: Vec<(i64, i64, i64)> = peers
        .iter()
        .map(|r| (cell(r, "peer_id"), cell(r, "port"), cell(r, "pool_size")))
        .collect();
    let (p1, p2) = (i64::from(f[0].port), i64::from(f[1].port));
    assert_eq!(listed, vec![(1, p1, 6), (2, p2, 6), (3, p2, 2)]);
    assert!(peers.iter().all(|r| r["host"].as_deref() == Some("127.0.0.1")));

    let mut c = Raw::login(f[0].port, "peersloop_tx");
    let sql = "SELECT pg_sleep(30) -- forged";
    c.send(sql);
    wait_running(sql, 1);
    let random = c.secret & (FORWARDED - 1);
    // Another key of peer 1, through process 2 (forwarded, then found by nobody) and directly.
    send_cancel(f[1].port, c.pid, c.secret ^ 1);
    send_cancel(f[0].port, c.pid, c.secret ^ 0x10);
    // The right secret with another pid.
    send_cancel(f[1].port, c.pid ^ 0x100, c.secret);
    // A peer nobody lists.
    send_cancel(f[1].port, c.pid, (9 << 16) | random);
    // The right key marked forwarded, sent to process 2: it names peer 1, but a forwarded
    // request is not forwarded again.
    send_cancel(f[1].port, c.pid, c.secret | FORWARDED);
    // Peer 3: each process sends it to the other, which drops it.
    send_cancel(f[0].port, c.pid, (3 << 16) | random);
    send_cancel(f[1].port, c.pid, (3 << 16) | random);
    std::thread::sleep(Duration::from_millis(300));
    let still = cluster().psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = '{sql}'"),
    );
    assert_eq!(still.trim(), "1", "a forged key cancelled the query");
    // Each peer-3 request was forwarded once, by the process it was sent to; process 2 also
    // forwarded the two keys naming peer 1.
    assert_eq!(forwarded(&f[0]), vec![(2, 0), (3, 1)]);
    assert_eq!(forwarded(&f[1]), vec![(1, 2), (3, 1)]);
    // Both still serve, and the right key still works.
    send_cancel(f[1].port, c.pid, c.secret);
    assert_eq!(c.outcome().map(|_| ()), Err("57014".to_string()));
    let lists = console_rows(&f[1], "SHOW LISTS");
    let count = |name: &str| {
        lists
            .iter()
            .find(|r| r["list"].as_deref() == Some(name))
            .map(|r| cell(r, "items"))
    };
    assert_eq!((count("peers"), count("peer_pools")), (Some(3), Some(2)));
}
