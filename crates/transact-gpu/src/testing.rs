//! Helpers for tests (this crate's and those of crates built on it).

use std::sync::{Arc, OnceLock};

use crate::{GpuContext, GpuError};

static SHARED: OnceLock<Result<Option<Arc<GpuContext>>, String>> = OnceLock::new();

/// Whether `CI=true` is set: then a missing adapter is a failure, not a
/// skipped test.
pub fn ci_requires_gpu() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// One context per test process, built from the environment on first use
/// (tests run in parallel threads and share it).
///
/// - `Ok(Some(ctx))`: an adapter was found.
/// - `Ok(None)`: no adapter and `CI` is not `true`; a note is printed and
///   the caller should skip its test.
/// - `Err(_)`: no adapter while `CI=true`, or the adapter failed to open a
///   device.
pub fn shared_context() -> Result<Option<Arc<GpuContext>>, GpuError> {
    let slot = SHARED.get_or_init(|| match GpuContext::new_from_env() {
        Ok(ctx) => Ok(Some(Arc::new(ctx))),
        Err(e @ GpuError::NoAdapter { .. }) if !ci_requires_gpu() => {
            eprintln!("note: GPU tests skipped: {e}");
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    });
    match slot {
        Ok(c) => Ok(c.clone()),
        Err(msg) => Err(GpuError::Unsupported(format!(
            "no usable GPU context (CI=true needs one): {msg}"
        ))),
    }
}
