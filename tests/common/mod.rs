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
