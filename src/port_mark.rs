//! Who may join a listening port. The workers of one process share `listen_addr:listen_port`
//! through SO_REUSEPORT, and the kernel lets any process of the same user with SO_REUSEPORT
//! join that group. So a pgmux without `so_reuseport` marks each address it holds with an
//! abstract Unix socket named `pgmux-exclusive/PORT/IP/PID`, alive as long as the process,
//! and a pgmux with `so_reuseport` refuses to start while such a mark overlaps its addresses.
//!
//! Race-free by ordering: the exclusive process marks first and then checks the port is free
//! with a plain bind; the sharing one binds first and then looks for marks. Whichever comes
//! second sees the other.

use std::io::{Error, ErrorKind};
use std::net::IpAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

const PREFIX: &str = "pgmux-exclusive/";

/// The marks of this process, one per address; dropping them lifts the claim.
pub struct Marks(#[allow(dead_code)] Vec<UnixListener>);

/// Marks `ips` at `port` as held by this process alone.
pub fn claim(ips: &[IpAddr], port: u16) -> std::io::Result<Marks> {
    let pid = std::process::id();
    let marks = ips
        .iter()
        .map(|ip| {
            let name = format!("{PREFIX}{port}/{ip}/{pid}");
            UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
        })
        .collect::<Result<_, _>>()?;
    Ok(Marks(marks))
}

/// An error if another process holds one of `ips` at `port` without so_reuseport.
pub fn check_unclaimed(ips: &[IpAddr], port: u16) -> std::io::Result<()> {
    let table = match std::fs::read_to_string("/proc/net/unix") {
        Ok(table) => table,
        Err(e) => {
            // Without /proc the check cannot be made; the kernel's own rules still hold.
            tracing::warn!(error = %e, "cannot read /proc/net/unix: not checking for a pgmux without so_reuseport");
            return Ok(());
        }
    };
    match holder(&table, ips, port) {
        Some((ip, pid)) => Err(Error::new(
            ErrorKind::AddrInUse,
            format!(
                "address in use: pgmux process {pid} listens on {ip}:{port} without so_reuseport; \
                 to share the port, set [pooler] so_reuseport = true in every process on it"
            ),
        )),
        None => Ok(()),
    }
}

/// The first mark in `/proc/net/unix` text that overlaps `ips` at `port`: (its ip, its pid).
fn holder(table: &str, ips: &[IpAddr], port: u16) -> Option<(IpAddr, u32)> {
    let own = std::process::id();
    table.lines().find_map(|line| {
        let name = line
            .split_whitespace()
            .last()?
            .strip_prefix('@')?
            .strip_prefix(PREFIX)?;
        let mut parts = name.split('/');
        let (p, ip, pid) = (parts.next()?, parts.next()?, parts.next()?);
        let (ip, pid): (IpAddr, u32) = (ip.parse().ok()?, pid.parse().ok()?);
        let ours = p.parse() == Ok(port) && pid != own && ips.iter().any(|mine| overlap(*mine, ip));
        ours.then_some((ip, pid))
    })
}

/// Whether two listening addresses take the same connections: the same family, and equal or
/// one of them the wildcard (pgmux binds `::` v6-only, so families never mix).
fn overlap(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a == b || a.is_unspecified() || b.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn marks_are_found_when_they_overlap() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000: 00000002 00000000 00010000 0001 01 1 @pgmux-exclusive/6432/0.0.0.0/1\n\
            0000: 00000002 00000000 00010000 0001 01 2 @pgmux-exclusive/7000/::1/2\n\
            0000: 00000002 00000000 00010000 0001 01 3 /tmp/.s.PGSQL.6432\n";
        assert_eq!(holder(table, &[ip("127.0.0.1")], 6432), Some((ip("0.0.0.0"), 1)));
        assert_eq!(holder(table, &[ip("::1")], 6432), None, "another family");
        assert_eq!(holder(table, &[ip("127.0.0.1")], 6433), None, "another port");
        assert_eq!(holder(table, &[ip("::")], 7000), Some((ip("::1"), 2)));
        assert_eq!(holder(table, &[ip("10.0.0.1")], 7000), None);
    }

    #[test]
    fn a_claim_is_seen_by_others_and_lifted_on_drop() {
        let port = 1; // no process listens on port 1 with a pgmux mark
        let marks = claim(&[ip("127.0.0.1")], port).unwrap();
        let table = std::fs::read_to_string("/proc/net/unix").unwrap();
        let name = format!("@pgmux-exclusive/{port}/127.0.0.1/{}", std::process::id());
        assert!(table.contains(&name), "{name} not in /proc/net/unix");
        drop(marks);
        let table = std::fs::read_to_string("/proc/net/unix").unwrap();
        assert!(!table.contains(&name));
    }

    #[test]
    fn wildcards_overlap_their_own_family_only() {
        assert!(overlap(ip("0.0.0.0"), ip("10.1.2.3")));
        assert!(overlap(ip("10.1.2.3"), ip("10.1.2.3")));
        assert!(!overlap(ip("10.1.2.3"), ip("10.1.2.4")));
        assert!(!overlap(ip("::"), ip("127.0.0.1")));
        assert!(overlap(ip("::"), ip("::1")));
    }
}
