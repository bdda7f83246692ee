//! The client side of a WebSocket (RFC 6455) as a feed uses it: connect (TLS verified
//! against the webpki roots for `wss`), upgrade, then read messages straight out of one
//! large read buffer and write the few frames a feed sends (a subscription, pings, pongs,
//! a close).
//!
//! A feed receives a million small frames a second in a burst. Going through a general
//! WebSocket library cost a reference-counted buffer, a waker registration and a message
//! object per frame, and a third of the feed thread's time; here a frame is a header
//! parsed in place and a `&str` into the buffer, and one socket read brings up to
//! [`READ_BUFFER`] bytes of frames.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

/// Bytes one socket read may bring.
pub const READ_BUFFER: usize = 256 * 1024;
/// The largest message (or frame) accepted: a feed's frames are a few hundred bytes, and
/// a peer may not make the reader hold more than this.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// The largest upgrade response accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("{0}")]
    Url(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("upgrade refused: {0}")]
    Upgrade(String),
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One message read, borrowed from the connection's buffer until the next read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message; `Err` holds the bytes of one that is not UTF-8.
    Text(Result<&'a str, &'a [u8]>),
    Binary(&'a [u8]),
    /// A ping (answered by [`Connection::answer`]) or a pong: either way the peer is alive.
    Control,
    /// The peer closed the connection (the close is answered by [`Connection::answer`]).
    Close,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        async fn write<S: AsyncWrite + AsyncRead + Unpin>(
            s: &mut S,
            bytes: &[u8],
        ) -> std::io::Result<()> {
            s.write_all(bytes).await?;
            s.flush().await
        }
        match self {
            Stream::Plain(s) => write(s, bytes).await,
            Stream::Tls(s) => write(s.as_mut(), bytes).await,
        }
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// An open WebSocket connection.
pub struct Connection {
    stream: Stream,
    /// Bytes received: `buf[start..end]` are not yet read as frames.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A fragmented message being put together: its opcode and the bytes so far.
    fragments: Option<(u8, Vec<u8>)>,
    /// The message last returned was put together from fragments.
    assembled: Vec<u8>,
    /// Frames owed to the peer: pongs for its pings, the answer to its close.
    owed: Vec<(u8, Vec<u8>)>,
    mask: fastrand::Rng,
}

/// Opens `url` (`ws://` or `wss://`) and upgrades it to a WebSocket, all within `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<Connection, WsError> {
    tokio::time::timeout(timeout, open(url))
        .await
        .map_err(|_| WsError::Timeout(timeout))?
}

async fn open(url: &str) -> Result<Connection, WsError> {
    let parsed = url::Url::parse(url).map_err(|e| WsError::Url(format!("{url}: {e}")))?;
    let tls = match parsed.scheme() {
        "ws" => false,
        "wss" => true,
        other => return Err(WsError::Url(format!("{url}: {other} is not ws or wss"))),
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| WsError::Url(format!("{url} names no host")))?
        .to_string();
    let port = parsed
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    tcp.set_nodelay(true)?;
    let stream = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']))
            .map_err(|e| WsError::Url(format!("{url}: {e}")))?
            .to_owned();
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| WsError::Tls(e.to_string()))?;
        Stream::Tls(Box::new(tls))
    } else {
        Stream::Plain(tcp)
    };
    let mut conn = Connection {
        stream,
        buf: vec![0; READ_BUFFER],
        start: 0,
        end: 0,
        fragments: None,
        assembled: Vec::new(),
        owed: Vec::new(),
        mask: fastrand::Rng::new(),
    };
    let mut target = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        target.push('?');
        target.push_str(q);
    }
    let authority = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    conn.upgrade(&authority, &target).await?;
    Ok(conn)
}

/// The TLS client configuration: certificates verified against the webpki roots.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("the ring provider supports the default protocol versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

impl Connection {
    /// The HTTP/1.1 upgrade (RFC 6455 §4.1): the answer must be 101 with the accept key
    /// derived from ours. Bytes after the answer's head are the first frames.
    async fn upgrade(&mut self, authority: &str, target: &str) -> Result<(), WsError> {
        let key = generate_key();
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        self.stream.write_all(request.as_bytes()).await?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let head = &self.buf[..self.end];
            match response.parse(head) {
                Ok(httparse::Status::Complete(len)) => {
                    check_upgrade(&response, &key)?;
                    self.start = len;
                    return Ok(());
                }
                Ok(httparse::Status::Partial) if self.end < MAX_RESPONSE_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(WsError::Upgrade(format!(
                        "an answer head longer than {MAX_RESPONSE_HEAD} bytes"
                    )));
                }
                Err(e) => return Err(WsError::Upgrade(format!("a malformed answer: {e}"))),
            }
            if self.read_more().await? == 0 {
                return Err(WsError::Upgrade("closed before answering".into()));
            }
        }
    }

    /// Reads what the socket has (waiting for at least a byte); 0 when the peer has
    /// closed it. Cancel-safe: nothing is lost if the future is dropped before it is ready.
    pub async fn read_more(&mut self) -> Result<usize, WsError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if self.buf.len() > READ_BUFFER {
                // Grown for one large frame: back to the usual size.
                self.buf.truncate(READ_BUFFER);
                self.buf.shrink_to_fit();
            }
        } else if self.buf.len() - self.end < READ_BUFFER / 4 {
            // The tail of a frame lies at the end: move it to the front.
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            // One frame is larger than the buffer: make room for it (bounded by the
            // frame size limit, checked when its header was read).
            let more = self.buf.len().max(READ_BUFFER);
            self.buf.resize(self.buf.len() + more, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// The next whole message among the bytes already read, or None until more are read.
    /// Pings and closes are noted, to be answered by [`Connection::answer`].
    pub fn next_message(&mut self) -> Result<Option<Message<'_>>, WsError> {
        loop {
            let Some((header, fin, opcode, len)) = self.frame_header()? else {
                return Ok(None);
            };
            let at = self.start + header;
            self.start = at + len;
            if opcode >= OP_CLOSE {
                let payload = self.buf[at..at + len].to_vec();
                match opcode {
                    OP_PING => self.owed.push((OP_PONG, payload)),
                    OP_CLOSE => {
                        // Echo the status code (RFC 6455 §5.5.1).
                        let code = payload.get(..2).map(<[u8]>::to_vec).unwrap_or_default();
                        self.owed.push((OP_CLOSE, code));
                        return Ok(Some(Message::Close));
                    }
                    _ => {}
                }
                return Ok(Some(Message::Control));
            }
            match (opcode, self.fragments.as_mut()) {
                (OP_CONTINUATION, None) => {
                    return Err(WsError::Protocol("a continuation of no message".into()));
                }
                (OP_CONTINUATION, Some((_, bytes))) => {
                    if bytes.len() + len > MAX_MESSAGE {
                        return Err(WsError::Protocol(format!(
                            "a message longer than {MAX_MESSAGE} bytes"
                        )));
                    }
                    bytes.extend_from_slice(&self.buf[at..at + len]);
                    if !fin {
                        continue;
                    }
                    let (first, bytes) = self.fragments.take().expect("a message in fragments");
                    self.assembled = bytes;
                    return Ok(Some(message(first, &self.assembled)));
                }
                (_, Some(_)) => {
                    return Err(WsError::Protocol(
                        "a new message inside a fragmented one".into(),
                    ));
                }
                (_, None) if !fin => {
                    self.fragments = Some((opcode, self.buf[at..at + len].to_vec()));
                    continue;
                }
                (_, None) => return Ok(Some(message(opcode, &self.buf[at..at + len]))),
            }
        }
    }

    /// The header length, FIN, opcode and payload length of the next frame, if the whole
    /// frame has been read.
    fn frame_header(&self) -> Result<Option<(usize, bool, u8, usize)>, WsError> {
        let bytes = &self.buf[self.start..self.end];
        let [b0, b1, ..] = *bytes else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set".into()));
        }
        if b1 & 0x80 != 0 {
            return Err(WsError::Protocol("a masked frame from the server".into()));
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(WsError::Protocol(format!("unknown opcode {opcode:#x}")));
        }
        let (header, len) = match b1 & 0x7f {
            126 => match bytes.get(2..4) {
                Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
                None => return Ok(None),
            },
            127 => match bytes.get(2..10) {
                Some(b) => (10, u64::from_be_bytes(b.try_into().expect("8 bytes"))),
                None => return Ok(None),
            },
            n => (2, u64::from(n)),
        };
        if opcode >= OP_CLOSE && (!fin || len > 125) {
            return Err(WsError::Protocol(
                "a control frame fragmented or over 125 bytes".into(),
            ));
        }
        if len > MAX_MESSAGE as u64 {
            return Err(WsError::Protocol(format!(
                "a frame of {len} bytes, over the {MAX_MESSAGE} limit"
            )));
        }
        let len = len as usize;
        Ok((bytes.len() >= header + len).then_some((header, fin, opcode, len)))
    }

    /// Sends what is owed to the peer (pongs, the answer to a close).
    pub async fn answer(&mut self) -> Result<(), WsError> {
        for (opcode, payload) in std::mem::take(&mut self.owed) {
            self.send(opcode, &payload).await?;
        }
        Ok(())
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.send(OP_TEXT, text.as_bytes()).await
    }

    pub async fn ping(&mut self) -> Result<(), WsError> {
        self.send(OP_PING, &[]).await
    }

    /// One frame, masked as a client's must be (RFC 6455 §5.3).
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), WsError> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = self.mask.u32(..).to_be_bytes();
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&frame).await?;
        Ok(())
    }
}

fn message(opcode: u8, payload: &[u8]) -> Message<'_> {
    match opcode {
        OP_TEXT => Message::Text(std::str::from_utf8(payload).map_err(|_| payload)),
        _ => Message::Binary(payload),
    }
}

fn check_upgrade(response: &httparse::Response<'_, '_>, key: &str) -> Result<(), WsError> {
    if response.code != Some(101) {
        return Err(WsError::Upgrade(format!(
            "HTTP {} {}",
            response.code.unwrap_or(0),
            response.reason.unwrap_or("")
        )));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .unwrap_or_default()
    };
    if !header("upgrade").eq_ignore_ascii_case("websocket") {
        return Err(WsError::Upgrade(
            "no `Upgrade: websocket` in the answer".into(),
        ));
    }
    if !header("connection")
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return Err(WsError::Upgrade(
            "no `Connection: upgrade` in the answer".into(),
        ));
    }
    if header("sec-websocket-accept") != derive_accept_key(key.as_bytes()) {
        return Err(WsError::Upgrade(
            "the answer's Sec-WebSocket-Accept does not match the key sent".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server frame (unmasked) with the given first byte and payload.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// A one-connection server on loopback: reads the upgrade request, answers with
    /// `status` (101 with the right accept key, or anything else), writes `then` in the
    /// same write, and hands back every byte the client sends after that.
    async fn serve(
        status: &'static str,
        then: Vec<u8>,
    ) -> (String, tokio::sync::oneshot::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/stream?streams=x", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.unwrap();
                head.push(b[0]);
            }
            let head = String::from_utf8(head).unwrap();
            assert!(
                head.starts_with("GET /stream?streams=x HTTP/1.1\r\n"),
                "{head}"
            );
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let mut answer = if status == "101" {
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    derive_accept_key(key.as_bytes())
                )
            } else {
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n")
            }
            .into_bytes();
            answer.extend_from_slice(&then);
            s.write_all(&answer).await.unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            let _ = tx.send(rest);
        });
        (url, rx)
    }

    /// Every message until the peer closes or a violation, as owned values.
    async fn read_all(conn: &mut Connection) -> (Vec<String>, Option<WsError>) {
        let mut seen = Vec::new();
        loop {
            loop {
                match conn.next_message() {
                    Ok(Some(m)) => seen.push(match m {
                        Message::Text(Ok(t)) => format!("text {t}"),
                        Message::Text(Err(b)) => format!("bad text {b:?}"),
                        Message::Binary(b) => format!("binary {b:?}"),
                        Message::Control => "control".into(),
                        Message::Close => "close".into(),
                    }),
                    Ok(None) => break,
                    Err(e) => return (seen, Some(e)),
                }
            }
            match conn.read_more().await {
                Ok(0) => return (seen, None),
                Ok(_) => {}
                Err(e) => return (seen, Some(e)),
            }
        }
    }

    /// The client's frames as (opcode, unmasked payload); each must be masked.
    fn client_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let [b0, b1, rest @ ..] = bytes {
            assert_eq!(b1 & 0x80, 0x80, "a client frame must be masked");
            let len = usize::from(b1 & 0x7f);
            assert!(len < 126);
            let key = &rest[..4];
            let payload = rest[4..4 + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            out.push((b0 & 0x0f, payload));
            bytes = &rest[4 + len..];
        }
        out
    }

    #[tokio::test]
    async fn frames_fragments_and_control_frames_arriving_with_the_upgrade() {
        let mut frames = Vec::new();
        frames.extend(frame(0x81, b"a"));
        frames.extend(frame(0x01, b"he"));
        // A control frame may come between the fragments of a message.
        frames.extend(frame(0x89, b"p1"));
        frames.extend(frame(0x80, b"llo"));
        frames.extend(frame(0x82, &[1, 2]));
        frames.extend(frame(0x81, &[0xff, 0xfe]));
        frames.extend(frame(0x81, &[b'x'; 300]));
        frames.extend(frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        let (url, sent) = serve("101", frames).await;
        let mut conn = connect(&url, Duration::from_secs(5)).await.unwrap();
        let mut seen = Vec::new();
        // Read until the close, answering as the feed does.
        let mut closed = false;
        while !closed {
            while let Some(m) = conn.next_message().unwrap() {
                seen.push(format!("{m:?}"));
                closed = m == Message::Close;
                if closed {
                    break;
                }
            }
            conn.answer().await.unwrap();
            if !closed {
                assert!(
                    conn.read_more().await.unwrap() > 0,
                    "closed early: {seen:?}"
                );
            }
        }
        drop(conn);
        let long = format!("Text(Ok({:?}))", "x".repeat(300));
        assert_eq!(
            seen,
            [
                r#"Text(Ok("a"))"#,
                "Control",
                r#"Text(Ok("hello"))"#,
                "Binary([1, 2])",
                "Text(Err([255, 254]))",
                long.as_str(),
                "Close",
            ]
        );
        // The ping got its pong, the close its echo with the status code.
        assert_eq!(
            client_frames(&sent.await.unwrap()),
            [(0xA, b"p1".to_vec()), (0x8, vec![0x03, 0xe8])]
        );
    }

    #[tokio::test]
    async fn a_server_breaking_the_protocol_is_an_error_naming_the_fault() {
        let cases: [(Vec<u8>, &str); 5] = [
            (vec![0x81, 0x81, 0, 0, 0, 0, b'a'], "masked"),
            (frame(0xC1, b"a"), "reserved bits"),
            (frame(0x83, b"a"), "unknown opcode 0x3"),
            (frame(0x80, b"a"), "a continuation of no message"),
            (
                vec![0x82, 127, 0, 0, 1, 0, 0, 0, 0, 0],
                "a frame of 1099511627776 bytes",
            ),
        ];
        for (bytes, fault) in cases {
            let (url, _sent) = serve("101", bytes).await;
            let mut conn = connect(&url, Duration::from_secs(5)).await.unwrap();
            let (_, error) = read_all(&mut conn).await;
            let error = error.expect("a violation").to_string();
            assert!(error.contains(fault), "{error} does not name {fault}");
        }
        // A ping of over 125 bytes.
        let (url, _sent) = serve("101", frame(0x89, &[0; 126])).await;
        let mut conn = connect(&url, Duration::from_secs(5)).await.unwrap();
        let (_, error) = read_all(&mut conn).await;
        assert!(error.unwrap().to_string().contains("control frame"));
    }

    #[tokio::test]
    async fn a_refused_upgrade_is_an_error() {
        let (url, _sent) = serve("404 Not Found", Vec::new()).await;
        let error = connect(&url, Duration::from_secs(5)).await.err().unwrap();
        assert!(error.to_string().contains("HTTP 404 Not Found"), "{error}");
        let error = connect("http://127.0.0.1:1/", Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(error.to_string().contains("is not ws or wss"), "{error}");
    }

    #[tokio::test]
    async fn tls_certificates_are_verified() {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(k2_testkit::tls::server_config()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });
        // The test authority is not among the roots the feed trusts.
        let error = connect(&format!("wss://localhost:{port}/"), Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&error, WsError::Tls(m) if m.contains("certificate")),
            "{error}"
        );
    }
}
