//! Issuing a job's certificate with the transaction that accepts its final window: gather the
//! job's windows, resolve carbon intensity, build and sign the claims, store the row and append it
//! to the transparency log.
//!
//! Usually the claims are built and signed by the final window's request before the window is
//! queued ([`presign`]), and the writer stores them once [`Signing::is_current`] confirms they
//! still describe the job. Otherwise (no presigned claims, or stale ones) the writer issues
//! itself, split in two around the final window's own append ([`crate::ingest`]):
//! [`prepare`] builds the claims from the job's open windows plus the final window (not yet
//! stored) and starts the RSA signature on the blocking pool. While it computes (2.6–4.5 ms for
//! RSA-3072 on the 2-core development machines, `docs/performance.md`), the transaction moves
//! the chain head, stores the window and takes the log's next slot ([`finish`]); only the
//! certificate row and the log append itself, which need the signed JWS, wait for the
//! signature. A refused window drops its [`Signing`]: the signature is discarded unused.

use crate::AppState;
use crate::api::problem::ApiError;
use crate::carbon::Intensity;
use crate::certificates::{Issue, JobWindows, build_claims};
use crate::storage::entities::{certificate, node};
use crate::storage::seq_i64;
use crate::verification::VerifiedWindow;
use chrono::{DateTime, Utc};
use wattest_shared::certificate::{CertificateClaims, CertifiedNode};
use wattest_shared::jws::{SignError, jws_hash, sign_compact};
use wattest_shared::window::WindowClaims;
use wattest_shared::{AttestationLevel, CERTIFICATE_TYP};

/// A certificate whose claims are final and whose signature is being computed, or already
/// computed ([`presign`]).
#[derive(Debug)]
pub struct Signing {
    claims: CertificateClaims,
    signature: Signature,
    /// The carbon intensities the claims were built with, by hour.
    intensities: Intensities,
    /// The node's flag the claims were built with (`node_flagged:<flag>` → `contraindicated`).
    node_flag: Option<String>,
}

/// Carbon intensity by hour (the hour's start, UTC) as resolved for one certificate's claims.
pub type Intensities = std::collections::BTreeMap<DateTime<Utc>, Intensity>;

#[derive(Debug)]
enum Signature {
    Computing(tokio::task::JoinHandle<Result<String, SignError>>),
    Done(String),
}

impl Signing {
    /// Whether these claims still describe the job as it stands in `txn`, before the final
    /// window is appended there: its open windows are as many as the claims count before the
    /// final one. Together with the final window's compare-and-set on the chain head (seq and
    /// hash: the whole chain before it is then the one these claims were built from) this
    /// proves the claims cover exactly the windows the certificate will cover (those above the
    /// job's previous certificate's `last_seq`, up to its own).
    ///
    /// # Errors
    /// Database failure.
    pub async fn is_current(
        &self,
        state: &AppState,
        txn: &sea_orm::DatabaseTransaction,
    ) -> Result<bool, ApiError> {
        let open = state
            .storage
            .open_window_count(txn, &self.claims.sub, self.claims.job_id.as_deref())
            .await?;
        Ok(open + 1 == self.claims.windows.count)
    }

    /// The node's flag these claims were built with: claims built before the node was flagged
    /// are no longer current once it is.
    #[must_use]
    pub fn node_flag(&self) -> Option<&str> {
        self.node_flag.as_deref()
    }

    /// The carbon intensities these claims were built with, by hour: what [`prepare`] reuses
    /// when they are no longer current, so that the writer asks no provider, inside its
    /// transaction, for an hour already resolved.
    #[must_use]
    pub fn into_intensities(self) -> Intensities {
        self.intensities
    }
}

/// Builds the claims of `v`'s job — its windows still open in `txn` followed by `v`, the final
/// window about to be appended — resolves carbon intensity per hour, and starts signing. The
/// hours in `known` (resolved for claims built earlier for this window, [`presign`]) are taken
/// from there; only the others are resolved, so a live provider is asked inside the writer's
/// transaction only for an hour no earlier attempt resolved.
///
/// # Errors
/// 500 problem on database, carbon or claims failure (the caller's transaction is then dropped).
pub async fn prepare(
    state: &AppState,
    txn: &sea_orm::DatabaseTransaction,
    node: &node::Model,
    v: &VerifiedWindow,
    now: DateTime<Utc>,
    known: Intensities,
) -> Result<Signing, ApiError> {
    let mut job = JobWindows::default();
    visit_open_windows(state, txn, node, v, |w| job.add(w)).await?;
    job.add(v.claims.clone());
    let (claims, intensities) = certificate_claims(state, txn, node, &job, v, now, known).await?;
    let signature = start_signing(state, &claims, now)?;
    Ok(Signing {
        claims,
        signature: Signature::Computing(signature),
        intensities,
        node_flag: node.flag.clone(),
    })
}

/// Issuance of `v`'s certificate done before `v` reaches the ingest writer, outside any write
/// transaction: the claims are built from the job's open windows as committed now (read through
/// the pool) together with `earlier`, the request's own windows before `v` (verified, queued,
/// perhaps not yet committed), and signed. The writer then only checks that they are still
/// current ([`Signing::is_current`]) and stores them, so a burst of final windows does not
/// serialise job reads and RSA signatures in the writer; claims that are no longer current
/// (rare: a concurrent request or replica moved the job) are dropped and issuance is redone
/// there ([`prepare`]), with their hours' intensities ([`Signing::into_intensities`]).
///
/// # Errors
/// 500 problem on database, carbon, claims or signing failure.
pub async fn presign(
    state: &AppState,
    node: &node::Model,
    earlier: &[WindowClaims],
    v: &VerifiedWindow,
    now: DateTime<Utc>,
) -> Result<Signing, ApiError> {
    let db = state.storage.db();
    // By seq: a window of the request may already be committed, and is then read as well;
    // the request's copy is taken. (The stored ones are of this job, and before `v` unless the
    // chain moved, which the writer's checks catch; the request's may belong to another job.)
    let mut pending: std::collections::VecDeque<WindowClaims> = earlier
        .iter()
        .filter(|w| w.seq < v.claims.seq && w.job_id == v.claims.job_id)
        .chain(std::iter::once(&v.claims))
        .map(|w| (w.seq, w.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    let mut job = JobWindows::default();
    visit_open_windows(state, db, node, v, |stored: WindowClaims| {
        while pending.front().is_some_and(|next| next.seq <= stored.seq) {
            let Some(next) = pending.pop_front() else {
                break;
            };
            let same = next.seq == stored.seq;
            job.add(next);
            if same {
                return;
            }
        }
        job.add(stored);
    })
    .await?;
    for w in pending {
        job.add(w);
    }
    let (claims, intensities) =
        certificate_claims(state, db, node, &job, v, now, Intensities::new()).await?;
    let jws = start_signing(state, &claims, now)?
        .await
        .map_err(|err| ApiError::internal(&err))?
        .map_err(|err| ApiError::internal(&err))?;
    Ok(Signing {
        claims,
        signature: Signature::Done(jws),
        intensities,
        node_flag: node.flag.clone(),
    })
}

/// Hands the claims of `node`'s windows of `v`'s job that no certificate covers yet to `visit`,
/// by seq ([`crate::storage::Storage::visit_open_window_claims`]).
async fn visit_open_windows(
    state: &AppState,
    conn: &impl sea_orm::ConnectionTrait,
    node: &node::Model,
    v: &VerifiedWindow,
    visit: impl FnMut(WindowClaims),
) -> Result<(), ApiError> {
    Ok(state
        .storage
        .visit_open_window_claims(conn, &node.id, v.claims.job_id.as_deref(), visit)
        .await?)
}

/// Starts signing `claims` with the key active at `now`, on the blocking pool (an RSA-3072
/// signature takes 2.6–4.5 ms on the development machines, `docs/performance.md`).
fn start_signing(
    state: &AppState,
    claims: &CertificateClaims,
    now: DateTime<Utc>,
) -> Result<tokio::task::JoinHandle<Result<String, SignError>>, ApiError> {
    let payload = serde_json::to_vec(claims).map_err(|err| ApiError::internal(&err))?;
    let key = state.keys.get().active(now);
    Ok(tokio::task::spawn_blocking(move || {
        sign_compact(&*key, CERTIFICATE_TYP, &payload)
    }))
}

/// The certificate claims for `job` (the job's windows, by seq, ending with the final window `v`),
/// with the intensities they use: each hour's carbon intensity taken from `known`, or else
/// resolved through `db`. Inside the writer `db` is its transaction: on SQLite a cache store
/// through the pool would wait for the write lock the same task holds. Ahead of the writer
/// ([`presign`]) it is the pool.
async fn certificate_claims<C: sea_orm::ConnectionTrait + sea_orm::TransactionTrait>(
    state: &AppState,
    db: &C,
    node: &node::Model,
    job: &JobWindows,
    v: &VerifiedWindow,
    now: DateTime<Utc>,
    mut known: Intensities,
) -> Result<(CertificateClaims, Intensities), ApiError> {
    let zone = state
        .carbon
        .zone(&node.zone)
        .map_err(|err| ApiError::internal(&err))?;
    let settings = &state.settings;
    let issue = Issue {
        id: uuid::Uuid::new_v4().to_string(),
        issuer: &settings.issuer,
        node: CertifiedNode {
            id: node.id.clone(),
            name: node.name.clone(),
            zone: node.zone.clone(),
            attestation_level: if node.attestation_level == "tpm" {
                AttestationLevel::Tpm
            } else {
                AttestationLevel::Software
            },
            kid: node.kid.clone(),
        },
        now,
        validity: settings.certificate_validity,
        last_hash: v.hash.clone(),
        // The final window's label: a job names its model once, and the agent writes the same
        // label into every window of the run.
        model_id: v.claims.model_id.clone(),
        plausibility: job.plausibility().to_vec(),
        node_flag: node.flag.clone(),
    };
    // Each hour is resolved for itself (a late window gets its hour's historical figure); every
    // live provider that failed is counted in `wattest_provider_fallbacks_total`.
    let mut intensities = Intensities::new();
    for hour in job.hours() {
        if let Some(intensity) = known.remove(&hour) {
            intensities.insert(hour, intensity);
            continue;
        }
        let resolution = state.carbon.resolve(Some(db), &zone, hour, now).await;
        for failed in resolution
            .attempts
            .iter()
            .filter(|a| a.outcome == "failed" && a.provider != "cache")
        {
            state.metrics.provider_fallback(&failed.provider);
        }
        if let Some(intensity) = resolution.intensity {
            intensities.insert(hour, intensity);
        }
    }
    let claims = build_claims(issue, job, &zone, &intensities, &settings.credits)
        .map_err(|err| ApiError::internal(&err))?;
    Ok((claims, intensities))
}

/// Completes issuance in `txn`, after the final window was appended there: while the key signs,
/// takes the log's next slot (locking the head, reading the subtrees the append needs); then
/// waits for the signature and stores the certificate with its log append (one statement on
/// PostgreSQL). Its windows are covered from then on because its `last_seq` is the final
/// window's (`Storage::open_window_claims`): no row is rewritten.
///
/// # Errors
/// 500 problem on signing or database failure (the caller's transaction is then dropped).
pub async fn finish(
    state: &AppState,
    txn: &sea_orm::DatabaseTransaction,
    signing: Signing,
    now: DateTime<Utc>,
) -> Result<certificate::Model, ApiError> {
    let Signing {
        claims, signature, ..
    } = signing;
    // Logged in the same transaction: a certificate exists only if it is in the log.
    let slot = state.storage.reserve_log(txn).await?;
    let jws = match signature {
        Signature::Done(jws) => jws,
        Signature::Computing(signature) => signature
            .await
            .map_err(|err| ApiError::internal(&err))?
            .map_err(|err| ApiError::internal(&err))?,
    };
    let row = certificate_row(&claims, jws).map_err(|err| ApiError::internal(&err))?;
    state
        .storage
        .insert_certificate(txn, &row, slot, now)
        .await?;
    Ok(row)
}

fn certificate_row(
    c: &CertificateClaims,
    jws: String,
) -> Result<certificate::Model, serde_json::Error> {
    let first_hour = c.intensity.hourly.first();
    Ok(certificate::Model {
        id: c.jti.clone(),
        node_id: c.sub.clone(),
        job_id: c.job_id.clone(),
        issued_at: DateTime::from_timestamp(c.iat, 0).unwrap_or_default(),
        period_start: c.period.start,
        period_end: c.period.end,
        zone: c.intensity.zone.clone(),
        attestation_level: c.node.attestation_level.as_str().into(),
        consumed_wh: c.energy.consumed_wh.to_f64(),
        grid_wh: c.energy.grid_wh.to_f64(),
        solar_wh: c.energy.solar_wh.to_f64(),
        emissions_kg: c.emissions.location_based_g_co2e.to_f64() / 1000.0,
        avoided_kg: c.avoided_emissions.g_co2e.to_f64() / 1000.0,
        intensity_g: c.intensity.g_co2e_per_kwh.to_f64(),
        intensity_dataset: first_hour
            .map(|h| h.provenance.dataset.clone())
            .unwrap_or_default(),
        intensity_year: first_hour.map_or(0, |h| h.provenance.year),
        factor_type: c.intensity.factor_type.clone(),
        reward_micro_eur: c.reward.total.micros(),
        owner_micro_eur: c.reward.node_owner.micros(),
        fund_micro_eur: c.reward.cooperative_fund.micros(),
        first_seq: seq_i64(c.windows.first_seq),
        last_seq: seq_i64(c.windows.last_seq),
        window_count: seq_i64(c.windows.count),
        hash: jws_hash(&jws),
        claims: serde_json::to_string(c)?,
        jws,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::carbon::mock::Counts;
    use crate::carbon::{Carbon, FactorType, StaticTable, Step};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use wattest_shared::jws::SaltLength;

    /// When the writer has to issue again (the claims signed ahead of it are no longer current),
    /// it reuses their hours' intensities: the live provider is not asked again inside the
    /// writer's transaction, and the hour's figure is the same. Without them it is asked.
    #[tokio::test]
    async fn issuing_again_in_the_writer_reuses_the_hours_already_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::storage::database_url(dir.path(), None);
        let mut state = AppState::open(dir.path(), &url, crate::ingest::tests::settings())
            .await
            .unwrap();
        let counted = Arc::new(Counts(AtomicUsize::new(0)));
        let table = Arc::new(StaticTable::embedded().unwrap());
        state.carbon = Arc::new(Carbon::new(
            table,
            vec![counted.clone()],
            std::collections::BTreeMap::new(),
            vec![Step::Provider("counted".into())],
            FactorType::Direct,
        ));
        // The current hour: its figure is never cached, so only `known` can spare the request.
        let now = Utc::now();
        let t0 = crate::carbon::hour_start(now);
        let node = crate::ingest::tests::node_row("node-a", t0);
        state.storage.insert_node(node.clone()).await.unwrap();
        let mut claims = crate::verification::test_window_claims(&node.id, 1, None, t0);
        claims.is_final = true;
        let v = VerifiedWindow {
            consumed: claims.consumed(),
            claims,
            hash: "h1".into(),
            salt: SaltLength::Digest,
        };

        let ahead = presign(&state, &node, &[], &v, now).await.unwrap();
        assert_eq!(counted.0.load(Ordering::SeqCst), 1);
        let figure = |s: &Signing| serde_json::to_value(&s.claims.intensity.hourly).unwrap();
        let expected = figure(&ahead);

        let txn = state.storage.begin().await.unwrap();
        let again = prepare(&state, &txn, &node, &v, now, ahead.into_intensities())
            .await
            .unwrap();
        assert_eq!(
            counted.0.load(Ordering::SeqCst),
            1,
            "no provider asked in the writer"
        );
        assert_eq!(figure(&again), expected);

        let fresh = prepare(&state, &txn, &node, &v, now, Intensities::new())
            .await
            .unwrap();
        assert_eq!(
            counted.0.load(Ordering::SeqCst),
            2,
            "without them it is asked"
        );
        assert_eq!(figure(&fresh), expected);
    }

    /// Issuance ahead of the writer takes each of the job's windows once, by seq, whether it is
    /// stored, only in the request, or both (a request's window already committed; a window the
    /// request carries twice): the claims are the same as when every window was stored.
    #[tokio::test]
    async fn presign_takes_each_window_once_whether_stored_or_in_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::storage::database_url(dir.path(), None);
        let state = AppState::open(dir.path(), &url, crate::ingest::tests::settings())
            .await
            .unwrap();
        let now = Utc::now();
        let t0 = crate::carbon::hour_start(now) - chrono::Duration::hours(2);
        // (stored seqs, the request's earlier seqs); window 5 is the final one.
        let cases: [(&[u64], &[u64]); 4] = [
            (&[1, 2, 3, 4], &[]),
            (&[1, 2, 3], &[2, 3, 4]),
            (&[1], &[2, 3, 3, 4]),
            (&[], &[1, 2, 3, 4]),
        ];
        let mut results = Vec::new();
        for (case, (stored, earlier)) in cases.iter().enumerate() {
            let node = crate::ingest::tests::node_row(&format!("node-{case}"), t0);
            state.storage.insert_node(node.clone()).await.unwrap();
            let claims = |seq: u64| {
                let mut c = crate::verification::test_window_claims(&node.id, seq, None, t0);
                c.sources[0].energy_wh = wattest_shared::WattHours(0.1 * seq as f64);
                c.is_final = seq == 5;
                c
            };
            let rows: Vec<crate::storage::entities::window::Model> = stored
                .iter()
                .map(|&seq| {
                    let c = claims(seq);
                    let payload = base64::Engine::encode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        serde_json::to_vec(&c).unwrap(),
                    );
                    crate::storage::entities::window::Model {
                        id: 0,
                        node_id: node.id.clone(),
                        seq: seq_i64(seq),
                        job_id: c.job_id.clone(),
                        hash: format!("h{seq}"),
                        jws: format!("e30.{payload}.c2ln"),
                        start_at: c.start,
                        end_at: c.end,
                        consumed_wh: c.consumed().0,
                        solar_wh: 0.0,
                        is_final: false,
                        salt_length: "digest".into(),
                        received_at: now,
                    }
                })
                .collect();
            if !rows.is_empty() {
                let txn = state.storage.begin().await.unwrap();
                state
                    .storage
                    .append_windows(&txn, None, rows)
                    .await
                    .unwrap();
                txn.commit().await.unwrap();
            }
            let earlier: Vec<WindowClaims> = earlier.iter().map(|&seq| claims(seq)).collect();
            let final_claims = claims(5);
            let v = VerifiedWindow {
                consumed: final_claims.consumed(),
                claims: final_claims,
                hash: "h5".into(),
                salt: SaltLength::Digest,
            };
            let signed = presign(&state, &node, &earlier, &v, now).await.unwrap();
            let c = signed.claims;
            assert_eq!(
                (c.windows.first_seq, c.windows.last_seq, c.windows.count),
                (1, 5, 5),
                "case {case}"
            );
            results.push(serde_json::to_value((c.period, c.energy, c.intensity)).unwrap());
        }
        for (case, result) in results.iter().enumerate() {
            assert_eq!(result, &results[0], "case {case}");
        }
    }
}
