//! Storage on sea-orm: SQLite (a file in the data dir, the default) or PostgreSQL (`DATABASE_URL`).
//!
//! One concrete struct; every write that must be atomic (accepting a window and moving the
//! node's chain head, issuing a certificate and logging it) runs in one transaction, and
//! the chain head moves with a compare-and-set on `last_seq`, so two replicas or two requests can
//! never accept two windows for the same position.

mod balances;
pub mod entities;
pub mod held;
pub mod ledger;
mod tokens;

pub use balances::OwnerTotals;

use chrono::{DateTime, Utc};
use entities::{certificate, enrollment_challenge, node, token, window};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    Statement, TransactionTrait,
};
use std::path::Path;
use std::time::Duration;
use wattest_schema::{Migrator, MigratorTrait};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// The chain head moved under us (a concurrent window for the same seq won).
    #[error("the node's chain moved concurrently")]
    ChainMoved,
    /// The window's job already has its certificate.
    #[error("the job already has its certificate")]
    JobClosed,
    /// Stored data violates an invariant (a bug or a damaged database); never a client error.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A log proof that cannot exist (leaf beyond the tree, sizes out of order): a client error.
    #[error(transparent)]
    Proof(wattest_shared::merkle::ProofError),
    /// The database URL is refused, or connecting failed; the message never holds the URL's
    /// password.
    #[error("{0}")]
    Connect(String),
}

/// SQLite's auto-checkpoint threshold, in WAL pages (4 KiB each: 64 MiB), raised from SQLite's
/// default of 1000 (<https://sqlite.org/pragma.html#pragma_wal_autocheckpoint>): the background
/// checkpointer ([`Storage::spawn_wal_checkpointer`]) lets the WAL start over at
/// [`SQLITE_WAL_RESTART_FRAMES`], and this remains as the bound should that task fall behind.
/// Reaching it costs the request that committed last: its writer runs the checkpoint itself
/// (60–110 ms every 2.6 s at 6 000 windows/s before the restart below, `docs/performance.md`).
pub const SQLITE_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// WAL frames (pages) beyond which the background checkpointer makes the WAL start over from
/// its beginning (16 MiB with 4 KiB pages). SQLite rewinds the WAL only when a write
/// transaction begins with every frame already copied into the database
/// (<https://sqlite.org/wal.html>, "Avoiding Excessively Large WAL Files"); under steady ingest
/// the writer commits while each checkpoint copies and syncs (15–20 ms), so that never happens
/// by itself and the WAL grows until the auto-checkpoint. So once the WAL holds this many
/// frames, the checkpointer copies again while holding the writer lock: only the frames
/// committed during its first pass, and the next write transaction rewinds the WAL. Commits
/// wait for that pass. SQLite syncs the database file only in a checkpoint that copies every
/// frame, so the locked pass would also flush every page the unlocked passes wrote (6–13 ms
/// at 6 000 windows/s); the checkpointer flushes them first, outside the lock, and the locked
/// pass takes 1.5–4 ms (`docs/performance.md`, which also compares other thresholds).
pub const SQLITE_WAL_RESTART_FRAMES: i64 = 4_096;

/// Rows [`Storage::visit_open_window_claims`] reads per query: 4 096 windows are about 10 MB of JWS
/// and payload text, parsed and dropped before the next chunk (a job of a month of 10 s windows
/// has 259 200).
pub const OPEN_WINDOWS_CHUNK: u64 = 4_096;

/// Period of the background WAL checkpoint on SQLite. Each checkpoint ends with an `fsync`
/// whose length grows with the pages it copied (35–42 ms for a second of ingest at 1 000
/// windows/s on the development machines, `strace -T`), and ingest requests answered meanwhile
/// were that much slower; every 250 ms instead of every second halved those stalls and the
/// ingest P99 (`docs/performance.md`).
pub const SQLITE_CHECKPOINT_PERIOD: Duration = Duration::from_millis(250);

/// The database behind the oracle.
#[derive(Debug, Clone)]
pub struct Storage {
    db: DatabaseConnection,
    /// SQLite only: write transactions take this lock first. SQLite has one writer, and a
    /// deferred transaction that read before writing fails with SQLITE_BUSY (not retried by the
    /// busy timeout) when another connection committed meanwhile; queueing writers in the process
    /// avoids that. PostgreSQL runs writers concurrently (the chain head's compare-and-set keeps
    /// them correct).
    writer: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

/// A write transaction (holding the SQLite writer lock, when there is one, until it ends).
#[derive(Debug)]
pub struct WriteTxn {
    txn: DatabaseTransaction,
    _writer: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;
    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

impl WriteTxn {
    /// Commits.
    ///
    /// # Errors
    /// Database failure (nothing of the transaction is kept).
    pub async fn commit(self) -> Result<(), sea_orm::DbErr> {
        self.txn.commit().await
    }
}

/// The SQLite database's file name in the data dir, when `DATABASE_URL` is not set.
pub const SQLITE_FILE: &str = "wattest.db";

/// The database URL: `DATABASE_URL` when set, else SQLite in `data_dir/`[`SQLITE_FILE`].
#[must_use]
pub fn database_url(data_dir: &Path, env_url: Option<String>) -> String {
    env_url
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join(SQLITE_FILE).display()))
}

/// What to do about a database URL that does not parse, said with every error about one.
const URL_HINT: &str = "characters such as / # ? @ : % or space in the user name or password \
     must be percent-encoded (or the password chosen URL-safe)";

/// Refuses a database URL that sea-orm would refuse with its own message, which quotes the
/// whole URL, password included: one that does not parse, or whose scheme is none of `sqlite`,
/// `postgres`, `postgresql`. A PostgreSQL URL with a fragment is refused too: it has no
/// meaning there, and it is what an unencoded `#` in a password leaves.
fn check_database_url(url: &str) -> Result<(), StorageError> {
    // `reqwest::Url` is `url::Url` (the only version in Cargo.lock, the one sea-orm parses with).
    let parsed = reqwest::Url::parse(url).map_err(|err| {
        StorageError::Connect(format!(
            "the database URL {} does not parse ({err}); {URL_HINT}",
            crate::config::redact("database_url", url)
        ))
    })?;
    match parsed.scheme() {
        "sqlite" => Ok(()),
        "postgres" | "postgresql" if parsed.fragment().is_none() => Ok(()),
        "postgres" | "postgresql" => Err(StorageError::Connect(format!(
            "the database URL {} holds a '#'; {URL_HINT}",
            crate::config::redact("database_url", url)
        ))),
        scheme => Err(StorageError::Connect(format!(
            "the database URL {} names the scheme {scheme:?}; use sqlite:// or postgres://",
            crate::config::redact("database_url", url)
        ))),
    }
}

/// A connection failure as [`StorageError::Connect`]: sea-orm's text for a connection string
/// it refuses (which quotes the URL) is never used, and any other text has the URL and its
/// password (as written and percent-decoded) replaced.
fn connect_error(url: &str, err: &sea_orm::DbErr) -> StorageError {
    let redacted = crate::config::redact("database_url", url);
    let text = err.to_string();
    if text.contains("connection string") {
        return StorageError::Connect(format!(
            "the database URL {redacted} is not accepted; {URL_HINT}"
        ));
    }
    let mut text = text.replace(url, &redacted);
    if let Some(password) = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        for secret in [percent_decode(&password), password] {
            if !secret.is_empty() {
                text = text.replace(&secret, "<redacted>");
            }
        }
    }
    StorageError::Connect(format!("connecting to the database {redacted}: {text}"))
}

/// `text` with its `%XX` escapes decoded (lossily, as UTF-8).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Storage {
    /// Connects and applies pending migrations.
    ///
    /// # Errors
    /// [`StorageError::Connect`] for a URL that does not parse or names another database than
    /// SQLite or PostgreSQL, and for a failed connection (messages show the URL with its
    /// password redacted); a migration failure.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        check_database_url(url)?;
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        let sqlite = url.starts_with("sqlite:");
        if sqlite {
            // No ping before each use of a pooled connection: it is a round trip to the
            // connection's worker thread (two context switches), and a connection to a local
            // file does not go stale.
            options.test_before_acquire(false);
            // Per-connection settings, applied to every pooled connection: WAL (readers never
            // block the writer), synchronous=NORMAL (durable across process crashes; in WAL mode
            // only a power loss can lose the last commits), foreign keys, and a busy timeout for
            // single statements that meet a writer.
            options.max_connections(4).map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10))
                    .pragma(
                        "wal_autocheckpoint",
                        SQLITE_AUTOCHECKPOINT_PAGES.to_string(),
                    )
            });
        } else {
            // sqlx's ping before each use stays: it finds a connection that a server restart
            // or a firewall broke before a statement fails on it.
            options.max_connections(32);
        }
        let db = Database::connect(options)
            .await
            .map_err(|err| connect_error(url, &err))?;
        Migrator::up(&db, None).await?;
        let writer = sqlite.then(|| std::sync::Arc::new(tokio::sync::Mutex::new(())));
        Ok(Self { db, writer })
    }

    /// SQLite only: starts a task that checkpoints the WAL into the database file every
    /// [`SQLITE_CHECKPOINT_PERIOD`] (`PRAGMA wal_checkpoint(PASSIVE)`: it never blocks readers
    /// or the writer), and lets the WAL start over once it holds [`SQLITE_WAL_RESTART_FRAMES`].
    /// Without it, the commit that crosses SQLite's auto-checkpoint threshold copies and fsyncs
    /// the pages itself, and that request pays several milliseconds: the spikes at the 99th
    /// percentile of ingest and issuance latency. A no-op on PostgreSQL.
    pub fn spawn_wal_checkpointer(&self) {
        self.spawn_wal_checkpointer_with(SQLITE_CHECKPOINT_PERIOD, SQLITE_WAL_RESTART_FRAMES);
    }

    /// [`Storage::spawn_wal_checkpointer`] with another period and restart threshold.
    fn spawn_wal_checkpointer_with(&self, period: Duration, restart_frames: i64) {
        let Some(writer) = self.writer.clone() else {
            return;
        };
        let db = self.db.clone();
        tokio::spawn(async move {
            let database_file = main_database_file(&db).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                wal_checkpoint_pass(&db, &writer, database_file, restart_frames).await;
            }
        });
    }

    /// The connection, for read queries.
    #[must_use]
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a write transaction (on SQLite, after the previous writer finished, and as
    /// `BEGIN IMMEDIATE`: the write lock is taken at the start, waiting under the busy timeout.
    /// A deferred transaction that reads first fails at once with `SQLITE_BUSY_SNAPSHOT` when it
    /// comes to write after another connection committed meanwhile — a held window's write or a
    /// token's `last_used_at`, which do not go through this lock).
    ///
    /// # Errors
    /// Database failure.
    pub async fn begin(&self) -> Result<WriteTxn, StorageError> {
        let Some(lock) = &self.writer else {
            return Ok(WriteTxn {
                txn: self.db.begin().await?,
                _writer: None,
            });
        };
        let writer = lock.clone().lock_owned().await;
        let immediate = sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..sea_orm::TransactionOptions::default()
        };
        Ok(WriteTxn {
            txn: self.db.begin_with_options(immediate).await?,
            _writer: Some(writer),
        })
    }

    /// Stores a token by its hash, accepted until `expires_at` (`None`: no expiry), enrolling at
    /// most `max_enrollments` nodes (`None`: any number).
    ///
    /// # Errors
    /// Database failure.
    pub async fn insert_token(
        &self,
        id: &str,
        role: &str,
        token_hash: &str,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        max_enrollments: Option<i64>,
    ) -> Result<(), StorageError> {
        token::ActiveModel {
            id: Set(id.into()),
            role: Set(role.into()),
            token_hash: Set(token_hash.into()),
            created_at: Set(now),
            revoked_at: Set(None),
            last_used_at: Set(None),
            expires_at: Set(expires_at),
            max_enrollments: Set(max_enrollments),
            enrollments: Set(0),
        }
        .insert(&self.db)
        .await?;
        Ok(())
    }

    /// The unrevoked token with this hash.
    ///
    /// # Errors
    /// Database failure.
    pub async fn token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<token::Model>, StorageError> {
        Ok(token::Entity::find()
            .filter(token::Column::TokenHash.eq(token_hash))
            .filter(token::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?)
    }

    /// Counts one enrollment against token `id`: `false` (nothing counted) when the token has
    /// enrolled its `max_enrollments` nodes already. One conditional `UPDATE`, so concurrent
    /// enrollments cannot pass the cap together.
    ///
    /// # Errors
    /// Database failure.
    pub async fn take_enrollment(&self, id: &str) -> Result<bool, StorageError> {
        let counted = token::Entity::update_many()
            .col_expr(
                token::Column::Enrollments,
                Expr::col(token::Column::Enrollments).add(1),
            )
            .filter(token::Column::Id.eq(id))
            .filter(
                sea_orm::Condition::any()
                    .add(token::Column::MaxEnrollments.is_null())
                    .add(
                        Expr::col(token::Column::Enrollments)
                            .lt(Expr::col(token::Column::MaxEnrollments)),
                    ),
            )
            .exec(&self.db)
            .await?;
        Ok(counted.rows_affected == 1)
    }

    /// Inserts a new node.
    ///
    /// # Errors
    /// Database failure (a duplicate `kid` violates a unique index).
    pub async fn insert_node(&self, model: node::Model) -> Result<(), StorageError> {
        node::ActiveModel::from(model).insert(&self.db).await?;
        Ok(())
    }

    /// Stores a pending TPM enrollment and drops the expired ones (`now` ≥ `expires_at`).
    ///
    /// # Errors
    /// Database failure.
    pub async fn insert_challenge(
        &self,
        model: enrollment_challenge::Model,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        enrollment_challenge::Entity::delete_many()
            .filter(enrollment_challenge::Column::ExpiresAt.lte(now))
            .exec(&self.db)
            .await?;
        enrollment_challenge::ActiveModel::from(model)
            .insert(&self.db)
            .await?;
        Ok(())
    }

    /// Removes the pending enrollment `id` and returns it: each challenge is answered at most
    /// once, and of two concurrent answers only the one whose delete removed the row gets it.
    ///
    /// # Errors
    /// Database failure.
    pub async fn take_challenge(
        &self,
        id: &str,
    ) -> Result<Option<enrollment_challenge::Model>, StorageError> {
        let Some(found) = enrollment_challenge::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let deleted = enrollment_challenge::Entity::delete_by_id(id.to_owned())
            .exec(&self.db)
            .await?;
        Ok((deleted.rows_affected == 1).then_some(found))
    }

    /// The node whose key has thumbprint `kid`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn node_by_kid(&self, kid: &str) -> Result<Option<node::Model>, StorageError> {
        Ok(node::Entity::find()
            .filter(node::Column::Kid.eq(kid))
            .one(&self.db)
            .await?)
    }

    /// The nodes whose key is one of `kids` (distinct), by kid, in one query: a batch's windows
    /// name their nodes by an unverified header, so its lookups must cost one query whatever
    /// the number of kids. Kids of no node are absent.
    ///
    /// # Errors
    /// Database failure.
    pub async fn nodes_by_kids(
        &self,
        kids: &[&str],
    ) -> Result<std::collections::HashMap<String, node::Model>, StorageError> {
        let Some(&last) = kids.last() else {
            return Ok(std::collections::HashMap::new());
        };
        // Rounded up to a power of two by repeating the last kid: a few statement shapes, each
        // prepared once per connection, instead of one per number of kids.
        let padding = std::iter::repeat_n(last, kids.len().next_power_of_two() - kids.len());
        Ok(node::Entity::find()
            .filter(node::Column::Kid.is_in(kids.iter().copied().chain(padding)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|node| (node.kid.clone(), node))
            .collect())
    }

    /// The node with id `id`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn node_by_id(&self, id: &str) -> Result<Option<node::Model>, StorageError> {
        Ok(node::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// The accepted window of `node_id` at `seq`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn window_at(
        &self,
        node_id: &str,
        seq: u64,
    ) -> Result<Option<window::Model>, StorageError> {
        Ok(window::Entity::find()
            .filter(window::Column::NodeId.eq(node_id))
            .filter(window::Column::Seq.eq(seq_i64(seq)))
            .one(&self.db)
            .await?)
    }

    /// Flags node `node_id` with `reason` (e.g. `seq_conflict:7`), unless it is flagged already
    /// (the first reason is kept: it is the earliest evidence).
    ///
    /// # Errors
    /// Database failure.
    pub async fn flag_node(&self, node_id: &str, reason: &str) -> Result<(), StorageError> {
        node::Entity::update_many()
            .col_expr(node::Column::Flag, Expr::value(Some(reason.to_owned())))
            .filter(node::Column::Id.eq(node_id))
            .filter(node::Column::Flag.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The node's flag as `conn` (a write transaction, or the pool) reads it now; `None` for an
    /// unflagged or unknown node.
    ///
    /// # Errors
    /// Database failure.
    pub async fn node_flag(
        &self,
        conn: &impl ConnectionTrait,
        node_id: &str,
    ) -> Result<Option<String>, StorageError> {
        let flag: Option<Option<String>> = node::Entity::find_by_id(node_id.to_owned())
            .select_only()
            .column(node::Column::Flag)
            .into_tuple()
            .one(conn)
            .await?;
        Ok(flag.flatten())
    }

    /// True when a certificate already closed `job_id` for `node_id`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn job_closed(
        &self,
        txn: &impl ConnectionTrait,
        node_id: &str,
        job_id: &str,
    ) -> Result<bool, StorageError> {
        let n = certificate::Entity::find()
            .filter(certificate::Column::NodeId.eq(node_id))
            .filter(certificate::Column::JobId.eq(job_id))
            .count(txn)
            .await?;
        Ok(n > 0)
    }

    /// Moves the node's chain head from (`first.seq − 1`, `prev`) to `last.seq` and stores
    /// `rows`, in `txn`: [`Storage::advance_head`], then [`Storage::insert_windows`].
    ///
    /// # Errors
    /// As [`Storage::advance_head`] (nothing is written then); database failure.
    pub async fn append_windows(
        &self,
        txn: &DatabaseTransaction,
        prev: Option<&str>,
        rows: Vec<window::Model>,
    ) -> Result<(), StorageError> {
        self.advance_head(txn, prev, &rows).await?;
        self.insert_windows(txn, rows).await
    }

    /// Moves the node's chain head from (`first.seq − 1`, `prev`) to `last.seq` of `rows`, in
    /// `txn`: one compare-and-set `UPDATE`, guarded, for windows with a job, by "no certificate
    /// of this node closed the job". The caller then stores `rows` in the same transaction
    /// ([`Storage::insert_windows`], possibly together with other nodes' rows), before anything
    /// reads the node's windows.
    ///
    /// `rows` are one node's windows of one job with consecutive seqs, each chaining to the one
    /// before (verified by the caller); usually one window. `prev` is the first row's `prev`
    /// claim (`None` for seq 1): the head must still be the very window it chains to, not merely
    /// one with the same seq (a node that signed two histories could otherwise graft a window
    /// onto the other history's head when both race).
    ///
    /// # Errors
    /// [`StorageError::ChainMoved`] when another window took the first seq first, or the head
    /// is not the window `prev` names; [`StorageError::JobClosed`] when the job already has its
    /// certificate (the head is unchanged in these cases); database failure.
    pub async fn advance_head(
        &self,
        txn: &DatabaseTransaction,
        prev: Option<&str>,
        rows: &[window::Model],
    ) -> Result<(), StorageError> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(());
        };
        let mut cas = node::Entity::update_many()
            .col_expr(node::Column::LastSeq, Expr::value(last.seq))
            .col_expr(node::Column::LastHash, Expr::value(Some(last.hash.clone())))
            .col_expr(node::Column::LastEnd, Expr::value(Some(last.end_at)))
            .filter(node::Column::Id.eq(first.node_id.clone()))
            .filter(node::Column::LastSeq.eq(first.seq - 1))
            .filter(match prev {
                Some(prev) => node::Column::LastHash.eq(prev),
                None => node::Column::LastHash.is_null(),
            });
        if let Some(job) = &first.job_id {
            cas = cas.filter(
                Expr::exists(
                    sea_orm::sea_query::Query::select()
                        .expr(Expr::val(1))
                        .from(certificate::Entity)
                        .and_where(certificate::Column::NodeId.eq(first.node_id.clone()))
                        .and_where(certificate::Column::JobId.eq(job.clone()))
                        .to_owned(),
                )
                .not(),
            );
        }
        let moved = cas.exec(txn).await?;
        if moved.rows_affected != 1 {
            // Rare: tell the two causes apart. A head at or past `seq` means a concurrent
            // window won (for a duplicate of a final window, too: the caller returns the
            // original receipt rather than `job_closed`).
            let head = node::Entity::find_by_id(first.node_id.clone())
                .one(txn)
                .await?
                .map_or(i64::MAX, |n| n.last_seq);
            return Err(match &first.job_id {
                Some(job)
                    if head < first.seq && self.job_closed(txn, &first.node_id, job).await? =>
                {
                    StorageError::JobClosed
                }
                _ => StorageError::ChainMoved,
            });
        }
        Ok(())
    }

    /// Inserts window rows (of any nodes whose heads [`Storage::advance_head`] moved past them in
    /// `txn`) with one multi-row `INSERT` per power-of-two chunk, so that a connection prepares a
    /// handful of statement shapes, not one per count. No rows: nothing.
    ///
    /// # Errors
    /// Database failure.
    pub async fn insert_windows(
        &self,
        txn: &DatabaseTransaction,
        rows: Vec<window::Model>,
    ) -> Result<(), StorageError> {
        let mut rows = rows.into_iter().map(|row| {
            let mut active = window::ActiveModel::from(row);
            active.id = sea_orm::ActiveValue::NotSet;
            active
        });
        let mut left = rows.len();
        while left > 0 {
            // The largest power of two not above what is left: 37 rows go as 32 + 4 + 1.
            let chunk = 1 << left.ilog2();
            window::Entity::insert_many(rows.by_ref().take(chunk))
                .exec_without_returning(txn)
                .await?;
            left -= chunk;
        }
        Ok(())
    }

    /// The claims (the JSON as signed: the payload segment of each stored JWS, base64url-decoded,
    /// parsed as `T`) of the node's windows not yet covered by a certificate, for `job_id` (or
    /// with no job), by seq, each handed to `visit` as it is read. Only the seq and JWS columns
    /// are read, [`OPEN_WINDOWS_CHUNK`] rows at a time, and each row is parsed and dropped
    /// before the next chunk is read: a job of weeks of windows costs what `visit` keeps of
    /// them, not every JWS at once.
    ///
    /// # Errors
    /// Database failure; [`StorageError::Corrupt`] for a stored JWS without a base64url payload,
    /// or whose payload does not parse as `T` (every stored window passed verification, so only
    /// a damaged database has one). Windows before it have been visited.
    pub async fn visit_open_window_claims<T: serde::de::DeserializeOwned>(
        &self,
        conn: &impl ConnectionTrait,
        node_id: &str,
        job_id: Option<&str>,
        visit: impl FnMut(T),
    ) -> Result<(), StorageError> {
        visit_open_window_claims_in_chunks(conn, node_id, job_id, OPEN_WINDOWS_CHUNK, visit).await
    }

    /// How many of the node's windows for `job_id` (or with no job) no certificate covers yet:
    /// [`Storage::open_window_claims`]'s length, counted on the `(node_id, job_id, seq)`
    /// index without reading the rows.
    ///
    /// # Errors
    /// Database failure.
    pub async fn open_window_count(
        &self,
        conn: &impl ConnectionTrait,
        node_id: &str,
        job_id: Option<&str>,
    ) -> Result<u64, StorageError> {
        Ok(open_windows_query(node_id, job_id).count(conn).await?)
    }

    /// The certificate issued for the final window `seq` of a node's job (`None`: its windows
    /// without a job): the one whose `last_seq` it is. `None` when that window closed nothing
    /// (not final, or not yet committed).
    ///
    /// # Errors
    /// Database failure.
    pub async fn certificate_closing(
        &self,
        node_id: &str,
        job_id: Option<&str>,
        seq: i64,
    ) -> Result<Option<certificate::Model>, StorageError> {
        Ok(certificate::Entity::find()
            .filter(certificate::Column::NodeId.eq(node_id))
            .filter(same_job(certificate::Column::JobId, job_id))
            .filter(certificate::Column::LastSeq.eq(seq))
            .one(&self.db)
            .await?)
    }

    /// Stores a certificate and appends its compact JWS to the transparency log at `slot`
    /// (taken by [`Storage::reserve_log`] in the same transaction): on PostgreSQL one statement,
    /// on SQLite four.
    ///
    /// # Errors
    /// Database failure, or [`StorageError::Corrupt`] as for [`Storage::append_log`].
    pub async fn insert_certificate(
        &self,
        txn: &DatabaseTransaction,
        row: &certificate::Model,
        slot: ledger::LogSlot,
        now: DateTime<Utc>,
    ) -> Result<ledger::Appended, StorageError> {
        use sea_orm::QueryTrait as _;
        let insert =
            certificate::Entity::insert(certificate::ActiveModel::from(row.clone())).into_query();
        self.write_log(txn, slot, Some(insert), &row.id, row.jws.as_bytes(), now)
            .await
    }

    /// Certificates, newest first, filtered by job and node, at most `limit`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_certificates(
        &self,
        job: Option<&str>,
        node: Option<&str>,
        limit: u64,
    ) -> Result<Vec<certificate::Model>, StorageError> {
        let mut query = certificate::Entity::find();
        if let Some(job) = job {
            query = query.filter(certificate::Column::JobId.eq(job));
        }
        if let Some(node) = node {
            query = query.filter(certificate::Column::NodeId.eq(node));
        }
        Ok(query
            .order_by_desc(certificate::Column::IssuedAt)
            .order_by_desc(certificate::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// One certificate.
    ///
    /// # Errors
    /// Database failure.
    pub async fn certificate(&self, id: &str) -> Result<Option<certificate::Model>, StorageError> {
        Ok(certificate::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }
}

/// One pass of the background checkpointer ([`Storage::spawn_wal_checkpointer`]): a passive
/// checkpoint, and when it found `restart_frames` frames or more in the WAL, the database file
/// flushed and a second checkpoint under the writer lock, after which the next write
/// transaction rewinds the WAL.
async fn wal_checkpoint_pass(
    db: &DatabaseConnection,
    writer: &tokio::sync::Mutex<()>,
    database_file: Option<&'static std::fs::File>,
    restart_frames: i64,
) {
    let Some(frames) = wal_checkpoint(db).await else {
        return;
    };
    if frames >= restart_frames {
        // The pages the unlocked passes copied are flushed now, while commits go on, rather
        // than by the locked pass's own sync.
        if let Some(file) = database_file {
            sync_database_file(file).await;
        }
        // No write transaction commits during this pass, so it leaves every frame copied and
        // the next one rewinds the WAL.
        let _writer = writer.lock().await;
        wal_checkpoint(db).await;
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)` on a pooled connection: the frames in the WAL (its `log`
/// column, <https://sqlite.org/pragma.html#pragma_wal_checkpoint>), all of them copied into the
/// database file unless a reader still needed some. `None` (logged) when the checkpoint failed;
/// SQLite's auto-checkpoint then still bounds the WAL.
async fn wal_checkpoint(db: &DatabaseConnection) -> Option<i64> {
    let statement =
        Statement::from_string(db.get_database_backend(), "PRAGMA wal_checkpoint(PASSIVE)");
    let frames = match db.query_one_raw(statement).await {
        Ok(Some(row)) => row.try_get::<i64>("", "log"),
        Ok(None) => Ok(0),
        Err(err) => Err(err),
    };
    frames
        .map_err(|err| tracing::warn!(error = %err, "WAL checkpoint failed; SQLite's auto-checkpoint remains."))
        .ok()
}

/// SQLite only: the main database file, opened once so that the checkpointer can flush it, and
/// never closed. Closing any descriptor of an SQLite database file drops every POSIX advisory
/// lock this process holds on that file, SQLite's included
/// (<https://sqlite.org/howtocorrupt.html>, §2.2), so the descriptor lives as long as the
/// process: one per [`Storage::spawn_wal_checkpointer`]. `None` for an in-memory database, and
/// (logged) when the files cannot be listed or opened; the locked pass then syncs everything
/// itself.
async fn main_database_file(db: &DatabaseConnection) -> Option<&'static std::fs::File> {
    let statement = Statement::from_string(db.get_database_backend(), "PRAGMA database_list");
    let rows = db
        .query_all_raw(statement)
        .await
        .map_err(|err| tracing::warn!(error = %err, "Listing the SQLite database files failed."))
        .ok()?;
    let path = rows.iter().find_map(|row| {
        let name = row.try_get::<String>("", "name").ok()?;
        let file = row.try_get::<String>("", "file").ok()?;
        (name == "main" && !file.is_empty()).then_some(file)
    })?;
    match std::fs::File::open(&path) {
        Ok(file) => Some(Box::leak(Box::new(file))),
        Err(err) => {
            tracing::warn!(path, error = %err, "Opening the SQLite database file to flush it failed; the locked checkpoint flushes it.");
            None
        }
    }
}

/// Flushes the database file's written pages to disk (`fdatasync`) on the blocking pool; a
/// failure is logged and left to SQLite's own sync in the next checkpoint.
async fn sync_database_file(file: &'static std::fs::File) {
    let synced = tokio::task::spawn_blocking(move || file.sync_data()).await;
    if let Err(err) = synced.map_err(std::io::Error::other).and_then(|r| r) {
        tracing::warn!(error = %err, "Flushing the SQLite database file failed; the locked checkpoint flushes it.");
    }
}

/// The node's windows for `job_id` (or with no job) that no certificate covers yet: those above
/// the `last_seq` of the latest certificate of that node and job. A certificate covers every
/// earlier open window of its job up to its final one, and a node's chain is linear, so no
/// window below that seq is open (migration 13; the `(node_id, job_id, seq)` and
/// `(node_id, job_id, last_seq)` indexes serve both parts).
fn open_windows_query(node_id: &str, job_id: Option<&str>) -> sea_orm::Select<window::Entity> {
    use sea_orm::sea_query::{Func, Query, SimpleExpr, SubQueryStatement};
    let certified = Query::select()
        .expr(Func::max(Expr::col(certificate::Column::LastSeq)))
        .from(certificate::Entity)
        .and_where(certificate::Column::NodeId.eq(node_id))
        .and_where(same_job(certificate::Column::JobId, job_id))
        .to_owned();
    let last_certified = Func::coalesce([
        SimpleExpr::SubQuery(
            None,
            Box::new(SubQueryStatement::SelectStatement(certified)),
        ),
        Expr::val(0_i64),
    ]);
    window::Entity::find()
        .filter(window::Column::NodeId.eq(node_id))
        .filter(same_job(window::Column::JobId, job_id))
        .filter(Expr::col(window::Column::Seq).gt(last_certified))
}

/// `column` (a `job_id`) is `job_id`, or NULL for windows and certificates without a job.
fn same_job(column: impl ColumnTrait, job_id: Option<&str>) -> sea_orm::sea_query::SimpleExpr {
    match job_id {
        Some(job) => column.eq(job),
        None => column.is_null(),
    }
}

/// [`Storage::visit_open_window_claims`], `chunk` rows a query.
async fn visit_open_window_claims_in_chunks<T: serde::de::DeserializeOwned>(
    conn: &impl ConnectionTrait,
    node_id: &str,
    job_id: Option<&str>,
    chunk: u64,
    mut visit: impl FnMut(T),
) -> Result<(), StorageError> {
    let mut after = i64::MIN;
    loop {
        let rows = open_windows_query(node_id, job_id)
            .filter(window::Column::Seq.gt(after))
            .select_only()
            .column(window::Column::Seq)
            .column(window::Column::Jws)
            .order_by_asc(window::Column::Seq)
            .limit(chunk)
            .into_tuple::<(i64, String)>()
            .all(conn)
            .await?;
        let last_chunk = rows.len() < usize::try_from(chunk).unwrap_or(usize::MAX);
        for (seq, jws) in rows {
            after = seq;
            visit(serde_json::from_slice(&jws_payload(&jws)?).map_err(|err| {
                StorageError::Corrupt(format!(
                    "the claims of stored window {seq} of node {node_id} do not parse: {err}"
                ))
            })?);
        }
        if last_chunk {
            return Ok(());
        }
    }
}

/// The payload of a stored compact JWS (`header.payload.signature`, RFC 7515 §7.1), decoded
/// from base64url ([`wattest_shared::jws::unverified_payload`]: the window was verified when it
/// was accepted).
///
/// # Errors
/// [`StorageError::Corrupt`] when the JWS is not three segments or its payload not base64url.
fn jws_payload(jws: &str) -> Result<Vec<u8>, StorageError> {
    wattest_shared::jws::unverified_payload(jws)
        .ok_or_else(|| StorageError::Corrupt("a stored window JWS has no base64url payload".into()))
}

/// A seq as stored (BIGINT). Seqs beyond i64::MAX cannot occur (one window a millisecond for 292
/// million years); they saturate rather than wrap.
#[must_use]
pub fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattest_schema::SchemaManager;

    const NODE: &str = "6f1c2f5e-8a1d-4c0e-9d0b-1f2e3d4c5b6a";

    fn window(seq: i64, hash: &str) -> window::Model {
        let start = DateTime::from_timestamp(1_790_000_000 + seq * 10, 0).unwrap_or_default();
        window::Model {
            id: 0,
            node_id: NODE.into(),
            seq,
            job_id: Some("job".into()),
            hash: hash.into(),
            jws: test_jws(seq, hash),
            start_at: start,
            end_at: start + chrono::Duration::seconds(10),
            consumed_wh: 1.0,
            solar_wh: 0.0,
            is_final: false,
            salt_length: "digest".into(),
            received_at: start,
        }
    }

    /// The test node's open windows of `job`, as JSON values ([`Storage::visit_open_window_claims`]).
    async fn open_claims(storage: &Storage, job: Option<&str>) -> Vec<serde_json::Value> {
        let mut claims = Vec::new();
        storage
            .visit_open_window_claims(storage.db(), NODE, job, |c| claims.push(c))
            .await
            .expect("claims");
        claims
    }

    /// A compact-JWS-shaped string whose payload segment is `{"seq":SEQ,"hash":"HASH"}`.
    fn test_jws(seq: i64, hash: &str) -> String {
        use base64::Engine as _;
        let payload = format!(r#"{{"seq":{seq},"hash":"{hash}"}}"#);
        format!(
            "eyJhbGciOiJQUzI1NiJ9.{}.c2ln",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
        )
    }

    /// Inserts `w` as a row of an older `windows` table, with `extra` columns the current
    /// entity no longer has (before migration 12: `claims`; before 13: `certificate_id`).
    async fn insert_old_row(
        db: &DatabaseConnection,
        w: &window::Model,
        extra: &[(&str, sea_orm::Value)],
    ) -> Result<(), sea_orm::DbErr> {
        use sea_orm::sea_query::{Alias, Query};
        let mut columns: Vec<Alias> = [
            "node_id",
            "seq",
            "job_id",
            "hash",
            "jws",
            "start_at",
            "end_at",
            "consumed_wh",
            "solar_wh",
            "is_final",
            "salt_length",
            "received_at",
        ]
        .into_iter()
        .map(Alias::new)
        .collect();
        let mut values: Vec<sea_orm::sea_query::SimpleExpr> = vec![
            w.node_id.clone().into(),
            w.seq.into(),
            w.job_id.clone().into(),
            w.hash.clone().into(),
            w.jws.clone().into(),
            w.start_at.into(),
            w.end_at.into(),
            w.consumed_wh.into(),
            w.solar_wh.into(),
            w.is_final.into(),
            w.salt_length.clone().into(),
            w.received_at.into(),
        ];
        for (column, value) in extra {
            columns.push(Alias::new(*column));
            values.push(value.clone().into());
        }
        let insert = Query::insert()
            .into_table(window::Entity)
            .columns(columns)
            .values_panic(values)
            .to_owned();
        db.execute(&insert).await.map(|_| ())
    }

    /// Inserts `w` as a row of the `windows` table before migration 12, which had `claims`.
    async fn insert_with_claims(
        db: &DatabaseConnection,
        w: &window::Model,
    ) -> Result<(), sea_orm::DbErr> {
        insert_old_row(db, w, &[("claims", "{}".into())]).await
    }

    /// A SQLite database in `dir` with the migrations before `name` applied (`name` is the
    /// next one), the test node, and its windows `(seq, hash)` as rows of that schema.
    async fn database_before(
        dir: &Path,
        name: &str,
        windows: &[(i64, &str)],
    ) -> DatabaseConnection {
        let db = Database::connect(database_url(dir, None))
            .await
            .expect("db");
        let position = Migrator::migrations()
            .iter()
            .position(|m| m.name() == name)
            .expect("migration");
        Migrator::up(&db, Some(u32::try_from(position).expect("count")))
            .await
            .expect("earlier migrations");
        node::ActiveModel::from(test_node())
            .insert(&db)
            .await
            .expect("node");
        for &(seq, hash) in windows {
            insert_with_claims(&db, &window(seq, hash))
                .await
                .expect("window");
        }
        db
    }

    /// Every window row, by id.
    async fn rows_by_id(db: &DatabaseConnection) -> Vec<window::Model> {
        window::Entity::find()
            .order_by_asc(window::Column::Id)
            .all(db)
            .await
            .expect("rows")
    }

    fn test_node() -> node::Model {
        node::Model {
            id: NODE.into(),
            name: "n".into(),
            zone: "BE".into(),
            kid: "kid".into(),
            public_jwk: "{}".into(),
            attestation_level: "software".into(),
            enrolled_at: Utc::now(),
            last_seq: 0,
            last_hash: None,
            last_end: None,
            flag: None,
        }
    }

    async fn append(
        storage: &Storage,
        prev: Option<&str>,
        rows: Vec<window::Model>,
    ) -> Result<(), StorageError> {
        let txn = storage.begin().await?;
        storage.append_windows(&txn, prev, rows).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Migration 11 on SQLite rebuilds `windows` without the hash's unique index: the rows, the
    /// `(node_id, seq)` uniqueness, the indexes and the id sequence all survive the upgrade.
    #[tokio::test]
    async fn migration_11_keeps_every_window_and_only_drops_the_hash_uniqueness() {
        let dir = tempfile::tempdir().expect("dir");
        let db = database_before(
            dir.path(),
            "m20261123_000011_window_hash_not_unique",
            &[(1, "h1"), (2, "h2")],
        )
        .await;
        let old: Vec<window::Model> = window::Entity::find().all(&db).await.expect("rows");
        assert!(
            insert_with_claims(&db, &window(9, "h1")).await.is_err(),
            "before the migration the hash is unique"
        );

        Migrator::up(&db, Some(1)).await.expect("migration 11");
        let new = rows_by_id(&db).await;
        assert_eq!(new, old);
        let manager = SchemaManager::new(&db);
        for index in ["windows_node_seq", "windows_open_by_job"] {
            assert!(
                manager.has_index("windows", index).await.expect("index"),
                "{index}"
            );
        }
        // A new row continues the id sequence; the same seq again is still refused.
        insert_with_claims(&db, &window(3, "h1"))
            .await
            .expect("a repeated hash is no longer refused");
        let ids: Vec<i64> = window::Entity::find()
            .all(&db)
            .await
            .expect("rows")
            .iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(ids.len(), 3);
        assert!(ids.iter().max() > old.iter().map(|w| w.id).max().as_ref());
        assert!(
            insert_with_claims(&db, &window(2, "other")).await.is_err(),
            "(node_id, seq) stays unique"
        );
    }

    /// Migration 12 drops `windows.claims` and nothing else: every row and index survives, and
    /// issuance reads the same claims from the JWS payloads.
    #[tokio::test]
    async fn migration_12_keeps_every_window_and_the_claims_come_from_the_jws() {
        let dir = tempfile::tempdir().expect("dir");
        let db = database_before(
            dir.path(),
            "m20261124_000012_window_claims_in_jws",
            &[(1, "h1"), (2, "h2"), (3, "h3")],
        )
        .await;
        let old = rows_by_id(&db).await;
        let manager = SchemaManager::new(&db);
        assert!(
            manager
                .has_column("windows", "claims")
                .await
                .expect("column")
        );

        Migrator::up(&db, Some(1)).await.expect("migration 12");
        assert!(
            !manager
                .has_column("windows", "claims")
                .await
                .expect("column")
        );
        let new = rows_by_id(&db).await;
        assert_eq!(new, old);
        for index in ["windows_node_seq", "windows_open_by_job"] {
            assert!(
                manager.has_index("windows", index).await.expect("index"),
                "{index}"
            );
        }
        let storage = Storage { db, writer: None };
        let claims = open_claims(&storage, Some("job")).await;
        let expected: Vec<serde_json::Value> = [(1, "h1"), (2, "h2"), (3, "h3")]
            .iter()
            .map(|(seq, hash)| serde_json::json!({"seq": seq, "hash": hash}))
            .collect();
        assert_eq!(claims, expected);
    }

    /// A certificate row of the test node covering `first..=last` of `job`.
    fn test_certificate(id: &str, job: Option<&str>, first: i64, last: i64) -> certificate::Model {
        let at = DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        certificate::Model {
            id: id.into(),
            node_id: NODE.into(),
            job_id: job.map(str::to_owned),
            issued_at: at,
            period_start: at,
            period_end: at,
            zone: "BE".into(),
            attestation_level: "software".into(),
            consumed_wh: 1.0,
            grid_wh: 1.0,
            solar_wh: 0.0,
            emissions_kg: 0.0,
            avoided_kg: 0.0,
            intensity_g: 0.0,
            intensity_dataset: "test".into(),
            intensity_year: 2025,
            factor_type: "direct".into(),
            reward_micro_eur: 0,
            owner_micro_eur: 0,
            fund_micro_eur: 0,
            first_seq: first,
            last_seq: last,
            window_count: last - first + 1,
            hash: format!("hash-{id}"),
            jws: "a.e30.b".into(),
            claims: "{}".into(),
        }
    }

    /// Migration 13 drops `windows.certificate_id`: every row survives, a window is open exactly
    /// when the dropped column said so (no certificate of its node and job ends at or after its
    /// seq), the final window's certificate is found by its seq, and `down` fills the column
    /// again from the certificates.
    #[tokio::test]
    async fn migration_13_derives_coverage_from_the_certificates_last_seq() {
        let dir = tempfile::tempdir().expect("dir");
        let db = database_before(dir.path(), "m20261124_000013_coverage_by_seq", &[]).await;
        // Job "job": 1–2, certified by c-job; no job: 3–4 certified by c-none, 5 open; job
        // "job2": 6 open.
        let rows = [
            (1, Some("job"), Some("c-job")),
            (2, Some("job"), Some("c-job")),
            (3, None, Some("c-none")),
            (4, None, Some("c-none")),
            (5, None, None),
            (6, Some("job2"), None),
        ];
        for (seq, job, certificate) in rows {
            let mut w = window(seq, &format!("h{seq}"));
            w.job_id = job.map(str::to_owned);
            // The row as the pre-13 oracle wrote it, the dropped column included.
            let certificate_id = sea_orm::Value::from(certificate.map(str::to_owned));
            insert_old_row(&db, &w, &[("certificate_id", certificate_id)])
                .await
                .expect("window");
        }
        for c in [
            test_certificate("c-job", Some("job"), 1, 2),
            test_certificate("c-none", None, 3, 4),
        ] {
            certificate::ActiveModel::from(c)
                .insert(&db)
                .await
                .expect("certificate");
        }
        let old = rows_by_id(&db).await;
        assert_eq!(old.len(), 6);

        Migrator::up(&db, Some(1)).await.expect("migration 13");
        let manager = SchemaManager::new(&db);
        assert!(
            !manager
                .has_column("windows", "certificate_id")
                .await
                .expect("column")
        );
        assert!(
            !manager
                .has_index("windows", "windows_open_by_job")
                .await
                .expect("index")
        );
        for (table, index) in [
            ("windows", "windows_node_seq"),
            ("windows", "windows_by_job"),
            ("certificates", "certificates_node_job_seq"),
        ] {
            assert!(
                manager.has_index(table, index).await.expect("index"),
                "{index}"
            );
        }
        let new = rows_by_id(&db).await;
        assert_eq!(new, old);

        let storage = Storage { db, writer: None };
        let payload = |seq: i64| serde_json::json!({"seq": seq, "hash": format!("h{seq}")});
        for (job, open) in [
            (Some("job"), vec![]),
            (None, vec![5]),
            (Some("job2"), vec![6]),
        ] {
            let claims = open_claims(&storage, job).await;
            assert_eq!(
                claims,
                open.iter().map(|&s| payload(s)).collect::<Vec<_>>(),
                "{job:?}"
            );
            let count = storage
                .open_window_count(storage.db(), NODE, job)
                .await
                .expect("count");
            assert_eq!(count, u64::try_from(open.len()).expect("len"), "{job:?}");
        }
        for (job, seq, expected) in [
            (Some("job"), 2, Some("c-job")),
            (None, 4, Some("c-none")),
            (None, 3, None),
            (Some("job"), 4, None),
            (Some("job2"), 6, None),
        ] {
            let found = storage
                .certificate_closing(NODE, job, seq)
                .await
                .expect("lookup");
            assert_eq!(found.map(|c| c.id).as_deref(), expected, "{job:?} {seq}");
        }

        Migrator::down(storage.db(), Some(1)).await.expect("down");
        let restored: Vec<(i64, Option<String>)> = window::Entity::find()
            .select_only()
            .column(window::Column::Seq)
            .column_as(Expr::cust("certificate_id"), "certificate_id")
            .order_by_asc(window::Column::Seq)
            .into_tuple()
            .all(storage.db())
            .await
            .expect("rows");
        let expected: Vec<(i64, Option<String>)> = rows
            .iter()
            .map(|(seq, _, c)| (*seq, c.map(str::to_owned)))
            .collect();
        assert_eq!(restored, expected);
    }

    /// A stored JWS without a decodable payload is reported as a damaged database.
    #[test]
    fn a_stored_jws_without_a_base64url_payload_is_corrupt() {
        assert_eq!(jws_payload("a.e30.b").expect("payload"), b"{}");
        for bad in ["no-dots", "a.!!!.b"] {
            assert!(
                matches!(jws_payload(bad), Err(StorageError::Corrupt(_))),
                "{bad}"
            );
        }
    }

    /// The checkpointer flushes the very file SQLite writes; an in-memory database has none.
    #[tokio::test]
    async fn the_checkpointer_flushes_the_main_database_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("dir");
        let storage = Storage::connect(&database_url(dir.path(), None))
            .await
            .expect("db");
        let file = main_database_file(storage.db()).await.expect("a file");
        let on_disk = std::fs::metadata(dir.path().join("wattest.db")).expect("metadata");
        let opened = file.metadata().expect("metadata");
        assert_eq!((opened.dev(), opened.ino()), (on_disk.dev(), on_disk.ino()));
        sync_database_file(file).await;

        let memory = sea_orm::Database::connect("sqlite::memory:")
            .await
            .expect("memory");
        assert!(main_database_file(&memory).await.is_none());
    }

    /// A write transaction that reads first still writes after another connection committed
    /// meanwhile: it holds the write lock from its start (`BEGIN IMMEDIATE`), so the other write
    /// waits for it instead of making its first write fail with `SQLITE_BUSY_SNAPSHOT`.
    #[tokio::test]
    async fn a_write_transaction_that_reads_first_is_not_overtaken() {
        use sea_orm::ConnectionTrait;
        let dir = tempfile::tempdir().expect("dir");
        let storage = Storage::connect(&database_url(dir.path(), None))
            .await
            .expect("db");
        let t0 = Utc::now();
        storage
            .insert_node(crate::ingest::tests::node_row("n", t0))
            .await
            .expect("node");
        let txn = storage.begin().await.expect("begin");
        txn.execute_unprepared("SELECT COUNT(*) FROM nodes")
            .await
            .expect("read");
        let other = storage.clone();
        let flag = tokio::spawn(async move { other.flag_node("n", "test").await });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        txn.execute_unprepared("UPDATE nodes SET name = 'renamed'")
            .await
            .expect("the transaction writes after its read");
        txn.commit().await.expect("commit");
        flag.await
            .expect("task")
            .expect("the other write waited, then went through");
        let node = storage.node_by_id("n").await.expect("read").expect("node");
        assert_eq!(
            (node.name.as_str(), node.flag.as_deref()),
            ("renamed", Some("test"))
        );
    }

    /// The chain head moves only from the very window a new one chains to: a window whose
    /// `prev` names another window of the same seq (a node that signed two histories, the two
    /// racing) is refused like one whose seq was taken, and nothing of it is stored.
    #[tokio::test]
    async fn the_chain_head_moves_only_from_the_window_the_first_row_chains_to() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = Storage::connect(&database_url(dir.path(), None))
            .await
            .expect("db");
        storage.insert_node(test_node()).await.expect("node");
        // The first window names no predecessor; one that does cannot start the chain.
        assert!(matches!(
            append(&storage, Some("h0"), vec![window(1, "x1")]).await,
            Err(StorageError::ChainMoved)
        ));
        append(&storage, None, vec![window(1, "h1")])
            .await
            .expect("seq 1");
        // Seq 2 of another history (its seq 1 was never accepted), alone or leading a run.
        for rows in [
            vec![window(2, "y2")],
            vec![window(2, "y2"), window(3, "y3")],
        ] {
            assert!(matches!(
                append(&storage, Some("y1"), rows).await,
                Err(StorageError::ChainMoved)
            ));
        }
        append(&storage, Some("h1"), vec![window(2, "h2"), window(3, "h3")])
            .await
            .expect("seq 2 and 3");
        let head = storage.node_by_id(NODE).await.expect("read").expect("node");
        assert_eq!((head.last_seq, head.last_hash.as_deref()), (3, Some("h3")));
        let stored = open_windows_query(NODE, Some("job"))
            .all(storage.db())
            .await
            .expect("rows");
        let hashes: Vec<&str> = stored.iter().map(|w| w.hash.as_str()).collect();
        assert_eq!(hashes, ["h1", "h2", "h3"]);
        assert_eq!(
            storage
                .open_window_count(storage.db(), NODE, Some("job"))
                .await
                .expect("count"),
            3
        );
    }

    /// The WAL starts over under a writer that never pauses. SQLite rewinds the WAL only when a
    /// write transaction begins with every frame copied; a passive checkpoint that runs while a
    /// write transaction is open (as under steady ingest) leaves that transaction's frames
    /// behind, so SQLite alone never rewinds and the WAL grows to the auto-checkpoint. One pass
    /// of the checkpointer, once the WAL holds its threshold, makes the next write rewind it,
    /// and every committed row is kept.
    ///
    /// The interleaving is driven step by step, so the test does not depend on the machine's
    /// speed. A rewind is seen in the WAL file's header: its salts (bytes 16–23,
    /// <https://sqlite.org/fileformat2.html#walformat>) change when the first frame after the
    /// rewind is written. (Not its checkpoint sequence number: each connection counts its own.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_continuous_writes() {
        fn salts(wal: &std::path::Path) -> [u8; 8] {
            let header = std::fs::read(wal).expect("WAL");
            header[16..24].try_into().expect("header")
        }
        async fn insert(txn: &WriteTxn) {
            txn.execute_unprepared("INSERT INTO filler VALUES (randomblob(4000))")
                .await
                .expect("insert");
        }
        let dir = tempfile::tempdir().expect("dir");
        let storage = Storage::connect(&database_url(dir.path(), None))
            .await
            .expect("db");
        storage
            .db()
            .execute_unprepared("CREATE TABLE filler (b BLOB NOT NULL)")
            .await
            .expect("table");
        let wal = dir.path().join("wattest.db-wal");
        let writer = storage.writer.clone().expect("SQLite has a writer lock");
        let mut commits = 0;
        for round in 0..3 {
            // Each passive checkpoint runs while a write transaction is open: no rewind.
            let before = salts(&wal);
            for _ in 0..20 {
                let txn = storage.begin().await.expect("begin");
                insert(&txn).await;
                assert!(wal_checkpoint(storage.db()).await.is_some());
                txn.commit().await.expect("commit");
                commits += 1;
            }
            assert_eq!(salts(&wal), before, "round {round}: SQLite rewound alone");
            // A pass started while a write transaction is open: its locked checkpoint waits
            // for that commit, and the next write transaction rewinds the WAL.
            let txn = storage.begin().await.expect("begin");
            insert(&txn).await;
            let pass = tokio::spawn({
                let (db, writer) = (storage.db().clone(), writer.clone());
                async move { wal_checkpoint_pass(&db, &writer, None, 1).await }
            });
            txn.commit().await.expect("commit");
            pass.await.expect("pass");
            let txn = storage.begin().await.expect("begin");
            insert(&txn).await;
            txn.commit().await.expect("commit");
            commits += 2;
            assert_ne!(salts(&wal), before, "round {round}: no rewind");
        }
        let kept = storage
            .db()
            .query_one_raw(Statement::from_string(
                storage.db().get_database_backend(),
                "SELECT COUNT(*) AS n FROM filler",
            ))
            .await
            .expect("count")
            .expect("row")
            .try_get::<i64>("", "n")
            .expect("n");
        assert_eq!(kept, commits);
    }

    /// Open windows are read in chunks by seq: every one exactly once, in order, whether the
    /// count is below, at or above a multiple of the chunk; a stored window whose payload does
    /// not parse is reported as corruption, naming it.
    #[tokio::test]
    async fn open_window_claims_reads_every_window_once_in_chunks() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = Storage::connect(&database_url(dir.path(), None))
            .await
            .expect("db");
        storage.insert_node(test_node()).await.expect("node");
        let rows: Vec<window::Model> = (1..=7).map(|seq| window(seq, &format!("h{seq}"))).collect();
        append(&storage, None, rows).await.expect("windows");
        for chunk in [1, 2, 3, 7, 8, 100] {
            let mut claims: Vec<serde_json::Value> = Vec::new();
            visit_open_window_claims_in_chunks(storage.db(), NODE, Some("job"), chunk, |c| {
                claims.push(c);
            })
            .await
            .expect("claims");
            let seqs: Vec<i64> = claims.iter().filter_map(|c| c["seq"].as_i64()).collect();
            assert_eq!(seqs, (1..=7).collect::<Vec<_>>(), "chunk {chunk}");
        }
        let mut bad = window(8, "h8");
        bad.jws = format!(
            "eyJhbGciOiJQUzI1NiJ9.{}.c2ln",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                "not json"
            )
        );
        append(&storage, Some("h7"), vec![bad])
            .await
            .expect("window 8");
        let mut visited = 0;
        let err = visit_open_window_claims_in_chunks(
            storage.db(),
            NODE,
            Some("job"),
            3,
            |_: serde_json::Value| visited += 1,
        )
        .await
        .expect_err("corrupt");
        assert!(
            matches!(&err, StorageError::Corrupt(m) if m.contains("stored window 8")),
            "{err}"
        );
        assert_eq!(visited, 7, "the windows before it were visited");
    }
}
