//! CPU benchmarks (placeholder).
fn main() {}
