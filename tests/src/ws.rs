//! A real WebSocket echo server for tests: every text or binary message comes back
//! prefixed with the server's name.
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use tokio_tungstenite::tungstenite::Message;

pub struct WsBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WsBackend {
    pub async fn start(name: &str) -> WsBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let name = name.clone();
                conns.spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        let reply = match msg {
                            Message::Text(t) => Message::text(format!("{name}: {t}")),
                            Message::Binary(b) => Message::binary(b),
                            Message::Close(_) => break,
                            _ => continue,
                        };
                        if ws.send(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        WsBackend { addr, task }
    }

    pub fn node(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
