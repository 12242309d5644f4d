//! The Wattest agent as a library: power sources, integrator, sampler, signers, spool and
//! uploader. The `wattest-agent` binary (src/main.rs) is its command line.

pub mod config;
pub mod enroll;
pub mod integrator;
pub mod metrics;
pub mod net;
pub mod report;
pub mod runner;
pub mod sampler;
pub mod signer;
pub mod sources;
pub mod spool;
pub mod state;
pub mod uploader;
