//! The least memory an idle keepalive connection can take with a tokio task per
//! connection: an accepted socket whose task waits to read it, with an idle timer beside
//! it (`timer`) or without. Prints the VmRSS grown by N such connections, in bytes, and N.
//! The clients are plain sockets of another thread of this process (a file descriptor
//! each: kernel memory, not RSS).
use std::time::Duration;
use tokio::io::AsyncReadExt;

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(9000);
    let timer = std::env::args().nth(2).as_deref() == Some("timer");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let before = rss();
        let clients = std::thread::spawn(move || {
            (0..n)
                .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
                .collect::<Vec<_>>()
        });
        for _ in 0..n {
            let (mut s, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if timer {
                    tokio::select! {
                        _ = s.read(&mut b) => {}
                        _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                    }
                } else {
                    let _ = s.read(&mut b).await;
                }
            });
        }
        let clients = clients.join().expect("clients");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(alive, n, "every connection's task is waiting");
        println!("{} {}", rss() - before, n);
        drop(clients);
    });
}
