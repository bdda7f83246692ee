//! A small Redis client: RESP2 over one TCP connection, with pipelining (every command of
//! a batch is written before any reply is read, so a batch costs one round trip).
//!
//! K2 needs a handful of commands (`EVALSHA`, `SCRIPT LOAD`, `HGETALL`, `SET`, `DEL`…);
//! a full client library would cost more build time than this file.

use std::fmt;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum RedisError {
    Io(std::io::Error),
    /// The server answered with an error.
    Server(String),
    Protocol(String),
}

impl RedisError {
    /// Connection trouble may pass; a server error about a command will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RedisError::Io(_))
    }
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Io(e) => write!(f, "redis connection: {e}"),
            RedisError::Server(e) => write!(f, "redis: {e}"),
            RedisError::Protocol(e) => write!(f, "redis protocol: {e}"),
        }
    }
}

impl std::error::Error for RedisError {}

impl From<std::io::Error> for RedisError {
    fn from(e: std::io::Error) -> Self {
        RedisError::Io(e)
    }
}

/// One connection.
pub struct Redis {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    out: Vec<u8>,
}

impl Redis {
    /// Connects to `host:port`.
    pub async fn connect(addr: &str) -> Result<Self, RedisError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Redis {
            reader: BufReader::with_capacity(1 << 16, r),
            writer: w,
            out: Vec::with_capacity(1 << 16),
        })
    }

    /// Sends every command, then reads every reply, in order. A server error in one
    /// reply is returned as `Reply::Error` in its place.
    pub async fn pipeline<A: AsRef<[u8]>>(
        &mut self,
        commands: &[Vec<A>],
    ) -> Result<Vec<Reply>, RedisError> {
        self.out.clear();
        for cmd in commands {
            encode(cmd, &mut self.out);
        }
        self.writer.write_all(&self.out).await?;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(self.read().await?);
        }
        Ok(replies)
    }

    /// One command; a server error becomes `Err`.
    pub async fn call<A: AsRef<[u8]>>(&mut self, command: Vec<A>) -> Result<Reply, RedisError> {
        match self.pipeline(&[command]).await?.pop() {
            Some(Reply::Error(e)) => Err(RedisError::Server(e)),
            Some(r) => Ok(r),
            None => Err(RedisError::Protocol("no reply".into())),
        }
    }

    fn read(
        &mut self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Reply, RedisError>> + Send + '_>> {
        Box::pin(async move {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                return Err(RedisError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let (kind, rest) = line
                .split_at_checked(1)
                .ok_or_else(|| RedisError::Protocol("empty reply line".into()))?;
            let number = || {
                rest.parse::<i64>()
                    .map_err(|_| RedisError::Protocol(format!("bad length or integer '{rest}'")))
            };
            Ok(match kind {
                "+" => Reply::Simple(rest.to_string()),
                "-" => Reply::Error(rest.to_string()),
                ":" => Reply::Int(number()?),
                "$" => match number()? {
                    n if n < 0 => Reply::Bulk(None),
                    n => {
                        let mut buf = vec![0; n as usize + 2];
                        self.reader.read_exact(&mut buf).await?;
                        buf.truncate(n as usize);
                        Reply::Bulk(Some(buf))
                    }
                },
                "*" => match number()? {
                    n if n < 0 => Reply::Array(None),
                    n => {
                        let mut items = Vec::with_capacity(n as usize);
                        for _ in 0..n {
                            items.push(self.read().await?);
                        }
                        Reply::Array(Some(items))
                    }
                },
                other => {
                    return Err(RedisError::Protocol(format!(
                        "unknown reply type '{other}'"
                    )));
                }
            })
        })
    }
}

/// One call of a script: its keys, then its arguments.
pub type ScriptCall = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// A Lua script run by its digest. Redis forgets scripts when it restarts: a call that
/// meets `NOSCRIPT` loads the script again and is sent once more (only the calls that
/// did not run).
pub struct Script {
    source: &'static str,
    sha: String,
}

impl Script {
    pub async fn load(redis: &mut Redis, source: &'static str) -> Result<Script, RedisError> {
        let mut script = Script {
            source,
            sha: String::new(),
        };
        script.reload(redis).await?;
        Ok(script)
    }

    async fn reload(&mut self, redis: &mut Redis) -> Result<(), RedisError> {
        self.sha = redis
            .call(vec![b"SCRIPT".as_slice(), b"LOAD", self.source.as_bytes()])
            .await?
            .as_text()
            .ok_or_else(|| RedisError::Protocol("SCRIPT LOAD did not answer a digest".into()))?;
        Ok(())
    }

    /// Runs the script once per call (keys, then arguments), all in one round trip; the
    /// replies in order (a server error stays in its place as `Reply::Error`).
    pub async fn run(
        &mut self,
        redis: &mut Redis,
        calls: &[ScriptCall],
    ) -> Result<Vec<Reply>, RedisError> {
        let counts: Vec<Vec<u8>> = calls
            .iter()
            .map(|(keys, _)| keys.len().to_string().into_bytes())
            .collect();
        let with_count = |sha: &[u8], i: usize| -> Vec<Vec<u8>> {
            let (keys, args) = &calls[i];
            let mut c = Vec::with_capacity(3 + keys.len() + args.len());
            c.push(b"EVALSHA".to_vec());
            c.push(sha.to_vec());
            c.push(counts[i].clone());
            c.extend(keys.iter().cloned());
            c.extend(args.iter().cloned());
            c
        };
        let sha = self.sha.clone().into_bytes();
        let commands: Vec<Vec<Vec<u8>>> = (0..calls.len()).map(|i| with_count(&sha, i)).collect();
        let mut replies = redis.pipeline(&commands).await?;
        let forgotten: Vec<usize> = (0..replies.len())
            .filter(|&i| matches!(&replies[i], Reply::Error(e) if e.starts_with("NOSCRIPT")))
            .collect();
        if !forgotten.is_empty() {
            self.reload(redis).await?;
            let sha = self.sha.clone().into_bytes();
            let again: Vec<Vec<Vec<u8>>> = forgotten.iter().map(|&i| with_count(&sha, i)).collect();
            for (i, r) in forgotten.into_iter().zip(redis.pipeline(&again).await?) {
                replies[i] = r;
            }
        }
        Ok(replies)
    }
}

fn encode<A: AsRef<[u8]>>(cmd: &[A], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", cmd.len()).as_bytes());
    for arg in cmd {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}
