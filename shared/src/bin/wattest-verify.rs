//! `wattest-verify`: checks a Wattest energy certificate offline: signature, claims, revocation
//! status and transparency-log inclusion (and, optionally, log consistency).

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::process::ExitCode;
use wattest_shared::certificate::CertificateError;
use wattest_shared::checkpoint::LogVerifier;
use wattest_shared::transparency::{
    ConsistencyProof, InclusionProof, verify_consistency, verify_inclusion,
};
use wattest_shared::{CertificateClaims, Jwks, verify_certificate};

/// Verify a Wattest energy certificate offline.
///
/// Checks, in order:
///  1. signature: the JWS header (alg PS256 or ES256, fitting the key's type; typ
///     wattest-cert+jwt; no header-supplied keys; no crit), the signing key in the JWKS (by
///     RFC 7638 thumbprint), the signature;
///  2. claims: eat_profile, the validity period (nbf, iat, exp — all required), and that every
///     total reconciles exactly with its itemised figures;
///  3. status: not revoked (from --status, or the status inside a certificate bundle);
///  4. log: the inclusion proof (from --inclusion, or inside the bundle) leads to a checkpoint
///     signed by the log key; with --checkpoint, the proof must be against that checkpoint;
///  5. consistency (with --previous-checkpoint): the log grew append-only since that checkpoint.
///
/// CERT, --jwks and the other inputs are files, http(s) URLs, or `-` (standard input, once).
///
/// Exit status: 0 valid, 1 invalid (any check failed), 2 an input could not be read or is
/// missing (the log key: with a JWKS file, give --log-key or --no-log).
#[derive(Debug, Parser)]
#[command(name = "wattest-verify", version)]
struct Args {
    /// The certificate: the compact JWS, or the JSON bundle returned by
    /// GET /v1/certificates/{id} (which carries the inclusion proof and the status).
    cert: String,
    /// The oracle's JWK Set: its URL, e.g. https://oracle.example/.well-known/jwks.json, or a
    /// saved copy of it. A JWK Set does not carry the log key: with a file, give --log-key (or
    /// --no-log).
    #[arg(long)]
    jwks: String,
    /// The log's verifier key (`<origin>+<key id>+<base64 key>`, served at GET /v1/log/key): the
    /// key itself, a file or a URL. Default: fetched from BASE/v1/log/key when --jwks is the URL
    /// BASE/.well-known/jwks.json. Required otherwise (a JWKS file, or a JWKS URL elsewhere),
    /// unless --no-log: without it the verifier exits 2 and names the key the checkpoint is
    /// signed by.
    #[arg(long)]
    log_key: Option<String>,
    /// Inclusion proof (JSON from GET /v1/log/proofs/inclusion); default: the one in the bundle.
    #[arg(long)]
    inclusion: Option<String>,
    /// A signed checkpoint you trust (e.g. fetched from GET /v1/log/checkpoint or a witness): the
    /// inclusion proof must be against it.
    #[arg(long)]
    checkpoint: Option<String>,
    /// A signed checkpoint you saved earlier: checks the log only grew since (needs --consistency).
    #[arg(long, requires = "consistency")]
    previous_checkpoint: Option<String>,
    /// Consistency proof (JSON from GET /v1/log/proofs/consistency?first=<old size>&second=<size
    /// of the inclusion proof's checkpoint>).
    #[arg(long, requires = "previous_checkpoint")]
    consistency: Option<String>,
    /// Revocation status (JSON from GET /v1/certificates/{id}/status); default: the bundle's.
    #[arg(long)]
    status: Option<String>,
    /// Skip the transparency-log checks: the report's `log inclusion` check then reads
    /// "skipped (--no-log): log inclusion NOT checked" and counts as passed.
    #[arg(long, conflicts_with_all = ["log_key", "inclusion", "checkpoint", "previous_checkpoint"])]
    no_log: bool,
    /// Verify as of this time (RFC 3339) instead of now.
    #[arg(long)]
    at: Option<DateTime<Utc>>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Bearer token for the oracle: reading certificates needs an `auditor` or `compliance`
    /// token (`wattest-oracle token create --role auditor`). Sent only to the origins (scheme,
    /// host and port) of CERT and --status when they are URLs, never to other hosts (a JWKS
    /// mirror, a witness).
    #[arg(long, env = "WATTEST_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The `--token` given and the origins it may be sent to, for [`read_source`]'s URL fetches.
static TOKEN: std::sync::OnceLock<(String, Vec<reqwest::Url>)> = std::sync::OnceLock::new();

fn read_source(source: &str) -> Result<String> {
    if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(text);
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        let url = reqwest::Url::parse(source).with_context(|| format!("{source} is not a URL"))?;
        let mut request = reqwest::blocking::Client::new().get(url.clone());
        if let Some((token, origins)) = TOKEN.get()
            // One origin (RFC 6454): scheme, host and port.
            && origins.iter().any(|o| o.origin() == url.origin())
        {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .with_context(|| format!("fetching {source}"))?;
        if !response.status().is_success() {
            bail!("fetching {source}: HTTP {}", response.status());
        }
        return response.text().with_context(|| format!("reading {source}"));
    }
    std::fs::read_to_string(source).with_context(|| format!("reading {source}"))
}

/// What CERT held: the JWS, and from a bundle its inclusion proof and status.
struct CertInput {
    jws: String,
    proof: Option<InclusionProof>,
    status: Option<serde_json::Value>,
}

fn parse_cert(text: &str) -> Result<CertInput> {
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        return Ok(CertInput {
            jws: trimmed.to_owned(),
            proof: None,
            status: None,
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(trimmed).context("certificate file is JSON but not valid")?;
    let jws = value
        .get("jws")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .context("certificate JSON has no \"jws\" member")?;
    let proof = match value.get("inclusion_proof") {
        Some(p) if !p.is_null() => Some(
            serde_json::from_value(p.clone())
                .context("the bundle's inclusion_proof is malformed")?,
        ),
        _ => None,
    };
    Ok(CertInput {
        jws,
        proof,
        status: value.get("status").filter(|s| !s.is_null()).cloned(),
    })
}

/// The detail of the `log inclusion` check with `--no-log` (quoted by `--no-log`'s help).
const NO_LOG_DETAIL: &str = "skipped (--no-log): log inclusion NOT checked";

/// The log key: literal, file or URL; else fetched from `BASE/v1/log/key` when `--jwks` is the
/// URL `BASE/.well-known/jwks.json`, the oracle the JWKS itself is trusted from.
///
/// Nothing offline can stand in for it: the oracle publishes the log key only at
/// `GET /v1/log/key` (its JWK Set holds the certificate keys alone), a signed checkpoint names
/// its key (name and 4-byte key id) without carrying it, and a key taken from the bundle would
/// be vouched for by the very input it is to check. So with a JWKS file and no `--log-key` this
/// fails with a message saying what to pass; `checkpoint` (the inclusion proof's, else the
/// trusted one) lets it name the key expected.
///
/// # Errors
/// No key to be had (the message names `--log-key` and `--no-log`), an unreadable source, or a
/// text that is not a verifier key.
fn log_key(args: &Args, checkpoint: Option<&str>) -> Result<LogVerifier> {
    let text = match &args.log_key {
        Some(k) if k.starts_with("http://") || k.starts_with("https://") => read_source(k)?,
        Some(k) if std::path::Path::new(k).is_file() || k == "-" => read_source(k)?,
        Some(k) => k.clone(),
        None => match args.jwks.strip_suffix("/.well-known/jwks.json") {
            Some(base) if args.jwks.starts_with("http://") || args.jwks.starts_with("https://") => {
                read_source(&format!("{base}/v1/log/key"))?
            }
            _ => bail!("{}", missing_log_key(args, checkpoint)),
        },
    };
    LogVerifier::parse(text.trim()).context("the log key is not a valid verifier key")
}

/// What to say when no log key can be had: which flag to pass, where the key is served, and
/// the key that `checkpoint` names (unverified: a hint for finding the key, never trusted).
fn missing_log_key(args: &Args, checkpoint: Option<&str>) -> String {
    let mut message = format!(
        "the log key is needed to check the transparency log, and --jwks {} is not an oracle URL ending in /.well-known/jwks.json to fetch it from (a JWK Set does not carry the log key): give --log-key with the oracle's log verifier key: the text served at GET /v1/log/key, a file holding it, or that URL",
        args.jwks
    );
    if let Some((base, _)) = args
        .cert
        .split_once("/v1/certificates/")
        .filter(|(base, _)| base.starts_with("http://") || base.starts_with("https://"))
    {
        let _ = write!(message, " (here --log-key {base}/v1/log/key)");
    }
    if let Some((name, id)) = checkpoint.and_then(log_signature) {
        let _ = write!(
            message,
            "; the inclusion proof's checkpoint says it is signed by log key {name}, key id {id} (a verifier key starting {name}+{id}+)"
        );
    }
    message.push_str(". Or give --no-log to skip the transparency-log checks.");
    message
}

/// The key name and hex key id of the log's signature on a signed checkpoint (the signature
/// line whose key name is the checkpoint's origin); `None` when there is none.
fn log_signature(note: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let origin = note.lines().next()?;
    let (_, signatures) = note.split_once("\n\n")?;
    signatures.lines().find_map(|line| {
        let (name, blob) = line.strip_prefix("\u{2014} ")?.split_once(' ')?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(blob.trim())
            .ok()?;
        let id = blob.get(..4)?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        (name == origin).then(|| (name.to_owned(), id))
    })
}

#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    valid: bool,
    certificate_id: Option<String>,
    checks: Vec<Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<CertificateClaims>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(token) = &args.token {
        let origins = [Some(&args.cert), args.status.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|s| reqwest::Url::parse(s).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .collect();
        let _ = TOKEN.set((token.clone(), origins));
    }
    wattest_shared::tls::install_crypto_provider();
    match run(&args) {
        Ok(report) => {
            let mut text = String::new();
            if args.json {
                text = serde_json::to_string_pretty(&report).unwrap_or_default();
                text.push('\n');
            } else if let Err(err) = render_human(&report, &mut text) {
                eprintln!("error: rendering the report: {err}");
                return ExitCode::from(2);
            }
            // A reader that went away (`| head`) does not change the verdict: the exit status
            // still carries it.
            if let Err(err) = std::io::stdout().lock().write_all(text.as_bytes())
                && err.kind() != std::io::ErrorKind::BrokenPipe
            {
                eprintln!("error: writing the report: {err}");
                return ExitCode::from(2);
            }
            if report.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<Report> {
    let cert = parse_cert(&read_source(&args.cert)?)?;
    let jwks: Jwks = serde_json::from_str(&read_source(&args.jwks)?)
        .context("the JWKS is not a JSON Web Key Set")?;
    let status = match &args.status {
        Some(s) => Some((
            serde_json::from_str::<serde_json::Value>(&read_source(s)?)
                .context("the status is not JSON")?,
            format!("--status {s}"),
        )),
        None => cert.status.clone().map(|s| {
            (
                s,
                "the bundle's status, unsigned: fetch --status from the oracle to rely on it"
                    .to_owned(),
            )
        }),
    };
    let proof = match &args.inclusion {
        Some(p) => Some(
            serde_json::from_str::<InclusionProof>(&read_source(p)?)
                .context("the inclusion proof is malformed")?,
        ),
        None => cert.proof.clone(),
    };
    let trusted = args.checkpoint.as_deref().map(read_source).transpose()?;
    let previous = args
        .previous_checkpoint
        .as_deref()
        .map(read_source)
        .transpose()?;
    let consistency = match &args.consistency {
        Some(c) => Some(
            serde_json::from_str::<ConsistencyProof>(&read_source(c)?)
                .context("the consistency proof is malformed")?,
        ),
        None => None,
    };
    let log = if args.no_log {
        None
    } else {
        let checkpoint = proof
            .as_ref()
            .map(|p| p.checkpoint.as_str())
            .or(trusted.as_deref());
        Some(log_key(args, checkpoint)?)
    };

    let mut checks = Vec::new();
    let now = args.at.unwrap_or_else(Utc::now);
    let claims = match verify_certificate(&cert.jws, &jwks, now) {
        Ok(checked) => {
            checks.push(Check {
                check: "signature",
                ok: true,
                detail: format!("signed by oracle key {}", checked.kid),
            });
            checks.push(Check {
                check: "claims",
                ok: true,
                detail: format!(
                    "valid until {}, every total reconciles",
                    DateTime::from_timestamp(checked.claims.exp, 0)
                        .unwrap_or_default()
                        .to_rfc3339()
                ),
            });
            Some(checked.claims)
        }
        // The signature is checked first: a claims failure means the signature held.
        Err(err @ (CertificateError::Jws(_) | CertificateError::UnknownKid(_))) => {
            checks.push(Check {
                check: "signature",
                ok: false,
                detail: err.to_string(),
            });
            checks.push(Check {
                check: "claims",
                ok: false,
                detail: "not checked: the signature failed".into(),
            });
            None
        }
        Err(err) => {
            checks.push(Check {
                check: "signature",
                ok: true,
                detail: "the signature holds".into(),
            });
            checks.push(Check {
                check: "claims",
                ok: false,
                detail: err.to_string(),
            });
            None
        }
    };

    match status {
        Some((s, source)) => {
            let state = s.get("state").and_then(|v| v.as_str()).unwrap_or("unknown");
            // The certificate another certificate's status names, when it names one.
            let jti = claims.as_ref().map(|c| c.jti.as_str());
            let another = s
                .get("certificate_id")
                .and_then(|v| v.as_str())
                .filter(|named| jti.is_some_and(|jti| jti != *named));
            let detail = match (state, another, jti) {
                (_, Some(named), Some(jti)) => {
                    format!("the status is for certificate {named}, not {jti} ({source})")
                }
                ("valid", ..) => format!("not revoked ({source})"),
                ("revoked", ..) => format!(
                    "REVOKED at {} (reason: {}; {source})",
                    s.get("revoked_at").and_then(|v| v.as_str()).unwrap_or("?"),
                    s.get("reason").and_then(|v| v.as_str()).unwrap_or("?")
                ),
                (other, ..) => format!("unknown status {other:?}"),
            };
            checks.push(Check {
                check: "status",
                ok: state == "valid" && another.is_none(),
                detail,
            });
        }
        None => checks.push(Check {
            check: "status",
            ok: true,
            detail: "not checked: no --status and no status in the certificate bundle".into(),
        }),
    }

    if let Some(log) = &log {
        let proven = match &proof {
            None => {
                checks.push(Check {
                    check: "log inclusion",
                    ok: false,
                    detail: "not in the transparency log: no inclusion proof (give --inclusion, or the bundle from GET /v1/certificates/{id})".into(),
                });
                None
            }
            Some(p) => match verify_inclusion(&cert.jws, p, log) {
                Ok(cp) => {
                    checks.push(Check {
                        check: "log inclusion",
                        ok: true,
                        detail: format!(
                            "leaf {} of {} in log {} (root {})",
                            p.leaf_index,
                            cp.size,
                            cp.origin,
                            wattest_shared::transparency::encode_hash(&cp.root)
                        ),
                    });
                    Some((p.checkpoint.clone(), cp))
                }
                Err(err) => {
                    checks.push(Check {
                        check: "log inclusion",
                        ok: false,
                        detail: format!("not proven in the transparency log: {err}"),
                    });
                    None
                }
            },
        };
        if let (Some(trusted), Some((_, cp))) = (&trusted, &proven) {
            let result = log.verify(trusted).map_err(|e| e.to_string()).and_then(|t| {
                if t.size == cp.size && t.root == cp.root && t.origin == cp.origin {
                    Ok(format!("the proof is against the given checkpoint (size {})", t.size))
                } else if t.size == cp.size {
                    Err(format!(
                        "SPLIT VIEW: the given checkpoint and the inclusion proof's are both signed for tree size {} but their roots differ: the log showed two different trees",
                        t.size
                    ))
                } else {
                    Err(format!(
                        "the inclusion proof is for tree size {} but the given checkpoint has size {}; fetch GET /v1/log/proofs/inclusion?certificate_id=…&tree_size={}",
                        cp.size, t.size, t.size
                    ))
                }
            });
            checks.push(match result {
                Ok(detail) => Check {
                    check: "checkpoint",
                    ok: true,
                    detail,
                },
                Err(detail) => Check {
                    check: "checkpoint",
                    ok: false,
                    detail,
                },
            });
        }
        if let (Some(previous), Some(c)) = (&previous, &consistency) {
            let result = verify_consistency(previous, c, log)
                .map_err(|e| e.to_string())
                .and_then(|new| match &proven {
                    Some((_, cp)) if cp.size == new.size && cp.root == new.root => Ok(format!(
                        "the log grew append-only from size {} to {}",
                        c.first, c.second
                    )),
                    Some((_, cp)) => Err(format!(
                        "the consistency proof ends at size {} but the inclusion proof's checkpoint has size {}",
                        new.size, cp.size
                    )),
                    None => Err("no proven checkpoint to compare with".into()),
                });
            checks.push(match result {
                Ok(detail) => Check {
                    check: "consistency",
                    ok: true,
                    detail,
                },
                Err(detail) => Check {
                    check: "consistency",
                    ok: false,
                    detail,
                },
            });
        }
    } else {
        checks.push(Check {
            check: "log inclusion",
            ok: true,
            detail: NO_LOG_DETAIL.into(),
        });
    }

    Ok(Report {
        valid: checks.iter().all(|c| c.ok),
        certificate_id: claims.as_ref().map(|c| c.jti.clone()),
        checks,
        claims,
    })
}

/// The report as people read it (`--json` gives the same as JSON).
fn render_human(report: &Report, out: &mut String) -> std::fmt::Result {
    let verdict = if report.valid { "VALID" } else { "INVALID" };
    writeln!(
        out,
        "{verdict} certificate {}",
        report.certificate_id.as_deref().unwrap_or("(unreadable)")
    )?;
    for c in &report.checks {
        writeln!(
            out,
            "  [{}] {:<14} {}",
            if c.ok { "ok" } else { "FAIL" },
            c.check,
            c.detail
        )?;
    }
    if let Some(c) = &report.claims {
        writeln!(out, "  ---")?;
        writeln!(out, "  issuer        {}", c.iss)?;
        writeln!(
            out,
            "  status        {:?}{}",
            c.status,
            if c.status_reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.status_reasons.join(", "))
            }
        )?;
        writeln!(
            out,
            "  node          {} ({}, zone {}, attestation {})",
            c.node.id,
            c.node.name,
            c.grid_zone,
            c.node.attestation_level.as_str()
        )?;
        writeln!(
            out,
            "  job / model   {} / {}",
            c.job_id.as_deref().unwrap_or("-"),
            c.model_id.as_deref().unwrap_or("-")
        )?;
        writeln!(
            out,
            "  period        {} .. {}",
            c.period.start.to_rfc3339(),
            c.period.end.to_rfc3339()
        )?;
        writeln!(
            out,
            "  energy        {} Wh consumed, {} Wh grid, {} Wh solar",
            c.energy.consumed_wh, c.energy.grid_wh, c.energy.solar_wh
        )?;
        writeln!(
            out,
            "  intensity     {} gCO2e/kWh mean over {} hour(s), {} factors",
            c.intensity.g_co2e_per_kwh,
            c.intensity.hourly.len(),
            c.intensity.factor_type
        )?;
        for h in &c.intensity.hourly {
            writeln!(
                out,
                "    {}  {} g/kWh  {} Wh grid  ({}: {}{})",
                h.hour.format("%Y-%m-%dT%H:%MZ"),
                h.g_co2e_per_kwh,
                h.grid_wh,
                h.provenance.provider,
                h.provenance.dataset,
                if h.provenance.estimated {
                    ", estimated"
                } else {
                    ""
                }
            )?;
        }
        writeln!(
            out,
            "  emissions     {} gCO2e (location-based)",
            c.emissions.location_based_g_co2e
        )?;
        writeln!(
            out,
            "  avoided       {} gCO2e (reported apart, not netted)",
            c.avoided_emissions.g_co2e
        )?;
        writeln!(
            out,
            "  reward        {} EUR = {} node owner + {} cooperative fund",
            c.reward.total, c.reward.node_owner, c.reward.cooperative_fund
        )?;
        writeln!(
            out,
            "  telemetry     seq {}..{} ({} windows), chain head {}",
            c.windows.first_seq, c.windows.last_seq, c.windows.count, c.windows.chain_head
        )?;
    }
    Ok(())
}
