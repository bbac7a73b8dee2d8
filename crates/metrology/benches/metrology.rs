//! Criterion benchmarks of the metrology hot paths (placeholder body replaced below).
fn main() {}
