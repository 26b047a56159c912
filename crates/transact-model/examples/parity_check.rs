//! Checks V1 parity files recorded from the reference PyTorch module.
//!
//! ```text
//! cargo run --release -p transact-model --example parity_check -- tests/fixtures/parity_v1.safetensors
//! ```
//!
//! Prints each file's report; exits with status 1 if any difference exceeds 1e-4.

use std::path::Path;
use std::process::ExitCode;

use transact_model::parity::check_parity_file;

fn main() -> ExitCode {
    let mut ok = true;
    for arg in std::env::args().skip(1) {
        match check_parity_file(Path::new(&arg)) {
            Ok(report) => {
                let pass = report.passes(1e-4);
                ok &= pass;
                println!("{arg}: {} {report:?}", if pass { "ok" } else { "FAIL" });
            }
            Err(e) => {
                ok = false;
                println!("{arg}: error: {e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
