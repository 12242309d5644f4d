//! Database schema of the oracle as sea-orm migrations, one set for SQLite and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_initial;
mod m20261123_000002_enrollment_challenges;
mod m20261123_000005_transparency_log;
mod m20261123_000006_node_flags;
mod m20261123_000007_carbon_cache;
mod m20261123_000008_node_owner;
mod m20261123_000009_token_last_used;
mod m20261123_000010_held_windows;
mod m20261123_000011_window_hash_not_unique;
mod m20261124_000012_window_claims_in_jws;
mod m20261124_000013_coverage_by_seq;
mod m20261125_000014_token_expiry;
mod m20261125_000015_token_enrollments;

/// All migrations, applied in order at oracle start.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261123_000002_enrollment_challenges::Migration),
            Box::new(m20261123_000005_transparency_log::Migration),
            Box::new(m20261123_000006_node_flags::Migration),
            Box::new(m20261123_000007_carbon_cache::Migration),
            Box::new(m20261123_000008_node_owner::Migration),
            Box::new(m20261123_000009_token_last_used::Migration),
            Box::new(m20261123_000010_held_windows::Migration),
            Box::new(m20261123_000011_window_hash_not_unique::Migration),
            Box::new(m20261124_000012_window_claims_in_jws::Migration),
            Box::new(m20261124_000013_coverage_by_seq::Migration),
            Box::new(m20261125_000014_token_expiry::Migration),
            Box::new(m20261125_000015_token_enrollments::Migration),
        ]
    }
}

/// JSON Schema (2020-12) of a certificate's `credentialSubject` in its Verifiable Credential form
/// (`application/vc+jwt`), served at `/v1/schemas/energy-certificate-subject.json` (with `$id` set
/// to the URL served) and referred to by [`ENERGY_CERTIFICATE_CREDENTIAL_SCHEMA`].
pub const ENERGY_CERTIFICATE_SUBJECT_SCHEMA: &str =
    include_str!("../json/energy-certificate-subject.schema.json");

/// JSON Schema (2020-12) of a certificate's whole Verifiable Credential, the one its
/// `credentialSchema` names: served at `/v1/schemas/energy-certificate-credential.json` (with
/// `$id` set to the URL served); its `credentialSubject` is a relative `$ref` to the subject
/// schema served next to it.
pub const ENERGY_CERTIFICATE_CREDENTIAL_SCHEMA: &str =
    include_str!("../json/energy-certificate-credential.schema.json");
