//! Where the store's data lives and how long a call may take.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use redis::IntoConnectionInfo;
use transact_seq::SeqError;

/// The server or cluster a [`RedisStore`](crate::RedisStore) talks to.
///
/// Parsed from one URL ([`RedisTarget::parse`], also `str::parse`):
///
/// ```text
/// redis://[[user]:password@]host:port[/db]                 one server
/// redis+cluster://[[user]:password@]host:port[,host:port…]  a Redis Cluster, by seed nodes
/// ```
///
/// A cluster needs only some of its nodes as seeds: the client reads the
/// slot map from them and connects to every primary.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis://…`), through a reconnecting
    /// [`ConnectionManager`](redis::aio::ConnectionManager).
    Server(String),
    /// A Redis Cluster by its seed nodes (each a `redis://host:port` URL),
    /// through the async cluster connection.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// The URL scheme of a cluster target.
    pub const CLUSTER_SCHEME: &'static str = "redis+cluster://";

    /// Parses `redis://…` (one server) or `redis+cluster://h:p[,h:p…]` (a
    /// cluster); the error names the URL and the accepted forms.
    pub fn parse(url: &str) -> Result<RedisTarget, SeqError> {
        let url = url.trim();
        let bad = |why: &str| {
            SeqError::InvalidConfig(format!(
                "redis URL {:?}: {why} (expected redis://host:port[/db] or \
                 redis+cluster://host:port[,host:port...])",
                redact(url)
            ))
        };
        if let Some(rest) = url.strip_prefix(Self::CLUSTER_SCHEME) {
            // Userinfo (before the last '@') applies to every seed.
            let (auth, hosts) = match rest.rfind('@') {
                Some(at) => (&rest[..=at], &rest[at + 1..]),
                None => ("", rest),
            };
            if hosts.contains('/') || hosts.contains('?') {
                return Err(bad("a cluster URL takes no database or query"));
            }
            let mut seeds = Vec::new();
            for host in hosts.split(',').map(str::trim) {
                if host.is_empty() {
                    return Err(bad("empty seed node"));
                }
                let seed = format!("redis://{auth}{host}");
                seed.as_str()
                    .into_connection_info()
                    .map_err(|e| bad(&format!("seed {host:?}: {e}")))?;
                seeds.push(seed);
            }
            return Ok(RedisTarget::Cluster(seeds));
        }
        if url.starts_with("rediss://") || url.starts_with("valkeys://") {
            return Err(bad("TLS is not built into transact-redis"));
        }
        if !url.starts_with("redis://") {
            return Err(bad("unknown scheme"));
        }
        url.into_connection_info()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(RedisTarget::Server(url.to_string()))
    }

    /// The target for errors and logs: `host:port` (or `cluster
    /// host:port,…`), without credentials.
    pub fn describe(&self) -> String {
        let addr = |u: &str| {
            u.into_connection_info()
                .map(|i| i.addr().to_string())
                .unwrap_or_else(|_| redact(u))
        };
        match self {
            RedisTarget::Server(u) => addr(u),
            RedisTarget::Cluster(seeds) => {
                let seeds: Vec<String> = seeds.iter().map(|s| addr(s)).collect();
                format!("cluster {}", seeds.join(","))
            }
        }
    }
}

impl FromStr for RedisTarget {
    type Err = SeqError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RedisTarget::parse(s)
    }
}

impl fmt::Debug for RedisTarget {
    /// Credentials are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({})", self.describe())
    }
}

/// A URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Configuration of the Redis side of a [`RedisStore`](crate::RedisStore);
/// capacities, vocabulary, window, skew and clock come from the
/// [`StoreConfig`](transact_seq::StoreConfig) beside it.
///
/// ```
/// use std::time::Duration;
/// use transact_redis::{RedisConfig, RedisTarget};
///
/// let config = RedisConfig::new("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")?
///     .with_key_prefix("feed")
///     .with_op_timeout(Duration::from_millis(500));
/// assert!(matches!(config.target, RedisTarget::Cluster(ref seeds) if seeds.len() == 2));
/// # Ok::<(), transact_seq::SeqError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// The server or cluster.
    pub target: RedisTarget,
    /// Every key starts with `<key_prefix>:`; one prefix is one store.
    /// Must not contain `{` or `}` (the user's hash tag must be the first
    /// `{…}` of each key). Default `"transact"`.
    pub key_prefix: String,
    /// How long one connection attempt may take. Default 1 s.
    pub connect_timeout: Duration,
    /// How long one store call may take in all (connecting, reconnecting,
    /// waiting for the reply); past it the call fails with
    /// [`SeqError::Unavailable`]. Default 2 s.
    pub op_timeout: Duration,
    /// Connection attempts after the first when (re)connecting, with
    /// exponential backoff from 50 ms (at most 1 s apart); a call that
    /// finds them all failed fails, and the next call starts over. Default 3.
    pub reconnect_retries: usize,
    /// Worker threads of the store's own tokio runtime, which drives the
    /// connections' I/O (callers block on their own threads). Default 1.
    pub io_threads: usize,
}

impl RedisConfig {
    /// Default key prefix.
    pub const DEFAULT_KEY_PREFIX: &'static str = "transact";
    /// Default connection timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default per-call timeout.
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default reconnection retries.
    pub const DEFAULT_RECONNECT_RETRIES: usize = 3;

    /// A configuration for the target `url` (see [`RedisTarget::parse`])
    /// with the defaults.
    pub fn new(url: &str) -> Result<RedisConfig, SeqError> {
        Ok(RedisConfig::for_target(RedisTarget::parse(url)?))
    }

    /// A configuration for a parsed target with the defaults.
    pub fn for_target(target: RedisTarget) -> RedisConfig {
        RedisConfig {
            target,
            key_prefix: Self::DEFAULT_KEY_PREFIX.to_string(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            op_timeout: Self::DEFAULT_OP_TIMEOUT,
            reconnect_retries: Self::DEFAULT_RECONNECT_RETRIES,
            io_threads: 1,
        }
    }

    /// Sets [`RedisConfig::key_prefix`].
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets [`RedisConfig::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`RedisConfig::op_timeout`].
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Sets [`RedisConfig::reconnect_retries`].
    pub fn with_reconnect_retries(mut self, retries: usize) -> Self {
        self.reconnect_retries = retries;
        self
    }

    /// Sets [`RedisConfig::io_threads`].
    pub fn with_io_threads(mut self, threads: usize) -> Self {
        self.io_threads = threads;
        self
    }

    /// Checks the values that have a valid range.
    pub fn validate(&self) -> Result<(), SeqError> {
        crate::keys::check_prefix(&self.key_prefix)?;
        if self.op_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(SeqError::InvalidConfig(
                "redis op_timeout and connect_timeout must be above zero".into(),
            ));
        }
        if self.io_threads == 0 {
            return Err(SeqError::InvalidConfig(
                "redis io_threads must be at least 1".into(),
            ));
        }
        if let RedisTarget::Cluster(seeds) = &self.target
            && seeds.is_empty()
        {
            return Err(SeqError::InvalidConfig(
                "a redis cluster target needs at least one seed node".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_url_forms() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/2").ok(),
            Some(RedisTarget::Server("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://:pw@10.0.0.1:7000, 10.0.0.2:7001").ok(),
            Some(RedisTarget::Cluster(vec![
                "redis://:pw@10.0.0.1:7000".into(),
                "redis://:pw@10.0.0.2:7001".into()
            ]))
        );
        for bad in [
            "http://x:1",
            "rediss://x:1",
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:1/0",
            "redis://",
        ] {
            assert!(
                matches!(RedisTarget::parse(bad), Err(SeqError::InvalidConfig(_))),
                "{bad} must be rejected"
            );
        }
    }

    #[test]
    fn descriptions_hide_credentials() {
        let t = RedisTarget::parse("redis+cluster://u:secret@h1:7000,h2:7001").expect("parses");
        assert_eq!(t.describe(), "cluster h1:7000,h2:7001");
        assert!(!format!("{t:?}").contains("secret"));
        let t = RedisTarget::parse("redis://:secret@h:6379").expect("parses");
        assert_eq!(t.describe(), "h:6379");
        let e = RedisTarget::parse("rediss://:secret@h:1").expect_err("no tls");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn validate_checks_prefix_and_timeouts() {
        let c = RedisConfig::new("redis://h:1").expect("parses");
        assert!(c.validate().is_ok());
        assert!(c.clone().with_key_prefix("a{b").validate().is_err());
        assert!(c.clone().with_key_prefix("").validate().is_err());
        assert!(
            c.clone()
                .with_op_timeout(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(c.with_io_threads(0).validate().is_err());
    }
}
