//! DNS for upstream nodes given by name: every A/AAAA record of the name becomes a node
//! (DNS round robin), re-resolved when the records' TTL runs out.
//!
//! Resolution runs beside the data plane, like the etcd watch: the watch tells this task
//! which names are in use, this task sends back each name's addresses when they change,
//! and the watch applies them to `State` as a change of its own (the upstreams using the
//! name are recompiled). A lookup failure keeps the last addresses: DNS trouble never
//! takes a configured upstream down. A name's first lookup is answered either way (no
//! address when it fails), so that the watch knows when every name in use has been
//! looked up once: only then is the revision reported as applied.
//!
//! With `--dns-resolver` the queries go over UDP to that server and honour the records'
//! TTL (as APISIX's `dns_resolver`); without it the system resolver (`getaddrinfo`:
//! /etc/hosts, resolv.conf) is used, which reports no TTL, so names are refreshed every
//! [`SYSTEM_TTL`].
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Refresh interval when the system resolver gives no TTL.
pub const SYSTEM_TTL: Duration = Duration::from_secs(30);
/// TTLs are kept within these bounds: 0 would mean a query per request's worth of time,
/// and a day-long TTL would pin a moved service.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(3600);
/// After a failed lookup, try again this soon (the last addresses stay in use).
const RETRY: Duration = Duration::from_secs(5);
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a node host needs resolving (it is not an IP literal).
pub fn is_name(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty() && bare.parse::<IpAddr>().is_err()
}

/// Resolves the names the watch publishes in `names`, sending `(name, addresses)` to
/// `updates` whenever a name's sorted address list changes. Runs until `names` closes.
pub async fn run(
    mut names: watch::Receiver<BTreeSet<String>>,
    updates: mpsc::Sender<(String, Vec<IpAddr>)>,
    server: Option<SocketAddr>,
) {
    // Per name: the addresses last sent and when to look again.
    let mut known: BTreeMap<String, (Vec<IpAddr>, Instant)> = BTreeMap::new();
    loop {
        let wanted = names.borrow_and_update().clone();
        known.retain(|name, _| wanted.contains(name));
        let now = Instant::now();
        for name in &wanted {
            let due = known.get(name).is_none_or(|(_, at)| *at <= now);
            if !due {
                continue;
            }
            let next = match lookup(name, server).await {
                Ok((mut addrs, ttl)) => {
                    addrs.sort();
                    addrs.dedup();
                    let changed = known.get(name).is_none_or(|(old, _)| *old != addrs);
                    if changed {
                        tracing::info!(name = %name, addresses = ?addrs, "upstream node name resolved");
                    }
                    // Every answer is sent, changed or not (the state ignores repeats): a
                    // state that lost a name's addresses has them back within one TTL.
                    if updates.send((name.clone(), addrs.clone())).await.is_err() {
                        return;
                    }
                    (addrs, Instant::now() + ttl.clamp(MIN_TTL, MAX_TTL))
                }
                Err(e) => {
                    tracing::warn!(name = %name, error = %e, "cannot resolve upstream node name; keeping its last addresses");
                    // A name's first answer is sent even when it is a failure (no
                    // address): the watch holds the applied revision back until every
                    // name in use has had one.
                    if !known.contains_key(name)
                        && updates.send((name.clone(), Vec::new())).await.is_err()
                    {
                        return;
                    }
                    let last = known.get(name).map(|(a, _)| a.clone()).unwrap_or_default();
                    (last, Instant::now() + RETRY)
                }
            };
            known.insert(name.clone(), next);
        }
        let wake = known
            .values()
            .map(|(_, at)| *at)
            .min()
            .unwrap_or_else(|| Instant::now() + MAX_TTL);
        tokio::select! {
            changed = names.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Every address of `name` and how long they may be used.
pub async fn lookup(
    name: &str,
    server: Option<SocketAddr>,
) -> Result<(Vec<IpAddr>, Duration), String> {
    let Some(server) = server else {
        let addrs = tokio::net::lookup_host((name, 0))
            .await
            .map_err(|e| e.to_string())?
            .map(|a| a.ip())
            .collect::<Vec<_>>();
        return if addrs.is_empty() {
            Err("no address".into())
        } else {
            Ok((addrs, SYSTEM_TTL))
        };
    };
    let mut addrs = Vec::new();
    let mut ttl: Option<u32> = None;
    let mut last_err = None;
    for qtype in [TYPE_A, TYPE_AAAA] {
        match query(server, name, qtype).await {
            Ok(records) => {
                for (ip, t) in records {
                    addrs.push(ip);
                    ttl = Some(ttl.map_or(t, |m| m.min(t)));
                }
            }
            Err(e) => last_err = Some(e),
        }
    }
    if addrs.is_empty() {
        return Err(last_err.unwrap_or_else(|| "no A or AAAA record".into()));
    }
    Ok((addrs, Duration::from_secs(u64::from(ttl.unwrap_or(30)))))
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

async fn query(server: SocketAddr, name: &str, qtype: u16) -> Result<Vec<(IpAddr, u32)>, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        & 0xffff) as u16;
    let q = build_query(id, name, qtype)?;
    socket.send(&q).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(QUERY_TIMEOUT, socket.recv(&mut buf))
        .await
        .map_err(|_| format!("no answer from {server} within {QUERY_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    parse_response(buf.get(..n).unwrap_or(&[]), id, qtype)
}

/// A standard recursive query for one name and type.
fn build_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; 1 question
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| format!("{name:?} is not a valid DNS name"))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    Ok(q)
}

/// The addresses (with TTLs) of type `qtype` in an answer to query `id`. A name with no
/// records of that type is an empty list; NXDOMAIN and server errors are errors.
fn parse_response(msg: &[u8], id: u16, qtype: u16) -> Result<Vec<(IpAddr, u32)>, String> {
    let u16_at = |at: usize| -> Result<u16, String> {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated DNS message".to_string())
    };
    if u16_at(0)? != id {
        return Err("DNS answer for another query".into());
    }
    let flags = u16_at(2)?;
    match flags & 0x000f {
        0 => {}
        3 => return Err("no such name (NXDOMAIN)".into()),
        rcode => return Err(format!("DNS server error (rcode {rcode})")),
    }
    if flags & 0x0200 != 0 {
        return Err("DNS answer truncated (too many records for UDP)".into());
    }
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(msg, at)?;
        let rtype = u16_at(at)?;
        let ttl = msg
            .get(at + 4..at + 8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("truncated DNS message")?;
        let len = usize::from(u16_at(at + 8)?);
        let data = msg
            .get(at + 10..at + 10 + len)
            .ok_or("truncated DNS message")?;
        at += 10 + len;
        // CNAMEs come before the addresses they lead to; only the addresses matter.
        if rtype != qtype {
            continue;
        }
        let ip = match (rtype, data.len()) {
            (TYPE_A, 4) => IpAddr::from([data[0], data[1], data[2], data[3]]),
            (TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                IpAddr::from(b)
            }
            _ => return Err("malformed address record".into()),
        };
        out.push((ip, ttl));
    }
    Ok(out)
}

/// The offset just past a (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, String> {
    // A name is at most 255 bytes, so 128 labels; more means a loop or garbage.
    for _ in 0..128 {
        let len = *msg.get(at).ok_or("truncated DNS message")?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
    Err("malformed DNS name".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a server would build it: the question, then records whose names
    /// point back at the question (compression).
    fn answer(id: u16, rcode: u8, records: &[(u16, Vec<u8>, u32)]) -> Vec<u8> {
        let mut m = build_query(id, "svc.example", TYPE_A).unwrap();
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[7] = records.len() as u8;
        for (rtype, data, ttl) in records {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&rtype.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    #[test]
    fn responses_table() {
        let a = |ip: [u8; 4], ttl| (TYPE_A, ip.to_vec(), ttl);
        let cname = (5u16, vec![3, b'f', b'o', b'o', 0], 60);
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        type Want = Result<Vec<(IpAddr, u32)>, ()>;
        let cases: Vec<(Vec<u8>, u16, Want)> = vec![
            (
                answer(7, 0, &[a([10, 0, 0, 1], 30), a([10, 0, 0, 2], 10)]),
                TYPE_A,
                Ok(vec![(v4("10.0.0.1"), 30), (v4("10.0.0.2"), 10)]),
            ),
            (
                answer(7, 0, &[cname.clone(), a([10, 0, 0, 3], 5)]),
                TYPE_A,
                Ok(vec![(v4("10.0.0.3"), 5)]),
            ),
            (answer(7, 0, &[]), TYPE_AAAA, Ok(vec![])),
            (
                answer(7, 0, &[(TYPE_AAAA, [0u8; 16].to_vec(), 9)]),
                TYPE_AAAA,
                Ok(vec![(v4("::"), 9)]),
            ),
            (answer(7, 3, &[]), TYPE_A, Err(())),
            (answer(7, 2, &[]), TYPE_A, Err(())),
            (answer(8, 0, &[a([10, 0, 0, 1], 1)]), TYPE_A, Err(())),
            (answer(7, 0, &[(TYPE_A, vec![1, 2, 3], 1)]), TYPE_A, Err(())),
        ];
        for (n, (msg, qtype, want)) in cases.into_iter().enumerate() {
            let got = parse_response(&msg, 7, qtype).map_err(|_| ());
            assert_eq!(got, want, "case {n}");
            // Every truncation of a message is an error or a shorter answer, never a panic.
            for cut in 0..msg.len() {
                let _ = parse_response(&msg[..cut], 7, qtype);
            }
        }
    }

    #[test]
    fn names_and_queries() {
        assert!(is_name("svc.default.svc.cluster.local"));
        assert!(is_name("localhost"));
        assert!(!is_name("10.0.0.1"));
        assert!(!is_name("[::1]"));
        assert!(!is_name("::1"));
        assert!(build_query(1, "a..b", TYPE_A).is_err());
        assert!(build_query(1, &"x".repeat(64), TYPE_A).is_err());
        let q = build_query(0x1234, "ab.c.", TYPE_AAAA).unwrap();
        assert_eq!(
            q,
            [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, b'a', b'b', 1, b'c', 0, 0, 28, 0, 1]
        );
    }
}
