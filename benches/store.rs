//! Storage benchmark (placeholder while the store is built).
fn main() {}
