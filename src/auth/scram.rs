//! Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it.
//!
//! pgmux offers only `SCRAM-SHA-256` (never `-PLUS`), so no channel binding.
//! The username in `n=` is ignored: PostgreSQL takes it from the startup packet.

use super::ct_eq;
use std::fmt;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

/// The only mechanism to list in `AuthenticationSASL`.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// PostgreSQL's default iteration count; used by [`ScramKeys::decoy`].
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length of [`ScramKeys::stable_salt`] and [`ScramKeys::decoy`] (PostgreSQL's default).
pub const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 18;

/// What the server stores for a user, as in `pg_authid`.
#[derive(Clone)]
pub struct ScramKeys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramKeys {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

impl ScramKeys {
    /// Derives keys from a plain password, SASLprepped as PostgreSQL and libpq
    /// do (raw bytes when SASLprep rejects it). Iterations below 1 become 1.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        let prepared = match stringprep::saslprep(password) {
            Ok(p) => p.into_owned().into_bytes(),
            Err(_) => password.as_bytes().to_vec(),
        };
        let iterations = iterations.max(1);
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(&prepared, salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramKeys {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// Keys for a user that does not exist or may not log in. The salt is
    /// stable per (user, secret) and shaped like [`stable_salt`](Self::stable_salt)'s
    /// with [`DEFAULT_ITERATIONS`], so probing cannot tell it from a real user;
    /// the stored key is a secret-keyed MAC, so matching it would need a SHA-256 preimage.
    pub fn decoy(user: &str, process_secret: &[u8; 32]) -> ScramKeys {
        let salt = hmac(process_secret, &[b"pgmux-decoy-salt\0", user.as_bytes()]);
        ScramKeys {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..SALT_LEN].to_vec(),
            stored_key: hmac(process_secret, &[b"pgmux-decoy-stored\0", user.as_bytes()]),
            server_key: hmac(process_secret, &[b"pgmux-decoy-server\0", user.as_bytes()]),
        }
    }

    /// A salt for a config plain-text password, stable for the life of the
    /// process so derived keys can be cached per (user, password). Keyed with
    /// a random per-process secret: an unkeyed hash of the password would hand
    /// any unauthenticated client a fast offline check of the password.
    pub fn stable_salt(user: &str, password: &str) -> [u8; SALT_LEN] {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = KEY.get_or_init(|| {
            let mut k = [0u8; 32];
            rand::rng().fill_bytes(&mut k);
            k
        });
        let mac = hmac(key, &[b"pgmux-scram-salt", user.as_bytes(), b"\0", password.as_bytes()]);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&mac[..SALT_LEN]);
        salt
    }

    /// Parses a `pg_authid` secret `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse_secret(secret: &str) -> Option<ScramKeys> {
        let rest = secret.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iter.parse().ok().filter(|i| *i > 0)?;
        let key = |s: &str| STANDARD.decode(s).ok()?.try_into().ok();
        Some(ScramKeys {
            iterations,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// Why an exchange failed. Only [`ScramError::InvalidProof`] means a wrong password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("unsupported SASL mechanism (only SCRAM-SHA-256 is offered)")]
    UnsupportedMechanism,
    #[error("channel binding is not supported (SCRAM-SHA-256-PLUS was not offered)")]
    UnsupportedChannelBinding,
    #[error("SCRAM authorization identity (a=) is not supported")]
    UnsupportedAuthzid,
    #[error("client requires an unsupported SCRAM extension")]
    UnsupportedExtension,
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    #[error("unexpected SCRAM nonce")]
    NonceMismatch,
    #[error("password authentication failed")]
    InvalidProof,
    #[error("SCRAM message received out of order")]
    OutOfOrder,
}

impl ScramError {
    /// SQLSTATE PostgreSQL uses: 28P01 for a wrong password, 08P01 (protocol violation) otherwise.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ScramError::InvalidProof => "28P01",
            _ => "08P01",
        }
    }
}

enum State {
    Initial,
    SentFirst {
        gs2_header: &'static [u8],
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    /// Finished or failed: no step may be retried.
    Done,
}

/// One SCRAM exchange: `client_first`, then `client_final`.
pub struct ScramServer {
    keys: Arc<ScramKeys>,
    server_nonce: String,
    state: State,
    /// After a valid proof: the ClientKey it revealed (for SCRAM pass-through).
    client_key: Option<[u8; 32]>,
}

impl ScramServer {
    pub fn new(keys: Arc<ScramKeys>) -> ScramServer {
        let mut raw = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut raw);
        ScramServer {
            keys,
            server_nonce: STANDARD.encode(raw),
            state: State::Initial,
            client_key: None,
        }
    }

    /// The ClientKey of the client whose proof `client_final` accepted.
    pub fn client_key(&self) -> Option<[u8; 32]> {
        self.client_key
    }

    /// Handles SASLInitialResponse; returns the server-first-message to send in
    /// AuthenticationSASLContinue.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let state = std::mem::replace(&mut self.state, State::Done);
        if !matches!(state, State::Initial) {
            return Err(ScramError::OutOfOrder);
        }
        if mechanism != MECHANISM {
            return Err(if mechanism == "SCRAM-SHA-256-PLUS" {
                ScramError::UnsupportedChannelBinding
            } else {
                ScramError::UnsupportedMechanism
            });
        }
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("client-first-message is not UTF-8"))?;
        let (gs2_header, bare) = parse_gs2_header(msg)?;

        let mut attrs = bare.split(',');
        match attrs.next().and_then(attr) {
            Some((b'n', _)) => {}
            Some((b'm', _)) => return Err(ScramError::UnsupportedExtension),
            _ => return Err(ScramError::Malformed("missing username (n=)")),
        }
        let client_nonce = match attrs.next().and_then(attr) {
            Some((b'r', v)) if !v.is_empty() && v.bytes().all(|c| c.is_ascii_graphic() && c != b',') => v,
            Some((b'r', _)) => return Err(ScramError::Malformed("invalid client nonce")),
            _ => return Err(ScramError::Malformed("missing client nonce (r=)")),
        };
        check_extensions(attrs)?;

        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.keys.salt),
            self.keys.iterations
        );
        let out = server_first.as_bytes().to_vec();
        self.state = State::SentFirst {
            gs2_header,
            nonce,
            client_first_bare: bare.to_owned(),
            server_first,
        };
        Ok(out)
    }

    /// Handles SASLResponse; returns the server-final-message for AuthenticationSASLFinal.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::SentFirst {
            gs2_header,
            nonce,
            client_first_bare,
            server_first,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("client-final-message is not UTF-8"))?;
        let (without_proof, last) = msg
            .rsplit_once(',')
            .ok_or(ScramError::Malformed("missing proof (p=)"))?;
        let Some((b'p', proof)) = attr(last) else {
            return Err(ScramError::Malformed("proof (p=) must come last"));
        };

        let mut attrs = without_proof.split(',');
        let cbind = match attrs.next().and_then(attr) {
            Some((b'c', v)) => STANDARD
                .decode(v)
                .map_err(|_| ScramError::Malformed("channel binding (c=) is not valid base64"))?,
            _ => return Err(ScramError::Malformed("missing channel binding (c=)")),
        };
        if cbind != gs2_header {
            return Err(ScramError::ChannelBindingMismatch);
        }
        match attrs.next().and_then(attr) {
            Some((b'r', v)) if v == nonce => {}
            Some((b'r', _)) => return Err(ScramError::NonceMismatch),
            _ => return Err(ScramError::Malformed("missing nonce (r=)")),
        }
        check_extensions(attrs)?;
        let proof: [u8; 32] = STANDARD
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof (p=) is not valid base64"))?
            .try_into()
            .map_err(|_| ScramError::Malformed("proof (p=) has the wrong length"))?;

        let auth_message: [&[u8]; 5] = [
            client_first_bare.as_bytes(),
            b",",
            server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = hmac(&self.keys.stored_key, &auth_message);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        if !ct_eq(&Sha256::digest(client_key), &self.keys.stored_key) {
            return Err(ScramError::InvalidProof);
        }
        self.client_key = Some(client_key);
        let server_signature = hmac(&self.keys.server_key, &auth_message);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// Splits off `gs2-cbind-flag "," [authzid] ","`; returns the header to expect in `c=`.
fn parse_gs2_header(msg: &str) -> Result<(&'static [u8], &str), ScramError> {
    let (flag, rest) = msg.split_once(',').ok_or(ScramError::Malformed("missing GS2 header"))?;
    let header: &'static [u8] = match flag {
        "n" => b"n,,",
        // Client could bind but we offered no -PLUS: fine (RFC 5802 section 6).
        "y" => b"y,,",
        f if f.starts_with("p=") => return Err(ScramError::UnsupportedChannelBinding),
        _ => return Err(ScramError::Malformed("invalid channel binding flag")),
    };
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("missing GS2 header"))?;
    if authzid.starts_with("a=") {
        return Err(ScramError::UnsupportedAuthzid);
    }
    if !authzid.is_empty() {
        return Err(ScramError::Malformed("invalid authorization identity"));
    }
    Ok((header, bare))
}

/// Optional extensions are ignored (as PostgreSQL does) but must be well-formed.
fn check_extensions<'a>(mut attrs: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    if attrs.all(|a| attr(a).is_some()) {
        Ok(())
    } else {
        Err(ScramError::Malformed("invalid attribute"))
    }
}

/// Parses `x=value` where `x` is an ASCII letter.
fn attr(s: &str) -> Option<(u8, &str)> {
    match s.as_bytes() {
        [name, b'=', ..] if name.is_ascii_alphabetic() => Some((*name, s.get(2..)?)),
        _ => None,
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length (longer ones are hashed), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use ScramError::*;

    fn keys(pw: &str) -> Arc<ScramKeys> {
        let salt = ScramKeys::stable_salt("alice", pw);
        Arc::new(ScramKeys::derive(pw, &salt, DEFAULT_ITERATIONS))
    }

    /// Full exchange with postgres-protocol's client as the peer.
    fn exchange_cb(k: &Arc<ScramKeys>, pw: &str, cb: ChannelBinding) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(pw.as_bytes(), cb);
        let mut server = ScramServer::new(k.clone());
        let first = server.client_first(MECHANISM, client.message())?;
        client.update(&first).unwrap();
        let fin = server.client_final(client.message())?;
        client.finish(&fin).unwrap();
        Ok(())
    }

    fn exchange(k: &Arc<ScramKeys>, pw: &str) -> Result<(), ScramError> {
        exchange_cb(k, pw, ChannelBinding::unsupported())
    }

    /// Server after client-first "n,,n=,r=abc"; returns it, server-first and the combined nonce.
    fn started(k: &Arc<ScramKeys>) -> (ScramServer, String, String) {
        let mut s = ScramServer::new(k.clone());
        let first = String::from_utf8(s.client_first(MECHANISM, b"n,,n=,r=abc").unwrap()).unwrap();
        let nonce = first.split(',').next().unwrap()[2..].to_string();
        (s, first, nonce)
    }

    /// Proof computed by hand, for inputs the real client never sends.
    fn manual_proof(pw: &str, k: &ScramKeys, auth_message: &str) -> String {
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(pw.as_bytes(), &k.salt, k.iterations);
        let mut p = hmac(&salted, &[b"Client Key"]);
        let sig = hmac(&k.stored_key, &[auth_message.as_bytes()]);
        p.iter_mut().zip(sig).for_each(|(a, b)| *a ^= b);
        STANDARD.encode(p)
    }

    #[test]
    fn real_client_right_and_wrong_password() {
        let k = keys("s3cret");
        exchange_cb(&k, "s3cret", ChannelBinding::unrequested()).unwrap(); // "y,,"
        exchange(&k, "s3cret").unwrap();
        for wrong in ["s3creT", "", "s3cret "] {
            assert_eq!(exchange(&k, wrong), Err(InvalidProof));
            let r = exchange_cb(&k, wrong, ChannelBinding::unrequested());
            assert_eq!(r, Err(InvalidProof));
        }
    }

    #[test]
    fn saslprep_matches_client() {
        // NBSP maps to space, fullwidth folds under NFKC, BEL is prohibited (raw bytes used).
        for (stored, typed) in [
            ("pass\u{a0}word", "pass word"),
            ("ｐａｓｓ", "pass"),
            ("a\u{7}b", "a\u{7}b"),
        ] {
            exchange(&keys(stored), typed).unwrap();
        }
        assert_eq!(exchange(&keys("a\u{7}b"), "ab"), Err(InvalidProof));
    }

    #[test]
    fn pg_authid_secret() {
        let secret = postgres_protocol::password::scram_sha_256(b"hunter2");
        let k = Arc::new(ScramKeys::parse_secret(&secret).unwrap());
        assert_eq!((k.iterations, k.salt.len()), (4096, 16));
        exchange(&k, "hunter2").unwrap();
        assert_eq!(exchange(&k, "hunter3"), Err(InvalidProof));
        let d = ScramKeys::derive("hunter2", &k.salt, k.iterations);
        assert_eq!((d.stored_key, d.server_key), (k.stored_key, k.server_key));
        let truncated = &secret[..secret.len() - 4];
        for bad in [
            "",
            "SCRAM-SHA-256$",
            "md5abc",
            "SCRAM-SHA-256$0:AAAA$AAAA:AAAA",
            truncated,
        ] {
            assert!(ScramKeys::parse_secret(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn decoy_and_stable_salt() {
        let secret = [7u8; 32];
        let d = Arc::new(ScramKeys::decoy("mallory", &secret));
        for pw in ["", "mallory", "password"] {
            assert_eq!(exchange(&d, pw), Err(InvalidProof));
        }
        assert_eq!(ScramKeys::decoy("mallory", &secret).salt, d.salt);
        assert_ne!(ScramKeys::decoy("mallorz", &secret).salt, d.salt);
        assert_ne!(ScramKeys::decoy("mallory", &[8; 32]).salt, d.salt);
        let real = keys("pw"); // a decoy looks like a config user
        assert_eq!((d.iterations, d.salt.len()), (real.iterations, real.salt.len()));

        let salt = ScramKeys::stable_salt;
        assert_eq!(salt("u", "p"), salt("u", "p"));
        assert!(salt("u", "p") != salt("u", "q") && salt("u", "p") != salt("v", "p"));
        assert_ne!(salt("ab", "c"), salt("a", "bc"));
    }

    #[test]
    fn server_first_shape() {
        let (_, first, nonce) = started(&keys("pw"));
        let snonce = nonce.strip_prefix("abc").unwrap();
        assert!(snonce.len() >= 24 && snonce.bytes().all(|c| c.is_ascii_graphic() && c != b','));
        let salt = STANDARD.encode(ScramKeys::stable_salt("alice", "pw"));
        assert_eq!(first, format!("r={nonce},s={salt},i=4096"));
    }

    #[test]
    fn username_y_header_and_extensions_accepted() {
        let k = keys("pw");
        let mut s = ScramServer::new(k.clone());
        let bare = "n=some=2Cuser,r=xyz,q=ext";
        let first = s.client_first(MECHANISM, format!("y,,{bare}").as_bytes());
        let first = String::from_utf8(first.unwrap()).unwrap();
        let nonce = &first.split(',').next().unwrap()[2..];
        let without = format!("c=eSws,r={nonce},e=x");
        let proof = manual_proof("pw", &k, &format!("{bare},{first},{without}"));
        let fin = s.client_final(format!("{without},p={proof}").as_bytes());
        assert!(fin.unwrap().starts_with(b"v="));
    }

    #[test]
    fn bad_client_first() {
        let first = |mech: &str, data: &[u8]| ScramServer::new(keys("pw")).client_first(mech, data);
        let bad = "|n|n,|n,,|n,,n=|n,,r=abc|n,,n=,r=|n,,n=,r=a\x01b|n,,n=,r=abc,\
            |n,,n=,r=abc,zz|x,,n=,r=abc|n,b,n=,r=abc|n,,n=,s=abc";
        let non_utf8: [&[u8]; 2] = [b"n,,n=\xff,r=abc", b"\xff\xfe"];
        for data in bad.split('|').map(str::as_bytes).chain(non_utf8) {
            let r = first(MECHANISM, data);
            assert!(matches!(r, Err(Malformed(_))), "{:?}", String::from_utf8_lossy(data));
        }
        let p = b"p=tls-server-end-point,,n=,r=abc";
        assert_eq!(first(MECHANISM, p), Err(UnsupportedChannelBinding));
        let plus = first("SCRAM-SHA-256-PLUS", b"n,,n=,r=abc");
        assert_eq!(plus, Err(UnsupportedChannelBinding));
        assert_eq!(first("PLAIN", b"n,,n=,r=abc"), Err(UnsupportedMechanism));
        assert_eq!(first(MECHANISM, b"n,a=bob,n=,r=abc"), Err(UnsupportedAuthzid));
        assert_eq!(first(MECHANISM, b"n,,m=x,n=,r=abc"), Err(UnsupportedExtension));
    }

    #[test]
    fn bad_client_final() {
        let k = keys("pw");
        // {N}: the combined nonce, {P}: the right proof for "c=biws,r={N}",
        // {S}/{L}/{Z}: 31-, 33- and 32-byte (zero) proofs, {X}: a non-UTF-8 byte.
        let malformed = "|c=biws,r={N}|c=biws,r={N},p=|c=biws,r={N},p=!!notbase64\
            |c=biws,r={N},p={S}|c=biws,r={N},p={L}|c=biws,r={N},p={P},x=1|r={N},c=biws,p={P}\
            |c=biws,p={P}|c=b!ws,r={N},p={P}|c=biws,r={N},,p={P}|c=biws,r={N},p={P}{X}";
        let cases = malformed.split('|').map(|t| (t, None)).chain([
            ("c=biws,r={N}X,p={P}", Some(NonceMismatch)),
            ("c=biws,r=X{N},p={P}", Some(NonceMismatch)),
            ("c=biws,r=abc,p={P}", Some(NonceMismatch)),
            ("c=eSws,r={N},p={P}", Some(ChannelBindingMismatch)),
            ("c=,r={N},p={P}", Some(ChannelBindingMismatch)),
            ("c=biws,r={N},x=1,p={P}", Some(InvalidProof)),
            ("c=biws,r={N},p={Z}", Some(InvalidProof)),
            ("c=biws,r={N},p={P}", None), // the right message, checked below
        ]);
        for (template, want) in cases {
            let (mut s, first, nonce) = started(&k);
            let right = format!("c=biws,r={nonce}");
            let proof = manual_proof("pw", &k, &format!("n=,r=abc,{first},{right}"));
            let right = format!("{right},p={proof}");
            let mut msg = template.replace("{N}", &nonce).replace("{P}", &proof);
            for (ph, n) in [("{S}", 31), ("{L}", 33), ("{Z}", 32)] {
                msg = msg.replace(ph, &STANDARD.encode(vec![u8::from(n != 32); n]));
            }
            let mut bytes = msg.replace("{X}", "").into_bytes();
            if msg.ends_with("{X}") {
                bytes.push(0xff);
            }
            let got = s.client_final(&bytes);
            match want {
                _ if msg == right => assert!(got.unwrap().starts_with(b"v=")),
                None => assert!(matches!(got, Err(Malformed(_))), "{template}: {got:?}"),
                Some(e) => assert_eq!(got, Err(e), "{template}"),
            }
            // No second attempt, even with the right message.
            assert_eq!(s.client_final(right.as_bytes()), Err(OutOfOrder));
        }
    }

    #[test]
    fn out_of_order() {
        let k = keys("pw");
        let early = ScramServer::new(k.clone()).client_final(b"c=biws,r=a,p=b");
        assert_eq!(early, Err(OutOfOrder));
        let (mut s, _, _) = started(&k);
        assert_eq!(s.client_first(MECHANISM, b"n,,n=,r=abc"), Err(OutOfOrder));
        let mut s = ScramServer::new(k.clone());
        assert!(s.client_first(MECHANISM, b"junk").is_err());
        assert_eq!(s.client_first(MECHANISM, b"n,,n=,r=abc"), Err(OutOfOrder));
    }

    #[test]
    fn fuzz_no_panic() {
        let k = keys("pw");
        let mut rng = StdRng::seed_from_u64(0x5c4a_5eed);
        let alphabet = b"nypcrsmaix=,,,biwsAZ+/09\xff\x00";
        for i in 0..10_000 {
            let byte = |rng: &mut StdRng| match i % 2 {
                0 => rng.random(),
                _ => alphabet[rng.random_range(0..alphabet.len())],
            };
            let bytes: Vec<u8> = (0..rng.random_range(0..96)).map(|_| byte(&mut rng)).collect();
            let _ = ScramServer::new(k.clone()).client_first(MECHANISM, &bytes);
            assert!(started(&k).0.client_final(&bytes).is_err());
            // Mutate a well-formed final message so parsing gets past the first checks.
            let (mut s, _, nonce) = started(&k);
            let mut proof = [0u8; 32];
            rng.fill_bytes(&mut proof);
            let mut msg = format!("c=biws,r={nonce},p={}", STANDARD.encode(proof)).into_bytes();
            for _ in 0..rng.random_range(0..4) {
                let at = rng.random_range(0..msg.len());
                msg[at] = byte(&mut rng);
            }
            msg.truncate(rng.random_range(0..=msg.len()));
            assert!(s.client_final(&msg).is_err());
        }
    }
}
