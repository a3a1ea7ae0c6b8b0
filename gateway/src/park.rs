//! Idle plain-HTTP client connections held outside any task (issue 16, goal 3).
//!
//! A connection's task costs about 1.5 KiB while it waits for its client's next request:
//! the task cell with the connection's future (~1 KiB, of which ~1 KiB is tokio's floor
//! for any task that waits on a socket; `bench/tokio-floor.sh`), tokio's registration of
//! the socket (128-byte aligned) and the connection's counters. nginx keeps ~0.5 KiB for
//! an idle keepalive connection. So a connection that has had no request for
//! [`PARK_AFTER`] leaves its task: its socket moves from tokio's epoll set to the park's
//! own (one epoll descriptor per worker and listener, itself watched by tokio), and what
//! the connection needs to go on (`T`: its addresses, its worker slot, its close
//! deadline) waits in a slab, about 250 bytes in all. When the client sends again (or
//! closes), the socket moves back and a new task serves it; when the deadline passes
//! first, the park closes it.
//!
//! The move costs four `epoll_ctl` calls and a task spawn, a few microseconds, per idle
//! period, nothing per request: a connection that is never idle for [`PARK_AFTER`] never
//! parks, and one whose client keeps coming back soon after is parked later each time
//! ([`next_park_after`]).
use slab::Slab;
use std::future::Future;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tokio_util::time::{delay_queue, DelayQueue};

/// How long a new connection waits for its next request in its own task before it is
/// parked. A client sending requests back to back never pays for the move; a burst of
/// connections that each send one request holds a tenth of a second's worth of tasks at
/// most, not every connection's.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// The longest wait before a park ([`next_park_after`]).
pub const PARK_AFTER_MAX: Duration = Duration::from_millis(1600);

/// A park shorter than this did not pay for its move.
const PARK_PAYS: Duration = Duration::from_secs(1);

/// How long a connection back from the park waits before its next park, given how long it
/// waited before the last one and how long it was parked. A client that came back within
/// [`PARK_PAYS`] (one polling every few hundred milliseconds) waits twice as long next time,
/// up to [`PARK_AFTER_MAX`]: such a client pays for a handful of moves, not one per request.
/// A park that lasted longer halves the wait again, down to [`PARK_AFTER`].
pub fn next_park_after(last: Duration, parked_for: Duration) -> Duration {
    if parked_for < PARK_PAYS {
        (last * 2).min(PARK_AFTER_MAX)
    } else {
        (last / 2).max(PARK_AFTER)
    }
}

/// The longest a connection stays parked, whatever its deadline: the expiry wheel holds
/// about two years, and a deadline beyond it would panic.
const MAX_PARKED: Duration = Duration::from_secs(365 * 24 * 3600);

/// How many readiness events one look at the park's epoll set takes.
const EVENTS: usize = 256;

pub struct Park<T> {
    registry: mio::Registry,
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    entries: Slab<Entry<T>>,
    /// Slab keys, by close deadline.
    expiry: DelayQueue<usize>,
    /// False once the park stopped: nothing parks any more.
    open: bool,
}

struct Entry<T> {
    stream: mio::net::TcpStream,
    data: T,
    expiry: delay_queue::Key,
}

/// The park's epoll set as tokio sees it: owned by the one task that runs [`Park::watch`].
pub struct Watcher {
    poll: AsyncFd<mio::Poll>,
    events: mio::Events,
}

impl<T> Park<T> {
    /// A park and the watcher of its sockets. Inside a tokio runtime with IO and time.
    pub fn new() -> io::Result<(Park<T>, Watcher)> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        // tokio 1.54 deprecated its safe constructors because an inner value could close its
        // descriptor while tokio still watches it; a `mio::Poll` owns its epoll descriptor
        // for its whole life, and the `AsyncFd` owns the `Poll`, so that cannot happen here.
        #[allow(deprecated)]
        let poll = AsyncFd::with_interest(poll, tokio::io::Interest::READABLE)?;
        let park = Park {
            registry,
            inner: Mutex::new(Inner {
                entries: Slab::new(),
                expiry: DelayQueue::new(),
                open: true,
            }),
        };
        Ok((
            park,
            Watcher {
                poll,
                events: mio::Events::with_capacity(EVENTS),
            },
        ))
    }

    /// Holds `stream` until its client sends or closes (then [`Park::watch`] hands it back)
    /// or until `deadline` (then the park closes it). Handed back at once when the park has
    /// stopped or the socket cannot be watched.
    #[allow(clippy::result_large_err)]
    pub fn park(
        &self,
        stream: std::net::TcpStream,
        data: T,
        deadline: Instant,
    ) -> Result<(), (std::net::TcpStream, T)> {
        let mut inner = self.lock();
        if !inner.open {
            return Err((stream, data));
        }
        let key = inner.entries.vacant_key();
        let mut stream = mio::net::TcpStream::from_std(stream);
        if let Err(e) =
            self.registry
                .register(&mut stream, mio::Token(key), mio::Interest::READABLE)
        {
            tracing::debug!(error = %e, "cannot park a connection");
            return Err((stream.into(), data));
        }
        let deadline = deadline.min(Instant::now() + MAX_PARKED);
        let expiry = inner.expiry.insert_at(key, deadline);
        inner.entries.insert(Entry {
            stream,
            data,
            expiry,
        });
        Ok(())
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs the park until `stop` resolves: a connection whose client sends (or closes) goes
    /// to `resume`, its socket a non-blocking std one again; one whose deadline
    /// passes is closed and its data goes to `expired`. Then the park stops taking
    /// connections and every one still parked goes to `resume`.
    pub async fn watch(
        &self,
        mut w: Watcher,
        stop: impl Future<Output = ()>,
        mut resume: impl FnMut(std::net::TcpStream, T),
        mut expired: impl FnMut(T),
    ) {
        let mut stop = std::pin::pin!(stop);
        'watch: loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                ready = w.poll.readable_mut() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => {
                            tracing::warn!(error = %e, "parked connections cannot be watched; resuming them");
                            break;
                        }
                    };
                    // tokio watches the set edge-triggered: it is read until empty.
                    loop {
                        match guard.get_inner_mut().poll(&mut w.events, Some(Duration::ZERO)) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => {
                                // Not looked at again: the set would stay ready and spin.
                                tracing::warn!(error = %e, "cannot read the parked connections' events; resuming them");
                                break 'watch;
                            }
                        }
                        if w.events.is_empty() {
                            guard.clear_ready();
                            break;
                        }
                        for event in &w.events {
                            if let Some((stream, data)) = self.take(event.token().0) {
                                resume(stream, data);
                            }
                        }
                    }
                }
                data = std::future::poll_fn(|cx| self.poll_expired(cx)) => expired(data),
            }
        }
        let all: Vec<_> = {
            let mut inner = self.lock();
            inner.open = false;
            inner.expiry.clear();
            inner.entries.drain().collect()
        };
        for mut e in all {
            let _ = self.registry.deregister(&mut e.stream);
            resume(e.stream.into(), e.data);
        }
    }

    /// The connection parked under `key`, out of the park.
    fn take(&self, key: usize) -> Option<(std::net::TcpStream, T)> {
        let mut inner = self.lock();
        let mut e = inner.entries.try_remove(key)?;
        inner.expiry.remove(&e.expiry);
        drop(inner);
        // Out of this set before tokio's takes it: an fd in both would wake both.
        let _ = self.registry.deregister(&mut e.stream);
        Some((e.stream.into(), e.data))
    }

    /// The next connection whose deadline passed, out of the set and closed.
    fn poll_expired(&self, cx: &mut Context<'_>) -> Poll<T> {
        let mut inner = self.lock();
        loop {
            match inner.expiry.poll_expired(cx) {
                Poll::Ready(Some(key)) => {
                    if let Some(mut e) = inner.entries.try_remove(key.into_inner()) {
                        // Closing would take it out of the set too, unless the descriptor
                        // were shared; its key is reused by the next park.
                        let _ = self.registry.deregister(&mut e.stream);
                        return Poll::Ready(e.data);
                    }
                }
                // Empty: the next insert wakes this task.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // The lock guards no invariant a panic could break halfway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Arc;
    use tokio::sync::mpsc;

    /// A connected pair: (the server's end, non-blocking as tokio leaves it, the client's).
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    enum Out {
        Resumed(std::net::TcpStream, u32),
        Expired(u32),
    }

    /// A running park whose hand-backs arrive on the receiver; stopped by the sender.
    fn running() -> (
        Arc<Park<u32>>,
        mpsc::UnboundedReceiver<Out>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let (park, watcher) = Park::new().unwrap();
        let park = Arc::new(park);
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let park = park.clone();
            async move {
                let tx2 = tx.clone();
                park.watch(
                    watcher,
                    async move {
                        let _ = stop_rx.await;
                    },
                    move |s, d| {
                        let _ = tx.send(Out::Resumed(s, d));
                    },
                    move |d| {
                        let _ = tx2.send(Out::Expired(d));
                    },
                )
                .await
            }
        });
        (park, rx, stop_tx, task)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Out>) -> Out {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the park handed nothing back")
            .expect("the park stopped")
    }

    #[tokio::test]
    async fn a_parked_connection_comes_back_when_its_client_sends_and_keeps_the_bytes() {
        let (park, mut rx, _stop, _task) = running();
        let far = Instant::now() + Duration::from_secs(60);
        let (s1, mut c1) = pair();
        let (s2, _c2) = pair();
        park.park(s1, 1, far).unwrap();
        park.park(s2, 2, far).unwrap();
        assert_eq!(park.len(), 2);
        c1.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let Out::Resumed(mut s, 1) = next(&mut rx).await else {
            panic!("not connection 1 resumed")
        };
        assert_eq!(park.len(), 1);
        // The bytes the client sent while parked are there to read, and the socket
        // answers as it did: it went back whole.
        s.set_nonblocking(false).unwrap();
        let mut got = [0u8; 18];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\n");
        s.write_all(b"ok").unwrap();
        let mut back = [0u8; 2];
        c1.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ok");

        // Parked again after being resumed (the slab key is reused), it comes back again.
        s.set_nonblocking(true).unwrap();
        park.park(s, 3, far).unwrap();
        c1.write_all(b"x").unwrap();
        assert!(matches!(next(&mut rx).await, Out::Resumed(_, 3)));
    }

    #[tokio::test]
    async fn bytes_sent_before_parking_wake_it_at_once() {
        let (park, mut rx, _stop, _task) = running();
        let (s, mut c) = pair();
        c.write_all(b"early").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        park.park(s, 7, Instant::now() + Duration::from_secs(60))
            .unwrap();
        assert!(matches!(next(&mut rx).await, Out::Resumed(_, 7)));
    }

    #[tokio::test]
    async fn a_client_that_closes_while_parked_is_handed_back_to_see_the_end() {
        let (park, mut rx, _stop, _task) = running();
        let (s, c) = pair();
        park.park(s, 5, Instant::now() + Duration::from_secs(60))
            .unwrap();
        drop(c);
        let Out::Resumed(mut s, 5) = next(&mut rx).await else {
            panic!("not resumed")
        };
        s.set_nonblocking(false).unwrap();
        assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[tokio::test]
    async fn deadlines_close_connections_in_their_order_and_spare_the_others() {
        let (park, mut rx, _stop, _task) = running();
        let t0 = Instant::now();
        let mut clients = Vec::new();
        for (id, ms) in [(1u32, 400u64), (2, 150), (3, 60_000)] {
            let (s, c) = pair();
            park.park(s, id, t0 + Duration::from_millis(ms)).unwrap();
            clients.push(c);
        }
        assert!(matches!(next(&mut rx).await, Out::Expired(2)));
        assert!(t0.elapsed() >= Duration::from_millis(150));
        assert!(matches!(next(&mut rx).await, Out::Expired(1)));
        assert!(t0.elapsed() >= Duration::from_millis(400));
        assert_eq!(park.len(), 1);
        // The expired ones were closed: their clients read the end.
        for c in &mut clients[..2] {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(c.read(&mut [0u8; 8]).unwrap(), 0);
        }
        // A resumed one never expires later.
        clients[2].write_all(b"x").unwrap();
        assert!(matches!(next(&mut rx).await, Out::Resumed(_, 3)));
        assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn stopping_hands_every_connection_back_and_refuses_new_ones() {
        let (park, mut rx, stop, task) = running();
        let far = Instant::now() + Duration::from_secs(60);
        let mut clients = Vec::new();
        for id in 0..3u32 {
            let (s, c) = pair();
            park.park(s, id, far).unwrap();
            clients.push(c);
        }
        stop.send(()).unwrap();
        task.await.unwrap();
        let mut back = Vec::new();
        while let Ok(Out::Resumed(_, id)) = rx.try_recv() {
            back.push(id);
        }
        back.sort();
        assert_eq!(back, [0, 1, 2]);
        let (s, _c) = pair();
        let Err((_, 9)) = park.park(s, 9, far) else {
            panic!("a stopped park took a connection")
        };
        assert!(park.is_empty());
    }

    #[test]
    fn a_client_that_comes_back_soon_is_parked_later_next_time() {
        let ms = Duration::from_millis;
        // (wait before the last park, how long it was parked, wait before the next)
        for (last, parked_for, next) in [
            (ms(100), ms(50), ms(200)),
            (ms(200), ms(999), ms(400)),
            (ms(800), ms(10), ms(1600)),
            (ms(1600), ms(10), ms(1600)),
            (ms(100), ms(1000), ms(100)),
            (ms(400), Duration::from_secs(300), ms(200)),
            (ms(1600), Duration::from_secs(2), ms(800)),
        ] {
            assert_eq!(
                next_park_after(last, parked_for),
                next,
                "{last:?} {parked_for:?}"
            );
        }
        // A client polling every 700 ms: parked at 100, 200 and 400 ms of idleness, back
        // within the second each time, then never again.
        let (mut wait, mut parks) = (PARK_AFTER, 0);
        for _ in 0..100 {
            if wait < ms(700) {
                parks += 1;
                wait = next_park_after(wait, ms(700) - wait);
            }
        }
        assert_eq!((parks, wait), (3, ms(800)));
    }

    #[tokio::test]
    async fn a_deadline_beyond_the_wheel_is_held_not_a_panic() {
        let (park, _rx, _stop, _task) = running();
        let (s, _c) = pair();
        let far = Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);
        park.park(s, 1, far).unwrap();
        assert_eq!(park.len(), 1);
    }
}
