//! The measuring loop shared by `run` (one job) and `watch` (an edge node, forever): sampled
//! windows become signed, chained, spooled windows, and the uploader sends them.

use crate::sampler::{MeasuredWindow, Sampler, SamplerConfig};
use crate::signer::NodeSigner;
use crate::sources::{Discovery, DiscoveryConfig, discover};
use crate::spool::Spool;
use crate::state::{ChainHead, NodeState, StateDir};
use crate::uploader::{CertificateSummary, Drained, Uploader};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use tokio::sync::Notify;
use wattest_shared::jws::{jws_hash, sign_compact};
use wattest_shared::window::{Attribution, PROTOCOL_VERSION, WINDOW_TYP, WindowClaims};

/// Signs windows in chain order and spools them; owns the chain head.
pub struct Chain {
    node: NodeState,
    signer: NodeSigner,
    head: ChainHead,
    spool: Spool,
    dir_path: std::path::PathBuf,
    job_id: Option<String>,
    model_id: Option<String>,
    attribution: Attribution,
}

impl Chain {
    /// Opens the chain of the node in `dir`; `job_id` and `model_id` label every window it signs.
    ///
    /// # Errors
    /// Unreadable state or key.
    pub fn open(
        dir: &StateDir,
        signer: NodeSigner,
        job_id: Option<String>,
        model_id: Option<String>,
        attribution: Attribution,
    ) -> Result<Self> {
        let spool = Spool::new(dir.spool());
        let head = recover_head(dir.chain()?, &spool)?;
        Ok(Self {
            node: dir.node()?,
            signer,
            head,
            spool,
            dir_path: dir.path().to_owned(),
            job_id,
            model_id,
            attribution,
        })
    }

    /// Sets the spool's disk budget, bytes (default [`crate::spool::DEFAULT_SPOOL_BUDGET_BYTES`]).
    #[must_use]
    pub fn with_spool_budget(mut self, bytes: u64) -> Self {
        self.spool = self.spool.with_budget(bytes);
        self
    }

    /// Signs `measured` as the next window, spools it, then advances `chain.json`. The window is
    /// on disk before the chain head moves, so a crash can lose neither.
    ///
    /// # Errors
    /// Signing or disk failure.
    pub fn append(&mut self, measured: MeasuredWindow, is_final: bool) -> Result<u64> {
        let seq = self.head.seq.checked_add(1).with_context(|| {
            format!(
                "the chain head's seq {} has no successor: chain.json or the spool is damaged",
                self.head.seq
            )
        })?;
        let claims = WindowClaims {
            v: PROTOCOL_VERSION,
            node_id: self.node.node_id.clone(),
            job_id: self.job_id.clone(),
            model_id: self.model_id.clone(),
            seq,
            prev: self.head.hash.clone(),
            // Windows never overlap: a window cannot start before the previous one ended.
            start: self
                .head
                .end
                .map_or(measured.start, |end| measured.start.max(end)),
            end: measured.end,
            attribution: self.attribution,
            sources: measured.sources,
            solar_wh: measured.solar_wh,
            is_final,
        };
        let payload = serde_json::to_vec(&claims).context("encoding a window")?;
        let jws = sign_compact(&self.signer, WINDOW_TYP, &payload).context("signing a window")?;
        self.spool.put(seq, &jws)?;
        let head = ChainHead {
            seq,
            hash: Some(jws_hash(&jws)),
            end: Some(claims.end),
        };
        crate::state::write_atomic(
            &self.dir_path.join("chain.json"),
            &serde_json::to_vec(&head).unwrap_or_default(),
        )?;
        self.head = head;
        let metrics = crate::metrics::global();
        metrics.windows_signed.inc();
        metrics.spool_windows.inc();
        for s in &claims.sources {
            metrics
                .energy_joules
                .get_or_create(&crate::metrics::SourceLabel {
                    source: s.source.clone(),
                })
                .inc_by(s.energy_wh.to_joules().0);
        }
        tracing::debug!(seq, final_window = is_final, "Window signed and spooled.");
        Ok(seq)
    }
}

/// The chain head, repaired after a crash between spooling a window and writing `chain.json`:
/// a spooled window with a higher `seq` than `chain.json` records is the true head (it is on
/// disk and may already be at the oracle), so the next window must follow it rather than reuse
/// its `seq`.
///
/// # Errors
/// A spooled window that cannot be read or parsed.
pub fn recover_head(recorded: ChainHead, spool: &Spool) -> Result<ChainHead> {
    let Some((seq, path)) = spool.pending()?.pop() else {
        return Ok(recorded);
    };
    if seq <= recorded.seq {
        return Ok(recorded);
    }
    let jws = Spool::read(&path)?;
    let bytes = wattest_shared::jws::unverified_payload(&jws)
        .context("spooled window is not a compact JWS")?;
    let claims: WindowClaims =
        serde_json::from_slice(&bytes).context("spooled window payload is not a window")?;
    tracing::warn!(
        recorded = recorded.seq,
        spooled = claims.seq,
        "chain.json is behind the spool (interrupted write); continuing from the spooled window."
    );
    Ok(ChainHead {
        seq: claims.seq,
        hash: Some(jws_hash(&jws)),
        end: Some(claims.end),
    })
}

/// Discovers the sources and logs what was found.
pub fn sources(cfg: &DiscoveryConfig) -> Discovery {
    let discovery = discover(cfg);
    for note in &discovery.notes {
        tracing::info!("{note}");
    }
    for warning in &discovery.warnings {
        tracing::warn!("{warning}");
    }
    for s in &discovery.sources {
        let info = s.info();
        tracing::info!(source = %info.id, kind = info.kind.as_str(), method = info.method.as_str(), location = %info.location, "Measuring.");
    }
    discovery
}

/// Runs the signer thread: windows from the sampler are signed and spooled in order; the uploader
/// is woken after each. Returns the chain when the sampler's channel closes. A window that cannot
/// be signed or spooled (the spool's disk budget reached, a full disk, a TPM error) ends the
/// thread with that error, logged at once, and `failed` is notified; the windows before it stay
/// spooled, and the sampler stops once its next window finds no signer.
///
/// # Errors
/// The operating system refuses a new thread.
///
/// With `certify_every` (continuous node mode), the first window ending at least that long after
/// the last certified one is marked final, so the oracle issues one certificate per period.
pub fn spawn_signer(
    mut chain: Chain,
    windows: Receiver<MeasuredWindow>,
    wake: Arc<Notify>,
    failed: Arc<Notify>,
    certify_every: Option<chrono::Duration>,
) -> std::io::Result<std::thread::JoinHandle<Result<Chain>>> {
    std::thread::Builder::new()
        .name("wattest-signer".into())
        .spawn(move || {
            let mut period_start = None;
            for measured in windows {
                if measured.sources.is_empty() {
                    continue;
                }
                let start = *period_start.get_or_insert(measured.start);
                let is_final = certify_every.is_some_and(|every| measured.end - start >= every);
                if is_final {
                    period_start = None;
                }
                if let Err(err) = chain.append(measured, is_final) {
                    tracing::error!(
                        error = crate::report::error_chain(&err),
                        "A window could not be signed and spooled; measurement stops (the windows before it stay spooled)."
                    );
                    failed.notify_one();
                    return Err(err);
                }
                wake.notify_one();
            }
            Ok(chain)
        })
}

/// Uploads in the background whenever woken, until `stop` is notified.
pub fn spawn_background_upload(
    uploader: Uploader,
    spool: Spool,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
) -> tokio::task::JoinHandle<Drained> {
    tokio::spawn(async move {
        let mut total = Drained::default();
        loop {
            // Stopping interrupts a round (its backoff sleep, or a post in flight): what it did
            // not acknowledge stays in the spool for the final drain, and a window the oracle
            // accepted meanwhile is answered there with its original receipt.
            let round = tokio::select! {
                round = uploader.drain(
                    &spool,
                    Some(tokio::time::Instant::now() + std::time::Duration::from_secs(60)),
                ) => round,
                () = stop.notified() => return total,
            };
            total.acknowledged += round.acknowledged;
            total.certificates.extend(round.certificates);
            total.rejected.extend(round.rejected);
            tokio::select! {
                () = wake.notified() => {}
                () = stop.notified() => return total,
            }
        }
    })
}

/// A measurement in progress: sampler thread, signer thread and background uploader.
pub struct Measurement {
    sampler: Sampler,
    signer_thread: std::thread::JoinHandle<Result<Chain>>,
    background: tokio::task::JoinHandle<Drained>,
    stop: Arc<Notify>,
    /// Notified when the signer thread stopped on an error.
    failed: Arc<Notify>,
    uploader: Uploader,
    spool: Spool,
}

impl Measurement {
    /// Starts sampling `discovery`'s sources into `chain`, uploading in the background.
    /// `certify_every`: see [`spawn_signer`].
    ///
    /// # Errors
    /// The signer thread cannot be started.
    pub fn start(
        discovery: Discovery,
        cfg: SamplerConfig,
        chain: Chain,
        uploader: Uploader,
        spool: Spool,
        certify_every: Option<chrono::Duration>,
    ) -> Result<Self> {
        let (sampler, windows) =
            Sampler::start_with_procfs(discovery.sources, cfg, &discovery.procfs_root);
        let wake = Arc::new(Notify::new());
        let stop = Arc::new(Notify::new());
        let failed = Arc::new(Notify::new());
        let signer_thread =
            spawn_signer(chain, windows, wake.clone(), failed.clone(), certify_every)
                .context("starting the signer thread")?;
        let background =
            spawn_background_upload(uploader.clone(), spool.clone(), wake, stop.clone());
        Ok(Self {
            sampler,
            signer_thread,
            background,
            stop,
            failed,
            uploader,
            spool,
        })
    }

    /// Completes when the signer thread stopped on an error (never otherwise; once);
    /// [`Self::finish`] then reports that error.
    pub async fn failed(&self) {
        self.failed.notified().await;
    }

    /// Closes the last window, marked final, then uploads until the spool is empty or
    /// `upload_timeout` passes. The report merges the background rounds and the last one;
    /// `remaining` and `stopped` are the last round's. When measuring failed (the signer thread
    /// stopped on an error, or a task panicked) there is no last window, but the windows signed
    /// before the failure are still sent, and [`Finished::error`] says why.
    pub async fn finish(self, upload_timeout: std::time::Duration) -> Finished {
        let mut error = None;
        let sampler = self.sampler;
        let last = match tokio::task::spawn_blocking(move || sampler.finish()).await {
            Ok(last) => Some(last),
            Err(err) => {
                error = Some(anyhow::Error::new(err).context("the sampler thread failed"));
                None
            }
        };
        match self.signer_thread.join() {
            Ok(Ok(mut chain)) => {
                if let Some(last) = last
                    && let Err(err) = chain.append(last, true)
                {
                    error.get_or_insert(err.context("closing the final window"));
                }
            }
            // The signer's error is the cause: it comes first.
            Ok(Err(err)) => error = Some(err),
            Err(_) => error = Some(anyhow::anyhow!("the signer thread panicked")),
        }
        self.stop.notify_one();
        let mut report = match self.background.await {
            Ok(report) => report,
            Err(err) => {
                error.get_or_insert(anyhow::Error::new(err).context("the background upload"));
                Drained::default()
            }
        };
        let last_round = self
            .uploader
            .drain(
                &self.spool,
                Some(tokio::time::Instant::now() + upload_timeout),
            )
            .await;
        report.acknowledged += last_round.acknowledged;
        report.certificates.extend(last_round.certificates);
        report.rejected.extend(last_round.rejected);
        report.remaining = last_round.remaining;
        report.stopped = last_round.stopped;
        Finished { report, error }
    }
}

/// What [`Measurement::finish`] leaves.
#[derive(Debug)]
pub struct Finished {
    /// The uploads of the whole measurement.
    pub report: Drained,
    /// Why measuring failed (signing, the spool's budget, the disk, a TPM; a panicked task),
    /// or `None`: the measurement then ended early, and the last window is missing.
    pub error: Option<anyhow::Error>,
}

/// One-line human summary of a certificate, for stderr.
#[must_use]
pub fn summary_line(c: &CertificateSummary) -> String {
    format!(
        "job {} · energy {:.4} Wh (grid {:.4} Wh, solar {:.4} Wh) · emissions {:.3} gCO2e location-based at {:.2} gCO2e/kWh ({}; {}) · avoided {:.3} gCO2e · {} windows · attestation {}",
        c.job_id.as_deref().unwrap_or("-"),
        c.energy_wh,
        c.grid_wh,
        c.solar_wh,
        c.emissions_kg_co2e * 1000.0,
        c.intensity_g_co2e_per_kwh,
        c.zone,
        c.intensity_dataset,
        c.avoided_kg_co2e * 1000.0,
        c.window_count,
        c.attestation_level
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattest_shared::SoftwareKey;

    #[test]
    fn head_is_recovered_from_the_spool_after_an_interrupted_write() {
        let tmp = tempfile::tempdir().expect("tmp");
        let spool = Spool::new(tmp.path().to_owned());
        let recorded = ChainHead {
            seq: 4,
            hash: Some("h4".into()),
            end: None,
        };
        assert_eq!(
            recover_head(recorded.clone(), &spool).expect("empty spool"),
            recorded
        );

        let key = SoftwareKey::generate(2048).expect("key");
        let t = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let claims = WindowClaims {
            v: 1,
            node_id: "n".into(),
            job_id: None,
            model_id: None,
            seq: 5,
            prev: Some("h4".into()),
            start: t,
            end: t + chrono::Duration::seconds(10),
            attribution: Attribution::Machine,
            sources: vec![],
            solar_wh: wattest_shared::WattHours(0.0),
            is_final: false,
        };
        let jws = sign_compact(
            &key,
            WINDOW_TYP,
            &serde_json::to_vec(&claims).expect("json"),
        )
        .expect("sign");
        spool.put(5, &jws).expect("put");
        let head = recover_head(recorded.clone(), &spool).expect("recover");
        assert_eq!(
            head,
            ChainHead {
                seq: 5,
                hash: Some(jws_hash(&jws)),
                end: Some(claims.end)
            }
        );
        // A spool that is behind chain.json (already acknowledged ones left) changes nothing.
        let ahead = ChainHead {
            seq: 9,
            hash: Some("h9".into()),
            end: None,
        };
        assert_eq!(recover_head(ahead.clone(), &spool).expect("ahead"), ahead);
    }
}
