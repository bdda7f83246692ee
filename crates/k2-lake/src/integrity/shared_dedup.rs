//! Dedup shared by several writers of one table, in Redis (see `dedup.lua`).
//!
//! Before writing a batch, a writer claims its message ids with a token naming the batch;
//! a claim lasts a lease, and once the batch is committed it lasts the dedup window. An id
//! another token holds is for the caller to resolve against the lake: stored if that
//! token's batch committed, else in flight elsewhere (wait) or abandoned by this same
//! writer (replace it). Every operation is idempotent for its token, so a call retried
//! after a lost answer does no harm.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisResult, Script, Value};

use super::redis::{RedisTarget, ScriptCall, connect, int, run_script, text, unexpected};

/// Ids per script call (a call's arguments live on Lua's stack).
const CLAIM_CHUNK: usize = 1000;

pub struct RedisDedup {
    redis: ConnectionManager,
    prefix: Vec<u8>,
    script: Script,
}

impl RedisDedup {
    /// Connects to `target`; ids live under `{target.prefix}:{scope}:id:`.
    pub async fn connect(target: &RedisTarget, scope: &str) -> RedisResult<Self> {
        let mut redis = connect(target).await?;
        let script = Script::new(include_str!("dedup.lua"));
        script.prepare_invoke().load_async(&mut redis).await?;
        Ok(RedisDedup {
            redis,
            prefix: format!("{}:{scope}:id:", target.prefix).into_bytes(),
            script,
        })
    }

    /// The id's key: the prefix, then its 16 bytes.
    fn key(&self, id: u128) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 16);
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(&id.to_be_bytes());
        k
    }

    /// Claims every id for `token` for `lease`; where an id comes with a token, a claim
    /// that token holds is replaced. Per id: None when the claim is now `token`'s, else
    /// the token holding it.
    pub async fn claim(
        &mut self,
        ids: &[(u128, Option<&str>)],
        token: &str,
        lease: Duration,
    ) -> RedisResult<Vec<Option<String>>> {
        let ms = lease.as_millis().max(1).to_string().into_bytes();
        let calls: Vec<ScriptCall> = ids
            .chunks(CLAIM_CHUNK)
            .map(|chunk| {
                let keys = chunk.iter().map(|&(id, _)| self.key(id)).collect();
                let mut args = vec![b"claim".to_vec(), token.as_bytes().to_vec(), ms.clone()];
                args.extend(
                    chunk
                        .iter()
                        .map(|(_, replace)| replace.unwrap_or("").as_bytes().to_vec()),
                );
                (keys, args)
            })
            .collect();
        let replies = run_script(&mut self.redis, &self.script, &calls).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (reply, (keys, _)) in replies.into_iter().zip(&calls) {
            let Value::Array(items) = reply else {
                return Err(unexpected("claiming ids", &reply));
            };
            if items.len() != keys.len() {
                return Err(unexpected("claiming ids", &Value::Array(items)));
            }
            out.extend(
                items
                    .iter()
                    .map(|r| text(r).filter(|holder| !holder.is_empty())),
            );
        }
        Ok(out)
    }

    /// After `token`'s batch committed: its claims last `window`. Returns how many ids
    /// `token` still held (fewer means a lease ran out before the commit).
    pub async fn keep(&mut self, ids: &[u128], token: &str, window: Duration) -> RedisResult<u64> {
        self.each(ids, "keep", token, window).await
    }

    /// Gives up `token`'s claims on the ids (a batch that waits for another writer holds
    /// nothing meanwhile, so two writers never wait for each other). Returns how many
    /// `token` held.
    pub async fn release(&mut self, ids: &[u128], token: &str) -> RedisResult<u64> {
        self.each(ids, "release", token, Duration::ZERO).await
    }

    async fn each(
        &mut self,
        ids: &[u128],
        mode: &str,
        token: &str,
        ms: Duration,
    ) -> RedisResult<u64> {
        let ms = ms.as_millis().max(1).to_string().into_bytes();
        let calls: Vec<ScriptCall> = ids
            .chunks(CLAIM_CHUNK)
            .map(|chunk| {
                (
                    chunk.iter().map(|&id| self.key(id)).collect(),
                    vec![
                        mode.as_bytes().to_vec(),
                        token.as_bytes().to_vec(),
                        ms.clone(),
                    ],
                )
            })
            .collect();
        let mut n = 0;
        for reply in run_script(&mut self.redis, &self.script, &calls).await? {
            n += int(&reply).ok_or_else(|| unexpected(mode, &reply))? as u64;
        }
        Ok(n)
    }
}
