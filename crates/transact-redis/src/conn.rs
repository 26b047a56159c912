//! The connection (one server or a cluster) and the bridge from the
//! synchronous trait to the store's own tokio runtime.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo, Slot,
    SlotAddr,
};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::runtime::Runtime;

use crate::{RedisConfig, RedisTarget};

/// A reconnecting connection: the connection manager for one server, the
/// async cluster connection for a cluster. Clones share the connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects (inside the store's runtime).
    pub(crate) async fn open(config: &RedisConfig) -> RedisResult<Conn> {
        match &config.target {
            RedisTarget::Server(url) => {
                let client = redis::Client::open(url.as_str())?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.op_timeout))
                    .set_number_of_retries(config.reconnect_retries)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1));
                Ok(Conn::Server(
                    ConnectionManager::new_with_config(client, manager).await?,
                ))
            }
            RedisTarget::Cluster(seeds) => {
                let client = ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.op_timeout)
                    .retries(u32::try_from(config.reconnect_retries).unwrap_or(u32::MAX))
                    .min_retry_wait(50)
                    .max_retry_wait(1_000)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// `GET` of many string keys of any slots, in key order: one `MGET` on
    /// one server; on a cluster one pipeline per primary (with the keys of
    /// the slots `CLUSTER SLOTS` says it owns), not one request per slot.
    ///
    /// `keys_by_slot[s]` is a key of slot `s`: exactly one per slot.
    pub(crate) async fn get_per_slot(
        &mut self,
        keys_by_slot: &[String],
    ) -> RedisResult<Vec<Value>> {
        let c = match self {
            Conn::Server(c) => return redis::cmd("MGET").arg(keys_by_slot).query_async(c).await,
            Conn::Cluster(c) => c,
        };
        let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
        let bad = |what: &str| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected CLUSTER SLOTS reply",
                what.to_string(),
            ))
        };
        // Primary (host:port) -> its slots.
        let mut owners: Vec<(String, Vec<u16>)> = Vec::new();
        let Value::Array(ranges) = slots else {
            return Err(bad("not an array"));
        };
        for range in &ranges {
            let Value::Array(r) = range else {
                return Err(bad("a range is not an array"));
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
                (r.first(), r.get(1), r.get(2))
            else {
                return Err(bad("a range lacks start, end or primary"));
            };
            let node = match (primary.first(), primary.get(1)) {
                (Some(Value::BulkString(h)), Some(Value::Int(p))) => {
                    format!("{}:{p}", String::from_utf8_lossy(h))
                }
                _ => return Err(bad("a primary lacks host or port")),
            };
            let (Ok(start), Ok(end)) = (u16::try_from(*start), u16::try_from(*end)) else {
                return Err(bad("slot out of range"));
            };
            let at = match owners.iter().position(|(n, _)| *n == node) {
                Some(i) => i,
                None => {
                    owners.push((node, Vec::new()));
                    owners.len() - 1
                }
            };
            if let Some((_, own)) = owners.get_mut(at) {
                own.extend(start..=end);
            }
        }
        let mut values = vec![Value::Nil; keys_by_slot.len()];
        let mut covered = 0usize;
        for (_, own) in &owners {
            let Some(first) = own.first().and_then(|&s| Slot::new(s)) else {
                continue;
            };
            let mut pipe = redis::pipe();
            for &s in own {
                if let Some(k) = keys_by_slot.get(usize::from(s)) {
                    pipe.cmd("GET").arg(k);
                }
            }
            let n = pipe.len();
            let got = c
                .route_pipeline(
                    pipe,
                    0,
                    n,
                    SingleNodeRoutingInfo::SpecificNode(Route::with_slot(first, SlotAddr::Master)),
                )
                .await?;
            for (&s, v) in own.iter().zip(no_server_errors(got)?) {
                if let Some(slot) = values.get_mut(usize::from(s)) {
                    *slot = v;
                    covered += 1;
                }
            }
        }
        if covered != keys_by_slot.len() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                "the cluster does not serve every slot",
                format!("{covered} of {} slots answered", keys_by_slot.len()),
            )));
        }
        Ok(values)
    }

    /// Sends `cmd` to every primary (the one server, or each cluster
    /// primary), succeeding when all do; returns one of the replies.
    pub(crate) async fn on_every_primary(&mut self, cmd: Cmd) -> RedisResult<Value> {
        match self {
            Conn::Server(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                c.route_command(
                    cmd,
                    RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::AllSucceeded),
                    )),
                )
                .await
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The replies of a pipeline, or the first error a server answered with
/// among them (a pipeline can carry errors as values).
pub(crate) fn no_server_errors(values: Vec<Value>) -> RedisResult<Vec<Value>> {
    match values.iter().find_map(|v| match v {
        Value::ServerError(e) => Some(e.clone()),
        _ => None,
    }) {
        Some(e) => Err(e.into()),
        None => Ok(values),
    }
}

/// Why a bridged call failed.
pub(crate) enum CallError {
    /// Redis (or the connection) answered with an error.
    Redis(redis::RedisError),
    /// The call took longer than the store's `op_timeout`.
    Timeout,
    /// The store's runtime is gone (the store is being dropped).
    Closed,
}

/// Runs `fut` on `rt` with a deadline and waits for it on this thread.
///
/// From a plain thread this is `Runtime::block_on`. From inside some async
/// runtime (where `block_on` would panic) the future is spawned on `rt` and
/// this thread waits on a channel: it works, but it blocks that runtime's
/// worker for the call, so async callers should use `spawn_blocking`.
pub(crate) fn block_on<T, F>(rt: &Runtime, timeout: Duration, fut: F) -> Result<T, CallError>
where
    T: Send + 'static,
    F: Future<Output = RedisResult<T>> + Send + 'static,
{
    let fut = async move {
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Redis(e)),
            Err(_) => Err(CallError::Timeout),
        }
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return rt.block_on(fut);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().unwrap_or(Err(CallError::Closed))
}
