//! A well-behaved client that keeps running transactions while a test throws bad input at
//! pgmux: every query must succeed, none may wait longer than `Healthy::BOUND`.

use super::{connect, CONNECT_TIMEOUT};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

/// How long any one reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(f)
}

/// First column of the first row of a simple query, or what went wrong (within REPLY_TIMEOUT).
pub async fn try_value(client: &tokio_postgres::Client, sql: &str) -> Result<String, String> {
    let fut = client.simple_query(sql);
    let rows = match tokio::time::timeout(REPLY_TIMEOUT, fut).await {
        Err(_) => return Err(format!("{sql}: no answer within {REPLY_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("{sql}: {e} [{e:?}]")),
        Ok(Ok(rows)) => rows,
    };
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| {
            // What came instead says whose answer it was (a stray one points at a server
            // handed over too early).
            let got: Vec<String> = rows
                .iter()
                .map(|m| match m {
                    SimpleQueryMessage::CommandComplete(n) => format!("CommandComplete({n})"),
                    SimpleQueryMessage::RowDescription(_) => "RowDescription".into(),
                    _ => "another message".into(),
                })
                .collect();
            format!("{sql}: no row, only {got:?}")
        })
}

/// A tokio-postgres client on its own thread running `SELECT 1` every 10 ms until `finish`.
pub struct Healthy {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    /// The longest a query took, in µs.
    slowest: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Healthy {
    /// `url`: where the client connects (tokio-postgres syntax).
    pub fn start_at(url: String) -> Healthy {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let slowest = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, ok, slowest) = (stop.clone(), ok.clone(), slowest.clone());
            std::thread::spawn(move || {
                block_on(async move {
                    let client = connect(&url).await;
                    while !stop.load(Ordering::Relaxed) {
                        let n = ok.load(Ordering::Relaxed);
                        let t0 = Instant::now();
                        match try_value(&client, "SELECT 1").await {
                            Ok(v) if v == "1" => {}
                            Ok(v) => return Err(format!("SELECT 1 gave {v:?} after {n} good queries")),
                            Err(e) => return Err(format!("failed after {n} good queries: {e}")),
                        }
                        slowest.fetch_max(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                        ok.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(())
                })
            })
        };
        let me = Healthy {
            stop,
            ok,
            slowest,
            thread: Some(thread),
        };
        let t0 = Instant::now();
        while me.ok.load(Ordering::Relaxed) == 0 {
            let finished = me.thread.as_ref().is_some_and(|t| t.is_finished());
            assert!(
                !finished && t0.elapsed() < CONNECT_TIMEOUT,
                "the healthy client never got going"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        me
    }

    /// Queries that succeeded so far.
    pub fn count(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// The longest any query took so far.
    pub fn slowest(&self) -> Duration {
        Duration::from_micros(self.slowest.load(Ordering::Relaxed))
    }

    /// Stops the loop; panics unless every query succeeded. Returns how many ran.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => panic!("the healthy client was disturbed: {e}"),
            _ => panic!("the healthy client's thread panicked"),
        }
        let n = self.ok.load(Ordering::Relaxed);
        eprintln!(
            "healthy client: {n} SELECT 1, all good, the slowest {:?}",
            self.slowest()
        );
        n
    }
}

impl Drop for Healthy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
