//! `wattline`: the one user-facing binary (placeholder until the CLI lands).
fn main() {}
