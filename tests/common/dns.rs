//! A small authoritative DNS server on a loopback UDP port for discovery tests: it answers A
//! queries from a table the test changes while it runs, can be told to fail (SERVFAIL), and
//! counts the queries it answered.

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

#[derive(Default)]
struct Zone {
    records: Mutex<HashMap<String, Vec<Ipv4Addr>>>,
    failing: AtomicBool,
    answered: AtomicUsize,
}

pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Zone::default());
        let serving = Arc::clone(&zone);
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buffer).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buffer[..len]) else {
                    continue;
                };
                if let Ok(bytes) = serving.answer(&query).to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Self { addr, zone, task }
    }

    /// Sets the A records of `name` (an empty list: the name has no addresses).
    pub fn set(&self, name: &str, ips: &[&str]) {
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        self.zone.records.lock().unwrap().insert(fqdn(name), ips);
    }

    /// Makes every answer SERVFAIL (true) or normal again (false).
    pub fn fail(&self, failing: bool) {
        self.zone.failing.store(failing, Ordering::SeqCst);
    }

    /// Queries answered so far (A and AAAA alike).
    pub fn answered(&self) -> usize {
        self.zone.answered.load(Ordering::SeqCst)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fqdn(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

impl Zone {
    fn answer(&self, query: &Message) -> Message {
        let mut response = Message::new(
            query.metadata.id,
            MessageType::Response,
            query.metadata.op_code,
        );
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = query.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.add_queries(query.queries.iter().cloned());
        self.answered.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            response.metadata.response_code = ResponseCode::ServFail;
            return response;
        }
        let records = self.records.lock().unwrap();
        for question in &query.queries {
            let name = fqdn(&question.name.to_string());
            match records.get(&name) {
                None => response.metadata.response_code = ResponseCode::NXDomain,
                Some(ips) if question.query_type == RecordType::A => {
                    for ip in ips {
                        let Ok(owner) = Name::from_ascii(&name) else {
                            continue;
                        };
                        response.add_answer(Record::from_rdata(owner, 0, RData::A(A(*ip))));
                    }
                }
                // The name exists but has no records of this type (AAAA here): NOERROR, empty.
                Some(_) => {}
            }
        }
        response
    }
}
