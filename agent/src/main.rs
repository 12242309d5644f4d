//! Wattest agent (placeholder entry point; the CLI lives on another branch).

mod integrator;
mod sampler;
mod sources;

fn main() {}
