//! min_pool_size across a server restart. In a binary of its own: the restart drops every
//! connection to the cluster, which other tests of the same binary would see.

mod support;

use std::time::{Duration, Instant};
use support::*;

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_is_restored_after_a_server_restart() {
    let c = cluster();
    c.psql("postgres", "CREATE DATABASE restartdb OWNER app");
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nmin_pool_size = 2",
        "[users.app]\npassword = \"app\"\n[databases.restartdb]\nport = {pg_port}\n\
         [breaker]\nfailure_threshold = 2\nopen_timeout = 0.5\n",
    );
    // The janitor fills a pool once it exists, i.e. after the first login.
    let url = px.url("app", "app", "restartdb");
    let client = connect(&url).await;
    assert_eq!(value(&client, "SELECT 1").await, "1");
    wait_until("min_pool_size after the first login", || {
        c.backend_count("restartdb", "app") == 2
    });

    // Down for a second: after two failures the janitor's attempts are the breaker's probes,
    // spaced by open_timeout.
    c.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    c.start();
    let downtime = down.elapsed();
    wait_until("min_pool_size after the restart", || {
        c.backend_count("restartdb", "app") == 2
    });
    let failures = px.log().matches("server login failed").count();
    let most = 2 + (downtime.as_secs_f64() / 0.45).ceil() as usize;
    assert!(
        (1..=most).contains(&failures),
        "{failures} failed logins in {downtime:?} with failure_threshold = 2, open_timeout = 0.5"
    );

    // The client that was connected throughout, and a new one, work again.
    assert_eq!(value(&client, "SELECT 'back'").await, "back");
    let fresh = connect(&url).await;
    assert_eq!(value(&fresh, "SELECT 'new'").await, "new");
    assert_eq!(c.backend_count("restartdb", "app"), 2);
}
