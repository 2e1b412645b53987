//! A TCP proxy in front of a plaintext gRPC server that loses answers: on
//! the first connections it lets the request through, and when the server
//! starts its answer (the first HEADERS frame of a stream) it cuts both
//! sides. The call took effect; the client cannot know.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// HTTP/2 frame type of HEADERS.
const HEADERS: u8 = 0x1;

/// The proxy; it serves until dropped with its runtime.
pub struct AnswerLosingProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    cut: Arc<AtomicUsize>,
}

impl AnswerLosingProxy {
    /// Proxies to `upstream`, losing the first answer on each of the first
    /// `connections` connections.
    pub async fn start(upstream: std::net::SocketAddr, connections: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let cut = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let lose = seen.fetch_add(1, Ordering::SeqCst) < connections;
                let cuts = cuts.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    if relay(client, server, lose).await {
                        cuts.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Self { addr, cut }
    }

    /// Answers lost so far.
    pub fn answers_lost(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }
}

/// Relays both ways; true if it cut the connection at an answer.
async fn relay(client: TcpStream, server: TcpStream, lose: bool) -> bool {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut frames = FrameReader::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut cut = false;
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if lose && frames.feed(&buf[..n]) {
            cut = true;
            break;
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    upstream.abort();
    cut
}

/// Follows the server's HTTP/2 frames (it sends no preface of its own).
#[derive(Default)]
struct FrameReader {
    pending: Vec<u8>,
}

impl FrameReader {
    /// Takes bytes; true once a HEADERS frame of a stream (an answer) begins.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        while self.pending.len() >= at + 9 {
            let header = &self.pending[at..at + 9];
            let length = (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
            let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            if header[3] == HEADERS && stream != 0 {
                return true;
            }
            if self.pending.len() < at + 9 + length {
                break;
            }
            at += 9 + length;
        }
        self.pending.drain(..at);
        false
    }
}

/// A load balancer in front of several controllers: each new connection
/// goes to the first backend, in order, that is in service and accepts it;
/// or, spreading, to the next one in turn, as a round-robin load balancer
/// does (then to the others in order if it refuses). Taking a backend out
/// of service (what a failing health check does to a stopped process) also
/// cuts the connections it has.
pub struct FailoverProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    state: Arc<std::sync::Mutex<Backends>>,
}

struct Backends {
    addrs: Vec<std::net::SocketAddr>,
    out: Vec<bool>,
    /// The relays to each backend, to cut when it goes out of service.
    relays: Vec<Vec<tokio::task::AbortHandle>>,
    /// Whether connections take turns (round robin) rather than all go to
    /// the first backend in service.
    spread: bool,
    /// Connections accepted so far: whose turn it is when spreading.
    accepted: usize,
}

impl FailoverProxy {
    /// Serves on a port of its own until dropped with its runtime, sending
    /// every connection to the first backend that takes it.
    pub async fn start(backends: Vec<std::net::SocketAddr>) -> Self {
        Self::start_with(backends, false).await
    }

    /// As [`FailoverProxy::start`], or, `spread`, with the connections
    /// taking turns over the backends in service.
    pub async fn start_with(backends: Vec<std::net::SocketAddr>, spread: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let state = Arc::new(std::sync::Mutex::new(Backends {
            out: vec![false; backends.len()],
            relays: vec![Vec::new(); backends.len()],
            addrs: backends,
            spread,
            accepted: 0,
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let candidates = state.lock().expect("proxy lock").candidates();
                    for (index, backend) in candidates {
                        let Ok(mut server) = TcpStream::connect(backend).await else {
                            continue;
                        };
                        let relay = tokio::spawn(async move {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        });
                        state.lock().expect("proxy lock").relays[index].push(relay.abort_handle());
                        let _ = relay.await;
                        return;
                    }
                });
            }
        });
        Self { addr, state }
    }

    /// Takes backend `index` out of service (cutting its connections) or
    /// puts it back.
    pub fn set_in_service(&self, index: usize, in_service: bool) {
        let mut b = self.state.lock().expect("proxy lock");
        b.out[index] = !in_service;
        if !in_service {
            for relay in b.relays[index].drain(..) {
                relay.abort();
            }
        }
    }
}

impl Backends {
    /// The backends in service in the order a new connection tries them.
    fn candidates(&mut self) -> Vec<(usize, std::net::SocketAddr)> {
        let mut candidates: Vec<(usize, std::net::SocketAddr)> = self
            .addrs
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| !self.out[*i])
            .collect();
        if self.spread && !candidates.is_empty() {
            let turn = self.accepted % candidates.len();
            candidates.rotate_left(turn);
        }
        self.accepted += 1;
        candidates
    }
}

/// A TCP proxy whose connections can go silent all at once: after
/// [`StallingProxy::stall`], the connections it relays stay open but carry
/// nothing either way, as when the peer's host vanished without closing
/// them (a host lost, a black-holed route); connections made after that are
/// relayed as before (the name now leads to a live host).
pub struct StallingProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    current: Arc<std::sync::Mutex<tokio_util::sync::CancellationToken>>,
    connections: Arc<AtomicUsize>,
}

impl StallingProxy {
    /// Relays to `upstream` until dropped with its runtime.
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let current = Arc::new(std::sync::Mutex::new(tokio_util::sync::CancellationToken::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stalls, count) = (current.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let stall = stalls.lock().expect("proxy lock").clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = stall.cancelled() => {
                            // Open and silent for as long as the proxy runs.
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            current,
            connections,
        }
    }

    /// Silences every connection open now.
    pub fn stall(&self) {
        let mut current = self.current.lock().expect("proxy lock");
        current.cancel();
        *current = tokio_util::sync::CancellationToken::new();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, payload.len() as u8, kind, 0];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn an_answer_is_seen_at_its_first_headers_frame_however_the_bytes_arrive() {
        let settings = frame(0x4, 0, &[0; 6]);
        let ack = frame(0x4, 0, &[]);
        let answer = frame(HEADERS, 1, &[1, 2, 3]);
        let all: Vec<u8> = [settings, ack, answer].concat();
        for split in 0..all.len() {
            let mut reader = FrameReader::default();
            let first = reader.feed(&all[..split]);
            let second = reader.feed(&all[split..]);
            assert!(!first || split > 9 + 6 + 9, "split {split}");
            assert!(first || second, "split {split}");
        }
        let mut reader = FrameReader::default();
        assert!(!reader.feed(&frame(0x4, 0, &[0; 6])), "settings are no answer");
    }

    fn backends(spread: bool) -> Backends {
        let addrs: Vec<std::net::SocketAddr> = (1..=3).map(|p| ([127, 0, 0, 1], p).into()).collect();
        Backends {
            out: vec![false; addrs.len()],
            relays: vec![Vec::new(); addrs.len()],
            addrs,
            spread,
            accepted: 0,
        }
    }

    fn first_tried(b: &mut Backends) -> usize {
        b.candidates()[0].0
    }

    #[test]
    fn spreading_connections_take_turns_over_the_backends_in_service() {
        let mut b = backends(true);
        let turns: Vec<usize> = (0..6).map(|_| first_tried(&mut b)).collect();
        assert_eq!(turns, [0, 1, 2, 0, 1, 2]);
        assert_eq!(b.candidates().len(), 3, "the others are tried after the first");
        b.out[1] = true;
        let turns: Vec<usize> = (0..4).map(|_| first_tried(&mut b)).collect();
        assert!(!turns.contains(&1), "one out of service gets none: {turns:?}");
        assert!(
            turns.contains(&0) && turns.contains(&2),
            "the rest take turns: {turns:?}"
        );
    }

    #[test]
    fn failing_over_every_connection_goes_to_the_first_in_service() {
        let mut b = backends(false);
        assert!((0..4).all(|_| first_tried(&mut b) == 0));
        b.out[0] = true;
        assert!((0..4).all(|_| first_tried(&mut b) == 1));
    }
}
