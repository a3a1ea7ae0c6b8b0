//! A DNS server we control, for upstream nodes given by name: answers A queries over UDP on
//! loopback from a table the test can change, with a chosen TTL; AAAA gets an empty answer,
//! unknown names NXDOMAIN.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

pub struct DnsServer {
    pub addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>,
    delay: Arc<Mutex<std::time::Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    pub async fn start(ttl: u32) -> DnsServer {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>> = Arc::default();
        let table = records.clone();
        let delay: Arc<Mutex<std::time::Duration>> = Arc::default();
        let wait = delay.clone();
        let socket = Arc::new(socket);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let reply = answer(&buf[..n], &table.lock().unwrap(), ttl);
                let pause = *wait.lock().unwrap();
                let socket = socket.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(pause).await;
                    if let Some(reply) = reply {
                        let _ = socket.send_to(&reply, peer).await;
                    }
                });
            }
        });
        DnsServer {
            addr,
            records,
            delay,
            task,
        }
    }

    /// From now on every answer leaves this long after its query (a slow resolver).
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// From now on `name` resolves to `ips`.
    pub fn set(&self, name: &str, ips: &[Ipv4Addr]) {
        self.records
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), ips.to_vec());
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &[u8], table: &HashMap<String, Vec<Ipv4Addr>>, ttl: u32) -> Option<Vec<u8>> {
    // Header, then one question: labels, type, class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let found = table.get(&labels.join("."));
    let ips: &[Ipv4Addr] = match (found, qtype) {
        (Some(ips), 1) => ips,
        _ => &[],
    };
    let mut reply = query.get(..question_end)?.to_vec();
    reply[2] = 0x81; // response, recursion desired
    reply[3] = if found.is_some() { 0x80 } else { 0x83 }; // recursion available; NXDOMAIN
    reply[6..8].copy_from_slice(&(ips.len() as u16).to_be_bytes());
    reply[8..12].fill(0);
    for ip in ips {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        reply.extend_from_slice(&ttl.to_be_bytes());
        reply.extend_from_slice(&[0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}
