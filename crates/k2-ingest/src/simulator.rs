//! A local exchange for tests and benchmarks: a WebSocket server on 127.0.0.1 that plays a
//! script of frames in the venue's own format to each connection, and records what each
//! client asked for (the request path, the messages it sent).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// One step of what the exchange does on a connection.
#[derive(Clone, Debug)]
pub enum Step {
    /// Send a text frame.
    Send(String),
    /// Wait for a message from the client (a subscription) before going on.
    Receive,
    /// Send nothing for this long.
    Pause(Duration),
    /// Close the connection cleanly.
    Close,
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Send these frames as fast as the connection takes them (a burst).
    Burst(Arc<Vec<String>>),
    /// Send `count` frames at a steady rate (frames per second), a millisecond's worth at a
    /// time. Frame `i` (from 0) is made as it is sent, so a long run holds no frames.
    Paced {
        count: usize,
        frame: FrameMaker,
        per_second: u32,
    },
}

/// Makes frame `i` of a paced step.
#[derive(Clone)]
pub struct FrameMaker(pub Arc<dyn Fn(usize) -> String + Send + Sync>);

impl std::fmt::Debug for FrameMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameMaker")
    }
}

/// What one client did.
#[derive(Clone, Debug, Default)]
pub struct Visit {
    pub path: String,
    pub received: Vec<String>,
}

pub struct Simulator {
    pub addr: SocketAddr,
    visits: Arc<Mutex<Vec<Visit>>>,
    task: tokio::task::JoinHandle<()>,
    /// Cancelled when the simulator is dropped: every connection ends (the exchange goes
    /// away).
    gone: tokio_util::sync::CancellationToken,
}

impl Simulator {
    /// Listens on 127.0.0.1 (a free port); connection `i` plays `scripts[i]` (the last
    /// script again for any later connection).
    pub async fn start(scripts: Vec<Vec<Step>>) -> std::io::Result<Simulator> {
        Self::start_at("127.0.0.1:0".parse().expect("an address"), scripts).await
    }

    /// [`start`](Self::start) on `addr`: a simulator started again where a stopped one
    /// listened is the exchange coming back.
    pub async fn start_at(addr: SocketAddr, scripts: Vec<Vec<Step>>) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let gone = tokio_util::sync::CancellationToken::new();
        let stopping = gone.clone();
        let visits: Arc<Mutex<Vec<Visit>>> = Arc::default();
        let seen = visits.clone();
        let task = tokio::spawn(async move {
            let mut n = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let script = scripts
                    .get(n)
                    .or(scripts.last())
                    .cloned()
                    .unwrap_or_default();
                n += 1;
                let seen = seen.clone();
                let gone = gone.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = play(stream, script, seen) => {}
                        () = gone.cancelled() => {}
                    }
                });
            }
        });
        Ok(Simulator {
            addr,
            visits,
            task,
            gone: stopping,
        })
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn visits(&self) -> Vec<Visit> {
        self.visits.lock().expect("visits lock").clone()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
        self.gone.cancel();
    }
}

/// Plays `script` to one connection, recording what the client asks for in `seen`.
async fn play(stream: tokio::net::TcpStream, script: Vec<Step>, seen: Arc<Mutex<Vec<Visit>>>) {
    let mut path = String::new();
    // The signature is the handshake library's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().to_string();
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let at = {
        let mut v = seen.lock().expect("visits lock");
        v.push(Visit {
            path,
            received: Vec::new(),
        });
        v.len() - 1
    };
    for step in script {
        match step {
            Step::Send(text) => {
                if ws.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            Step::Receive => match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    seen.lock().expect("visits lock")[at]
                        .received
                        .push(t.to_string());
                }
                _ => return,
            },
            Step::Pause(d) => tokio::time::sleep(d).await,
            Step::Burst(frames) => {
                for f in frames.iter() {
                    if ws.feed(Message::text(f.as_str())).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            Step::Paced {
                count,
                frame,
                per_second,
            } => {
                let start = tokio::time::Instant::now();
                let rate = f64::from(per_second.max(1));
                let mut sent = 0usize;
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                while sent < count {
                    tick.tick().await;
                    let due =
                        ((start.elapsed().as_secs_f64() * rate) as usize).clamp(sent + 1, count);
                    for i in sent..due {
                        if ws.feed(Message::text(frame.0(i))).await.is_err() {
                            return;
                        }
                    }
                    if ws.flush().await.is_err() {
                        return;
                    }
                    sent = due;
                }
            }
            Step::Close => {
                let _ = ws.close(None).await;
                return;
            }
            Step::Drop => return,
        }
    }
    // Script done: keep the connection open and silent.
    while ws.next().await.is_some() {}
}
