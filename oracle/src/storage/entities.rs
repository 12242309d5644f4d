//! sea-orm entities, one module per table of `wattest-schema`'s migrations.

/// Enrollment and access tokens (only their SHA-256 is stored).
pub mod token {
    use sea_orm::entity::prelude::*;

    /// A token row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tokens")]
    pub struct Model {
        /// Token id (UUID).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// `node`, `auditor`, `compliance` or `admin`.
        pub role: String,
        /// Hex SHA-256 of the secret token.
        #[sea_orm(unique)]
        pub token_hash: String,
        /// Creation time.
        pub created_at: DateTimeUtc,
        /// Revocation time, if revoked.
        pub revoked_at: Option<DateTimeUtc>,
        /// Last time a request presented this token (updated at most once a minute).
        pub last_used_at: Option<DateTimeUtc>,
        /// When the token stops being accepted (`None`: never; migration 14).
        pub expires_at: Option<DateTimeUtc>,
        /// How many nodes may be enrolled with it (`None`: any number; migration 15).
        pub max_enrollments: Option<i64>,
        /// Nodes enrolled with it so far (counted since migration 15).
        pub enrollments: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Enrolled nodes and the head of their window chain.
pub mod node {
    use sea_orm::entity::prelude::*;

    /// A node row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "nodes")]
    pub struct Model {
        /// Node id (UUID).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Operator-chosen name.
        pub name: String,
        /// Grid zone (canonical).
        pub zone: String,
        /// RFC 7638 thumbprint of the node key.
        #[sea_orm(unique)]
        pub kid: String,
        /// Public key as JWK JSON.
        pub public_jwk: String,
        /// `tpm` or `software`.
        pub attestation_level: String,
        /// Enrollment time.
        pub enrolled_at: DateTimeUtc,
        /// seq of the last accepted window (0: none yet).
        pub last_seq: i64,
        /// Hash of the last accepted window.
        pub last_hash: Option<String>,
        /// End of the last accepted window.
        pub last_end: Option<DateTimeUtc>,
        /// Why the node is flagged (e.g. `seq_conflict:7`: two different windows signed for seq
        /// 7); `None` for a node in good standing. Marks the node's later certificates.
        pub flag: Option<String>,
    }

    /// No relations declared (joins are not needed).
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Accepted telemetry windows (evidence), kept verbatim.
pub mod window {
    use sea_orm::entity::prelude::*;

    /// A window row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "windows")]
    pub struct Model {
        /// Row id.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Node id.
        pub node_id: String,
        /// Chain position.
        pub seq: i64,
        /// Job id, if any.
        pub job_id: Option<String>,
        /// base64url SHA-256 of the JWS (not unique by itself: `(node_id, seq)` is, and a
        /// window's signed payload names both).
        pub hash: String,
        /// The compact JWS as received: the evidence. Its payload segment is the window's
        /// claims, the JSON as signed ([`crate::storage::Storage::open_window_claims`]).
        pub jws: String,
        /// Window start.
        pub start_at: DateTimeUtc,
        /// Window end.
        pub end_at: DateTimeUtc,
        /// Consumed energy, Wh.
        pub consumed_wh: f64,
        /// Solar energy, Wh.
        pub solar_wh: f64,
        /// Final window of a job.
        pub is_final: bool,
        /// PSS salt length used (`digest` or `maximum`).
        pub salt_length: String,
        /// Reception time.
        pub received_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Issued certificates (attestation results), with the figures exports need as columns.
pub mod certificate {
    use sea_orm::entity::prelude::*;

    /// A certificate row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "certificates")]
    pub struct Model {
        /// Certificate id (UUID, the `jti`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Node id.
        pub node_id: String,
        /// Job id.
        pub job_id: Option<String>,
        /// Issue time.
        pub issued_at: DateTimeUtc,
        /// Period start.
        pub period_start: DateTimeUtc,
        /// Period end.
        pub period_end: DateTimeUtc,
        /// Grid zone.
        pub zone: String,
        /// `tpm` or `software`.
        pub attestation_level: String,
        /// Consumed energy, Wh.
        pub consumed_wh: f64,
        /// Grid energy, Wh.
        pub grid_wh: f64,
        /// Solar energy, Wh.
        pub solar_wh: f64,
        /// Location-based emissions, kgCO2e.
        pub emissions_kg: f64,
        /// Avoided emissions, kgCO2e.
        pub avoided_kg: f64,
        /// Mean intensity, gCO2e/kWh.
        pub intensity_g: f64,
        /// Intensity dataset.
        pub intensity_dataset: String,
        /// Intensity data year.
        pub intensity_year: i32,
        /// `lifecycle` or `direct`.
        pub factor_type: String,
        /// Reward total, micro-EUR.
        pub reward_micro_eur: i64,
        /// Node owner part, micro-EUR.
        pub owner_micro_eur: i64,
        /// Cooperative fund part, micro-EUR.
        pub fund_micro_eur: i64,
        /// First window seq.
        pub first_seq: i64,
        /// Last window seq.
        pub last_seq: i64,
        /// Number of windows.
        pub window_count: i64,
        /// base64url SHA-256 of the JWS.
        #[sea_orm(unique)]
        pub hash: String,
        /// The signed certificate (compact JWS).
        pub jws: String,
        /// The claims as JSON.
        pub claims: String,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// TPM enrollments waiting for the agent's credential activation answer.
pub mod enrollment_challenge {
    use sea_orm::entity::prelude::*;

    /// A pending enrollment row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "enrollment_challenges")]
    pub struct Model {
        /// Challenge id (UUID v4): the `{challenge_id}` of the answer URL.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Node name requested.
        pub name: String,
        /// Canonical grid zone.
        pub zone: String,
        /// RFC 7638 thumbprint of the certified signing key.
        pub kid: String,
        /// The certified signing key as JWK JSON.
        pub public_jwk: String,
        /// Hex SHA-256 of the credential secret (the secret itself is never stored).
        pub secret_sha256: String,
        /// When the challenge was issued.
        pub created_at: DateTimeUtc,
        /// After this the answer is refused (`challenge_expired`).
        pub expires_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
