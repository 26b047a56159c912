//! The `transact` command-line tool.
fn main() {}
