//! Read-only classification of a simple Query's text, run for every Query when the
//! read/write split is on. Run with `cargo bench --bench classify`.

use criterion::{criterion_group, criterion_main, Criterion};
use pgmux::route::{classify, DenyList};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let deny = DenyList::default();
    let long = format!(
        "SELECT {} FROM accounts a JOIN branches b ON b.bid = a.bid WHERE a.aid = $1 \
         AND b.name <> 'it''s' AND a.note = $$ into $$ AND a.seq = nextval('s')",
        (0..40).map(|i| format!("a.col{i}")).collect::<Vec<_>>().join(", ")
    );
    let cases: [(&str, &[u8]); 4] = [
        ("short_select", b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;"),
        (
            "select_with_comments",
            b"/* app=web,route=/users */ -- fetch\nSELECT u.id, u.name /* cols */ FROM users u \
              WHERE u.id = $1 -- by id\n",
        ),
        ("long_select_deny_near_end", long.as_bytes()),
        (
            "insert",
            b"INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 2, 3, 4)",
        ),
    ];
    for (name, sql) in cases {
        c.bench_function(&format!("classify/{name}"), |b| {
            b.iter(|| classify(black_box(sql), black_box(&deny)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
