//! The Redis connection of the shared integrity state: one multiplexed connection that
//! reconnects by itself, every command bounded by a timeout, and Lua scripts run by their
//! digest in pipelines.
//!
//! A Redis that stops answering fails the call with a retryable error once the timeout has
//! passed; the writer's retries and circuit breaker take it from there. It never hangs the
//! writer.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value};

/// A Redis server and the key prefix K2's state lives under there.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    /// `host:port`.
    pub addr: String,
    /// Keys are `{prefix}:{table}:seq:{exchange}:{symbol}` (sequence state) and
    /// `{prefix}:{table}:id:{16 bytes}` (dedup claims).
    pub prefix: String,
    /// Bound of a connection attempt and of every command's answer.
    pub timeout: Duration,
}

/// Whether retrying can help: the connection (refused, dropped, timed out) and a server
/// that is busy or loading may pass; a refused command or a script error will not.
pub fn is_retryable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        )
}

/// Connects to `target`. The connection manager reconnects in the background after a
/// dropped connection; a command sent meanwhile fails (retryably) instead of waiting.
pub async fn connect(target: &RedisTarget) -> RedisResult<ConnectionManager> {
    let client = redis::Client::open(format!("redis://{}/", target.addr))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(target.timeout))
        .set_response_timeout(Some(target.timeout))
        .set_number_of_retries(2)
        .set_max_delay(target.timeout);
    ConnectionManager::new_with_config(client, config).await
}

/// One script call: its keys, then its arguments.
pub type ScriptCall = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// Runs `script` once per call, all in one round trip; the answers in order. Redis forgets
/// scripts when it restarts: calls answered `NOSCRIPT` (and only those: the others ran)
/// load the script again and are sent once more.
pub async fn run_script(
    con: &mut ConnectionManager,
    script: &Script,
    calls: &[ScriptCall],
) -> RedisResult<Vec<Value>> {
    let pipeline = |which: &[usize]| {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in which {
            let (keys, args) = &calls[i];
            let mut invocation = script.prepare_invoke();
            for k in keys {
                invocation.key(k.as_slice());
            }
            for a in args {
                invocation.arg(a.as_slice());
            }
            pipe.invoke_script(&invocation);
        }
        pipe
    };
    let all: Vec<usize> = (0..calls.len()).collect();
    let mut answers: Vec<RedisResult<Value>> = pipeline(&all).query_async(con).await?;
    let forgotten: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            a.as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
        })
        .map(|(i, _)| i)
        .collect();
    if !forgotten.is_empty() {
        script.prepare_invoke().load_async(con).await?;
        let again: Vec<RedisResult<Value>> = pipeline(&forgotten).query_async(con).await?;
        for (i, answer) in forgotten.into_iter().zip(again) {
            answers[i] = answer;
        }
    }
    answers.into_iter().collect()
}

/// A reply as text (simple or bulk string).
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::SimpleString(s) => Some(s.clone()),
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

/// A reply as an integer (integer, or a string holding one).
pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// An answer of the wrong shape.
pub fn unexpected(what: &str, got: &Value) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "unexpected answer",
        format!("{what}: {got:?}"),
    ))
}
