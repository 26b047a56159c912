//! Shared by the tests that run the `transact` binary.

use std::io::Write;
use std::process::{Command, Stdio};

/// What one run of the binary printed and how it ended.
pub struct Out {
    /// Whether it exited with status 0.
    pub ok: bool,
    /// Its exit code (`None` when killed by a signal).
    #[allow(dead_code)]
    pub code: Option<i32>,
    /// Everything it wrote to stdout.
    #[allow(dead_code)]
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Runs `transact args…`, feeding `stdin` when given (stdin is closed
/// otherwise), and waits for it.
pub fn transact(args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_transact"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run transact");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `transact serve` process on a loopback port.
#[allow(dead_code)]
pub struct ServeProcess {
    /// The child process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Where its stderr goes.
    pub stderr_path: std::path::PathBuf,
}

#[allow(dead_code)]
impl ServeProcess {
    /// Starts `transact serve --addr 127.0.0.1:0 args…` and waits (up to
    /// 60 s) for its `listening on` line; its stderr goes to `log`.
    pub fn start(args: &[&str], log: &std::path::Path) -> ServeProcess {
        use std::io::BufRead;
        let stderr = std::fs::File::create(log).expect("stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_transact"))
            .arg("serve")
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("run transact serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "transact serve did not start: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        };
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        ServeProcess {
            child,
            base,
            stderr_path: log.to_path_buf(),
        }
    }

    /// SIGKILL, and reap.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status once it has drained.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        self.child.wait().expect("wait")
    }

    /// Sends a signal by name (`HUP`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// `transact demo --quick --dir D`: the paths of its trained bundle and of
/// its filled store.
#[allow(dead_code)]
pub fn quick_demo(dir: &std::path::Path) -> (String, String) {
    let out = transact(
        &["demo", "--quick", "--dir", &dir.display().to_string()],
        None,
    );
    assert!(out.ok, "demo failed: {}", out.stderr);
    (
        dir.join("runs/transact/bundle").display().to_string(),
        dir.join("store").display().to_string(),
    )
}

/// A two-thread tokio runtime for the tests' HTTP clients.
#[allow(dead_code)]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
