//! Test servers: `redis-server` processes on free loopback ports in temp
//! directories, killed on drop — one server with AOF on (`appendfsync
//! always`), or a three-primary Redis Cluster.
//!
//! Without `redis-server` on PATH the tests skip with a note, except when
//! the environment variable `CI` is set (as `.ci/run` does): then they fail,
//! so CI cannot pass without running them.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use transact_redis::{RedisConfig, RedisStore};
use transact_seq::StoreConfig;

/// Whether `redis-server` can run here. Without it: a skip note (returns
/// false), or, when `CI` is set, a failure.
pub fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!(
            "redis-server is not on PATH and CI is set: the Redis store tests must run in CI \
             (install the Debian package redis-server; .ci/run does)"
        );
    }
    eprintln!("note: redis-server is not on PATH: skipping this Redis test");
    false
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Sends `PING` and reads the reply line (`+PONG` when ready, `-LOADING`
/// while the AOF loads).
fn ping(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"*1\r\n$4\r\nPING\r\n").ok()?;
    let mut buf = [0u8; 128];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// One `redis-server` process.
pub struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Server {
    /// Starts a server with AOF on (`appendonly yes`, `appendfsync always`,
    /// no RDB snapshots) in `dir`.
    pub fn start_aof(dir: &Path) -> Server {
        Self::start_with(
            dir,
            &[
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
        )
    }

    /// Starts a server with `extra` arguments in `dir` on a free port
    /// (retrying on another port if the first was taken meanwhile).
    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        std::fs::create_dir_all(dir).expect("server dir");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = Server {
                child: None,
                port,
                dir: dir.to_path_buf(),
                args: extra.iter().map(|s| s.to_string()).collect(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("could not start redis-server: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "redis-server on port {} exited ({status}): {tail:?}",
                    self.port
                ));
            }
            if ping(self.port).as_deref() == Some("+PONG") {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} never answered PING",
                    self.port
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain synchronous connection for the test's own commands.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("test connection to redis")
    }

    /// `kill -9` the process (nothing flushed beyond what Redis wrote).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (loading its
    /// AOF), waiting until it answers.
    pub fn restart(&mut self) {
        self.kill9();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The port may linger briefly after the kill.
                Err(e) if Instant::now() > deadline => panic!("restart failed: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Closes every client connection but the one sending the command.
    pub fn kill_clients(&self) {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut self.client())
            .expect("CLIENT KILL");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Redis Cluster of three primaries (no replicas), each in its own
/// directory.
pub struct Cluster {
    pub nodes: Vec<Server>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli
    /// --cluster create` and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for i in 0..3 {
            let d = dir.path().join(format!("node{i}"));
            let bus = free_port().to_string();
            let conf = d.join("nodes.conf");
            let conf = conf.to_string_lossy().into_owned();
            nodes.push(Server::start_with(
                &d,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "5000",
                    "--appendonly",
                    "no",
                    "--save",
                    "",
                ],
            ));
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes, _dir: dir };
        cluster.wait_ok();
        cluster
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.client())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster on port {} not ok: {info}",
                    node.port()
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Closes every client connection on every node.
    pub fn kill_clients(&self) {
        for n in &self.nodes {
            n.kill_clients();
        }
    }
}

/// Connects a store to `url` under `prefix`.
pub fn connect(url: &str, prefix: &str, config: StoreConfig) -> RedisStore {
    let redis = RedisConfig::new(url)
        .expect("test URL parses")
        .with_key_prefix(prefix)
        .with_op_timeout(Duration::from_secs(2));
    RedisStore::connect(redis, config).expect("connect to the test redis")
}

/// Retries `f` until it succeeds (at most `within`), returning how many
/// calls failed first.
pub fn until_ok<T, E: std::fmt::Debug>(
    within: Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> (T, usize) {
    let deadline = Instant::now() + within;
    let mut failures = 0;
    loop {
        match f() {
            Ok(v) => return (v, failures),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "still failing after {within:?}: {e:?}"
                );
                failures += 1;
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
