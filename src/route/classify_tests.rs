use super::*;
use proptest::prelude::*;
use Target::{Primary as P, Replica as R};

fn c(sql: &str) -> Target {
    classify(sql.as_bytes(), &DenyList::default())
}

#[test]
fn a_number_then_a_non_ascii_identifier_opens_no_dollar_quote() {
    // The classify fuzz target's second finding, cut down: PostgreSQL reads 1, an identifier
    // `\xff$$`, `;`, and a statement starting with the identifier `\xff`, not a read.
    let sql = b"SELECT 1\xff$$ ; \xff x; SELECT $$";
    assert_eq!(classify(sql, &DenyList::default()), P);
}

#[test]
fn statements() {
    let table = [
        // First keyword.
        ("SELECT 1", R),
        ("select * from t where a = 1;", R),
        ("  \n\tSeLeCt 1", R),
        ("VALUES (1), (2)", R),
        ("TABLE t", R),
        ("SHOW search_path", R),
        ("(SELECT 1) UNION (SELECT 2)", R),
        ("WITH x AS (SELECT 1) SELECT * FROM x", R),
        ("INSERT INTO t VALUES (1)", P),
        ("update t set a = 1", P),
        ("DELETE FROM t", P),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", P),
        ("CREATE TABLE t (a int)", P),
        ("COPY t TO STDOUT", P),
        ("CALL p()", P),
        ("SET x = 1", P),
        ("selectx 1", P),
        ("", P),
        (";", P),
        ("-- only a comment", P),
        ("'select'", P),
        // Comments.
        ("-- hello\nSELECT 1", R),
        ("/* a /* nested */ comment */ SELECT 1", R),
        ("/* x */ -- y\n /* z */ select 1 -- into t", R),
        ("SELECT 1 /* FOR UPDATE */", R),
        ("SELECT 1 /* a /* b */ FOR UPDATE */", R),
        ("SELECT 1 /* unclosed", R),
        // A number ends before `$` (the classify fuzz target's finding): here `$$$$` is an
        // empty dollar quote and INTO a keyword, not part of a word `4$$$$into`.
        ("select 4$$$$into 2$$", P),
        ("select 4$$$$ into t", P),
        ("select 4$$ into $$", R),
        ("/* unclosed SELECT 1", P),
        ("SELECT 1 -- ; DELETE FROM t", R),
        ("SELECT 1 --\n; DELETE FROM t", P),
        // Strings.
        ("SELECT 'into'", R),
        ("SELECT 'it''s into'", R),
        ("SELECT 'a'';DELETE FROM t;--'", R),
        ("SELECT E'a\\' into b'", R),
        ("SELECT e'\\\\' , 'x'", R),
        ("SELECT E'\\'' FOR UPDATE", P),
        ("SELECT 'a\\' FROM t", P),
        ("SELECT 'unclosed", P),
        // Dollar quotes.
        ("SELECT $$ into ; delete $$", R),
        ("SELECT $fn$ it's $$ FOR UPDATE $fn$", R),
        ("SELECT $a$ x $a$ FOR UPDATE", P),
        ("SELECT $a$ unclosed $b$", P),
        ("SELECT * FROM t WHERE a = $1 AND b = $2", R),
        ("SELECT a$$b FROM t", R),
        // Quoted identifiers.
        ("select \"into\" from t", R),
        ("SELECT \"update\", \"for\" FROM \"delete\"", R),
        ("SELECT \"a\"\"into\" FROM t", R),
        ("SELECT \"unclosed FROM t", P),
        // Locking clauses.
        ("SELECT * FROM t FOR UPDATE", P),
        ("select * from t for share", P),
        ("SELECT * FROM t FOR NO KEY UPDATE NOWAIT", P),
        ("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", P),
        ("SELECT * FROM t FOR\n/* c */ Update", P),
        ("SELECT substring('abc' FROM 1 FOR 2)", R),
        // INTO.
        ("SELECT * INTO new_t FROM t", P),
        ("select 1 into temp x", P),
        ("TABLE t INTO x", P),
        // CTEs.
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", P),
        (
            "WITH a AS (SELECT 1), b AS (INSERT INTO t VALUES (1) RETURNING *) SELECT 1",
            P,
        ),
        (
            "WITH a AS MATERIALIZED ( UPDATE t SET x = 1 RETURNING x ) SELECT * FROM a",
            P,
        ),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r",
            R,
        ),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", P),
        // Deny-listed calls.
        ("SELECT nextval('s')", P),
        ("SELECT NEXTVAL ('s')", P),
        ("select pg_catalog.nextval('s')", P),
        ("SELECT \"pg_catalog\".\"nextval\"('s')", P),
        ("SELECT nextval /* c */ ('s')", P),
        ("SELECT pg_advisory_lock(1)", P),
        ("SELECT pg_advisory_xact_lock_shared(1)", P),
        ("SELECT pg_try_advisory_lock(1)", P),
        ("SELECT lo_import('/x')", P),
        ("SELECT dblink('c', 'select 1')", P),
        ("SELECT set_config('a.b', 'c', false)", P),
        ("VALUES (txid_current())", P),
        ("SELECT 1 FROM t WHERE id = (SELECT currval('s'))", P),
        ("SELECT nextval", R),
        ("SELECT 'nextval(1)'", R),
        ("SELECT my_nextval(1), nextvalue(2), lower('A')", R),
        ("SELECT pg_advisory(1)", R),
        // EXPLAIN.
        ("EXPLAIN SELECT 1", R),
        ("EXPLAIN VERBOSE SELECT * FROM t", R),
        ("EXPLAIN (COSTS false, FORMAT json) SELECT 1", R),
        ("EXPLAIN ANALYZE SELECT 1", P),
        ("explain analyse verbose select 1", P),
        ("EXPLAIN (ANALYZE) SELECT 1", P),
        ("EXPLAIN (ANALYZE true, BUFFERS) SELECT 1", P),
        ("EXPLAIN (ANALYZE false) SELECT 1", P),
        ("EXPLAIN (FORMAT 'json', COSTS 0) SELECT 1", R),
        // Unknown or quoted options (PostgreSQL refuses the first, runs ANALYZE for the second).
        ("EXPLAIN (insert) SELECT 1", P),
        ("EXPLAIN (format insert) SELECT 1", P),
        ("EXPLAIN (\"analyze\") SELECT 1", P),
        ("EXPLAIN (costs,) SELECT 1", P),
        ("EXPLAIN INSERT INTO t VALUES (1)", P),
        ("EXPLAIN SELECT * FROM t FOR UPDATE", P),
        ("EXPLAIN (COSTS off SELECT 1", P),
        ("EXPLAIN (COSTS (off) DELETE, BUFFERS) SELECT 1", P),
        ("explain (a (b)delete, buffers) select 0", P),
        // Several statements.
        ("SELECT 1;", R),
        ("SELECT 1 ; ; -- bye\n /* c */", R),
        ("SELECT 1; SELECT 2", P),
        ("SELECT 1; DELETE FROM t", P),
        // Transactions.
        ("BEGIN", P),
        ("BEGIN READ ONLY", R),
        ("begin transaction read only;", R),
        ("BEGIN WORK READ ONLY", R),
        ("START TRANSACTION READ ONLY", R),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", R),
        ("BEGIN READ ONLY ISOLATION LEVEL READ COMMITTED DEFERRABLE", R),
        ("START TRANSACTION READ ONLY, NOT DEFERRABLE", R),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", P),
        ("BEGIN READ WRITE", P),
        ("BEGIN ISOLATION LEVEL READ COMMITTED", P),
        ("START READ ONLY", P),
        ("BEGIN READ ONLY; SELECT 1", P),
        ("BEGIN READ ONLY garbage", P),
        ("COMMIT", P),
        // Hints.
        ("/* pgmux:primary */ SELECT 1", P),
        ("/*pgmux:replica*/ SELECT 1", R),
        ("/* pgmux:replica */ SELECT nextval('s')", R),
        ("/* pgmux:replica */ EXPLAIN ANALYZE SELECT 1", R),
        ("/* pgmux:replica */ SELECT 1; SELECT 2", R),
        ("/* pgmux:replica */ BEGIN; SELECT 1; COMMIT", R),
        ("/* pgmux:replica */ SELECT 'a\\'", R),
        ("/* pgmux:replica */ DELETE FROM t", P),
        ("/* pgmux:replica */ SELECT * FROM t FOR UPDATE", P),
        ("/* pgmux:replica */ SELECT 1; COMMIT PREPARED 'x'", P),
        ("/* pgmux:replica */ BEGIN READ WRITE", P),
        ("/* app */ -- x\n /* PGMUX:REPLICA */ SELECT 1; SELECT 2", R),
        ("/* pgmux:replica */ /* pgmux:primary */ SELECT 1", P),
        ("SELECT 1 /* pgmux:primary */", R),
        ("SELECT 1; /* pgmux:replica */ SELECT 2", P),
        // Bytes that are not UTF-8, and a trailing NUL.
        ("SELECT 'é' AS \"ü\", ñ FROM t", R),
        ("SELECT 1\0", R),
    ];
    assert!(table.len() >= 60);
    for (sql, want) in table {
        assert_eq!(c(sql), want, "{sql}");
    }
    assert_eq!(classify(b"SELECT '\xff\xfe' FROM \xc3", &DenyList::default()), R);
}

/// Found by fuzz/fuzz_targets/classify.rs: PostgreSQL ends a `--` comment at a carriage return
/// as well as a line feed, so a statement after `--...\r` runs; it used to be taken for part
/// of the comment, and the DELETE went to a replica.
#[test]
fn line_comment_ends_at_carriage_return() {
    assert_eq!(c("SELECT 1; --\rDELETE FROM t"), P);
    assert_eq!(c("SELECT * FROM t -- lock it\rFOR UPDATE"), P);
    assert_eq!(c("SELECT 1 -- just a comment\r\n"), R);
    assert_eq!(c("-- x\rSELECT 1"), R);
}

#[test]
fn deny_lists() {
    let deny = DenyList::new(["My_Fn", "audit_*", "*", ""]);
    let c = |sql: &str| classify(sql.as_bytes(), &deny);
    assert_eq!(c("SELECT my_fn(1)"), P);
    assert_eq!(c("SELECT s.AUDIT_log()"), P);
    assert_eq!(c("SELECT audit(1)"), R);
    // The config's default no longer applies.
    assert_eq!(c("SELECT nextval('s')"), R);
    assert_eq!(classify(b"SELECT nextval('s')", &DenyList::new::<&str>([])), R);
}

#[test]
fn hints() {
    assert_eq!(hint(b"/* pgmux:primary */ DELETE FROM t"), Some(P));
    assert_eq!(hint(b"  /* pgmux:replica */ x"), Some(R));
    assert_eq!(hint(b"-- pgmux:replica\nSELECT 1"), None);
    assert_eq!(hint(b"/* pgmux:replica x */"), None);
    assert_eq!(hint(b"/* pgmux:replica"), None);
    assert_eq!(hint(b""), None);
}

proptest! {
    #[test]
    fn never_panics(text in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = classify(&text, &DenyList::default());
        let _ = hint(&text);
    }

    #[test]
    fn never_panics_on_near_misses(
        text in "(SELECT|BEGIN|EXPLAIN|\\(|\\)|ANALYZE|READ|ONLY|FOR|nextval|\\$|\\$a\\$|'|E'|\\\\|\"|;|,| |/\\*|\\*/|--|\n|pgmux:replica|1){0,12}"
    ) {
        let _ = classify(text.as_bytes(), &DenyList::default());
    }

    /// Comments before a statement and the case of its keywords change nothing.
    #[test]
    fn comments_and_case_do_not_matter(
        i in 0usize..1000,
        comment in "(/\\* [a-z;' ]{0,8} \\*/|-- [a-z;'*/ ]{0,8}\n| |\t)*",
        upper in any::<bool>(),
    ) {
        let samples = [
            "select a from t where b = 'x' for update",
            "select nextval('s')",
            "with d as (delete from t returning *) select * from d",
            "explain (analyze) select 1",
            "begin read only",
            "select \"Into\" from t; select 2",
            "values ($1), ($$ into $$)",
            "table t",
        ];
        let sql = samples[i % samples.len()];
        let cased = match upper {
            true => keywords_upper(sql),
            false => sql.to_string(),
        };
        prop_assert_eq!(c(&format!("{comment}{cased}")), c(sql));
    }
}

/// Upper-cases what is outside quotes.
fn keywords_upper(sql: &str) -> String {
    let mut quote = None;
    sql.chars()
        .map(|ch| {
            match (quote, ch) {
                (None, '\'' | '"' | '$') => quote = Some(ch),
                (Some(q), _) if q == ch => quote = None,
                _ => {}
            }
            if quote.is_none() {
                ch.to_ascii_uppercase()
            } else {
                ch
            }
        })
        .collect()
}
