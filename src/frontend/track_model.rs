//! The answer count against a model of how PostgreSQL answers (postgres.c and copyfrom.c):
//! random client message sequences, sent, answered and read back in random interleavings. The
//! count may err high (the server stays with its client), never low: whenever the scan says
//! the server can go back, the server must owe nothing for what it was sent.

use super::*;
use crate::protocol::frame::test_frame as frame;
use proptest::prelude::*;
use std::collections::VecDeque;

/// What a Query or Execute does on the server.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Run {
    Rows,
    Copy,
    Fails,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Msg {
    Query(Run),
    Parse { ok: bool },
    Bind,
    Describe,
    Close,
    Execute(Run),
    Sync,
    Flush,
    Call,
    CopyData { ok: bool },
    CopyDone,
    CopyFail,
}

impl Msg {
    fn bytes(self) -> Vec<u8> {
        match self {
            Msg::Query(_) => frame(b'Q', b"select 1\0"),
            Msg::Parse { .. } => frame(b'P', b"\0select 1\0\0\0"),
            Msg::Bind => frame(b'B', b"\0\0\0\0\0\0\0\0"),
            Msg::Describe => frame(b'D', b"P\0"),
            Msg::Close => frame(b'C', b"P\0"),
            Msg::Execute(_) => frame(b'E', b"\0\0\0\0\0"),
            Msg::Sync => frame(b'S', b""),
            Msg::Flush => frame(b'H', b""),
            Msg::Call => frame(b'F', b"\0\0\0\x01\0\0\0\0\0\0"),
            Msg::CopyData { .. } => frame(b'd', b"1\n"),
            Msg::CopyDone => frame(b'c', b""),
            Msg::CopyFail => frame(b'f', b"no\0"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    /// After an error in an extended-protocol message: everything up to a Sync is skipped.
    Skip,
    /// COPY FROM STDIN, started by an Execute (`ext`) or a Query.
    CopyIn {
        ext: bool,
    },
}

/// PostgreSQL's answers, as frame tags, one client message at a time.
struct Server(Mode);

impl Server {
    fn answer(&mut self, m: Msg) -> Vec<u8> {
        match (self.0, m) {
            (Mode::Skip, Msg::Sync) => {
                self.0 = Mode::Normal;
                vec![b'Z']
            }
            (Mode::Skip, _) => vec![],
            (Mode::CopyIn { .. }, Msg::CopyData { ok: true } | Msg::Sync | Msg::Flush) => vec![],
            (Mode::CopyIn { ext }, Msg::CopyDone) => {
                self.0 = Mode::Normal;
                if ext {
                    vec![b'C']
                } else {
                    vec![b'C', b'Z']
                }
            }
            // Bad data, a CopyFail or any other message ends the COPY with an error.
            (Mode::CopyIn { ext }, _) => self.failed(ext),
            (Mode::Normal, m) => match m {
                Msg::Query(Run::Rows) => vec![b'T', b'D', b'C', b'Z'],
                Msg::Query(Run::Copy) => {
                    self.0 = Mode::CopyIn { ext: false };
                    vec![b'G']
                }
                Msg::Query(Run::Fails) => vec![b'E', b'Z'],
                Msg::Parse { ok: true } => vec![b'1'],
                Msg::Parse { ok: false } | Msg::Execute(Run::Fails) => self.failed(true),
                Msg::Bind => vec![b'2'],
                Msg::Describe => vec![b'n'],
                Msg::Close => vec![b'3'],
                Msg::Execute(Run::Rows) => vec![b'D', b'C'],
                Msg::Execute(Run::Copy) => {
                    self.0 = Mode::CopyIn { ext: true };
                    vec![b'G']
                }
                Msg::Sync => vec![b'Z'],
                Msg::Call => vec![b'V', b'Z'],
                // Flush sends nothing new; COPY messages outside a COPY are ignored.
                Msg::Flush | Msg::CopyData { .. } | Msg::CopyDone | Msg::CopyFail => vec![],
            },
        }
    }

    fn failed(&mut self, extended: bool) -> Vec<u8> {
        if extended {
            self.0 = Mode::Skip;
            vec![b'E']
        } else {
            self.0 = Mode::Normal;
            vec![b'E', b'Z']
        }
    }
}

fn server_frame(tag: u8) -> Vec<u8> {
    let body: &[u8] = match tag {
        b'Z' => b"I",
        b'C' => b"SELECT 1\0",
        b'T' | b'D' => b"\0\0",
        b'G' => b"\0\0\0",
        b'E' => b"SERROR\0C42000\0Mno\0\0",
        b'V' => b"\xff\xff\xff\xff",
        _ => b"",
    };
    frame(tag, body)
}

fn run() -> impl Strategy<Value = Run> {
    prop_oneof![Just(Run::Rows), Just(Run::Copy), Just(Run::Fails)]
}

fn message() -> impl Strategy<Value = Msg> {
    prop_oneof![
        2 => run().prop_map(Msg::Query),
        1 => (0..4u8).prop_map(|n| Msg::Parse { ok: n > 0 }),
        1 => Just(Msg::Bind),
        1 => Just(Msg::Describe),
        1 => Just(Msg::Close),
        2 => run().prop_map(Msg::Execute),
        2 => Just(Msg::Sync),
        1 => Just(Msg::Flush),
        1 => Just(Msg::Call),
        1 => (0..4u8).prop_map(|n| Msg::CopyData { ok: n > 0 }),
        1 => Just(Msg::CopyDone),
        1 => Just(Msg::CopyFail),
    ]
}

/// One sequence in one interleaving: Err when the scan let the server go while it still owed
/// answers. `steps` picks, turn by turn, among what can happen next (the client sends, the
/// server answers, pgmux reads an answer); past its end the first of them happens.
fn play(msgs: &[Msg], steps: &[u8]) -> Result<(), String> {
    let mut t = Tracker::default();
    let mut scan = ServerScan::default();
    let mut server = Server(Mode::Normal);
    let mut sent: VecDeque<Msg> = VecDeque::new();
    let mut answers: VecDeque<u8> = VecDeque::new();
    let mut next = 0;
    let mut steps = steps.iter();
    loop {
        let mut can = Vec::new();
        if next < msgs.len() {
            can.push(0);
        }
        if !sent.is_empty() {
            can.push(1);
        }
        if !answers.is_empty() {
            can.push(2);
        }
        let pick = steps.next().map_or(0, |&s| usize::from(s) % can.len().max(1));
        let Some(&step) = can.get(pick) else {
            return Ok(());
        };
        match step {
            0 => {
                let m = msgs[next];
                next += 1;
                scan_client(&m.bytes(), 0, 1 << 20, &mut t).map_err(|e| e.to_string())?;
                sent.push_back(m);
            }
            1 => {
                let m = sent.pop_front().ok_or("nothing sent")?;
                answers.extend(server.answer(m));
            }
            _ => {
                let tag = answers.pop_front().ok_or("no answer")?;
                let bytes = server_frame(tag);
                let (end, stop) = scan
                    .scan(&bytes, 0, &mut t, true, false, |_, _| {})
                    .map_err(|e| e.to_string())?;
                if end != bytes.len() {
                    return Err(format!("the scan stopped at {end} of {:?}", tag as char));
                }
                if stop == ServerStop::Release {
                    let mut owed: Vec<char> = answers.iter().map(|&t| t as char).collect();
                    for m in sent.drain(..) {
                        owed.extend(server.answer(m).into_iter().map(char::from));
                    }
                    if !owed.is_empty() {
                        return Err(format!("released after {next} messages while owing {owed:?}"));
                    }
                    return Ok(());
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40_000))]
    #[test]
    fn the_count_never_lets_a_server_go_while_it_owes_answers(
        msgs in proptest::collection::vec(message(), 1..=10),
        steps in proptest::collection::vec(0..3u8, 0..60),
    ) {
        if let Err(e) = play(&msgs, &steps) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// The sequences drivers send end with the server back in the pool (the count is not too
/// high for them), however their answers are split between reads.
#[test]
fn drivers_copy_sequences_release_the_server() {
    use Msg::*;
    let libpq_extended = [Bind, Execute(Run::Copy), Sync, CopyData { ok: true }, CopyDone, Sync];
    let libpq_fail = [Bind, Execute(Run::Copy), Sync, CopyData { ok: true }, CopyFail, Sync];
    let simple = [Query(Run::Copy), CopyData { ok: true }, CopyDone];
    let bad_data = [Bind, Execute(Run::Copy), Sync, CopyData { ok: false }, CopyDone, Sync];
    for seq in [&libpq_extended[..], &libpq_fail, &simple, &bad_data] {
        // A driver waits for the CopyInResponse before its data: the first part goes, is
        // answered and read, then the rest.
        let split = seq
            .iter()
            .position(|m| matches!(m, CopyData { .. }))
            .unwrap_or(seq.len());
        // Bit i of `cuts`: a read ends after the i-th answer (a sequence has at most 8).
        for cuts in 0..1u32 << 8 {
            let mut t = Tracker::default();
            let mut scan = ServerScan::default();
            let mut server = Server(Mode::Normal);
            let mut released = false;
            let mut i = 0;
            for part in [&seq[..split], &seq[split..]] {
                for m in part {
                    scan_client(&m.bytes(), 0, 1 << 20, &mut t).unwrap();
                }
                let tags: Vec<u8> = part.iter().flat_map(|&m| server.answer(m)).collect();
                let mut bytes = Vec::new();
                for tag in tags {
                    bytes.extend(server_frame(tag));
                    if cuts & 1 << i != 0 {
                        released |=
                            scan.scan(&bytes, 0, &mut t, true, false, |_, _| {}).unwrap().1 == ServerStop::Release;
                        bytes.clear();
                    }
                    i += 1;
                }
                released |= scan.scan(&bytes, 0, &mut t, true, false, |_, _| {}).unwrap().1 == ServerStop::Release;
            }
            assert!(released && t.idle(), "{seq:?}, cuts {cuts:#b}: {t:?}");
        }
    }
}
