//! Wattest agent (placeholder entry point; the CLI lives on another branch).

#![allow(dead_code)]

mod integrator;
mod sampler;
mod sources;

fn main() {}
