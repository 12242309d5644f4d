//! Group commit of accepted windows: verified windows from concurrent requests are appended in
//! one database transaction, so a busy oracle pays one `BEGIN … COMMIT` (and, on PostgreSQL, one
//! WAL flush) per batch instead of per window.
//!
//! Request handlers verify a window (signature, chain position, timing, figures) in parallel and
//! hand it to [`Committer::enqueue`]. One writer task per process takes every window queued at
//! that moment, up to [`MAX_BATCH`], and appends them, ordered by node and in arrival order for
//! each node, inside one transaction:
//!
//! 1. per window, the node's chain head moves from `seq − 1` to `seq` by compare-and-set, guarded
//!    by "no certificate closed this job yet" ([`crate::storage::Storage::advance_head`]); a run
//!    of one node's consecutive non-final windows of one job (a batch request's,
//!    `POST /v1/telemetry/batch`) moves the head once. The rows of the non-final windows whose
//!    heads moved, of every node in the batch, are inserted together with multi-row inserts
//!    ([`crate::storage::Storage::insert_windows`]) before each final window (whose issuance
//!    counts and reads its job's rows) and at the end: one statement per window and a few per
//!    batch, instead of two per window. A window that loses the compare-and-set, or whose job
//!    is closed, changes nothing and is answered on its own (`seq_replay` → the original
//!    receipt or `seq_conflict`; `job_closed`); a run that loses it is retried window by
//!    window, so each gets that precise answer;
//! 2. a final window and its certificate (issuance and log append, [`crate::issuance`]; the
//!    claims usually built and signed already by the window's request) run inside a savepoint
//!    when the batch holds other windows, so a failed issuance undoes only that window;
//! 3. one commit; then one query finds which of the batch's nodes have windows held after a gap
//!    (their requests release them before answering), and every request gets its answer.
//!
//! No answer is sent before the commit: an acknowledged window is durable. If the batch's
//! transaction fails as a whole (a database error, a failed commit), each of its windows is
//! appended again in a transaction of its own, so one bad window never costs the others theirs.
//! Replicas each run their own writer; the compare-and-set on the node row keeps them correct.

use crate::AppState;
use crate::api::problem::ApiError;
use crate::storage::entities::{certificate, node, window};
use crate::storage::{StorageError, seq_i64};
use crate::verification::VerifiedWindow;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sea_orm::{DatabaseTransaction, TransactionTrait};
use tokio::sync::{mpsc, oneshot};
use wattest_shared::jws::SaltLength;

/// Most windows appended in one transaction. Large enough that a queue of concurrent requests
/// drains in a few transactions; small enough that a batch of non-final windows holds the SQLite
/// write lock for a few milliseconds (each final window in it adds its certificate: 2.6–4.5 ms of
/// RSA-3072 signature, `docs/performance.md`).
pub const MAX_BATCH: usize = 256;

/// Windows that may wait for the writer; beyond it request handlers wait to enqueue
/// (backpressure instead of unbounded memory).
pub const QUEUE_DEPTH: usize = 4 * MAX_BATCH;

/// A window appended to its node's chain.
#[derive(Debug)]
pub struct Appended {
    /// The certificate issued with it, when it was its job's final window.
    pub certificate: Option<certificate::Model>,
    /// The node has windows held after a gap (looked up after the commit), which the caller
    /// releases before answering.
    pub node_has_held: bool,
}

/// A verified window waiting for the writer.
struct Pending {
    state: AppState,
    /// Shared by the request's windows of this node.
    node: std::sync::Arc<node::Model>,
    jws: String,
    window: VerifiedWindow,
    now: DateTime<Utc>,
    /// A final window's certificate, issued before the writer ([`crate::issuance::presign`]);
    /// taken by the writer.
    presigned: Option<crate::issuance::Signing>,
    reply: oneshot::Sender<Result<Appended, ApiError>>,
}

impl Pending {
    fn entry(&self) -> Entry<'_> {
        Entry {
            node: &self.node,
            jws: &self.jws,
            window: &self.window,
            now: self.now,
        }
    }
}

/// A verified window on its way into its node's chain.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The node, as read when the window was verified against its chain head.
    pub node: &'a node::Model,
    /// The compact JWS as received.
    pub jws: &'a str,
    /// What verification established.
    pub window: &'a VerifiedWindow,
    /// When the window was received: the receipt's and the certificate's clock.
    pub now: DateTime<Utc>,
}

/// The handle request handlers append through; cheap to clone. The writer task ends when every
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct Committer {
    queue: mpsc::Sender<Pending>,
}

impl Committer {
    /// Starts the writer task on the current tokio runtime.
    #[must_use]
    pub fn spawn() -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(writer(rx));
        Self { queue }
    }

    /// Queues `window` (verified against `node`'s chain head as read at `now`) for the next
    /// batch; [`Ticket::committed`] then waits for that batch's commit. A final window may
    /// bring its certificate already signed (`presigned`, [`crate::issuance::presign`]): the
    /// writer stores it when it is still current, and issues again otherwise. One request can
    /// queue several windows (of one node: in chain order, each verified against the chain as the
    /// previous one leaves it) that then commit together. Waits only while the queue is full
    /// ([`QUEUE_DEPTH`]).
    ///
    /// # Errors
    /// 500 when the writer has stopped.
    pub async fn enqueue(
        &self,
        state: &AppState,
        node: std::sync::Arc<node::Model>,
        jws: String,
        window: VerifiedWindow,
        now: DateTime<Utc>,
        presigned: Option<crate::issuance::Signing>,
    ) -> Result<Ticket, ApiError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            state: state.clone(),
            node,
            jws,
            window,
            now,
            presigned,
            reply,
        };
        self.queue.send(pending).await.map_err(|_| stopped())?;
        Ok(Ticket(answer))
    }
}

/// A queued window: [`Ticket::committed`] waits for the commit of the batch that holds it.
#[derive(Debug)]
pub struct Ticket(oneshot::Receiver<Result<Appended, ApiError>>);

impl Ticket {
    /// The window's outcome once its batch committed (or failed).
    ///
    /// # Errors
    /// `seq_replay` (409) when another request or replica accepted this seq first (the caller
    /// answers with the original receipt or `seq_conflict`), `job_closed` (409), or a 500
    /// problem on database, carbon or signing failure (or a stopped writer). Nothing of the
    /// window is stored then.
    pub async fn committed(self) -> Result<Appended, ApiError> {
        self.0.await.map_err(|_| stopped())?
    }
}

fn stopped() -> ApiError {
    ApiError::internal(&"the ingest writer has stopped")
}

/// Takes every queued window (up to [`MAX_BATCH`]) and commits them, one batch at a time. (Four
/// writers on PostgreSQL, each with its own transaction, measured the same throughput as one on
/// two cores: `docs/performance.md`.)
async fn writer(mut rx: mpsc::Receiver<Pending>) {
    loop {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        // Node rows are locked in one order in every batch (a stable sort keeps a node's
        // windows in arrival order), so batches of replicas on one PostgreSQL cannot deadlock
        // on them.
        batch.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        commit_batch(batch).await;
    }
}

async fn commit_batch(mut batch: Vec<Pending>) {
    let Some(state) = batch.first().map(|p| p.state.clone()) else {
        return;
    };
    state
        .metrics
        .ingest_batch_windows
        .observe(batch.len() as f64);
    let answers = match append_batch(&state, &mut batch).await {
        Ok(answers) => answers,
        Err(err) => {
            if batch.len() > 1 {
                tracing::warn!(
                    windows = batch.len(),
                    code = err.code(),
                    "A batch of windows failed as a whole; appending each in its own transaction."
                );
            }
            let mut answers = Vec::with_capacity(batch.len());
            for p in &batch {
                answers.push(store(&p.state, p.entry()).await);
            }
            answers
        }
    };
    // After the commit, so that a window held concurrently with this batch is seen either here
    // or by the holding request's own release, which runs after its hold committed.
    let mut nodes: Vec<&str> = answers
        .iter()
        .zip(&batch)
        .filter(|(a, _)| a.is_ok())
        .map(|(_, p)| p.node.id.as_str())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let held = state
        .storage
        .nodes_with_held(state.storage.db(), &nodes)
        .await
        .map_err(|err| tracing::warn!(error = %err, "Looking up held windows failed; each request checks its node."));
    for (p, answer) in batch.into_iter().zip(answers) {
        let node_has_held = held.as_ref().map_or(true, |h| h.contains(&p.node.id));
        // A requester that went away (client disconnected) no longer needs its answer; its
        // window is committed all the same.
        let _ = p.reply.send(answer.map(|certificate| Appended {
            certificate,
            node_has_held,
        }));
    }
}

/// Appends the batch in one transaction: `Ok` holds one outcome per window once committed; `Err`
/// when the transaction as a whole failed (nothing of it is stored).
async fn append_batch(
    state: &AppState,
    batch: &mut [Pending],
) -> Result<Vec<Result<Option<certificate::Model>, ApiError>>, ApiError> {
    let txn = state.storage.begin().await?;
    // Lock order across replicas: the log head (when a certificate will be issued), then node
    // rows by id (the batch is sorted). Taking the log head only at the final window, with
    // another node's row already locked, deadlocks against a replica holding that row.
    if batch.iter().any(|p| p.window.claims.is_final) {
        state.storage.lock_log_head(&txn).await?;
    }
    // A window alone needs no savepoint: if its issuance fails, the transaction is dropped and
    // the window retried on its own (two statements fewer on the common, unloaded path).
    let isolate = batch.len() > 1;
    let mut outcomes = Vec::with_capacity(batch.len());
    // Rows of non-final windows whose chain heads moved, inserted together: before a final
    // window (its issuance counts and reads its job's rows) and at the end.
    let mut rows = Vec::new();
    let mut rest = batch;
    while !rest.is_empty() {
        let (run, later) = rest.split_at_mut(run_len(rest));
        if run.len() > 1 && advance_run(state, &txn, run, &mut rows).await? {
            outcomes.extend(run.iter().map(|_| Ok(None)));
        } else {
            for p in run {
                if p.window.claims.is_final {
                    state
                        .storage
                        .insert_windows(&txn, std::mem::take(&mut rows))
                        .await?;
                    let presigned = p.presigned.take();
                    outcomes.push(append(state, &txn, p.entry(), presigned, isolate).await?);
                } else {
                    outcomes.push(append_window(state, &txn, p.entry(), Some(&mut rows)).await?);
                }
            }
        }
        rest = later;
    }
    state.storage.insert_windows(&txn, rows).await?;
    txn.commit().await.map_err(|err| ApiError::internal(&err))?;
    for certificate in outcomes.iter().flatten() {
        log_issued(certificate.as_ref());
    }
    Ok(outcomes)
}

/// Appends one window in a transaction of its own (held windows once their gap is filled, and
/// a failed batch's windows one by one).
///
/// # Errors
/// As [`Ticket::committed`].
pub async fn store(
    state: &AppState,
    entry: Entry<'_>,
) -> Result<Option<certificate::Model>, ApiError> {
    let txn = state.storage.begin().await?;
    if entry.window.claims.is_final {
        state.storage.lock_log_head(&txn).await?;
    }
    let certificate = append(state, &txn, entry, None, false).await??;
    txn.commit().await.map_err(|err| ApiError::internal(&err))?;
    log_issued(certificate.as_ref());
    Ok(certificate)
}

fn log_issued(certificate: Option<&certificate::Model>) {
    if let Some(c) = certificate {
        // The job id as text (empty for a node's windows without a job), not `Some("…")`.
        let job_id = c.job_id.as_deref().unwrap_or_default();
        tracing::info!(certificate_id = %c.id, node_id = %c.node_id, job_id, energy_wh = c.consumed_wh, emissions_kg = c.emissions_kg, "Certificate issued.");
    }
}

/// Appends `v` inside `txn`. The outer `Err` means `txn` must be abandoned (a database error, or
/// a failed issuance when not `isolate`d); the inner one that this window was refused and
/// changed nothing. With `isolate`, a final window and its certificate run in a savepoint, so a
/// failed issuance (carbon, signing, database) takes back that window alone.
async fn append(
    state: &AppState,
    txn: &DatabaseTransaction,
    entry: Entry<'_>,
    presigned: Option<crate::issuance::Signing>,
    isolate: bool,
) -> Result<Result<Option<certificate::Model>, ApiError>, ApiError> {
    if !entry.window.claims.is_final {
        return append_window(state, txn, entry, None).await;
    }
    if !isolate {
        return append_final(state, txn, entry, presigned).await;
    }
    let savepoint = txn.begin().await.map_err(|err| ApiError::internal(&err))?;
    // A failure inside the savepoint, of either kind, is this window's alone.
    let outcome = append_final(state, &savepoint, entry, presigned)
        .await
        .unwrap_or_else(Err);
    if outcome.is_ok() {
        savepoint.commit().await
    } else {
        savepoint.rollback().await
    }
    .map_err(|err| ApiError::internal(&err))?;
    Ok(outcome)
}

/// A final window: its certificate as signed before the writer when those claims are still
/// current ([`crate::issuance::Signing::is_current`]); otherwise issuance starts here (claims
/// built, signature computing on the blocking pool) before the window's own append, which runs
/// while the key signs. Then the certificate is stored and logged. The outer `Err` leaves `txn`
/// unusable, as for [`append`].
async fn append_final(
    state: &AppState,
    txn: &DatabaseTransaction,
    entry: Entry<'_>,
    presigned: Option<crate::issuance::Signing>,
) -> Result<Result<Option<certificate::Model>, ApiError>, ApiError> {
    // The node's flag as this transaction reads it: a conflict found after the claims were
    // built (by another request or replica) makes them stale, and the certificate is issued
    // with it (contraindicated), as for any certificate issued after the conflict.
    let flag = state.storage.node_flag(txn, &entry.node.id).await?;
    let signing = match presigned {
        Some(signing)
            if signing.node_flag() == flag.as_deref() && signing.is_current(state, txn).await? =>
        {
            signing
        }
        stale => {
            // Claims that are no longer current still lend their hours' intensities.
            let known = stale.map_or_else(crate::issuance::Intensities::new, |stale| {
                state.metrics.presign_stale.inc();
                stale.into_intensities()
            });
            let node = node::Model {
                flag,
                ..entry.node.clone()
            };
            crate::issuance::prepare(state, txn, &node, entry.window, entry.now, known).await?
        }
    };
    if let Err(refused) = append_window(state, txn, entry, None).await? {
        return Ok(Err(refused));
    }
    let certificate = crate::issuance::finish(state, txn, signing, entry.now).await?;
    Ok(Ok(Some(certificate)))
}

/// The compare-and-set of the chain head and the window row; never a certificate. With
/// `deferred`, the row is pushed there for the caller to insert later in `txn`
/// ([`crate::storage::Storage::insert_windows`]); without, it is inserted here.
async fn append_window(
    state: &AppState,
    txn: &DatabaseTransaction,
    entry: Entry<'_>,
    deferred: Option<&mut Vec<window::Model>>,
) -> Result<Result<Option<certificate::Model>, ApiError>, ApiError> {
    let seq = entry.window.claims.seq;
    let prev = entry.window.claims.prev.as_deref();
    let row = window_row(entry);
    let stored = match deferred {
        Some(deferred) => state
            .storage
            .advance_head(txn, prev, std::slice::from_ref(&row))
            .await
            .map(|()| deferred.push(row)),
        None => state.storage.append_windows(txn, prev, vec![row]).await,
    };
    match stored {
        Ok(()) => Ok(Ok(None)),
        // Another request or replica took this seq between our read of the chain head and this
        // write: a concurrent duplicate gets the original receipt, a different window is a
        // seq conflict (the caller tells them apart).
        Err(StorageError::ChainMoved) => Ok(Err(ApiError::new(
            StatusCode::CONFLICT,
            "seq_replay",
            format!("seq {seq} was accepted concurrently"),
        ))),
        Err(StorageError::JobClosed) => Ok(Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_closed",
            format!(
                "job {} of this node already has its certificate; use a new job id",
                entry.window.claims.job_id.as_deref().unwrap_or_default()
            ),
        ))),
        Err(err) => Err(err.into()),
    }
}

/// How many windows from the start of `batch` one compare-and-set can append
/// ([`crate::storage::Storage::append_windows`]): a run of non-final windows of one node and
/// one job with consecutive seqs, each naming the one before it as `prev` (a node's windows are
/// adjacent in a batch, in arrival order). The compare-and-set checks only the run's first
/// `prev`: windows of two requests that a node signed for two histories (6 then 7′ whose `prev`
/// is another 6′) must not join into one run. At least 1 for a non-empty batch.
fn run_len(batch: &[Pending]) -> usize {
    let Some(first) = batch.first() else {
        return 0;
    };
    if first.window.claims.is_final {
        return 1;
    }
    1 + batch
        .windows(2)
        .take_while(|pair| {
            let (a, b) = (&pair[0].window.claims, &pair[1].window.claims);
            pair[1].node.id == pair[0].node.id
                && !b.is_final
                && b.job_id == a.job_id
                && b.seq == a.seq + 1
                && b.prev.as_deref() == Some(pair[0].window.hash.as_str())
        })
        .count()
}

/// Moves the chain head past a run of windows ([`run_len`]) with one compare-and-set, and pushes
/// their rows to `rows` (inserted later in `txn` by the caller): `Ok(false)` when the chain moved
/// or the job closed meanwhile (nothing changed; the caller appends each window on its own, so
/// that each gets its precise answer).
async fn advance_run(
    state: &AppState,
    txn: &DatabaseTransaction,
    run: &[Pending],
    rows: &mut Vec<window::Model>,
) -> Result<bool, ApiError> {
    let prev = run.first().and_then(|p| p.window.claims.prev.as_deref());
    let run_rows: Vec<window::Model> = run.iter().map(|p| window_row(p.entry())).collect();
    match state.storage.advance_head(txn, prev, &run_rows).await {
        Ok(()) => {
            rows.extend(run_rows);
            Ok(true)
        }
        Err(StorageError::ChainMoved | StorageError::JobClosed) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

fn window_row(entry: Entry<'_>) -> window::Model {
    let Entry {
        node,
        jws,
        window: v,
        now,
    } = entry;
    window::Model {
        id: 0,
        node_id: node.id.clone(),
        seq: seq_i64(v.claims.seq),
        job_id: v.claims.job_id.clone(),
        hash: v.hash.clone(),
        jws: jws.to_owned(),
        start_at: v.claims.start,
        end_at: v.claims.end,
        consumed_wh: v.consumed.0,
        solar_wh: v.claims.solar_wh.0,
        is_final: v.claims.is_final,
        salt_length: match v.salt {
            SaltLength::Digest => "digest".into(),
            SaltLength::Maximum => "maximum".into(),
        },
        received_at: now,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::credits::CreditPolicy;
    use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
    use wattest_shared::Eur;

    /// Settings for tests: issuer `http://test`, 25 EUR a tonne, 70 % to the node owner.
    pub(crate) fn settings() -> crate::Settings {
        crate::Settings {
            issuer: "http://test".into(),
            certificate_validity: chrono::Duration::days(1),
            credits: CreditPolicy {
                price_per_tonne: Eur::parse("25").unwrap(),
                node_owner_share_pct: 70.0,
                source_rates: std::collections::BTreeMap::new(),
            },
            ek_roots: Vec::new(),
            log_origin: "test/wattest-log".into(),
            max_clock_skew_secs: crate::verification::MAX_FUTURE_SKEW_SECONDS,
            // Test windows start before their test nodes' enrollment.
            max_backdate_secs: i64::MAX,
        }
    }

    /// A software node in zone GB, enrolled at `t0`, with no window yet.
    pub(crate) fn node_row(id: &str, t0: DateTime<Utc>) -> node::Model {
        node::Model {
            id: id.into(),
            name: id.into(),
            zone: "GB".into(),
            kid: format!("kid-{id}"),
            public_jwk: "{}".into(),
            attestation_level: "software".into(),
            enrolled_at: t0,
            last_seq: 0,
            last_hash: None,
            last_end: None,
            flag: None,
        }
    }

    /// Windows 1..=3 of `node`, chained by their (made-up) hashes, each queued as a verified
    /// window, with the receiver of its answer.
    fn queued(
        state: &AppState,
        node: &std::sync::Arc<node::Model>,
        t0: DateTime<Utc>,
    ) -> Vec<(Pending, oneshot::Receiver<Result<Appended, ApiError>>)> {
        let hash = |seq: u64| format!("{}-h{seq}", node.id);
        (1..=3_u64)
            .map(|seq| {
                let prev = (seq > 1).then(|| hash(seq - 1));
                let claims = crate::verification::test_window_claims(&node.id, seq, prev, t0);
                let (reply, answer) = oneshot::channel();
                let pending = Pending {
                    state: state.clone(),
                    node: node.clone(),
                    jws: format!("header.{seq}.signature"),
                    window: VerifiedWindow {
                        consumed: claims.consumed(),
                        claims,
                        hash: hash(seq),
                        salt: SaltLength::Digest,
                    },
                    now: t0,
                    presigned: None,
                    reply,
                };
                (pending, answer)
            })
            .collect()
    }

    /// Each queued window's outcome: committed, or the error code.
    async fn outcomes(
        answers: Vec<oneshot::Receiver<Result<Appended, ApiError>>>,
    ) -> Vec<Result<(), &'static str>> {
        let mut out = Vec::new();
        for answer in answers {
            out.push(answer.await.unwrap().map(|_| ()).map_err(|e| e.code()));
        }
        out
    }

    /// `node_id`'s chain head: last seq and hash.
    async fn head(state: &AppState, node_id: &str) -> (i64, Option<String>) {
        let node = node::Entity::find()
            .filter(node::Column::Id.eq(node_id))
            .one(state.storage.db())
            .await
            .unwrap()
            .unwrap();
        (node.last_seq, node.last_hash)
    }

    /// Windows of one node that do not name each other as `prev` (a node that signed two
    /// histories, its windows queued by two requests) never join one run: the chain head moves
    /// only along hashes, and the window of the other history is not stored.
    #[tokio::test]
    async fn a_run_follows_prev_hashes_not_only_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::storage::database_url(dir.path(), None);
        let state = AppState::open(dir.path(), &url, settings()).await.unwrap();
        let t0 = Utc::now() - chrono::Duration::hours(1);
        let a = node_row("node-a", t0);
        state.storage.insert_node(a.clone()).await.unwrap();
        let a = std::sync::Arc::new(a);
        let (mut batch, answers): (Vec<_>, Vec<_>) = queued(&state, &a, t0).into_iter().unzip();
        batch[2].window.claims.prev = Some("another-h2".into());
        assert_eq!(run_len(&batch), 2);
        commit_batch(batch).await;
        let outcomes = outcomes(answers).await;
        assert_eq!(outcomes[..2], [Ok(()), Ok(())]);
        assert!(outcomes[2].is_err(), "{outcomes:?}");
        assert_eq!(head(&state, "node-a").await, (2, Some("node-a-h2".into())));
    }

    /// A batch whose transaction fails as a whole (here: the database refuses one window's row,
    /// so the batch's multi-row insert fails) is appended again window by window: the refused
    /// window alone gets an error, the one chained after it is refused because its predecessor
    /// is missing, and every other window, of both nodes, is committed exactly once.
    #[tokio::test]
    async fn a_batch_that_fails_as_a_whole_loses_only_what_the_database_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::storage::database_url(dir.path(), None);
        let state = AppState::open(dir.path(), &url, settings()).await.unwrap();
        let t0 = Utc::now() - chrono::Duration::hours(1);
        let (a, b) = (node_row("node-a", t0), node_row("node-b", t0));
        state.storage.insert_node(a.clone()).await.unwrap();
        state.storage.insert_node(b.clone()).await.unwrap();
        state
            .storage
            .db()
            .execute_unprepared(
                "CREATE TRIGGER refuse_b2 BEFORE INSERT ON windows \
                 WHEN NEW.node_id = 'node-b' AND NEW.seq = 2 \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
            )
            .await
            .unwrap();

        let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
        let (batch, answers): (Vec<_>, Vec<_>) = queued(&state, &a, t0)
            .into_iter()
            .chain(queued(&state, &b, t0))
            .unzip();
        commit_batch(batch).await;
        let outcomes = outcomes(answers).await;
        assert_eq!(
            outcomes,
            [
                Ok(()),
                Ok(()),
                Ok(()),
                Ok(()),
                Err("internal"),
                Err("seq_replay"),
            ]
        );

        let stored: Vec<(String, i64)> = window::Entity::find()
            .order_by_asc(window::Column::NodeId)
            .order_by_asc(window::Column::Seq)
            .all(state.storage.db())
            .await
            .unwrap()
            .into_iter()
            .map(|w| (w.node_id, w.seq))
            .collect();
        let expected = [("node-a", 1), ("node-a", 2), ("node-a", 3), ("node-b", 1)]
            .map(|(node, seq)| (node.to_owned(), seq));
        assert_eq!(stored, expected);
        assert_eq!(head(&state, "node-b").await, (1, Some("node-b-h1".into())));
    }
}
