//! Compliance exports: CSV profiles of the issued certificates, streamed from a database cursor
//! through a CSV writer into a bounded channel, so memory stays constant whatever the row count.
//!
//! Pipeline: one SQL query (certificates ⟕ nodes ⟕ revocations, filtered, in `(issued_at, id)`
//! order) read as a row stream → each row's signed claims parsed ([`ExportRow`]) → the profile
//! turns it into records (`compliance`, `codecarbon`, `sci`, one file each) → `csv` writes them
//! (RFC 4180 quoting, UTF-8) into a buffer sent as [`CHUNK_BYTES`] chunks over a channel of
//! [`CHANNEL_CHUNKS`]. The HTTP body and `wattest-oracle export` read the same channel.
//!
//! Quantities are the certificate's exact decimals rescaled by a power of ten (Wh → kWh,
//! g → kg): no rounding, so column sums equal the sums of the certificates' claims exactly.

pub mod codecarbon;
pub mod compliance;
pub mod sci;

use crate::storage::Storage;
use axum::body::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, JoinType, Order, Query, SelectStatement};
use sea_orm::{QueryResult, StreamTrait as _};
use tokio::sync::mpsc;
use wattest_shared::certificate::EarStatus;
use wattest_shared::{CertificateClaims, Decimal6};

/// One chunk of an export (a body frame over HTTP, a write to the file offline).
pub type Chunk = Result<Bytes, std::io::Error>;

/// Bytes buffered before a chunk is sent: 64 KiB, a few hundred rows, large enough that the
/// channel's per-message cost is negligible and small enough to keep memory flat.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks in flight between the database reader and the consumer: the reader waits when the
/// consumer (a slow HTTP client) is this far behind, so at most ≈ 5 × [`CHUNK_BYTES`] are held.
pub const CHANNEL_CHUNKS: usize = 4;

/// Characters of a JWS read to find its header's `kid`: the protected header of a certificate
/// (`{"alg":"PS256","typ":"wattest-cert+jwt","kid":"<43-char thumbprint>"}`) is ≈ 120 base64url
/// characters; 512 leaves room without reading the whole signed payload again.
const JWS_HEADER_PREFIX_CHARS: i64 = 512;

/// An export profile: a fixed, versioned column list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// One row per certificate (or per certificate-hour): GHG Scope 2, ESRS E1, EU AI Act.
    Compliance,
    /// CodeCarbon 3.3.2 `emissions.csv` columns, in order.
    Codecarbon,
    /// Software Carbon Intensity (ISO/IEC 21031:2024) per functional unit.
    Sci,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Self; 3] = [Self::Compliance, Self::Codecarbon, Self::Sci];

    /// The profile named `name` (`compliance`, `codecarbon`, `sci`).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The profile's name, as in `/v1/exports/{name}.csv`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Compliance => "compliance",
            Self::Codecarbon => "codecarbon",
            Self::Sci => "sci",
        }
    }

    /// The header row, in order.
    #[must_use]
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Compliance => &compliance::COLUMNS,
            Self::Codecarbon => &codecarbon::COLUMNS,
            Self::Sci => &sci::COLUMNS,
        }
    }

    /// Version of the column list (sent as the `Wattest-Export-Version` header): it changes
    /// whenever a column is added, removed, renamed or reordered.
    #[must_use]
    pub fn version(self) -> &'static str {
        match self {
            Self::Compliance => compliance::VERSION,
            Self::Codecarbon => codecarbon::VERSION,
            Self::Sci => sci::VERSION,
        }
    }

    fn records(self, row: &ExportRow, granularity: Granularity, out: &mut Vec<Vec<String>>) {
        match self {
            Self::Compliance => compliance::records(row, granularity, out),
            Self::Codecarbon => out.push(codecarbon::record(row)),
            Self::Sci => out.push(sci::record(row)),
        }
    }
}

/// One row per certificate, or (compliance profile only) one per clock hour of each certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// One row per certificate.
    #[default]
    Certificate,
    /// One row per hour of `wattest.intensity.hourly`.
    Hour,
}

impl Granularity {
    /// `certificate` or `hour`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "certificate" => Some(Self::Certificate),
            "hour" => Some(Self::Hour),
            _ => None,
        }
    }
}

/// Status filter: an `ear.status` value, or the revocation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// `ear.status` = affirming.
    Affirming,
    /// `ear.status` = warning.
    Warning,
    /// `ear.status` = contraindicated.
    Contraindicated,
    /// Revoked certificates.
    Revoked,
    /// Certificates not revoked.
    Valid,
}

impl StatusFilter {
    /// The accepted names.
    pub const NAMES: &'static str = "affirming, warning, contraindicated, revoked, valid";

    /// Parses one of [`Self::NAMES`].
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "affirming" => Some(Self::Affirming),
            "warning" => Some(Self::Warning),
            "contraindicated" => Some(Self::Contraindicated),
            "revoked" => Some(Self::Revoked),
            "valid" => Some(Self::Valid),
            _ => None,
        }
    }

    fn keeps(self, row: &ExportRow) -> bool {
        match self {
            Self::Affirming => row.claims.status == EarStatus::Affirming,
            Self::Warning => row.claims.status == EarStatus::Warning,
            Self::Contraindicated => row.claims.status == EarStatus::Contraindicated,
            Self::Revoked => row.revoked,
            Self::Valid => !row.revoked,
        }
    }
}

/// Which certificates an export covers. Every filter is optional; they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Certificates whose period ends at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Certificates whose period starts before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Node id.
    pub node: Option<String>,
    /// Node owner, as set by `wattest-oracle node set --owner`.
    pub owner: Option<String>,
    /// `wattest.job_id`.
    pub job: Option<String>,
    /// `wattest.model_id`.
    pub model: Option<String>,
    /// Grid zone.
    pub zone: Option<String>,
    /// `ear.status` or revocation state.
    pub status: Option<StatusFilter>,
    /// Rows per certificate or per certificate-hour.
    pub granularity: Granularity,
}

impl ExportFilter {
    /// Checks the filter against the profile.
    ///
    /// # Errors
    /// A sentence for a 400: `from` after `to`, hourly rows asked of a profile without them.
    pub fn check(&self, profile: Profile) -> Result<(), String> {
        check_time_bound("from", self.from)?;
        check_time_bound("to", self.to)?;
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from > to
        {
            return Err(format!("from ({from}) is after to ({to})"));
        }
        if self.granularity == Granularity::Hour && profile != Profile::Compliance {
            return Err(format!(
                "granularity=hour exists only for the compliance profile, not {}",
                profile.name()
            ));
        }
        Ok(())
    }

    fn keeps(&self, row: &ExportRow) -> bool {
        self.model
            .as_deref()
            .is_none_or(|m| row.claims.model_id.as_deref() == Some(m))
            && self.status.is_none_or(|s| s.keeps(row))
    }
}

/// Embodied emissions of a node's hardware, as set by `wattest-oracle node set --embodied-kg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embodied {
    /// Total embodied emissions of the hardware (SCI `TE`), kgCO2e.
    pub total_kg: Decimal6,
    /// Its expected lifespan (SCI `EL`), hours.
    pub lifespan_hours: i64,
}

/// One certificate as the profiles see it: its signed claims, plus what is not in them.
#[derive(Debug, Clone)]
pub struct ExportRow {
    /// Certificate id (`jti`).
    pub id: String,
    /// base64url SHA-256 of the compact JWS (its transparency-log leaf).
    pub hash: String,
    /// `kid` of the oracle key that signed it (from the JWS header).
    pub kid: String,
    /// Current owner of the node, if set.
    pub node_owner: Option<String>,
    /// Node's embodied emissions, if set.
    pub embodied: Option<Embodied>,
    /// Whether the certificate has been revoked.
    pub revoked: bool,
    /// The signed claims.
    pub claims: CertificateClaims,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A stored certificate cannot be read back (a bug or a damaged database).
    #[error("stored certificate {id} is unreadable: {why}")]
    Corrupt {
        /// Certificate id.
        id: String,
        /// What failed.
        why: String,
    },
    /// Writing CSV failed.
    #[error("CSV error: {0}")]
    Csv(#[from] csv::Error),
    /// The consumer went away (client disconnected).
    #[error("the export's reader went away")]
    Closed,
}

fn select(filter: &ExportFilter) -> SelectStatement {
    let c = Alias::new("c");
    let n = Alias::new("n");
    let r = Alias::new("r");
    let col = |table: &Alias, name: &str| Expr::col((table.clone(), Alias::new(name)));
    let mut q = Query::select();
    q.from_as(Alias::new("certificates"), c.clone())
        .join_as(
            JoinType::LeftJoin,
            Alias::new("nodes"),
            n.clone(),
            col(&n, "id").equals((c.clone(), Alias::new("node_id"))),
        )
        .expr(col(&c, "id"))
        .expr(col(&c, "hash"))
        .expr(Expr::cust(format!(
            "substr(c.jws, 1, {JWS_HEADER_PREFIX_CHARS})"
        )))
        .expr(col(&c, "claims"))
        .expr(col(&n, "owner"))
        .expr(col(&n, "embodied_kg_co2e"))
        .expr(col(&n, "embodied_lifespan_hours"))
        .expr(Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from_as(Alias::new("certificate_revocations"), r.clone())
                .and_where(col(&r, "certificate_id").equals((c.clone(), Alias::new("id"))))
                .to_owned(),
        ))
        .order_by((c.clone(), Alias::new("issued_at")), Order::Asc)
        .order_by((c.clone(), Alias::new("id")), Order::Asc);
    if let Some(from) = filter.from {
        q.and_where(col(&c, "period_end").gte(from));
    }
    if let Some(to) = filter.to {
        q.and_where(col(&c, "period_start").lt(to));
    }
    if let Some(node) = &filter.node {
        q.and_where(col(&c, "node_id").eq(node.as_str()));
    }
    if let Some(job) = &filter.job {
        q.and_where(col(&c, "job_id").eq(job.as_str()));
    }
    if let Some(zone) = &filter.zone {
        q.and_where(col(&c, "zone").eq(zone.as_str()));
    }
    if let Some(owner) = &filter.owner {
        q.and_where(col(&n, "owner").eq(owner.as_str()));
    }
    q
}

fn parse_row(q: &QueryResult) -> Result<ExportRow, ExportError> {
    let id: String = q.try_get_by_index(0)?;
    let corrupt = |why: String| ExportError::Corrupt {
        id: id.clone(),
        why,
    };
    let hash: String = q.try_get_by_index(1)?;
    let jws_prefix: String = q.try_get_by_index(2)?;
    let claims: String = q.try_get_by_index(3)?;
    let node_owner: Option<String> = q.try_get_by_index(4)?;
    let embodied_kg: Option<String> = q.try_get_by_index(5)?;
    let lifespan_hours: Option<i64> = q.try_get_by_index(6)?;
    let revoked: bool = q.try_get_by_index(7)?;
    let kid = header_kid(&jws_prefix).ok_or_else(|| corrupt("no kid in the JWS header".into()))?;
    let claims: CertificateClaims =
        serde_json::from_str(&claims).map_err(|err| corrupt(err.to_string()))?;
    let embodied = match (embodied_kg, lifespan_hours) {
        (Some(kg), Some(hours)) => Some(Embodied {
            total_kg: Decimal6::parse(&kg)
                .ok_or_else(|| corrupt(format!("embodied_kg_co2e {kg:?}")))?,
            lifespan_hours: hours,
        }),
        _ => None,
    };
    Ok(ExportRow {
        id,
        hash,
        kid,
        node_owner,
        embodied,
        revoked,
        claims,
    })
}

/// The `kid` of a compact JWS's protected header, from the JWS's first characters.
fn header_kid(jws_prefix: &str) -> Option<String> {
    use base64::Engine as _;
    let header = jws_prefix.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Header {
        kid: String,
    }
    serde_json::from_slice::<Header>(&bytes).ok().map(|h| h.kid)
}

/// Starts an export: a task streams the rows and sends CSV chunks (header row first); the
/// receiver yields them, then ends. A failure mid-way is sent as a final `Err` chunk (an HTTP
/// body then aborts, so the client sees a truncated transfer, never a short file that looks
/// complete). Dropping the receiver stops the task and releases its database connection.
#[must_use]
pub fn spawn(storage: Storage, profile: Profile, filter: ExportFilter) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(async move {
        match run(&storage, profile, &filter, &tx).await {
            Ok(rows) => {
                tracing::info!(profile = profile.name(), rows, "Export finished.");
            }
            Err(ExportError::Closed) => {
                tracing::info!(profile = profile.name(), "Export abandoned by its reader.");
            }
            Err(err) => {
                tracing::error!(profile = profile.name(), error = %err, "Export failed mid-stream.");
                let _ = tx.send(Err(std::io::Error::other(err.to_string()))).await;
            }
        }
    });
    rx
}

async fn run(
    storage: &Storage,
    profile: Profile,
    filter: &ExportFilter,
    tx: &mpsc::Sender<Chunk>,
) -> Result<u64, ExportError> {
    let mut writer = csv_writer();
    writer.write_record(profile.columns())?;
    let db = storage.db();
    let statement = db.get_database_backend().build(&select(filter));
    let mut rows = db.stream_raw(statement).await?;
    let mut records = Vec::new();
    let mut written = 0_u64;
    while let Some(result) = rows.next().await {
        let row = parse_row(&result?)?;
        if !filter.keeps(&row) {
            continue;
        }
        records.clear();
        profile.records(&row, filter.granularity, &mut records);
        for record in &records {
            writer.write_record(record)?;
            written += 1;
        }
        if writer.get_ref().len() >= CHUNK_BYTES {
            send(&mut writer, tx).await?;
        }
    }
    send(&mut writer, tx).await?;
    Ok(written)
}

/// A CSV writer into a fresh buffer: RFC 4180 (quotes where needed, CRLF line ends).
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4))
}

async fn send(
    writer: &mut csv::Writer<Vec<u8>>,
    tx: &mpsc::Sender<Chunk>,
) -> Result<(), ExportError> {
    let buffer = std::mem::replace(writer, csv_writer())
        .into_inner()
        .map_err(|err| csv::Error::from(err.into_error()))?;
    if buffer.is_empty() {
        return Ok(());
    }
    tx.send(Ok(Bytes::from(buffer)))
        .await
        .map_err(|_| ExportError::Closed)
}

/// Default expected lifespan of a node's hardware for the SCI embodied share, years: 4, the
/// server lifespan the Green Software Foundation's SCI guidance uses in its worked examples.
pub const DEFAULT_LIFESPAN_YEARS: u32 = 4;

/// Hours in a year for lifespans: 365.25 days × 24 h (Julian year).
pub const HOURS_PER_YEAR: i64 = 8766;

/// What an admin sets on a node for exports; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct NodeExportSettings {
    /// Owner (organisation or person): the `node_owner` column and the `owner` filter.
    pub owner: Option<String>,
    /// Embodied emissions of the node's hardware, for the SCI `M` column.
    pub embodied: Option<Embodied>,
}

/// Longest node owner accepted, characters.
pub const MAX_OWNER_CHARS: usize = 200;

/// Checks a `from` / `to` filter bound: a year from 0000 to 9999. Time columns are compared as
/// RFC 3339 text on SQLite, where a signed five-digit year (`+10000-01-01T00:00:00Z`, which RFC
/// 3339 parsers accept) would sort before every stored time.
///
/// # Errors
/// The reason, naming the bound.
pub fn check_time_bound(
    name: &str,
    bound: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), String> {
    use chrono::Datelike;
    match bound {
        Some(t) if !(0..=9999).contains(&t.year()) => {
            Err(format!("{name} ({t}) must fall in the years 0000 to 9999"))
        }
        _ => Ok(()),
    }
}

/// Checks an owner name: 1 to [`MAX_OWNER_CHARS`] characters, no control characters.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn check_owner(owner: &str) -> Result<(), String> {
    if owner.trim().is_empty() || owner.chars().count() > MAX_OWNER_CHARS {
        return Err(format!("owner must be 1 to {MAX_OWNER_CHARS} characters"));
    }
    if owner.chars().any(char::is_control) {
        return Err("owner must not contain control characters".into());
    }
    Ok(())
}

/// Stores a node's export settings. Returns false when no node has this id (nothing stored).
///
/// # Errors
/// Database failure.
pub async fn set_node(
    storage: &Storage,
    node_id: &str,
    settings: &NodeExportSettings,
) -> Result<bool, sea_orm::DbErr> {
    use sea_orm::ConnectionTrait as _;
    let mut update = Query::update();
    update
        .table(Alias::new("nodes"))
        .and_where(Expr::col(Alias::new("id")).eq(node_id));
    let mut any = false;
    if let Some(owner) = &settings.owner {
        update.value(Alias::new("owner"), owner.as_str());
        any = true;
    }
    if let Some(e) = settings.embodied {
        update.value(Alias::new("embodied_kg_co2e"), e.total_kg.to_string());
        update.value(Alias::new("embodied_lifespan_hours"), e.lifespan_hours);
        any = true;
    }
    if !any {
        // Nothing to change: still say whether the node exists.
        update.value(Alias::new("id"), node_id);
    }
    let db = storage.db();
    let result = db.execute(&update).await?;
    Ok(result.rows_affected() == 1)
}

/// A free-text cell, guarded against CSV (formula) injection: a value starting with `=`, `+`,
/// `-`, `@`, tab or carriage return gets a leading `'` so spreadsheets show it as text (OWASP,
/// "CSV Injection"). Applied to text a client or operator chose (names, ids, labels), never to
/// numbers.
#[must_use]
pub fn text(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

/// An exact decimal of millionths divided by 1000, written exactly (up to nine decimals, trailing
/// zeros dropped): Wh → kWh, g → kg. No rounding happens.
#[must_use]
pub fn thousandth(value: Decimal6) -> String {
    let m = value.millionths();
    let sign = if m < 0 { "-" } else { "" };
    let abs = m.unsigned_abs();
    let (int, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
    if frac == 0 {
        format!("{sign}{int}")
    } else {
        let digits = format!("{frac:09}");
        format!("{sign}{int}.{}", digits.trim_end_matches('0'))
    }
}

/// RFC 3339 UTC, with the fraction of a second only when there is one, e.g.
/// `2026-11-23T10:00:00Z`, `2026-11-23T10:00:07.250Z`: a period as signed (the agent's windows
/// carry milliseconds), so the cell equals the certificate's claim.
#[must_use]
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Σ energy of the certificate's sources of `kind`, Wh; `None` when it has no such source.
#[must_use]
pub fn energy_of(claims: &CertificateClaims, kind: wattest_shared::SourceKind) -> Option<Decimal6> {
    let mut sources = claims
        .energy
        .by_source
        .iter()
        .filter(|s| s.kind == kind)
        .peekable();
    sources.peek()?;
    Some(sources.map(|s| s.energy_wh).sum())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn thousandth_is_exact() {
        assert_eq!(thousandth(Decimal6::parse("1").unwrap()), "0.001");
        assert_eq!(thousandth(Decimal6::parse("1234.5").unwrap()), "1.2345");
        assert_eq!(
            thousandth(Decimal6::parse("0.000001").unwrap()),
            "0.000000001"
        );
        assert_eq!(thousandth(Decimal6::parse("2000").unwrap()), "2");
        assert_eq!(thousandth(Decimal6::ZERO), "0");
        assert_eq!(thousandth(Decimal6::parse("-1.5").unwrap()), "-0.0015");
    }

    #[test]
    fn text_neutralises_formulas() {
        for bad in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(text(bad), format!("'{bad}"));
        }
        assert_eq!(text("job-1"), "job-1");
        assert_eq!(text(""), "");
    }

    #[test]
    fn kid_from_header_prefix() {
        use base64::Engine as _;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"PS256","typ":"wattest-cert+jwt","kid":"abc"}"#);
        assert_eq!(header_kid(&format!("{header}.eyJ")).as_deref(), Some("abc"));
        assert_eq!(header_kid("not-base64!.x"), None);
    }

    #[test]
    fn hourly_rows_only_for_compliance() {
        let filter = ExportFilter {
            granularity: Granularity::Hour,
            ..ExportFilter::default()
        };
        assert!(filter.check(Profile::Compliance).is_ok());
        assert!(filter.check(Profile::Sci).is_err());
    }
}
