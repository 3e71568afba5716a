#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/seed-* : small, real messages, as psql,
pgbench and the drivers send them (framing as in the PostgreSQL protocol docs). Run again after
changing it; the files are committed."""

import os
import shutil
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def msg(tag, body=b""):
    return tag + struct.pack(">I", len(body) + 4) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def query(sql):
    return msg(b"Q", cstr(sql))


def parse(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack(">H", len(types)) + b"".join(struct.pack(">I", t) for t in types))


def bind(portal, stmt, values=()):
    body = cstr(portal) + cstr(stmt) + struct.pack(">H", 0) + struct.pack(">H", len(values))
    for v in values:
        body += struct.pack(">i", -1) if v is None else struct.pack(">i", len(v)) + v
    return msg(b"B", body + struct.pack(">H", 0))


def describe(kind, name):
    return msg(b"D", kind + cstr(name))


def close(kind, name):
    return msg(b"C", kind + cstr(name))


def execute(portal="", rows=0):
    return msg(b"E", cstr(portal) + struct.pack(">i", rows))


SYNC, FLUSH, TERMINATE = msg(b"S"), msg(b"H"), msg(b"X")

PGBENCH_SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
PGBENCH_UPDATE = "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;"

# Client streams: pgbench -M simple / extended / prepared, psql, COPY, a Terminate.
client = {
    "simple": query("BEGIN;") + query(PGBENCH_UPDATE.replace("$1", "42").replace("$2", "7")) + query("END;"),
    "extended": parse("", PGBENCH_SELECT, (23,)) + bind("", "", [b"17"]) + describe(b"P", "") + execute() + SYNC,
    "prepared": parse("P_0", PGBENCH_UPDATE, (23, 23)) + describe(b"S", "P_0") + SYNC
    + bind("", "P_0", [b"5", b"9"]) + execute() + SYNC + close(b"S", "P_0") + SYNC,
    "jdbc": parse("S_1", "select 1", ()) + bind("", "S_1") + execute("", 0) + FLUSH + SYNC,
    "sql_prepare": query("PREPARE p AS SELECT 1; EXECUTE p;") + query("DEALLOCATE ALL") + query("DISCARD ALL"),
    "copy": query("COPY t FROM STDIN") + msg(b"d", b"1\t2\n") + msg(b"c") + bind("", "") + execute() + SYNC
    + msg(b"d", b"x") + msg(b"f", cstr("no")),
    "terminate": query("select 1") + TERMINATE,
    "fcall": msg(b"F", struct.pack(">IHHIH", 1598, 0, 1, 4, 0)[:-2] + b"abcd" + struct.pack(">H", 0)),
}


def server_stream():
    auth_ok = msg(b"R", struct.pack(">I", 0))
    ps = msg(b"S", cstr("application_name") + cstr("pgbench")) + msg(b"S", cstr("TimeZone") + cstr("UTC"))
    key = msg(b"K", struct.pack(">ii", 1234, 5678))
    rfq = lambda s: msg(b"Z", s)
    row_desc = msg(b"T", struct.pack(">H", 1) + cstr("abalance") + struct.pack(">IhIhih", 16384, 3, 23, 4, -1, 0))
    row = msg(b"D", struct.pack(">Hi", 1, 2) + b"42")
    cc = msg(b"C", cstr("SELECT 1"))
    err = msg(b"E", cstr("SERROR") + cstr("VERROR") + cstr("C42P01") + cstr('Mrelation "x" does not exist') + b"\0")
    notice = msg(b"N", cstr("SNOTICE") + cstr("C00000") + cstr("Mhi") + b"\0")
    return {
        "login": auth_ok + ps + key + rfq(b"I"),
        "select": row_desc + row + row + cc + rfq(b"I"),
        "transaction": msg(b"C", cstr("BEGIN")) + rfq(b"T") + msg(b"C", cstr("UPDATE 1")) + rfq(b"T") + msg(b"C", cstr("COMMIT")) + rfq(b"I"),
        "extended": msg(b"1") + msg(b"2") + msg(b"n") + row + cc + rfq(b"I") + msg(b"3") + msg(b"t", struct.pack(">HI", 1, 23)),
        "error": err + rfq(b"E") + notice + msg(b"I") + rfq(b"I"),
        "copy": msg(b"G", struct.pack(">bH", 0, 0)) + msg(b"C", cstr("COPY 1")) + msg(b"H", struct.pack(">bH", 0, 0)) + msg(b"d", b"1\n") + msg(b"c") + rfq(b"I"),
        "notify": msg(b"A", struct.pack(">i", 7) + cstr("chan") + cstr("payload")) + msg(b"s") + rfq(b"I"),
    }


def startup(params, code=196608):
    body = struct.pack(">I", code) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack(">I", len(body) + 4) + body


seeds = {
    "frame": {k: b"\x20" + v for k, v in client.items()} | {"msgs": b"\x01\xff\x00\x08select 1\x01\x03P_1\x08select 2\x01\x02\x00\x03P_1\x02\x06"},
    "server_scan": {k: b"\x03" + v for k, v in server_stream().items()},
    "startup": {
        "psql": startup([("user", "app"), ("database", "bench"), ("application_name", "psql"), ("client_encoding", "UTF8")]),
        "jdbc": startup([("user", "app"), ("database", "bench"), ("DateStyle", "ISO"), ("extra_float_digits", "2")], 196610),
        "ssl": struct.pack(">II", 8, 80877103),
        "gss": struct.pack(">II", 8, 80877104),
        "cancel": struct.pack(">IIii", 16, 80877102, 1234, 5678),
        "v2": struct.pack(">II", 8, 131072),
        "replication": startup([("user", "app"), ("replication", "database"), ("options", "-c search_path=a,b")]),
    },
    "scram": {
        "honest": b"\x00secret",
        "wrong": b"\x30Secret",
        "tamper": b"\x01\x05x\x40\x00",
        "arbitrary": b"\x02n,,n=,r=abcdefghijklmnop\xffc=biws,r=abcdefghijklmnop,p=dGVzdA==",
        "plus": b"\x05+p=tls-server-end-point,,n=,r=abc\xff",
    },
    "md5": {
        "libpq": b"\x01\x02\x03\x04\x03appsecret",
        "secret": b"\x00\x00\x00\x00\x03appmd5d41d8cd98f00b204e9800998ecf8427e",
    },
    "classify": {
        "select": b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
        "update": PGBENCH_UPDATE.encode(),
        "cte": b"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
        "for_update": b"select * from t for no key update",
        "hint": b"/* pgmux:replica */ select nextval('s')",
        "strings": b"select 'it''s', E'a\\'b', $tag$ ; delete $tag$, \"update\" -- insert\n from t",
        "begin": b"BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        "explain": b"explain (analyze, buffers) select 1",
        "multi": b"select 1; select 2;\0",
    },
    "set": {
        "search_path": b"SET search_path = public, \"Other\"\0",
        "session": b"set session statement_timeout to '5s';",
        "reset": b"RESET work_mem",
        "reset_all": b"/* c */ RESET ALL",
        "discard": b"discard all;",
        "default": b"SET application_name TO DEFAULT",
        "number": b"SET extra_float_digits = -3",
    },
    "prepared": {k: b"\xfc" + client[k] for k in ("extended", "prepared", "jdbc", "sql_prepare", "copy")}
    | {"dup": b"\x05" + parse("a", "select 1") + parse("a", "select 2") + SYNC + describe(b"S", "a") + close(b"S", "a") + SYNC},
    "admin": {
        "show": b"SHOW POOLS;",
        "set": b"SET default_pool_size = 20",
        "euro": "SET x \u20ac".encode(),
        "kill": b"KILL_CLIENT 17",
        "shutdown": b"shutdown wait_for_clients",
        "pause": b"PAUSE bench",
    },
    "config_toml": {"pooler": open(os.path.join(os.path.dirname(ROOT), "..", "pooler.toml"), "rb").read()},
    "config_ini": {
        "bench": b"""[databases]
bench = host=127.0.0.1 port=5432 dbname=bench pool_size=20
* = host=/tmp

[pgbouncer]
listen_addr = *
listen_port = 6432
auth_type = md5
auth_file = userlist.txt
pool_mode = transaction
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits, options
%include other.ini

[users]
app = pool_mode=session max_user_connections=5
""",
    },
    "hba": {
        "conf": b"""# TYPE DATABASE USER ADDRESS METHOD
local all all trust
host bench,"quoted db" app,+admins 10.0.0.0/8 scram-sha-256
host all @users 192.168.1.0 255.255.255.0 md5
hostssl all all ::1/128 cert
hostnossl sameuser all all reject
host all all samenet \\
  password
""",
    },
    "userlist": {
        "bench": b""""app" "secret"
"md5user" "md5d41d8cd98f00b204e9800998ecf8427e"
; comment
"scram" "SCRAM-SHA-256$4096:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
"quo""te" "x" # trailing
""",
    },
}

for target, files in seeds.items():
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for name, data in files.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)
print("seeds written under", ROOT)
