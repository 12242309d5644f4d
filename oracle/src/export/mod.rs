//! Compliance exports: CSV profiles of the issued certificates, streamed from a database cursor
//! through a CSV writer into a bounded channel, so memory stays constant whatever the row count.
//!
//! Pipeline: one SQL query (certificates ⟕ nodes ⟕ revocations, filtered, in `(issued_at, id)`
//! order) read as a row stream → each row's signed claims parsed ([`ExportRow`]) and filtered
//! exactly ([`ExportFilter`]) → the profile turns it into records (`compliance`, `codecarbon`,
//! `sci`, one file each) → `csv` writes them (RFC 4180, every non-numeric field quoted, UTF-8)
//! into a buffer sent as [`CHUNK_BYTES`] chunks over a channel of [`CHANNEL_CHUNKS`]. The HTTP
//! body and `wattest-oracle export` read the same [`Export`].
//!
//! Periods: an export covers the half-open interval `[from, to)`. A certificate row belongs to
//! the export whose interval holds the certificate's end (`from < period_end <= to`), an hour row
//! to the export whose interval holds the hour's start (`from <= hour < to`): consecutive exports
//! partition certificates and hours, so nothing is counted twice across reporting periods.
//!
//! Quantities are the certificate's exact decimals rescaled by a power of ten (Wh → kWh,
//! g → kg): no rounding, so column sums equal the sums of the certificates' claims exactly.
//!
//! Over HTTP an export holds an [`ExportSlot`] (at most [`max_concurrent_exports`] stream at once
//! per database backend) and ends with an error when its reader takes no chunk for
//! [`STALL_TIMEOUT`], so a slow or stalled client cannot keep database connections.

pub mod codecarbon;
pub mod compliance;
pub mod sci;

use crate::storage::Storage;
use axum::body::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, JoinType, Order, Query, SelectStatement};
use sea_orm::{DatabaseBackend, QueryResult, StreamTrait as _};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};
use wattest_shared::certificate::EarStatus;
use wattest_shared::{CertificateClaims, Decimal6};

/// One chunk of an export (a body frame over HTTP, a write to the file offline); an `Err` is the
/// export's last item and means it did not finish (the file is incomplete).
pub type Chunk = Result<Bytes, std::io::Error>;

/// Bytes buffered before a chunk is sent: 64 KiB, a few hundred rows, large enough that the
/// channel's per-message cost is negligible and small enough to keep memory flat.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks in flight between the database reader and the consumer: the reader waits when the
/// consumer (a slow HTTP client) is this far behind, so at most ≈ 5 × [`CHUNK_BYTES`] are held.
pub const CHANNEL_CHUNKS: usize = 4;

/// How long an HTTP export waits for its reader to take a chunk (the channel being full) before
/// it ends with an error: 30 s. The export's database connection and [`ExportSlot`] are then
/// released; the reader, if it reads on, gets the chunks already queued and then an aborted
/// transfer, never a short file that looks complete.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Exports streaming at once over HTTP from SQLite: 2 of the pool's 4 connections, so ingest and
/// issuance keep the other two.
pub const MAX_EXPORTS_SQLITE: usize = 2;

/// Exports streaming at once over HTTP from PostgreSQL: 8 of the pool's 32 connections.
pub const MAX_EXPORTS_POSTGRES: usize = 8;

static SQLITE_SLOTS: Semaphore = Semaphore::const_new(MAX_EXPORTS_SQLITE);
static POSTGRES_SLOTS: Semaphore = Semaphore::const_new(MAX_EXPORTS_POSTGRES);

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

    /// The profile's text columns that may hold a value reading as a number (ids, names,
    /// the calculation version): [`write_record`] quotes them whatever their value.
    fn text_columns(self) -> &'static [&'static str] {
        match self {
            Self::Compliance => &compliance::TEXT_COLUMNS,
            Self::Codecarbon => &[],
            Self::Sci => &sci::TEXT_COLUMNS,
        }
    }

    fn records(self, row: &ExportRow, filter: &ExportFilter, out: &mut Vec<Vec<String>>) {
        match self {
            Self::Compliance => compliance::records(row, filter, out),
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

/// Status filter: the revocation state, or an `ear.status` among certificates not revoked.
/// Without one an export holds [`StatusFilter::DEFAULT`]: valid certificates only, so a revoked
/// certificate and the one that replaced it are never both summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Certificates not revoked whose `ear.status` is affirming.
    Affirming,
    /// Certificates not revoked whose `ear.status` is warning.
    Warning,
    /// Certificates not revoked whose `ear.status` is contraindicated.
    Contraindicated,
    /// Revoked certificates only.
    Revoked,
    /// Certificates not revoked (the default).
    Valid,
    /// Every certificate, revoked or not (the `revoked` column tells them apart).
    All,
}

impl StatusFilter {
    /// The accepted names.
    pub const NAMES: &'static str = "affirming, warning, contraindicated, revoked, valid, all";

    /// The filter of an export that names none: [`StatusFilter::Valid`].
    pub const DEFAULT: Self = Self::Valid;

    /// Parses one of [`Self::NAMES`].
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "affirming" => Some(Self::Affirming),
            "warning" => Some(Self::Warning),
            "contraindicated" => Some(Self::Contraindicated),
            "revoked" => Some(Self::Revoked),
            "valid" => Some(Self::Valid),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    fn keeps(self, row: &ExportRow) -> bool {
        match self {
            Self::Affirming => !row.revoked && row.claims.status == EarStatus::Affirming,
            Self::Warning => !row.revoked && row.claims.status == EarStatus::Warning,
            Self::Contraindicated => {
                !row.revoked && row.claims.status == EarStatus::Contraindicated
            }
            Self::Revoked => row.revoked,
            Self::Valid => !row.revoked,
            Self::All => true,
        }
    }
}

/// Which certificates an export covers. Every filter is optional; they combine with AND.
///
/// `from` and `to` bound the half-open interval `[from, to)` the export covers. A certificate
/// (measurement period `[period_start, period_end)`) belongs to the one export whose interval
/// holds its last instant: `from < period_end <= to`. An hour row belongs to the export whose
/// interval holds the hour's start: `from <= hour < to`. Consecutive exports (`[a, b)` then
/// `[b, c)`) thus partition certificates, and hour rows, exactly. A bound not given is open.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Start of the interval, inclusive: certificate rows whose period ends after it, hour rows
    /// whose hour starts at or after it.
    pub from: Option<DateTime<Utc>>,
    /// End of the interval, exclusive: certificate rows whose period ends at or before it, hour
    /// rows whose hour starts before it.
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
    /// Revocation state or `ear.status`; `None` is [`StatusFilter::DEFAULT`] (not revoked).
    pub status: Option<StatusFilter>,
    /// Rows per certificate or per certificate-hour.
    pub granularity: Granularity,
}

impl ExportFilter {
    /// Checks the filter against the profile.
    ///
    /// # Errors
    /// A sentence for a 400: `from` not before `to`, hourly rows asked of a profile without them.
    pub fn check(&self, profile: Profile) -> Result<(), String> {
        check_time_bounds(self.from, self.to)?;
        if self.granularity == Granularity::Hour && profile != Profile::Compliance {
            return Err(format!(
                "granularity=hour exists only for the compliance profile, not {}",
                profile.name()
            ));
        }
        Ok(())
    }

    /// Whether the certificate is in the export (the SQL query only narrows the rows down; this
    /// decides, on the signed claims). With `granularity=hour` the interval is applied per hour
    /// ([`ExportFilter::covers_hour`]) instead.
    fn keeps(&self, row: &ExportRow) -> bool {
        self.model
            .as_deref()
            .is_none_or(|m| row.claims.model_id.as_deref() == Some(m))
            && self.status.unwrap_or(StatusFilter::DEFAULT).keeps(row)
            && (self.granularity == Granularity::Hour || self.covers_end(row.claims.period.end))
    }

    /// Whether a certificate ending at `period_end` (exclusive) is in `[from, to)`'s export:
    /// `from < period_end <= to`.
    #[must_use]
    pub fn covers_end(&self, period_end: DateTime<Utc>) -> bool {
        self.from.is_none_or(|from| period_end > from) && self.to.is_none_or(|to| period_end <= to)
    }

    /// Whether the hour starting at `hour` is in the export: `from <= hour < to`.
    #[must_use]
    pub fn covers_hour(&self, hour: DateTime<Utc>) -> bool {
        self.from.is_none_or(|from| hour >= from) && self.to.is_none_or(|to| hour < to)
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
    /// The consumer took no chunk for this long ([`StreamOptions::stall_timeout`]).
    #[error("the export's reader took no data for {} s; the export was stopped", .0.as_secs())]
    Stalled(Duration),
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
    // The interval narrows the rows down, a little wide (PostgreSQL keeps microseconds, the
    // claims nanoseconds); `ExportFilter::keeps` and `covers_hour` decide exactly on the claims.
    if let Some(from) = filter.from {
        q.and_where(col(&c, "period_end").gte(from));
    }
    if let Some(to) = filter.to {
        // A certificate's hours start at the hour of its start, so an hour row before `to`
        // needs `period_start < to + 1 h`; a certificate row needs `period_end <= to`.
        let (column, slack) = match filter.granularity {
            Granularity::Certificate => ("period_end", chrono::Duration::seconds(1)),
            Granularity::Hour => ("period_start", chrono::Duration::hours(1)),
        };
        // Past the year 9999 the bound is left to the exact filter (see `check_time_bound`).
        if let Some(bound) = to
            .checked_add_signed(slack)
            .filter(|t| check_time_bound("to", Some(*t)).is_ok())
        {
            q.and_where(col(&c, column).lt(bound));
        }
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

/// How an export is streamed.
#[derive(Debug, Default)]
pub struct StreamOptions {
    /// End the export with an error ([`ExportError::Stalled`]) when its reader has taken no
    /// chunk for this long, releasing its database connection: [`STALL_TIMEOUT`] over HTTP.
    /// `None` waits for the reader for ever (the offline command, whose reader is a file).
    pub stall_timeout: Option<Duration>,
    /// Held until the export's task ends, after its database connection is released.
    pub slot: Option<ExportSlot>,
}

/// Leave to stream one export over HTTP, one of [`max_concurrent_exports`] per database backend
/// in this process ([`acquire_slot`]); given back when dropped.
#[derive(Debug)]
pub struct ExportSlot {
    _permit: SemaphorePermit<'static>,
}

/// How many exports may stream at once from `backend`: [`MAX_EXPORTS_SQLITE`] or
/// [`MAX_EXPORTS_POSTGRES`].
#[must_use]
pub fn max_concurrent_exports(backend: DatabaseBackend) -> usize {
    if backend == DatabaseBackend::Sqlite {
        MAX_EXPORTS_SQLITE
    } else {
        MAX_EXPORTS_POSTGRES
    }
}

/// Leave to stream an export from `storage`'s database, waiting at most `wait` for one of the
/// [`max_concurrent_exports`] slots; `None` when none came free in time (the caller answers
/// 503). The slots are per process and per backend: one oracle serves one database.
pub async fn acquire_slot(storage: &Storage, wait: Duration) -> Option<ExportSlot> {
    let slots = if storage.db().get_database_backend() == DatabaseBackend::Sqlite {
        &SQLITE_SLOTS
    } else {
        &POSTGRES_SLOTS
    };
    let permit = match slots.try_acquire() {
        Ok(permit) => permit,
        Err(_) => tokio::time::timeout(wait, slots.acquire())
            .await
            .ok()?
            .ok()?,
    };
    Some(ExportSlot { _permit: permit })
}

/// A running export: its CSV chunks in order (header row first), then its end.
///
/// [`Export::recv`] yields `Ok` chunks and, when the export did not finish (a database failure,
/// a stall, a crashed task), one final `Err`: an HTTP body then aborts, so the client sees a
/// truncated transfer, never a short file that looks complete. Dropping it stops the export
/// and releases its database connection.
#[derive(Debug)]
pub struct Export {
    rx: mpsc::Receiver<Bytes>,
    /// Set by the task before it lets go of the channel: `Ok` when every row was sent.
    outcome: Arc<OnceLock<Result<(), String>>>,
    ended: bool,
}

impl Export {
    /// The next chunk; `None` once the export finished (after a final `Err` when it failed).
    pub async fn recv(&mut self) -> Option<Chunk> {
        if self.ended {
            return None;
        }
        if let Some(bytes) = self.rx.recv().await {
            return Some(Ok(bytes));
        }
        self.ended = true;
        match self.outcome.get() {
            Some(Ok(())) => None,
            Some(Err(why)) => Some(Err(std::io::Error::other(why.clone()))),
            None => Some(Err(std::io::Error::other(
                "the export stopped before it finished",
            ))),
        }
    }

    /// The chunks as a stream (an HTTP body).
    pub fn into_stream(self) -> impl futures::Stream<Item = Chunk> + Send + 'static {
        futures::stream::unfold(self, |mut export| async move {
            export.recv().await.map(|chunk| (chunk, export))
        })
    }
}

/// Starts an export that waits for its reader for ever and holds no slot (the offline command):
/// [`spawn_with`] and default [`StreamOptions`].
#[must_use]
pub fn spawn(storage: Storage, profile: Profile, filter: ExportFilter) -> Export {
    spawn_with(storage, profile, filter, StreamOptions::default())
}

/// Starts an export: a task streams the rows and sends CSV chunks (header row first) into a
/// channel of [`CHANNEL_CHUNKS`], which the returned [`Export`] reads. The task holds one
/// database connection while it runs, and `options.slot` until it ends.
#[must_use]
pub fn spawn_with(
    storage: Storage,
    profile: Profile,
    filter: ExportFilter,
    options: StreamOptions,
) -> Export {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let outcome = Arc::new(OnceLock::new());
    let result = Arc::clone(&outcome);
    tokio::spawn(async move {
        let StreamOptions {
            stall_timeout,
            slot,
        } = options;
        // `run` drops its row stream (the database connection) before it returns.
        let finished = run(&storage, profile, &filter, &tx, stall_timeout).await;
        drop(slot);
        let _ = result.set(match finished {
            Ok(rows) => {
                tracing::info!(profile = profile.name(), rows, "Export finished.");
                Ok(())
            }
            Err(err @ ExportError::Closed) => {
                tracing::info!(profile = profile.name(), "Export abandoned by its reader.");
                Err(err.to_string())
            }
            Err(err @ ExportError::Stalled(_)) => {
                tracing::warn!(profile = profile.name(), error = %err, "Export stopped: its reader stalled.");
                Err(err.to_string())
            }
            Err(err) => {
                tracing::error!(profile = profile.name(), error = %err, "Export failed mid-stream.");
                Err(err.to_string())
            }
        });
        // The outcome is set before the channel closes, so the reader sees it.
        drop(tx);
    });
    Export {
        rx,
        outcome,
        ended: false,
    }
}

async fn run(
    storage: &Storage,
    profile: Profile,
    filter: &ExportFilter,
    tx: &mpsc::Sender<Bytes>,
    stall: Option<Duration>,
) -> Result<u64, ExportError> {
    // The header row as RFC 4180 needs (plain names, unquoted); the records after it quote
    // every non-numeric field.
    let mut header = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4));
    header.write_record(profile.columns())?;
    let mut writer = csv_writer(
        header
            .into_inner()
            .map_err(|err| csv::Error::from(err.into_error()))?,
    );
    let text: Vec<bool> = profile
        .columns()
        .iter()
        .map(|column| profile.text_columns().contains(column))
        .collect();
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
        profile.records(&row, filter, &mut records);
        for record in &records {
            write_record(&mut writer, record, &text)?;
            written += 1;
        }
        if writer.get_ref().len() >= CHUNK_BYTES {
            send(&mut writer, tx, stall).await?;
        }
    }
    drop(rows);
    send(&mut writer, tx, stall).await?;
    Ok(written)
}

/// A CSV writer of records appending to `buffer`: RFC 4180 with CRLF line ends. It writes
/// fields as given: [`write_record`] quotes them.
fn csv_writer(buffer: Vec<u8>) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Never)
        .from_writer(buffer)
}

/// Writes `record` with every field that is not a number quoted (text, times, ids, booleans,
/// empty cells) and numbers bare, so spreadsheets read them as numbers. A field of a text
/// column (`text[i]`, [`Profile::text_columns`]) is quoted even when it reads as a number (the
/// calculation version `2`, a job id `42`): `csv::QuoteStyle::NonNumeric` judges a field by
/// its content alone. Quoting every text field keeps a `;` inside it from splitting the cell
/// where spreadsheets use `;` as the separator (see [`text`]).
fn write_record(
    writer: &mut csv::Writer<Vec<u8>>,
    record: &[String],
    text: &[bool],
) -> Result<(), csv::Error> {
    writer.write_record(record.iter().enumerate().map(|(i, field)| {
        // A number as csv's NonNumeric reads one; it holds no quote, comma or line break.
        let number = field.parse::<f64>().is_ok() || field.parse::<i128>().is_ok();
        if number && !text.get(i).copied().unwrap_or(false) {
            std::borrow::Cow::Borrowed(field.as_bytes())
        } else {
            std::borrow::Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")).into_bytes())
        }
    }))
}

/// Sends what `writer` holds as one chunk, waiting at most `stall` for room in the channel.
async fn send(
    writer: &mut csv::Writer<Vec<u8>>,
    tx: &mpsc::Sender<Bytes>,
    stall: Option<Duration>,
) -> Result<(), ExportError> {
    let fresh = csv_writer(Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4));
    let buffer = std::mem::replace(writer, fresh)
        .into_inner()
        .map_err(|err| csv::Error::from(err.into_error()))?;
    if buffer.is_empty() {
        return Ok(());
    }
    let sent = tx.send(Bytes::from(buffer));
    match stall {
        None => sent.await.map_err(|_| ExportError::Closed),
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(result) => result.map_err(|_| ExportError::Closed),
            Err(_) => Err(ExportError::Stalled(limit)),
        },
    }
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

/// Checks the `from` and `to` filters, one rule for the exports and `GET /v1/balances`
/// (`docs/protocol.md` §6): each in the years 0000 to 9999 ([`check_time_bound`]), and `from`
/// before `to` when both are given. `from` = `to` is refused too: `[from, to)` would be empty,
/// which is never what a caller meant.
///
/// # Errors
/// A sentence for a 400.
pub fn check_time_bounds(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), String> {
    check_time_bound("from", from)?;
    check_time_bound("to", to)?;
    match (from, to) {
        (Some(from), Some(to)) if from >= to => {
            Err(format!("from ({from}) must be before to ({to})"))
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

/// Characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A free-text cell, guarded against CSV (formula) injection (OWASP, "CSV Injection"): a
/// formula trigger (`=`, `+`, `-`, `@`, tab, carriage return) at the start of the value, or right
/// after a `;`, gets a `'` before it, so that neither the cell nor a piece of it split off at a
/// `;` (the separator of spreadsheets in many locales) starts a formula: `run;=cmd` becomes
/// `run;'=cmd`. The writer also quotes every text field. Applied to text a client or operator
/// chose (names, ids, labels), never to numbers.
#[must_use]
pub fn text(value: &str) -> String {
    if !value.starts_with(FORMULA_TRIGGERS) && !value.contains(';') {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    let mut cell_start = true;
    for ch in value.chars() {
        if cell_start && FORMULA_TRIGGERS.contains(&ch) {
            out.push('\'');
        }
        out.push(ch);
        cell_start = ch == ';';
    }
    out
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
    fn text_neutralises_formulas_after_semicolons() {
        // Excel splits at `;` in many locales: no piece may start a formula.
        assert_eq!(text("run;=cmd|' /C calc'!A0"), "run;'=cmd|' /C calc'!A0");
        assert_eq!(text("=a;;+b;-c;@d"), "'=a;;'+b;'-c;'@d");
        assert_eq!(text("a; =b"), "a; =b");
        assert_eq!(text("a;b"), "a;b");
        for cell in text("x;\t=y;=z").split(';') {
            assert!(!cell.starts_with(FORMULA_TRIGGERS), "{cell:?}");
        }
    }

    #[test]
    fn text_fields_are_quoted_and_numbers_bare() {
        let mut writer = csv_writer(Vec::new());
        let record = [
            text("run;=cmd"),
            "-0.0015".into(),
            "12".into(),
            String::new(),
        ];
        let record = [
            record.to_vec(),
            vec!["true".into(), "a \"b\", c".into(), "2".into()],
        ];
        let text_columns = [false, false, false, false, false, false, true];
        write_record(&mut writer, &record.concat(), &text_columns).unwrap();
        let line = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(
            line,
            "\"run;'=cmd\",-0.0015,12,\"\",\"true\",\"a \"\"b\"\", c\",\"2\"\r\n"
        );
    }

    #[test]
    fn consecutive_intervals_partition_ends_and_hours() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let january = ExportFilter {
            from: Some(t("2026-01-01T00:00:00Z")),
            to: Some(t("2026-02-01T00:00:00Z")),
            ..ExportFilter::default()
        };
        let february = ExportFilter {
            from: january.to,
            to: Some(t("2026-03-01T00:00:00Z")),
            ..ExportFilter::default()
        };
        // A period ending exactly at the boundary is January's (its end is exclusive).
        let boundary = t("2026-02-01T00:00:00Z");
        assert!(january.covers_end(boundary) && !february.covers_end(boundary));
        let after = t("2026-02-01T00:00:00.001Z");
        assert!(!january.covers_end(after) && february.covers_end(after));
        assert!(!january.covers_end(t("2026-01-01T00:00:00Z")));
        // The hour starting at the boundary is February's; the one before, January's.
        assert!(!january.covers_hour(boundary) && february.covers_hour(boundary));
        let last = t("2026-01-31T23:00:00Z");
        assert!(january.covers_hour(last) && !february.covers_hour(last));
        // One bound only: the same rule on that bound.
        let only_to = ExportFilter {
            to: Some(boundary),
            ..ExportFilter::default()
        };
        let only_from = ExportFilter {
            from: Some(boundary),
            ..ExportFilter::default()
        };
        for end in [boundary, after, last] {
            assert!(
                only_to.covers_end(end) != only_from.covers_end(end),
                "{end}"
            );
            assert!(
                only_to.covers_hour(end) != only_from.covers_hour(end),
                "{end}"
            );
        }
    }

    #[test]
    fn status_names_parse_and_default_is_valid() {
        for name in StatusFilter::NAMES.split(", ") {
            assert!(StatusFilter::parse(name).is_some(), "{name}");
        }
        assert_eq!(StatusFilter::DEFAULT, StatusFilter::Valid);
        assert_eq!(StatusFilter::parse("all"), Some(StatusFilter::All));
    }

    #[test]
    fn kid_from_header_prefix() {
        use base64::Engine as _;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"PS256","typ":"wattest-cert+jwt","kid":"abc"}"#);
        assert_eq!(header_kid(&format!("{header}.eyJ")).as_deref(), Some("abc"));
        assert_eq!(header_kid("not-base64!.x"), None);
    }

    /// One rule for the exports and `/v1/balances`: `from` must be before `to`; `from` = `to`
    /// (an empty interval) is refused like `from` after `to`.
    #[test]
    fn from_must_be_before_to() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let later = t + chrono::Duration::seconds(1);
        assert!(check_time_bounds(Some(t), Some(t)).is_err());
        assert!(check_time_bounds(Some(t), Some(later)).is_ok());
        assert!(check_time_bounds(Some(later), Some(t)).is_err());
        assert!(check_time_bounds(None, Some(t)).is_ok());
        assert!(check_time_bounds(Some(later), None).is_ok());
        let filter = ExportFilter {
            from: Some(t),
            to: Some(t),
            ..ExportFilter::default()
        };
        assert!(filter.check(Profile::Compliance).is_err());
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
