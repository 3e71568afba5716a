use super::*;

fn no_files(name: &str) -> Result<String, String> {
    Err(format!("{name}: no such file"))
}

fn hba(text: &str) -> Hba {
    Hba::parse(text, "hba.conf", &no_files).unwrap()
}

fn err(text: &str) -> String {
    Hba::parse(text, "hba.conf", &no_files).unwrap_err()
}

fn tcp<'a>(ip: &str, database: &'a str, user: &'a str) -> Client<'a> {
    Client {
        addr: Some(ip.parse().unwrap()),
        tls: false,
        database,
        user,
    }
}

fn nobody(_: &str, _: &str) -> bool {
    false
}

fn method(h: &Hba, c: &Client) -> Option<(Method, usize)> {
    match h.decide(c, &nobody) {
        Decision::Method(m, line) => Some((m, line)),
        Decision::NoEntry => None,
    }
}

#[test]
fn first_match_wins() {
    let h = hba("# comment\n\
                 host bench app 10.0.0.0/8 reject\n\
                 host all   all 10.0.0.0/8 scram-sha-256   # trailing comment\n\
                 host all   all 0.0.0.0/0  md5\n");
    assert_eq!(method(&h, &tcp("10.1.2.3", "bench", "app")), Some((Method::Reject, 2)));
    assert_eq!(
        method(&h, &tcp("10.1.2.3", "other", "app")),
        Some((Method::ScramSha256, 3))
    );
    assert_eq!(method(&h, &tcp("192.168.0.1", "bench", "app")), Some((Method::Md5, 4)));
    assert_eq!(
        method(&h, &tcp("::1", "bench", "app")),
        None,
        "IPv6 matches no IPv4 rule"
    );
}

#[test]
fn connection_types() {
    let h = hba("local all all trust\nhostssl all all all cert\nhostnossl all all all password\n");
    let local = Client {
        addr: None,
        tls: false,
        database: "d",
        user: "u",
    };
    assert_eq!(method(&h, &local), Some((Method::Trust, 1)));
    let mut c = tcp("127.0.0.1", "d", "u");
    assert_eq!(method(&h, &c), Some((Method::Password, 3)));
    c.tls = true;
    assert_eq!(method(&h, &c), Some((Method::Cert, 2)));
}

#[test]
fn lists_quotes_and_keywords() {
    let h = hba("host \"all\",sameuser app,\"b c\" all trust\n");
    assert_eq!(
        method(&h, &tcp("1.2.3.4", "all", "app")).map(|m| m.0),
        Some(Method::Trust)
    );
    assert_eq!(
        method(&h, &tcp("1.2.3.4", "app", "app")).map(|m| m.0),
        Some(Method::Trust)
    );
    assert_eq!(
        method(&h, &tcp("1.2.3.4", "x", "b c")),
        None,
        "database x is neither \"all\" nor the user's"
    );
    assert_eq!(
        method(&h, &tcp("1.2.3.4", "b c", "b c")).map(|m| m.0),
        Some(Method::Trust)
    );
    assert_eq!(method(&h, &tcp("1.2.3.4", "b", "b")), None, "user b is not listed");
    let h = hba("host replication all all trust\n");
    assert_eq!(
        method(&h, &tcp("1.2.3.4", "replication", "u")),
        None,
        "replication is a keyword"
    );
}

#[test]
fn addresses_and_masks() {
    let h = hba(
        "host all all 192.168.1.0 255.255.255.0 md5\nhost all all fe80::/10 trust\nhost all all 10.0.0.1/32 reject\n",
    );
    assert_eq!(
        method(&h, &tcp("192.168.1.77", "d", "u")).map(|m| m.0),
        Some(Method::Md5)
    );
    assert_eq!(method(&h, &tcp("192.168.2.77", "d", "u")), None);
    assert_eq!(method(&h, &tcp("fe80::1", "d", "u")).map(|m| m.0), Some(Method::Trust));
    assert_eq!(
        method(&h, &tcp("10.0.0.1", "d", "u")).map(|m| m.0),
        Some(Method::Reject)
    );
    assert_eq!(method(&h, &tcp("10.0.0.2", "d", "u")), None);
    assert_eq!(
        method(&h, &tcp("::ffff:192.168.1.5", "d", "u")).map(|m| m.0),
        Some(Method::Md5),
        "an IPv4-mapped client matches IPv4 rules"
    );
    let all = hba("host all all 0.0.0.0/0 trust\nhost all all ::/0 md5\n");
    assert_eq!(
        method(&all, &tcp("8.8.8.8", "d", "u")).map(|m| m.0),
        Some(Method::Trust)
    );
    assert_eq!(
        method(&all, &tcp("2001:db8::1", "d", "u")).map(|m| m.0),
        Some(Method::Md5)
    );
}

#[test]
fn groups_ask_the_caller() {
    let h = hba("host all +admins all trust\nhost all all all reject\n");
    let members = |user: &str, role: &str| user == "alice" && role == "admins";
    let c = tcp("1.2.3.4", "d", "alice");
    assert_eq!(h.decide(&c, &members), Decision::Method(Method::Trust, 1));
    let c = tcp("1.2.3.4", "d", "bob");
    assert_eq!(h.decide(&c, &members), Decision::Method(Method::Reject, 2));
    let c = tcp("1.2.3.4", "d", "admins");
    assert_eq!(
        h.decide(&c, &nobody),
        Decision::Method(Method::Trust, 1),
        "a role is in itself"
    );
}

#[test]
fn at_files_and_continuations() {
    let read = |name: &str| match name {
        "users.txt" => Ok("alice, bob\n# nobody else\ncarol\n".to_owned()),
        other => Err(format!("{other}: no such file")),
    };
    let h = Hba::parse("host all @users.txt \\\n  127.0.0.1/32 \\\n  trust\n", "f", &read).unwrap();
    for user in ["alice", "bob", "carol"] {
        assert_eq!(
            method(&h, &tcp("127.0.0.1", "d", user)),
            Some((Method::Trust, 1)),
            "{user}"
        );
    }
    assert_eq!(method(&h, &tcp("127.0.0.1", "d", "dave")), None);
    let e = Hba::parse("\nhost all @missing.txt all trust\n", "f", &read).unwrap_err();
    assert_eq!(e, "f:2: missing.txt: no such file");
}

#[test]
fn malformed_lines_name_their_line() {
    for (text, want) in [
        ("hots all all all trust", "hba.conf:1: invalid connection type \"hots\""),
        ("host all all", "hba.conf:1: missing address"),
        (
            "host all all 10.0.0.0/33 trust",
            "invalid prefix length \"33\", expected 0 to 32",
        ),
        ("host all all db.example.com trust", "host names are not supported"),
        (
            "host all all 10.0.0.0 255.0.255.0 trust",
            "netmask 255.0.255.0 is not contiguous",
        ),
        ("host all all 10.0.0.1 trust", "invalid netmask \"trust\""),
        (
            "host all all all ident",
            "authentication method \"ident\" is not supported",
        ),
        (
            "host all all all md5 map=x",
            "authentication option \"map=x\" is not supported",
        ),
        ("local all all", "missing authentication method"),
        ("host all \"app all all trust", "unterminated quoted string"),
        ("host all app,,bob all trust", "empty entry"),
        ("host samerole all all trust", "samerole is not supported"),
        ("host all all samenet trust", "samenet is not supported"),
        ("\n\nhostgssenc all all all trust", "hba.conf:3: GSSAPI"),
    ] {
        let e = err(text);
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(e.starts_with("hba.conf:"), "{e}");
    }
}

#[test]
fn refusals_read_like_postgresql() {
    let mut c = tcp("10.0.0.9", "bench", "app");
    assert_eq!(
        no_entry_message(&c),
        "no pg_hba.conf entry for host \"10.0.0.9\", user \"app\", database \"bench\", no encryption"
    );
    c.tls = true;
    c.addr = None;
    assert_eq!(
        rejected_message(&c),
        "pg_hba.conf rejects connection for host \"[local]\", user \"app\", database \"bench\", SSL encryption"
    );
}

#[test]
fn arbitrary_lines_never_panic() {
    let bytes: Vec<u8> = (0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for chunk in bytes.chunks(37) {
        let text = String::from_utf8_lossy(chunk);
        let _ = Hba::parse(&text, "f", &no_files);
        let _ = Hba::parse(&format!("host all all {text} trust"), "f", &no_files);
    }
}
