//! [`RedisStore`]: the [`SequenceStore`] on Redis.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use redis::{Script, Value};
use tokio::runtime::Runtime;
use transact_seq::{
    Action, SeqError, SequenceBuf, SequenceLimits, SequenceStore, StoreConfig, UserId,
    UserSequences,
};

use crate::codec::{self, MAX_PACKED_BYTES, RECORD};
use crate::conn::{self, CallError, Conn};
use crate::{KeyLayout, RedisConfig};

/// The append script (see `append.lua`).
const APPEND_LUA: &str = include_str!("append.lua");

/// A [`SequenceStore`] kept in Redis or a Redis Cluster, with the embedded
/// store's semantics.
///
/// Each user's realtime actions, impressions and lifelong multi-hot tokens
/// are three sorted sets under the user's hash tag ([`KeyLayout`]); an
/// [`append`](SequenceStore::append) is one `EVALSHA` of a Lua script that
/// applies the whole batch atomically (validation happens here first, so a
/// rejected batch sends nothing); [`read_sequences`](SequenceStore::read_sequences)
/// is one pipelined round trip.
///
/// # Threads
///
/// The trait is synchronous; the store owns a small tokio runtime that
/// drives the connection, and each call blocks its caller until Redis
/// replied or [`RedisConfig::op_timeout`] passed. Call it from ordinary
/// threads (a compute pool, `tokio::task::spawn_blocking`). Called from
/// inside an async task it still works — the request runs on the store's
/// runtime while the task's thread waits — but it blocks that worker for
/// the round trip. Dropping the store from async code is fine too.
///
/// # Failures
///
/// A call that cannot reach Redis fails with [`SeqError::Unavailable`]
/// naming the server and the operation, within `op_timeout`; the store
/// reconnects by itself on later calls. An append that fails after its
/// request was sent (a timeout, a lost connection) may have been applied:
/// unlike the embedded store, "`Err` means nothing was applied" holds here
/// only for errors raised before sending (validation, batch size). Requests
/// the cluster client retries by itself are applied once (each append
/// carries an id the script remembers).
///
/// # Durability
///
/// `append` returns `Ok` once Redis replied: the batch is in the server's
/// memory and, with `appendonly yes`, in its AOF as `appendfsync` decides.
/// See `docs/redis.md`.
pub struct RedisStore {
    conn: Conn,
    script: Arc<Script>,
    keys: KeyLayout,
    config: StoreConfig,
    redis: RedisConfig,
    /// `host:port` or `cluster host:port,...`, for errors.
    target: String,
    /// This store's random half of each append id.
    nonce: u64,
    appends: AtomicU64,
    /// The last user count read (what `user_count` returns when Redis fails).
    last_user_count: AtomicUsize,
    /// Whether `WAITAOF` may exist (cleared when the server does not know it).
    waitaof: AtomicBool,
    /// The runtime driving `conn`.
    rt: OwnedRuntime,
}

/// The store's runtime, shut down without blocking when dropped (dropping
/// a tokio runtime the ordinary way panics inside async code).
struct OwnedRuntime(Option<Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl RedisStore {
    /// Connects to the server or cluster of `redis` and returns a store
    /// with the semantics configured by `config` (capacities, vocabulary,
    /// impression types, window, skew, clock; its `sync` and
    /// `snapshot_every` do not apply).
    ///
    /// Checks both configurations, connects (within
    /// [`RedisConfig::connect_timeout`] per attempt and
    /// [`RedisConfig::op_timeout`] in all) and loads the append script; an
    /// unreachable server is an [`SeqError::Unavailable`] naming it.
    pub fn connect(redis: RedisConfig, config: StoreConfig) -> Result<RedisStore, SeqError> {
        config.validate()?;
        redis.validate()?;
        let keys = KeyLayout::new(&redis.key_prefix)?;
        let target = redis.target.describe();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(redis.io_threads)
            .thread_name("transact-redis-io")
            .enable_io()
            .enable_time()
            .build()
            .map(|rt| OwnedRuntime(Some(rt)))
            .map_err(|e| {
                SeqError::Unavailable(format!(
                    "redis {target}: cannot start the store's I/O runtime: {e}"
                ))
            })?;
        let Some(runtime) = rt.0.as_ref() else {
            return Err(SeqError::Unavailable(format!(
                "redis {target}: the store's I/O runtime is gone"
            )));
        };
        let script = Arc::new(Script::new(APPEND_LUA));
        let opened = {
            let redis = redis.clone();
            let script = Arc::clone(&script);
            conn::block_on(runtime, redis.op_timeout, async move {
                let mut conn = Conn::open(&redis).await?;
                redis::cmd("PING").query_async::<Value>(&mut conn).await?;
                script.prepare_invoke().load_async(&mut conn).await?;
                Ok(conn)
            })
        };
        let conn = opened.map_err(|e| describe_failure(&target, "connect", false, &redis, e))?;
        let nonce = RandomState::new().hash_one((std::process::id(), system_nanos()));
        Ok(RedisStore {
            conn,
            script,
            keys,
            config,
            redis,
            target,
            nonce,
            appends: AtomicU64::new(0),
            last_user_count: AtomicUsize::new(0),
            waitaof: AtomicBool::new(true),
            rt,
        })
    }

    /// The store configuration in use.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The Redis configuration in use.
    pub fn redis_config(&self) -> &RedisConfig {
        &self.redis
    }

    /// Where each user's data lives.
    pub fn key_layout(&self) -> &KeyLayout {
        &self.keys
    }

    /// The server or cluster, as errors name it (`host:port`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Sends a `PING`: `Ok` once the connection works (again).
    pub fn ping(&self) -> Result<(), SeqError> {
        let mut conn = self.conn.clone();
        self.call("ping", false, async move {
            redis::cmd("PING").query_async::<Value>(&mut conn).await
        })
        .map(drop)
    }

    /// The number of users with data, or the error reading it.
    ///
    /// Sums the 16,384 per-slot user counters: one `MGET` on a server, one
    /// pipeline per primary on a cluster. Exact, and its cost does not grow
    /// with the number of users, but it is not for the request path (about
    /// a millisecond per thousand slots).
    pub fn try_user_count(&self) -> Result<usize, SeqError> {
        let mut conn = self.conn.clone();
        let counters = self.keys.all_counters();
        let items = self.call("user count", false, async move {
            conn.get_per_slot(&counters).await
        })?;
        let source = self.source(&format!("{}:{{c:*}}:users", self.keys.prefix()));
        let mut total = 0usize;
        for item in &items {
            let n = codec::integer(item, &source)?;
            total = total.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
        }
        self.last_user_count.store(total, Ordering::Relaxed);
        Ok(total)
    }

    /// `redis://<target>/<key>`: where undecodable data was found.
    fn source(&self, key: &str) -> String {
        format!("redis://{}/{key}", self.target)
    }

    fn runtime(&self) -> Result<&Runtime, SeqError> {
        self.rt.0.as_ref().ok_or_else(|| {
            SeqError::Unavailable(format!("redis {}: the store is closed", self.target))
        })
    }

    /// Runs one operation on the store's runtime within `op_timeout`.
    fn call<T, F>(&self, op: &str, writes: bool, fut: F) -> Result<T, SeqError>
    where
        T: Send + 'static,
        F: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let rt = self.runtime()?;
        conn::block_on(rt, self.redis.op_timeout, fut)
            .map_err(|e| describe_failure(&self.target, op, writes, &self.redis, e))
    }

    /// A fresh append id: this store's nonce and its append number.
    fn next_append_id(&self) -> [u8; 16] {
        let n = self.appends.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.nonce.to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }

    /// How many of a sequence to read: at most `n` and the capacity (what
    /// was written under a larger capacity reads as the embedded store
    /// loads it, cut to this one).
    fn count(n: usize, capacity: usize) -> i64 {
        i64::try_from(n.min(capacity)).unwrap_or(i64::MAX)
    }

    fn range(key: &str, max: &[u8], count: i64) -> redis::Cmd {
        let mut cmd = redis::cmd("ZREVRANGEBYLEX");
        cmd.arg(key)
            .arg(max)
            .arg("-")
            .arg("LIMIT")
            .arg(0)
            .arg(count);
        cmd
    }
}

fn system_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The error a failed call returns: names the server and the operation.
fn describe_failure(
    target: &str,
    op: &str,
    writes: bool,
    redis: &RedisConfig,
    e: CallError,
) -> SeqError {
    let maybe = if writes {
        " (the request may have reached the server and been applied)"
    } else {
        ""
    };
    SeqError::Unavailable(match e {
        CallError::Timeout => format!(
            "redis {target}: {op} timed out after {} ms{maybe}; is the server up? \
             The store reconnects on later calls",
            redis.op_timeout.as_millis()
        ),
        CallError::Redis(e) if e.is_connection_refusal() => format!(
            "redis {target}: {op} failed, connection refused (nothing was sent): {e}; \
             the store reconnects on later calls"
        ),
        CallError::Redis(e) if e.is_io_error() || e.is_connection_dropped() => {
            format!(
                "redis {target}: {op} failed, connection lost or refused: {e}{maybe}; \
                 the store reconnects on later calls"
            )
        }
        CallError::Redis(e) => format!("redis {target}: {op} failed: {e}"),
        CallError::Closed => format!("redis {target}: {op} failed: the store is closed"),
    })
}

impl SequenceStore for RedisStore {
    fn check_append(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError> {
        self.config.check_actions(user, actions)
    }

    fn append(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError> {
        if actions.is_empty() {
            return Ok(());
        }
        self.config.check_actions(user, actions)?;
        let bytes = actions.len().saturating_mul(RECORD);
        if bytes > MAX_PACKED_BYTES {
            return Err(SeqError::BatchTooLarge {
                user,
                actions: actions.len(),
                bytes,
                max_bytes: MAX_PACKED_BYTES,
            });
        }
        let mut packed = Vec::with_capacity(bytes);
        for a in actions {
            codec::push_record(&mut packed, a, &self.config);
        }
        let id = self.next_append_id();
        let keys = [
            self.keys.realtime(user),
            self.keys.impressions(user),
            self.keys.lifelong(user),
            self.keys.sequence(user),
            self.keys.user_counter(user),
            self.keys.append_ids(user),
        ];
        let caps = [
            self.config.capacity_per_user.max(1),
            self.config.impression_capacity,
            self.config.lifelong_capacity,
        ];
        let script = Arc::clone(&self.script);
        let mut conn = self.conn.clone();
        let op = format!("append of {} actions for user {user}", actions.len());
        self.call(&op, true, async move {
            let mut invocation = script.prepare_invoke();
            for k in &keys {
                invocation.key(k);
            }
            for c in caps {
                invocation.arg(c);
            }
            invocation.arg(&id[..]).arg(packed.as_slice());
            invocation.invoke_async::<i64>(&mut conn).await
        })
        .map(drop)
    }

    fn read_newest(
        &self,
        user: UserId,
        n: usize,
        at_or_before_ms: Option<i64>,
        out: &mut SequenceBuf,
    ) -> Result<usize, SeqError> {
        out.clear();
        let count = Self::count(n, self.config.capacity_per_user.max(1));
        if count == 0 {
            return Ok(0);
        }
        let key = self.keys.realtime(user);
        let cmd = Self::range(&key, &codec::max_bound(at_or_before_ms), count);
        let mut conn = self.conn.clone();
        let op = format!("read of user {user}'s realtime sequence");
        let v = self.call(&op, false, async move {
            cmd.query_async::<Value>(&mut conn).await
        })?;
        let got = codec::decode_actions(&v, out, &self.source(&key));
        if got.is_err() {
            out.clear();
        }
        got
    }

    fn read_sequences(
        &self,
        user: UserId,
        limits: &SequenceLimits,
        out: &mut UserSequences,
    ) -> Result<(), SeqError> {
        out.clear();
        let max = codec::max_bound(limits.at_or_before_ms);
        let c = &self.config;
        let wanted = [
            (
                self.keys.lifelong(user),
                Self::count(limits.lifelong, c.lifelong_capacity),
            ),
            (
                self.keys.realtime(user),
                Self::count(limits.realtime, c.capacity_per_user.max(1)),
            ),
            (
                self.keys.impressions(user),
                Self::count(limits.impressions, c.impression_capacity),
            ),
        ];
        let mut pipe = redis::pipe();
        for (key, count) in &wanted {
            if *count > 0 {
                pipe.add_command(Self::range(key, &max, *count));
            }
        }
        if wanted.iter().all(|(_, count)| *count == 0) {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let op = format!("read of user {user}'s sequences");
        let replies = self.call(&op, false, async move {
            conn::no_server_errors(pipe.query_async::<Vec<Value>>(&mut conn).await?)
        })?;
        let mut replies = replies.iter();
        let mut next =
            |count: i64| -> Option<&Value> { if count > 0 { replies.next() } else { None } };
        let [(ll_key, ll), (rt_key, rt), (imp_key, imp)] = &wanted;
        let decoded = (|| {
            if let Some(v) = next(*ll) {
                codec::decode_tokens(v, &mut out.lifelong, &self.source(ll_key))?;
            }
            if let Some(v) = next(*rt) {
                codec::decode_actions(v, &mut out.realtime, &self.source(rt_key))?;
            }
            if let Some(v) = next(*imp) {
                codec::decode_actions(v, &mut out.impressions, &self.source(imp_key))?;
            }
            Ok(())
        })();
        if decoded.is_err() {
            out.clear();
        }
        decoded
    }

    fn history_len(&self, user: UserId) -> Result<usize, SeqError> {
        let key = self.keys.realtime(user);
        let mut conn = self.conn.clone();
        let cmd = {
            let mut cmd = redis::cmd("ZCARD");
            cmd.arg(&key);
            cmd
        };
        let op = format!("length of user {user}'s realtime sequence");
        let v = self.call(&op, false, async move {
            cmd.query_async::<Value>(&mut conn).await
        })?;
        let n = codec::integer(&v, &self.source(&key))?;
        Ok(usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.config.capacity_per_user.max(1)))
    }

    /// The number of users with data ([`RedisStore::try_user_count`]);
    /// when Redis cannot be read, the last count read (0 before any).
    fn user_count(&self) -> usize {
        self.try_user_count()
            .unwrap_or_else(|_| self.last_user_count.load(Ordering::Relaxed))
    }

    /// `WAITAOF 1 0 <op_timeout>` on every primary where the server has it
    /// (Redis 7.2+): waits until the primary's AOF is fsynced up to this
    /// store's writes on its current connection. An error when the AOF is
    /// off. Where the server has no `WAITAOF` (Redis 7.0), nothing: then
    /// durability is what `appendfsync` gives (see `docs/redis.md`).
    fn sync(&self) -> Result<(), SeqError> {
        if !self.waitaof.load(Ordering::Relaxed) {
            return Ok(());
        }
        let timeout_ms = u64::try_from(self.redis.op_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("WAITAOF");
        cmd.arg(1).arg(0).arg(timeout_ms);
        let result = conn::block_on(self.runtime()?, self.redis.op_timeout, async move {
            match conn.on_every_primary(cmd).await? {
                // A routed command can carry the server's error as a value.
                Value::ServerError(e) => Err(e.into()),
                v => Ok(v),
            }
        });
        match result {
            Ok(Value::Array(v)) => match v.first() {
                Some(Value::Int(n)) if *n >= 1 => Ok(()),
                _ => Err(SeqError::Unavailable(format!(
                    "redis {}: sync: WAITAOF saw no fsynced AOF within {timeout_ms} ms ({v:?})",
                    self.target
                ))),
            },
            Ok(other) => Err(SeqError::Unavailable(format!(
                "redis {}: sync: unexpected WAITAOF reply {other:?}",
                self.target
            ))),
            Err(CallError::Redis(e))
                if e.to_string()
                    .to_ascii_lowercase()
                    .contains("unknown command") =>
            {
                self.waitaof.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(describe_failure(
                &self.target,
                "sync (WAITAOF)",
                false,
                &self.redis,
                e,
            )),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .field("key_prefix", &self.keys.prefix())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
