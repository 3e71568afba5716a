//! The per-message work of the hot path: scanning client and server frames in place.
//! Run with `cargo bench --bench framing`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgmux::frontend::track::{scan_client, ServerScan, Tracker};
use pgmux::protocol::startup::parse_startup;
use std::hint::black_box;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// What `pgbench -S -M extended` sends per transaction: Parse, Bind, Describe, Execute, Sync.
fn extended_request() -> Vec<u8> {
    let mut buf = frame(b'P', b"\0SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0\0\0");
    buf.extend(frame(b'B', b"\0\0\0\0\0\x01\0\0\0\x0512345\0\0"));
    buf.extend(frame(b'D', b"P\0"));
    buf.extend(frame(b'E', b"\0\0\0\0\0"));
    buf.extend(frame(b'S', b""));
    buf
}

/// The server's answer: ParseComplete, BindComplete, RowDescription, DataRow,
/// CommandComplete, ReadyForQuery.
fn extended_response() -> Vec<u8> {
    let mut buf = frame(b'1', b"");
    buf.extend(frame(b'2', b""));
    buf.extend(frame(
        b'T',
        b"\0\x01abalance\0\0\0\x40\x01\0\x03\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    ));
    buf.extend(frame(b'D', b"\0\x01\0\0\0\x041234"));
    buf.extend(frame(b'C', b"SELECT 1\0"));
    buf.extend(frame(b'Z', b"I"));
    buf
}

fn bench(c: &mut Criterion) {
    let request = extended_request();
    let response = extended_response();
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Elements(1));
    group.bench_function("scan_client_extended_tx", |b| {
        b.iter(|| {
            let mut t = Tracker::default();
            black_box(scan_client(black_box(&request), 0, 1 << 28, &mut t).ok())
        })
    });
    group.bench_function("scan_server_extended_tx", |b| {
        b.iter(|| {
            let mut t = Tracker {
                pending: 1,
                ..Tracker::default()
            };
            let mut scan = ServerScan::default();
            black_box(scan.scan(black_box(&response), 0, &mut t, true, false, |_, _| {}).ok())
        })
    });
    let mut startup = Vec::new();
    let body = b"user\0app\0database\0bench\0application_name\0pgbench\0client_encoding\0UTF8\0\0";
    startup.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    startup.extend_from_slice(body);
    group.bench_function("parse_startup", |b| {
        b.iter(|| black_box(parse_startup(black_box(&startup)).ok()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
