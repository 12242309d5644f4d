//! Window verification: a compact JWS from an agent becomes a [`VerifiedWindow`] or a precise
//! rejection. Pure: no database, no clock (the caller passes `now` and the node's chain state).
//!
//! The steps are numbered as in `docs/protocol.md` §"Verification"; steps 1–3 (JWS shape, algorithm,
//! header) run in [`wattest_shared::jws::decode_header`] before the node is looked up by `kid`.

use chrono::{DateTime, Duration, Utc};
use tracing::debug;
use wattest_shared::AttestationLevel;
use wattest_shared::jws::{
    JwsError, Ps256Verifier, SaltLength, SaltPolicy, UnverifiedJws, jws_hash,
};
use wattest_shared::units::WattHours;
use wattest_shared::window::{
    MAX_SOURCES, MAX_WINDOW_SECONDS, PROTOCOL_VERSION, SourceKind, WindowClaims,
};

/// Default tolerated clock skew between agent and oracle for a window's end, in seconds (issue
/// #2; `wattest-oracle serve --max-clock-skew-secs` overrides it). NTP keeps hosts within
/// milliseconds; a minute also covers a host that just booted before its first sync.
pub const MAX_FUTURE_SKEW_SECONDS: i64 = 60;
/// Relative tolerance on `mean_w` versus `energy_wh × 3600 / duration` and on `max_w ≥ mean_w`.
pub const POWER_TOLERANCE: f64 = 0.01;
/// Highest plausible power of one source, W: 100 kW is above any single GPU, board or rack PDU
/// outlet a node could report (an 8-GPU server draws ~10 kW).
pub const MAX_SOURCE_WATTS: f64 = 100_000.0;

/// The node as enrolled, as far as verification needs it.
#[derive(Debug, Clone)]
pub struct EnrolledNode {
    /// Node id.
    pub id: String,
    /// Its public key (RSA, checked at enrollment).
    pub key: openssl::pkey::PKey<openssl::pkey::Public>,
    /// Key protection proven at enrollment; decides the accepted PSS salt lengths.
    pub attestation_level: AttestationLevel,
    /// The earliest `start` a window of this node may have (step 7): its enrollment time less
    /// the clock skew bound and the backdating allowance ([`earliest_start`]). A node measures
    /// only once enrolled; without this bound it could claim any past hours, with their
    /// carbon intensities, in a second of wall-clock time.
    pub earliest_start: DateTime<Utc>,
}

/// The earliest start of a window of a node enrolled at `enrolled_at`: `enrolled_at` less
/// `max_skew_seconds` (the node's clock may run behind the oracle's) and `max_backdate_seconds`
/// (`serve --max-backdate-hours`, 0 by default); the earliest time chrono holds when that
/// underflows.
#[must_use]
pub fn earliest_start(
    enrolled_at: DateTime<Utc>,
    max_skew_seconds: i64,
    max_backdate_seconds: i64,
) -> DateTime<Utc> {
    Duration::try_seconds(max_skew_seconds.saturating_add(max_backdate_seconds))
        .and_then(|allowance| enrolled_at.checked_sub_signed(allowance))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Where the node's chain stands: the last accepted window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainState {
    /// `seq` of the last accepted window (0 before the first).
    pub last_seq: u64,
    /// Hash of the last accepted window's JWS.
    pub last_hash: Option<String>,
    /// End of the last accepted window.
    pub last_end: Option<DateTime<Utc>>,
}

/// A window whose signature, chain position, timing and figures all check out.
#[derive(Debug, Clone)]
pub struct VerifiedWindow {
    /// The claims.
    pub claims: WindowClaims,
    /// base64url SHA-256 of the compact JWS (the next window's `prev`).
    pub hash: String,
    /// Salt length the signature used.
    pub salt: SaltLength,
    /// Energy consumed (the protocol's consumption rule).
    pub consumed: WattHours,
}

/// Why a window was rejected. [`VerifyError::code`] gives the documented error code.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Steps 1–4: JWS shape, algorithm, header, signature.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// Step 5: payload is not a window.
    #[error("payload is not a telemetry window: {0}")]
    MalformedPayload(String),
    /// Step 5: protocol version.
    #[error("protocol version {0} is not supported (this oracle speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u32),
    /// Step 5: the payload names another node than the key's.
    #[error("window names node {claimed} but is signed by the key of node {actual}")]
    NodeMismatch {
        /// node_id in the payload.
        claimed: String,
        /// Node that owns the key.
        actual: String,
    },
    /// Step 6: `seq` at or below the last accepted one.
    #[error("seq {seq} was already used (last accepted seq is {last})")]
    SeqReplay {
        /// Received seq.
        seq: u64,
        /// Last accepted seq.
        last: u64,
    },
    /// Step 6: `seq` skips ahead. Returned only after every check that does not depend on the
    /// missing windows passed (signature, payload, period, clock skew, figures).
    #[error("seq {seq} skips ahead: the next expected seq is {expected}")]
    SeqGap {
        /// Received seq.
        seq: u64,
        /// Expected seq.
        expected: u64,
    },
    /// Step 6: `prev` is not the hash of the last accepted window.
    #[error("prev does not match the hash of the last accepted window")]
    ChainBroken,
    /// Step 7: the window overlaps the previous one.
    #[error("window starts at {start} before the previous window's end {previous_end}")]
    OverlappingWindow {
        /// This window's start.
        start: DateTime<Utc>,
        /// Previous window's end.
        previous_end: DateTime<Utc>,
    },
    /// Step 7: `end` after now + skew.
    #[error("window ends at {end}, more than {skew_seconds} s after the oracle's clock ({now})")]
    FutureWindow {
        /// Window end.
        end: DateTime<Utc>,
        /// Oracle time.
        now: DateTime<Utc>,
        /// The tolerated skew, s.
        skew_seconds: i64,
    },
    /// Step 7: `start ≥ end` or a window longer than a day.
    #[error("invalid window period: {0}")]
    InvalidPeriod(String),
    /// Step 8: figures that cannot be true.
    #[error("implausible window: {0}")]
    Implausible(String),
}

impl VerifyError {
    /// Stable error code (snake_case), as documented in `docs/protocol.md`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Jws(err) => err.code(),
            Self::MalformedPayload(_) => "malformed_payload",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::NodeMismatch { .. } => "node_mismatch",
            Self::SeqReplay { .. } => "seq_replay",
            Self::SeqGap { .. } => "seq_gap",
            Self::ChainBroken => "chain_broken",
            Self::OverlappingWindow { .. } => "overlapping_window",
            Self::FutureWindow { .. } => "future_window",
            Self::InvalidPeriod(_) => "invalid_period",
            Self::Implausible(_) => "implausible",
        }
    }
}

/// Steps 4–8 of window verification for a JWS whose header already passed steps 1–3 and whose
/// `kid` resolved to `node`. `max_skew_seconds` bounds how far a window's end may lie after `now`
/// (default [`MAX_FUTURE_SKEW_SECONDS`]).
///
/// # Errors
/// The first failed step as a [`VerifyError`].
pub fn verify_window(
    jws: &str,
    unverified: UnverifiedJws<'_>,
    node: &EnrolledNode,
    chain: &ChainState,
    now: DateTime<Utc>,
    max_skew_seconds: i64,
) -> Result<VerifiedWindow, VerifyError> {
    let mut verifier = Ps256Verifier::new(&node.key)?;
    verify_window_with(
        jws,
        unverified,
        node,
        &mut verifier,
        chain,
        now,
        max_skew_seconds,
    )
}

/// [`verify_window`] with a [`Ps256Verifier`] prepared for `node.key` and reused across the
/// node's windows (one set-up per request instead of per window).
///
/// # Errors
/// The first failed step as a [`VerifyError`].
pub fn verify_window_with(
    jws: &str,
    unverified: UnverifiedJws<'_>,
    node: &EnrolledNode,
    verifier: &mut Ps256Verifier,
    chain: &ChainState,
    now: DateTime<Utc>,
    max_skew_seconds: i64,
) -> Result<VerifiedWindow, VerifyError> {
    // Step 4: signature. Only TPM-attested keys may use the maximum PSS salt length.
    let policy = match node.attestation_level {
        AttestationLevel::Tpm => SaltPolicy::DigestOrMaximum,
        AttestationLevel::Software => SaltPolicy::DigestOnly,
    };
    let (payload, salt) = unverified.verify_ps256(verifier, policy)?;
    debug!(node_id = %node.id, ?salt, "Signature verified.");

    // Step 5, in the documented order: the payload is a window (types, times, seq, labels),
    // then its version, then its node.
    let claims = parse_claims(&payload)?;
    if claims.v != PROTOCOL_VERSION {
        return Err(VerifyError::UnsupportedVersion(claims.v));
    }
    if claims.node_id != node.id {
        return Err(VerifyError::NodeMismatch {
            claimed: claims.node_id,
            actual: node.id.clone(),
        });
    }

    // Step 6: position in the chain.
    let expected = chain.last_seq + 1;
    if claims.seq < expected {
        return Err(VerifyError::SeqReplay {
            seq: claims.seq,
            last: chain.last_seq,
        });
    }
    // A window ahead of the chain (a gap) goes through every check that does not depend on its
    // predecessor, so that `SeqGap` means "valid but early": the caller may hold it.
    let gap = claims.seq > expected;
    if !gap && claims.prev != chain.last_hash {
        return Err(VerifyError::ChainBroken);
    }
    debug!(node_id = %node.id, seq = claims.seq, gap, "Chain position verified.");

    // Step 7: timing. (Step 5 admitted four-digit years only, so stored times compare as text
    // on SQLite.)
    if claims.start >= claims.end {
        return Err(VerifyError::InvalidPeriod(format!(
            "start {} is not before end {}",
            claims.start, claims.end
        )));
    }
    // A window shorter than a millisecond is refused as too short to measure: step 8 checks
    // energy against the exact duration, but a meter cannot report a sub-millisecond window.
    if claims.end - claims.start < Duration::milliseconds(1) {
        return Err(VerifyError::InvalidPeriod(format!(
            "window shorter than 1 ms ({} to {})",
            claims.start, claims.end
        )));
    }
    if claims.end - claims.start > Duration::seconds(MAX_WINDOW_SECONDS) {
        return Err(VerifyError::InvalidPeriod(format!(
            "window longer than {MAX_WINDOW_SECONDS} s"
        )));
    }
    if claims.start < node.earliest_start {
        return Err(VerifyError::InvalidPeriod(format!(
            "window starts at {}, before its node could measure: the earliest start accepted \
             is {} (the node's enrollment, less the clock skew bound and any backdating \
             allowance)",
            claims
                .start
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            node.earliest_start
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )));
    }
    if claims.end > now + Duration::seconds(max_skew_seconds) {
        return Err(VerifyError::FutureWindow {
            end: claims.end,
            now,
            skew_seconds: max_skew_seconds,
        });
    }
    if let Some(previous_end) = chain.last_end.filter(|_| !gap)
        && claims.start < previous_end
    {
        return Err(VerifyError::OverlappingWindow {
            start: claims.start,
            previous_end,
        });
    }

    // Step 8: plausibility of every figure.
    check_figures(&claims)?;
    debug!(node_id = %node.id, seq = claims.seq, "Figures plausible.");
    if gap {
        return Err(VerifyError::SeqGap {
            seq: claims.seq,
            expected,
        });
    }
    let consumed = claims.consumed();
    Ok(VerifiedWindow {
        hash: jws_hash(jws),
        claims,
        salt,
        consumed,
    })
}

/// Step 5's "the payload is a window": a JSON object, and each `sources` entry one (never an
/// array read by position, [`wattest_shared::json`]), of the §3.1 types with no unknown members, `start` and `end`
/// written `YYYY-MM-DDThh:mm:ss[.f]Z` (`wattest_shared::window::is_utc_timestamp`, checked as the claims are read), `seq` ≥ 1, and valid `job_id`
/// and `model_id`. Everything else of the payload is judged later.
///
/// # Errors
/// [`VerifyError::MalformedPayload`] naming the first rule broken.
fn parse_claims(payload: &[u8]) -> Result<WindowClaims, VerifyError> {
    let claims: WindowClaims = wattest_shared::json::from_slice(payload)
        .map_err(|err| VerifyError::MalformedPayload(err.to_string()))?;
    if claims.seq == 0 {
        return Err(VerifyError::MalformedPayload(
            "seq must be at least 1 (a node's first window is seq 1)".into(),
        ));
    }
    for (name, label) in [("job_id", &claims.job_id), ("model_id", &claims.model_id)] {
        if let Some(label) = label
            && !wattest_shared::window::is_valid_label(label)
        {
            return Err(VerifyError::MalformedPayload(format!(
                "{name} must be 1–128 characters without control characters"
            )));
        }
    }
    Ok(claims)
}

/// The window's duration in seconds, exact to the nanosecond (not truncated to whole
/// milliseconds as [`WindowClaims::duration_seconds`] is): step 8 compares `mean_w` with
/// `energy_wh × 3600 / duration`, and a 1.5 ms window measured as 1 ms would be off by half.
fn exact_seconds(claims: &WindowClaims) -> f64 {
    let d = claims.end - claims.start;
    // Step 7 bounds the window to MAX_WINDOW_SECONDS, well inside i64 nanoseconds; the
    // fallback is never taken for a window that reached step 8.
    d.num_nanoseconds().map_or_else(
        || d.num_milliseconds() as f64 / 1000.0,
        |ns| ns as f64 / 1e9,
    )
}

fn check_figures(claims: &WindowClaims) -> Result<(), VerifyError> {
    let bad = |msg: String| Err(VerifyError::Implausible(msg));
    if claims.sources.is_empty() {
        return bad("a window must carry at least one source".into());
    }
    if claims.sources.len() > MAX_SOURCES {
        return bad(format!(
            "{} sources exceed the limit of {MAX_SOURCES}",
            claims.sources.len()
        ));
    }
    let seconds = exact_seconds(claims);
    let mut ids = std::collections::HashSet::new();
    for s in &claims.sources {
        let id_ok = !s.source.is_empty()
            && s.source.len() <= 64
            && s.source
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
        if !id_ok {
            return bad(format!(
                "source id {:?} must be 1–64 characters from [A-Za-z0-9._:/-]",
                s.source
            ));
        }
        if !ids.insert(s.source.as_str()) {
            return bad(format!("source {} appears twice", s.source));
        }
        if !s.energy_wh.is_physical() || !s.mean_w.is_physical() || !s.max_w.is_physical() {
            return bad(format!(
                "source {}: energy and power must be finite and ≥ 0",
                s.source
            ));
        }
        if !(0.0..=100.0).contains(&s.uncertainty_pct) {
            return bad(format!(
                "source {}: uncertainty_pct {} is outside 0–100",
                s.source, s.uncertainty_pct
            ));
        }
        if s.samples == 0 {
            return bad(format!("source {}: samples must be ≥ 1", s.source));
        }
        let mean = s.energy_wh.to_joules().mean_power(seconds).0;
        // A huge but finite energy (1e308 Wh) overflows to an infinite mean power, which the
        // tolerance comparison below (inf > inf is false) would let through.
        if !mean.is_finite()
            || (s.mean_w.0 - mean).abs() > POWER_TOLERANCE * mean.max(s.mean_w.0) + 1e-6
        {
            return bad(format!(
                "source {}: mean_w {} W disagrees with energy_wh over the window ({mean} W)",
                s.source, s.mean_w.0
            ));
        }
        if s.max_w.0 < s.mean_w.0 * (1.0 - POWER_TOLERANCE) - 1e-6 {
            return bad(format!(
                "source {}: max_w {} W is below mean_w {} W",
                s.source, s.max_w.0, s.mean_w.0
            ));
        }
        if s.max_w.0 > MAX_SOURCE_WATTS {
            return bad(format!(
                "source {}: max_w {} W exceeds {MAX_SOURCE_WATTS} W",
                s.source, s.max_w.0
            ));
        }
    }
    let solar: WattHours = claims
        .sources
        .iter()
        .filter(|s| s.kind == SourceKind::Solar)
        .map(|s| s.energy_wh)
        .sum();
    if !claims.solar_wh.is_physical()
        || (claims.solar_wh.0 - solar.0).abs() > 1e-9 * solar.0.max(1.0)
    {
        return bad(format!(
            "solar_wh {} is not the sum of the solar sources ({})",
            claims.solar_wh.0, solar.0
        ));
    }
    Ok(())
}

/// A plausible 10 s CPU-estimate window of job `job` (0.1 Wh at 36 W mean): seq `seq` of
/// `node_id`'s chain, starting `10 × (seq − 1)` s after `t0`. For tests.
#[cfg(test)]
pub(crate) fn test_window_claims(
    node_id: &str,
    seq: u64,
    prev: Option<String>,
    t0: DateTime<Utc>,
) -> WindowClaims {
    use wattest_shared::Watts;
    use wattest_shared::window::{Attribution, Method, SourceEnergy};
    let start = t0 + Duration::seconds(10 * (i64::try_from(seq).unwrap_or(1) - 1));
    WindowClaims {
        v: 1,
        node_id: node_id.to_owned(),
        job_id: Some("job".into()),
        model_id: None,
        seq,
        prev,
        start,
        end: start + Duration::seconds(10),
        attribution: Attribution::Machine,
        sources: vec![SourceEnergy {
            source: "cpu-estimate".into(),
            kind: SourceKind::Cpu,
            method: Method::EstimateCpuTdp,
            energy_wh: WattHours(0.1),
            mean_w: Watts(36.0),
            max_w: Watts(40.0),
            samples: 10,
            uncertainty_pct: 50.0,
            shared_device: false,
        }],
        solar_wh: WattHours(0.0),
        is_final: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattest_shared::jws::{decode_header, sign_compact};
    use wattest_shared::window::WINDOW_TYP;
    use wattest_shared::{SoftwareKey, Watts};

    struct Fixture {
        key: SoftwareKey,
        node: EnrolledNode,
        t0: DateTime<Utc>,
    }

    fn fixture() -> Fixture {
        let key = SoftwareKey::generate(2048).expect("key");
        let node = EnrolledNode {
            id: "node-1".into(),
            key: key.public_jwk().to_public_key().expect("pub"),
            attestation_level: AttestationLevel::Software,
            earliest_start: DateTime::<Utc>::MIN_UTC,
        };
        Fixture {
            key,
            node,
            t0: DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
                .expect("t")
                .with_timezone(&Utc),
        }
    }

    fn claims(f: &Fixture, seq: u64, prev: Option<String>) -> WindowClaims {
        test_window_claims(&f.node.id, seq, prev, f.t0)
    }

    fn sign(f: &Fixture, c: &WindowClaims) -> String {
        sign_compact(&f.key, WINDOW_TYP, &serde_json::to_vec(c).expect("json")).expect("sign")
    }

    fn run(f: &Fixture, jws: &str, chain: &ChainState) -> Result<VerifiedWindow, VerifyError> {
        let now = f.t0 + Duration::hours(1);
        verify_window(
            jws,
            decode_header(jws, WINDOW_TYP)?,
            &f.node,
            chain,
            now,
            MAX_FUTURE_SKEW_SECONDS,
        )
    }

    #[test]
    fn mean_w_is_checked_over_the_exact_duration() {
        // 1.5 ms at 0.24 W is 1e-7 Wh: measured as 1 ms the window would read 0.36 W and be
        // refused as implausible.
        let f = fixture();
        let mut c = claims(&f, 1, None);
        c.end = c.start + Duration::microseconds(1500);
        c.sources[0].energy_wh = WattHours(1e-7);
        c.sources[0].mean_w = Watts(0.24);
        c.sources[0].max_w = Watts(0.24);
        let v = run(&f, &sign(&f, &c), &ChainState::default());
        assert!(v.is_ok(), "{:?}", v.err().map(|e| e.to_string()));
        // 0.36 W over the same 1.5 ms is off by half: refused.
        c.sources[0].mean_w = Watts(0.36);
        c.sources[0].max_w = Watts(0.36);
        let err = run(&f, &sign(&f, &c), &ChainState::default()).expect_err("implausible");
        assert_eq!(err.code(), "implausible");
        assert!(err.to_string().contains("over the window (0.2"), "{err}");
    }

    #[test]
    fn accepts_a_chain_and_rejects_each_rule() {
        let f = fixture();
        let first = sign(&f, &claims(&f, 1, None));
        let v1 = run(&f, &first, &ChainState::default()).expect("first window");
        assert_eq!(v1.hash, jws_hash(&first));
        assert_eq!(v1.salt, SaltLength::Digest);
        let chain = ChainState {
            last_seq: 1,
            last_hash: Some(v1.hash.clone()),
            last_end: Some(v1.claims.end),
        };

        let second = sign(&f, &claims(&f, 2, Some(v1.hash.clone())));
        assert!(run(&f, &second, &chain).is_ok());

        let code = |c: WindowClaims, chain: &ChainState| {
            run(&f, &sign(&f, &c), chain).err().map(|e| e.code())
        };
        assert_eq!(
            run(&f, &first, &chain).err().map(|e| e.code()),
            Some("seq_replay")
        );
        assert_eq!(
            code(claims(&f, 3, Some(v1.hash.clone())), &chain),
            Some("seq_gap")
        );
        assert_eq!(
            code(claims(&f, 2, Some("AAAA".into())), &chain),
            Some("chain_broken")
        );
        assert_eq!(code(claims(&f, 2, None), &chain), Some("chain_broken"));
        // seq 0 is no position in any chain, whatever the chain's state.
        assert_eq!(
            code(claims(&f, 0, None), &ChainState::default()),
            Some("malformed_payload")
        );
        assert_eq!(code(claims(&f, 0, None), &chain), Some("malformed_payload"));
        assert_eq!(
            code(claims(&f, 1, Some("x".into())), &ChainState::default()),
            Some("chain_broken")
        );

        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.v = 2;
        assert_eq!(code(c, &chain), Some("unsupported_version"));
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.node_id = "other".into();
        assert_eq!(code(c, &chain), Some("node_mismatch"));
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.start -= Duration::seconds(5);
        assert_eq!(code(c, &chain), Some("overlapping_window"));
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.end = c.start;
        assert_eq!(code(c, &chain), Some("invalid_period"));
        // Half a millisecond measures 0 s: a gigawatt-hour with mean_w = max_w = 0 is refused
        // for the window's length, not credited.
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.end = c.start + Duration::microseconds(500);
        c.sources[0].energy_wh = WattHours(1e9);
        c.sources[0].mean_w = Watts(0.0);
        c.sources[0].max_w = Watts(0.0);
        assert_eq!(code(c, &chain), Some("invalid_period"));
        // Years RFC 3339 cannot write (chrono parses `-5000-…` and `+10000-…`): not a window.
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.start = DateTime::parse_from_str("-5000-01-01T00:00:00+0000", "%Y-%m-%dT%H:%M:%S%z")
            .expect("a signed year")
            .with_timezone(&Utc);
        assert_eq!(code(c, &chain), Some("malformed_payload"));
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.end = f.t0 + Duration::hours(1) + Duration::seconds(61);
        assert_eq!(code(c, &chain), Some("future_window"));
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.sources[0].mean_w = Watts(80.0);
        assert_eq!(code(c, &chain), Some("implausible"));
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.sources[0].max_w = Watts(10.0);
        assert_eq!(code(c, &chain), Some("implausible"));
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.sources[0].energy_wh = WattHours(-0.1);
        c.sources[0].mean_w = Watts(0.0);
        assert_eq!(code(c, &chain), Some("implausible"));
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.solar_wh = WattHours(1.0);
        assert_eq!(code(c, &chain), Some("implausible"));
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.sources.push(c.sources[0].clone());
        assert_eq!(code(c, &chain), Some("implausible"));
        let mut c = claims(&f, 2, Some(v1.hash.clone()));
        c.sources.clear();
        assert_eq!(code(c, &chain), Some("implausible"));
    }

    /// Step 5 in protocol.md's order: `malformed_payload` (which includes `seq` ≥ 1 and valid
    /// labels) before `unsupported_version`, before `node_mismatch`.
    #[test]
    fn step_5_checks_the_window_then_the_version_then_the_node() {
        let f = fixture();
        let code = |c: WindowClaims| {
            run(&f, &sign(&f, &c), &ChainState::default())
                .err()
                .map(|e| e.code())
        };
        let mut c = claims(&f, 0, None);
        c.v = 2;
        assert_eq!(code(c), Some("malformed_payload"), "v 2 with seq 0");
        let mut c = claims(&f, 1, None);
        c.job_id = Some("bad\u{7}job".into());
        c.node_id = "another-node".into();
        assert_eq!(code(c), Some("malformed_payload"), "bad job_id, wrong node");
        let mut c = claims(&f, 1, None);
        c.model_id = Some(String::new());
        c.v = 2;
        assert_eq!(code(c), Some("malformed_payload"), "empty model_id, v 2");
        let mut c = claims(&f, 1, None);
        c.v = 2;
        c.node_id = "another-node".into();
        assert_eq!(code(c), Some("unsupported_version"), "v 2, wrong node");
    }

    /// `start` and `end` must be written as protocol.md's conventions say: RFC 3339 UTC with
    /// `T` and `Z`, 0 or 1–9 fraction digits. Offsets (even `+00:00`), spaces, lower case and
    /// other forms chrono reads are `malformed_payload`, before the version or node is looked at.
    #[test]
    fn window_times_are_rfc3339_utc_with_z() {
        let f = fixture();
        let with = |member: &str, text: &str| {
            let mut value = serde_json::to_value(claims(&f, 1, None)).expect("json");
            value[member] = text.into();
            let jws = sign_compact(
                &f.key,
                WINDOW_TYP,
                &serde_json::to_vec(&value).expect("json"),
            )
            .expect("sign");
            run(&f, &jws, &ChainState::default())
                .map(|v| v.claims)
                .map_err(|e| e.code())
        };
        for start in [
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:00:00.0Z",
            "2026-11-23T10:00:00.000Z",
            "2026-11-23T10:00:00.000000001Z",
        ] {
            let c = with("start", start).expect(start);
            assert_eq!(c.start.timestamp(), f.t0.timestamp(), "{start}");
        }
        for (member, text) in [
            ("start", "2026-11-23T10:00:00+00:00"),
            ("start", "2026-11-23T10:00:00-00:00"),
            ("start", "2026-11-23T11:00:00+01:00"),
            ("end", "2026-11-23T10:00:10+0000"),
            ("start", "2026-11-23 10:00:00Z"),
            ("start", "2026-11-23t10:00:00Z"),
            ("end", "2026-11-23T10:00:10z"),
            ("end", "2026-11-23T10:00:10 UTC"),
            ("end", "2026-11-23T10:00:10UTC"),
            ("start", "2026-11-23T10:00:00.Z"),
            ("start", "2026-11-23T10:00:00.0000000001Z"),
            ("start", "2026-11-23T10:00Z"),
            ("start", "+2026-11-23T10:00:00Z"),
            ("start", "2026-11-23T10:00:00Z "),
            ("start", "2026-11-23"),
        ] {
            assert_eq!(
                with(member, text).err(),
                Some("malformed_payload"),
                "{member} {text}"
            );
        }
        // Before the version and the node: a `+00:00` window of v 2 for another node.
        let mut value = serde_json::to_value(claims(&f, 1, None)).expect("json");
        value["start"] = "2026-11-23T10:00:00+00:00".into();
        value["v"] = 2.into();
        value["node_id"] = "another-node".into();
        let jws = sign_compact(
            &f.key,
            WINDOW_TYP,
            &serde_json::to_vec(&value).expect("json"),
        )
        .expect("sign");
        assert_eq!(
            run(&f, &jws, &ChainState::default())
                .err()
                .map(|e| e.code()),
            Some("malformed_payload")
        );
    }

    #[test]
    fn signature_and_payload_failures() {
        let f = fixture();
        let good = sign(&f, &claims(&f, 1, None));
        let parts: Vec<&str> = good.split('.').collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut tampered_claims = claims(&f, 1, None);
        tampered_claims.sources[0].energy_wh = WattHours(0.2);
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(serde_json::to_vec(&tampered_claims).expect("json")),
            parts[2]
        );
        assert_eq!(
            run(&f, &tampered, &ChainState::default())
                .err()
                .map(|e| e.code()),
            Some("bad_signature")
        );
        let not_window = sign_compact(&f.key, WINDOW_TYP, br#"{"hello":1}"#).expect("sign");
        assert_eq!(
            run(&f, &not_window, &ChainState::default())
                .err()
                .map(|e| e.code()),
            Some("malformed_payload")
        );
    }
}
