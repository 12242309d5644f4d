//! `wattest-verify`: checks a Wattest energy certificate offline: signature, claims, revocation
//! status and transparency-log inclusion (and, optionally, log consistency).

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::process::ExitCode;
use wattest_shared::certificate::{CertificateError, rfc3339};
use wattest_shared::checkpoint::{CheckpointError, LogVerifier};
use wattest_shared::transparency::{
    ConsistencyProof, InclusionProof, verify_consistency, verify_inclusion,
};
use wattest_shared::{CertificateClaims, Jwks, verify_certificate};

/// Verify a Wattest energy certificate offline.
///
/// Checks, in order:
///  1. signature: header alg PS256 or ES256 (an allow-list: none, HS*, RS*, PS384, ES384… are
///     refused), fitting the JWKS key's type (PS256 an RSA key, ES256 a P-256 key); typ
///     wattest-cert+jwt; no jwk, jku, x5u, x5c or x5t header members and no crit; the kid is
///     the RFC 7638 thumbprint of a JWKS key (recomputed, not trusted from the JWKS); the
///     signature;
///  2. claims: exp, nbf and iat present; eat_profile and wattest.calculation_version ("2");
///     nbf and iat at most now + 60 s, exp after now; every total recomputed exactly; with
///     --issuer, iss is that URL;
///  3. status: not revoked, from --status or else the status inside a certificate bundle; the
///     status must name this certificate (certificate_id). It is unsigned: only one fetched from
///     the oracle with the token counts as authenticated. Without any status the report says
///     "revocation NOT checked", with an unauthenticated one that it "relied on the bundle's
///     unsigned status (not authenticated)"; both pass unless --require-status;
///  4. log inclusion: the inclusion proof (from --inclusion, or inside the bundle) is for this
///     JWS's leaf hash and leads to a checkpoint signed by the log key; a bare JWS without
///     proof fails; --no-log skips this check;
///  5. checkpoint (with --checkpoint): the proof must be against that (trusted) checkpoint;
///  6. consistency (with --previous-checkpoint and --consistency): the log grew append-only
///     from the saved checkpoint to the proof's checkpoint;
///  7. bundle (when CERT is a bundle): its members that restate the JWS agree with it: id is
///     the payload's jti, hash is the base64url SHA-256 of the JWS's ASCII bytes, claims is the
///     payload (compared as JSON values). A member that is absent (or null) is not compared;
///     one present and different fails the check, which names it.
///
/// CERT, --jwks and the other inputs are files, http(s) URLs, or `-` (standard input, for one
/// input only: a second `-` is refused, exit 2). Plain http:// URLs are refused (exit 2) unless
/// their host is this machine (127.0.0.0/8, ::1, localhost) or --allow-http is given; the token
/// never goes over plain HTTP to another host.
///
/// The report's first line is `VALID certificate <id>` or `INVALID certificate <id>`: the id is
/// the JWS payload's jti whenever the payload parses (even when a check fails), else the
/// bundle's id, else `(unreadable)`. Times are RFC 3339 UTC.
///
/// Exit status: 0 valid, 1 invalid (any check failed; with --require-status, also a missing or
/// unauthenticated status), 2 an input could not be read, does not parse (a proof or status
/// that is not the expected JSON, a --checkpoint or --previous-checkpoint that is not a signed
/// checkpoint note) or is missing (the log key: with a JWKS file, give --log-key or --no-log),
/// standard input was named twice, or a plain-HTTP URL was refused.
#[derive(Debug, Parser)]
#[command(name = "wattest-verify", version, verbatim_doc_comment)]
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
    /// It must name the certificate (certificate_id). Only the oracle's status URL fetched with
    /// the token (over https://, or http:// to this machine) authenticates it; a saved file is
    /// only as trustworthy as where it came from.
    #[arg(long)]
    status: Option<String>,
    /// Fail the status check (exit 1) unless the status was fetched from the oracle with the
    /// token, over https:// or from a loopback host: --status URL, or the bundle when CERT is
    /// the oracle's certificate URL. A missing status, a bundle file's status or a --status
    /// file then fails. Without this flag they pass, and the report says "revocation NOT
    /// checked" or that it "relied on the bundle's unsigned status (not authenticated)".
    #[arg(long)]
    require_status: bool,
    /// Accept plain http:// URLs (and redirects to them) on hosts other than this machine for
    /// CERT, --jwks, --log-key, --inclusion, --consistency, --checkpoint,
    /// --previous-checkpoint and --status. Without it only loopback hosts (127.0.0.0/8, ::1,
    /// localhost) may be reached over plain HTTP: elsewhere anyone on the path could substitute
    /// the keys, proofs or status it serves. The token still never goes over plain HTTP to
    /// another host: a URL that would carry it is refused even with this flag.
    #[arg(long)]
    allow_http: bool,
    /// Skip the transparency-log checks: the report's `log inclusion` check then reads
    /// "skipped (--no-log): log inclusion NOT checked" and counts as passed.
    #[arg(long, conflicts_with_all = ["log_key", "inclusion", "checkpoint", "previous_checkpoint"])]
    no_log: bool,
    /// The oracle you trust to have issued the certificate: its public URL, as signed in the
    /// `iss` claim (the oracle's --public-url; a trailing `/` on either side is ignored). The
    /// claims check fails for a certificate another oracle issued. The JWKS decides which keys
    /// are trusted; this also pins whose certificate it is, for a JWKS shared by several
    /// oracles or fetched from a mirror. Default: any issuer.
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// Verify as of this time (RFC 3339) instead of now.
    #[arg(long)]
    at: Option<DateTime<Utc>>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Bearer token for the oracle: CERT (GET /v1/certificates/{id}) and --status
    /// (GET /v1/certificates/{id}/status) need an `auditor` or `compliance` token; --inclusion
    /// and --consistency (GET /v1/log/proofs/*) an `auditor` token (a `compliance` token gets
    /// 403); `admin` may do all. An `auditor` token serves every request
    /// (`wattest-oracle token create --role auditor`). Sent only
    /// with the requests for CERT, --status, --inclusion and --consistency when they are URLs
    /// (and redirects within the same origin); never with the requests for --jwks, the log key,
    /// --checkpoint or --previous-checkpoint, even on the same host, nor to URLs found inside
    /// the certificate or bundle; never over plain http:// to a host other than this machine
    /// (such a URL is refused, even with --allow-http).
    #[arg(long, env = "WATTEST_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// A plain `http://` URL to a host other than this machine
/// ([`wattest_shared::net::is_exposed`]).
fn is_exposed(url: &reqwest::Url) -> bool {
    wattest_shared::net::is_exposed(url.scheme(), url.host_str())
}

/// `source` as a URL when it is one (`http://` or `https://`), else `None` (a file, `-`, a
/// literal key).
fn web_url(source: &str) -> Result<Option<reqwest::Url>> {
    if source.starts_with("http://") || source.starts_with("https://") {
        reqwest::Url::parse(source)
            .map(Some)
            .with_context(|| format!("{source} is not a URL"))
    } else {
        Ok(None)
    }
}

/// The inputs that may be URLs: the flag naming each, its value, what it carries, and whether
/// its request carries the token (CERT, --status, --inclusion and --consistency: the oracle's
/// auditor endpoints; never the public keys and checkpoints).
fn url_inputs(args: &Args) -> Vec<(&'static str, &str, &'static str, bool)> {
    [
        ("CERT", Some(&args.cert), "the certificate", true),
        (
            "--jwks",
            Some(&args.jwks),
            "the oracle's signing keys",
            false,
        ),
        ("--log-key", args.log_key.as_ref(), "the log key", false),
        (
            "--inclusion",
            args.inclusion.as_ref(),
            "the inclusion proof",
            true,
        ),
        (
            "--consistency",
            args.consistency.as_ref(),
            "the consistency proof",
            true,
        ),
        (
            "--checkpoint",
            args.checkpoint.as_ref(),
            "the checkpoint",
            false,
        ),
        (
            "--previous-checkpoint",
            args.previous_checkpoint.as_ref(),
            "the checkpoint",
            false,
        ),
        (
            "--status",
            args.status.as_ref(),
            "the revocation status",
            true,
        ),
    ]
    .into_iter()
    .filter_map(|(flag, source, what, token)| source.map(|s| (flag, s.as_str(), what, token)))
    .collect()
}

/// Refuses, before anything is fetched, a plain `http://` URL to another host: without
/// `--allow-http` for any input (an on-path attacker could substitute the keys, proofs or
/// status), and even with it for a URL whose request would carry the token (it would travel
/// in cleartext). The log key fetched by default shares `--jwks`'s origin, so it is covered.
///
/// # Errors
/// The first such URL, with why and what to pass.
fn check_transport(args: &Args) -> Result<()> {
    for (flag, source, what, carries_token) in url_inputs(args) {
        let Some(url) = web_url(source)? else {
            continue;
        };
        if !is_exposed(&url) {
            continue;
        }
        let host = url.host_str().unwrap_or("?");
        if carries_token && args.token.is_some() {
            bail!(
                "refusing {flag} {source}: it is plain http:// to {host}, not this machine, and its request would carry the bearer token (WATTEST_TOKEN / --token) in cleartext for anyone on the path to read and reuse; use an https:// URL, or give no token. --allow-http does not lift this"
            );
        }
        if !args.allow_http {
            bail!(
                "refusing {flag} {source}: it is plain http:// to {host}, not this machine (127.0.0.0/8, ::1, localhost), so anyone on the path could substitute {what}; use an https:// URL or a saved file, or pass --allow-http to accept plain HTTP anyway"
            );
        }
    }
    Ok(())
}

/// Refuses `-` (standard input) for more than one input: the first would read it to its end,
/// leaving the next nothing.
///
/// # Errors
/// The inputs that name it.
fn check_stdin_once(args: &Args) -> Result<()> {
    let stdin: Vec<&str> = url_inputs(args)
        .into_iter()
        .filter(|(_, source, ..)| *source == "-")
        .map(|(flag, ..)| flag)
        .collect();
    if stdin.len() > 1 {
        bail!(
            "standard input can be used for only one input: {} are all `-`",
            stdin.join(", ")
        );
    }
    Ok(())
}

/// Reads a file, `-` (standard input) or URL. `with_token`: whether this request may carry
/// `--token` (see [`url_inputs`]); it never does over plain HTTP to another host. Redirects
/// are followed (at most 10) but not to plain HTTP on another host unless `--allow-http`;
/// the token goes on only within the same origin (reqwest drops `Authorization` when the
/// scheme, host or port changes).
fn read_source(args: &Args, source: &str, with_token: bool) -> Result<String> {
    if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(text);
    }
    if let Some(url) = web_url(source)? {
        // check_transport has refused these already: a second guard where the request is made.
        let exposed = is_exposed(&url);
        if exposed && !args.allow_http {
            bail!("refusing plain http:// to another host: {source} (pass --allow-http)");
        }
        let token = args.token.as_deref().filter(|_| with_token);
        if exposed && token.is_some() {
            bail!("refusing to send the token over plain http:// to {source}");
        }
        let allow_http = args.allow_http;
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 10 {
                    attempt.error("too many redirects")
                } else if !matches!(attempt.url().scheme(), "http" | "https") {
                    let refused = format!("redirected to {}, not an http(s) URL", attempt.url());
                    attempt.error(refused)
                } else if is_exposed(attempt.url()) && !allow_http {
                    let refused = format!(
                        "redirected to plain http:// on another host ({}): refused, anyone on the path could substitute what it serves (pass --allow-http to accept it)",
                        attempt.url()
                    );
                    attempt.error(refused)
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .context("building the HTTP client")?;
        let mut request = client.get(url);
        if let Some(token) = token {
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

/// Whether the status read from `source` (CERT or --status) came authenticated: fetched from a
/// URL with the token, over https:// or from this machine, so from the oracle the token is for
/// and unaltered on the way.
fn fetched_with_token(args: &Args, source: &str) -> bool {
    args.token.is_some()
        && web_url(source)
            .ok()
            .flatten()
            .is_some_and(|url| !is_exposed(&url))
}

/// What CERT held: the JWS, and from a bundle its inclusion proof and status.
struct CertInput {
    /// The bundle's `id` (none for a bare JWS).
    id: Option<String>,
    jws: String,
    proof: Option<InclusionProof>,
    status: Option<serde_json::Value>,
    /// The bundle's members that restate the JWS (`None` for a bare JWS).
    restated: Option<Restated>,
}

/// A bundle's members that restate what the JWS holds, as given (absent or `null`: `None`):
/// the `bundle` check compares each present one with the JWS ([`bundle_check`]).
struct Restated {
    /// Must be the payload's `jti`.
    id: Option<serde_json::Value>,
    /// Must be base64url (no padding) of SHA-256 over the JWS's ASCII bytes.
    hash: Option<serde_json::Value>,
    /// Must be the payload, compared as JSON values.
    claims: Option<serde_json::Value>,
}

fn parse_cert(text: &str) -> Result<CertInput> {
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        return Ok(CertInput {
            id: None,
            jws: trimmed.to_owned(),
            proof: None,
            status: None,
            restated: None,
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(trimmed).context("certificate file is JSON but not valid")?;
    let jws = value
        .get("jws")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .context("certificate JSON has no \"jws\" member")?;
    let member = |name: &str| value.get(name).filter(|v| !v.is_null()).cloned();
    let proof = match value.get("inclusion_proof") {
        Some(p) if !p.is_null() => Some(
            serde_json::from_value(p.clone())
                .context("the bundle's inclusion_proof is malformed")?,
        ),
        _ => None,
    };
    Ok(CertInput {
        id: value.get("id").and_then(|v| v.as_str()).map(str::to_owned),
        jws,
        proof,
        status: value.get("status").filter(|s| !s.is_null()).cloned(),
        restated: Some(Restated {
            id: member("id"),
            hash: member("hash"),
            claims: member("claims"),
        }),
    })
}

/// The `bundle` check: every member of the bundle that restates the JWS (`restated`) agrees
/// with it: `id` is the payload's `jti`, `hash` is base64url SHA-256 of the JWS, `claims` is
/// the payload as JSON. An absent member (a trimmed bundle) is not compared; one present and
/// different fails, naming the member, so that nobody reading the bundle's `claims` reads
/// figures the signature does not cover.
fn bundle_check(
    restated: &Restated,
    jws: &str,
    payload: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Check {
    let mut compared = Vec::new();
    let mut problems = Vec::new();
    if let Some(id) = &restated.id {
        compared.push("id");
        match payload.and_then(|p| p.get("jti")) {
            Some(jti) if jti == id => {}
            Some(jti) => problems.push(format!(
                "the bundle's id {id} is not the JWS payload's jti {jti}"
            )),
            None => problems.push(format!(
                "the bundle's id {id} cannot be matched: the JWS payload has no jti"
            )),
        }
    }
    if let Some(hash) = &restated.hash {
        compared.push("hash");
        let actual = wattest_shared::jws::jws_hash(jws);
        if hash.as_str() != Some(actual.as_str()) {
            problems.push(format!(
                "the bundle's hash {hash} is not the SHA-256 of the JWS (base64url {actual})"
            ));
        }
    }
    if let Some(claims) = &restated.claims {
        compared.push("claims");
        match payload {
            Some(p) => {
                let payload = serde_json::Value::Object(p.clone());
                if let Some(at) = difference(claims, &payload, "claims") {
                    problems.push(format!("the bundle's claims are not the JWS payload: {at}"));
                }
            }
            None => problems.push(
                "the bundle's claims cannot be matched: the JWS payload is not a JSON object"
                    .into(),
            ),
        }
    }
    if !problems.is_empty() {
        return Check {
            check: "bundle",
            ok: false,
            detail: problems.join("; "),
        };
    }
    let detail = match compared.as_slice() {
        [] => "the bundle restates nothing of the JWS (no id, hash or claims)".to_owned(),
        [one] => format!("the bundle's {one} agrees with the JWS"),
        [init @ .., last] => format!(
            "the bundle's {} and {last} agree with the JWS",
            init.join(", ")
        ),
    };
    Check {
        check: "bundle",
        ok: true,
        detail,
    }
}

/// Where `bundle` (the bundle's claims) first differs from `jws` (the JWS payload), `at` the
/// path so far (`claims["wattest.emissions"]["location_based_g_co2e"]`); `None` when they are equal
/// as JSON values (member order and formatting aside).
fn difference(bundle: &serde_json::Value, jws: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match (bundle, jws) {
        (Value::Object(b), Value::Object(j)) => {
            let keys: std::collections::BTreeSet<&String> = b.keys().chain(j.keys()).collect();
            keys.into_iter().find_map(|key| {
                let here = format!("{at}[{}]", Value::String(key.clone()));
                match (b.get(key), j.get(key)) {
                    (Some(b), Some(j)) => difference(b, j, &here),
                    (Some(_), None) => Some(format!("{here} is not in the JWS payload")),
                    (None, _) => Some(format!("{here} is missing from the bundle")),
                }
            })
        }
        (Value::Array(b), Value::Array(j)) if b.len() == j.len() => b
            .iter()
            .zip(j)
            .enumerate()
            .find_map(|(i, (b, j))| difference(b, j, &format!("{at}[{i}]"))),
        _ if bundle == jws => None,
        _ => Some(format!(
            "{at} is {} in the bundle, {} in the JWS",
            brief(bundle),
            brief(jws)
        )),
    }
}

/// `value` as JSON, cut to 80 characters.
fn brief(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(79).collect::<String>())
    } else {
        text
    }
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
        Some(k) if k.starts_with("http://") || k.starts_with("https://") => {
            read_source(args, k, false)?
        }
        Some(k) if std::path::Path::new(k).is_file() || k == "-" => read_source(args, k, false)?,
        Some(k) => k.clone(),
        None => match args.jwks.strip_suffix("/.well-known/jwks.json") {
            Some(base) if args.jwks.starts_with("http://") || args.jwks.starts_with("https://") => {
                read_source(args, &format!("{base}/v1/log/key"), false)?
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

/// A revocation status read from --status or the bundle, and where it came from.
struct StatusInput {
    value: serde_json::Value,
    /// Fetched from the oracle with the token (see [`fetched_with_token`]).
    authenticated: bool,
    /// Where it came from, for the report ("the bundle's unsigned status (not authenticated)").
    source: String,
}

/// The `status` check of the certificate whose id is `jti` (`None`: its claims did not
/// verify). A status must name its certificate (`certificate_id`, which the oracle always
/// sends): without one, or naming another, it fails. Without any status, or with one not
/// fetched from the oracle with the token, it passes saying so, or fails under
/// `--require-status` (`require`).
fn status_check(status: Option<&StatusInput>, jti: Option<&str>, require: bool) -> Check {
    let fetch = format!(
        "fetch --status https://ORACLE/v1/certificates/{}/status with an auditor token",
        jti.unwrap_or("{id}")
    );
    let Some(status) = status else {
        return if require {
            Check {
                check: "status",
                ok: false,
                detail: format!(
                    "revocation NOT checked, and --require-status was given: no --status and no status in the certificate bundle; {fetch}, or give CERT as the oracle's certificate URL"
                ),
            }
        } else {
            Check {
                check: "status",
                ok: true,
                detail: format!(
                    "revocation NOT checked: no --status and no status in the certificate bundle ({fetch}; --require-status makes this a failure)"
                ),
            }
        };
    };
    let source = &status.source;
    let s = &status.value;
    let state = s.get("state").and_then(|v| v.as_str()).unwrap_or("unknown");
    let named = s.get("certificate_id").and_then(|v| v.as_str());
    let (ok, detail) = match (named, jti) {
        (None, _) => (
            false,
            format!(
                "the status names no certificate (no certificate_id), so it may be another certificate's: refused ({source})"
            ),
        ),
        (Some(_), None) => (
            false,
            format!(
                "not checked: the certificate did not verify, so its id is not established and the status (state {state:?}) cannot be matched to it ({source})"
            ),
        ),
        (Some(named), Some(jti)) if named != jti => (
            false,
            format!("the status is for certificate {named}, not {jti} ({source})"),
        ),
        _ => match state {
            "valid" if status.authenticated => (true, format!("not revoked ({source})")),
            "valid" if require => (
                false,
                format!(
                    "not authenticated, and --require-status was given: the status says not revoked, but it is {source}; {fetch}, or give CERT as the oracle's certificate URL"
                ),
            ),
            "valid" => (
                true,
                format!(
                    "not revoked, but this relied on {source}: anyone holding it could have edited it; {fetch} (--require-status makes this a failure)"
                ),
            ),
            "revoked" => (
                false,
                format!(
                    "REVOKED at {} (reason: {}; {source})",
                    s.get("revoked_at").and_then(|v| v.as_str()).unwrap_or("?"),
                    s.get("reason").and_then(|v| v.as_str()).unwrap_or("?")
                ),
            ),
            other => (false, format!("unknown status {other:?} ({source})")),
        },
    };
    Check {
        check: "status",
        ok,
        detail,
    }
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
    if let Err(err) = check_stdin_once(&args) {
        eprintln!("error: {err:#}");
        return ExitCode::from(2);
    }
    // Before any connection: a refused URL is never contacted.
    if let Err(err) = check_transport(&args) {
        eprintln!("error: {err:#}");
        return ExitCode::from(2);
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
    let cert = parse_cert(&read_source(args, &args.cert, true)?)?;
    let jwks: Jwks = serde_json::from_str(&read_source(args, &args.jwks, false)?)
        .context("the JWKS is not a JSON Web Key Set")?;
    let status = match &args.status {
        Some(s) => Some(StatusInput {
            value: serde_json::from_str(&read_source(args, s, true)?)
                .context("the status is not JSON")?,
            authenticated: fetched_with_token(args, s),
            source: if fetched_with_token(args, s) {
                format!("the status fetched from {s} with the token")
            } else if web_url(s).ok().flatten().is_some() {
                format!(
                    "the unsigned status from {s}, fetched without the token (not authenticated)"
                )
            } else {
                format!("the unsigned status in --status {s} (not authenticated)")
            },
        }),
        None => cert.status.clone().map(|value| StatusInput {
            value,
            authenticated: fetched_with_token(args, &args.cert),
            source: if fetched_with_token(args, &args.cert) {
                format!(
                    "the bundle's status, fetched from {} with the token",
                    args.cert
                )
            } else {
                "the bundle's unsigned status (not authenticated)".to_owned()
            },
        }),
    };
    let proof = match &args.inclusion {
        Some(p) => Some(
            serde_json::from_str::<InclusionProof>(&read_source(args, p, true)?)
                .context("the inclusion proof is malformed")?,
        ),
        None => cert.proof.clone(),
    };
    let trusted = args
        .checkpoint
        .as_deref()
        .map(|c| read_source(args, c, false))
        .transpose()?;
    let previous = args
        .previous_checkpoint
        .as_deref()
        .map(|c| read_source(args, c, false))
        .transpose()?;
    let consistency = match &args.consistency {
        Some(c) => Some(
            serde_json::from_str::<ConsistencyProof>(&read_source(args, c, true)?)
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
    // A checkpoint given to compare with must at least be one: one that does not parse is an
    // input error (exit 2), like a proof that is not JSON; a well-formed one whose signature or
    // origin is wrong fails its check below (exit 1).
    if let Some(log) = &log {
        for (flag, source, note) in [
            ("--checkpoint", &args.checkpoint, &trusted),
            (
                "--previous-checkpoint",
                &args.previous_checkpoint,
                &previous,
            ),
        ] {
            if let (Some(source), Some(note)) = (source, note)
                && let Err(err @ CheckpointError::Malformed(_)) = log.verify(note)
            {
                bail!("{flag} {source} is not a signed checkpoint: {err}");
            }
        }
    }

    let mut checks = Vec::new();
    let now = args.at.unwrap_or_else(Utc::now);
    // The payload as it reads before any check: its jti names the certificate in the report
    // whatever fails (the status check below still matches only a verified jti).
    let payload = unverified_payload(&cert.jws);
    let claims = match verify_certificate(&cert.jws, &jwks, now) {
        Ok(checked) => {
            checks.push(Check {
                check: "signature",
                ok: true,
                detail: format!("signed by oracle key {}", checked.kid),
            });
            match foreign_issuer(args.issuer.as_deref(), &checked.claims.iss) {
                Some(detail) => {
                    checks.push(Check {
                        check: "claims",
                        ok: false,
                        detail,
                    });
                    None
                }
                None => {
                    checks.push(Check {
                        check: "claims",
                        ok: true,
                        detail: format!(
                            "valid until {}, every total reconciles",
                            rfc3339(checked.claims.exp)
                        ),
                    });
                    Some(checked.claims)
                }
            }
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

    checks.push(status_check(
        status.as_ref(),
        claims.as_ref().map(|c| c.jti.as_str()),
        args.require_status,
    ));

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
    if let Some(restated) = &cert.restated {
        checks.push(bundle_check(restated, &cert.jws, payload.as_ref()));
    }

    let certificate_id = claims
        .as_ref()
        .map(|c| c.jti.clone())
        .or_else(|| {
            payload
                .as_ref()
                .and_then(|p| p.get("jti"))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .or(cert.id);
    Ok(Report {
        valid: checks.iter().all(|c| c.ok),
        certificate_id,
        checks,
        claims,
    })
}

/// The JSON payload of the compact JWS `jws`, unverified; `None` when it is not three
/// dot-separated parts whose second is base64url of a JSON object.
/// With `--issuer`, why `iss` is not the trusted issuer (`None`: it is, or none was given). Both
/// sides are compared without one trailing `/`: `iss` is the oracle's --public-url as its
/// operator wrote it, with or without one.
fn foreign_issuer(trusted: Option<&str>, iss: &str) -> Option<String> {
    let trusted = trusted?;
    let bare = |url: &str| url.strip_suffix('/').unwrap_or(url).to_owned();
    (bare(trusted) != bare(iss))
        .then(|| format!("issued by {iss}, not by the trusted issuer {trusted} (--issuer)"))
}

fn unverified_payload(jws: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_slice(&wattest_shared::jws::unverified_payload(jws)?).ok()
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
            c.period
                .start
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            c.period
                .end
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("wattest-verify").chain(argv.iter().copied())).unwrap()
    }

    #[test]
    fn plain_http_is_exposed_unless_to_this_machine() {
        for url in [
            "http://127.0.0.1:8080/x",
            "http://127.1.2.3/x",
            "http://[::1]:8080/x",
            "http://localhost/x",
            "http://LOCALHOST:1/x",
        ] {
            assert!(!is_exposed(&reqwest::Url::parse(url).unwrap()), "{url}");
        }
        for url in [
            "http://192.0.2.1/x",
            "http://10.0.0.1/x",
            "http://[::ffff:192.0.2.1]/x",
            "http://localhost.example/x",
            "http://127.0.0.1.example/x",
            "http://oracle.example/x",
        ] {
            assert!(is_exposed(&reqwest::Url::parse(url).unwrap()), "{url}");
        }
    }

    #[test]
    fn plain_http_to_another_host_is_refused_for_every_input() {
        let far = "http://192.0.2.1/x";
        let near = "http://127.0.0.1:9/x";
        for flag in [
            "--jwks",
            "--log-key",
            "--inclusion",
            "--checkpoint",
            "--status",
        ] {
            let mut argv = vec!["cert.json", "--jwks", "jwks.json", flag, far];
            if flag == "--jwks" {
                argv.drain(1..3);
            }
            let err = check_transport(&args(&argv)).unwrap_err().to_string();
            assert!(err.contains(&format!("refusing {flag} {far}")), "{err}");
            assert!(err.contains("--allow-http"), "{err}");
            let mut allowed = argv.clone();
            allowed.push("--allow-http");
            check_transport(&args(&allowed)).unwrap();
            let mut local = argv.clone();
            *local.iter_mut().find(|a| **a == far).unwrap() = near;
            check_transport(&args(&local)).unwrap();
        }
        for argv in [
            vec![far, "--jwks", "jwks.json"],
            vec![
                "c.json",
                "--jwks",
                "j.json",
                "--previous-checkpoint",
                far,
                "--consistency",
                "c.json",
            ],
            vec![
                "c.json",
                "--jwks",
                "j.json",
                "--previous-checkpoint",
                "p.txt",
                "--consistency",
                far,
            ],
        ] {
            assert!(check_transport(&args(&argv)).is_err(), "{argv:?}");
        }
        check_transport(&args(&["https://oracle.example/c", "--jwks", "j.json"])).unwrap();
    }

    #[test]
    fn the_token_never_goes_over_plain_http_to_another_host() {
        let far = "http://192.0.2.1/x";
        for argv in [
            vec![far, "--jwks", "j.json"],
            vec!["c.json", "--jwks", "j.json", "--status", far],
            vec!["c.json", "--jwks", "j.json", "--inclusion", far],
        ] {
            let mut argv = argv.clone();
            argv.extend(["--token", "secret", "--allow-http"]);
            let err = check_transport(&args(&argv)).unwrap_err().to_string();
            assert!(err.contains("token"), "{err}");
            assert!(err.contains("--allow-http does not lift this"), "{err}");
        }
        // A URL whose request carries no token may be plain HTTP with --allow-http.
        check_transport(&args(&[
            "c.json",
            "--jwks",
            far,
            "--token",
            "secret",
            "--allow-http",
        ]))
        .unwrap();
    }

    fn status(value: serde_json::Value, authenticated: bool) -> StatusInput {
        StatusInput {
            value,
            authenticated,
            source: if authenticated {
                "the status fetched from https://o/s with the token".into()
            } else {
                "the bundle's unsigned status (not authenticated)".into()
            },
        }
    }

    #[test]
    fn the_status_must_name_the_certificate_and_may_be_required() {
        let valid = serde_json::json!({"certificate_id": "c1", "state": "valid"});
        let jti = Some("c1");
        // Missing: passes saying so, fails when required.
        let c = status_check(None, jti, false);
        assert!(c.ok && c.detail.contains("revocation NOT checked"), "{c:?}");
        let c = status_check(None, jti, true);
        assert!(!c.ok && c.detail.contains("--require-status"), "{c:?}");
        // Unauthenticated: passes saying what it relied on, fails when required.
        let c = status_check(Some(&status(valid.clone(), false)), jti, false);
        assert!(
            c.ok && c
                .detail
                .contains("relied on the bundle's unsigned status (not authenticated)"),
            "{c:?}"
        );
        let c = status_check(Some(&status(valid.clone(), false)), jti, true);
        assert!(!c.ok && c.detail.contains("--require-status"), "{c:?}");
        // Authenticated: passes either way.
        for require in [false, true] {
            let c = status_check(Some(&status(valid.clone(), true)), jti, require);
            assert!(c.ok, "{c:?}");
        }
        // No certificate_id, another certificate, an unverified certificate: refused, even
        // authenticated.
        let anonymous = serde_json::json!({"state": "valid"});
        let c = status_check(Some(&status(anonymous, true)), jti, false);
        assert!(!c.ok && c.detail.contains("no certificate_id"), "{c:?}");
        let c = status_check(Some(&status(valid.clone(), true)), Some("c2"), false);
        assert!(
            !c.ok && c.detail.contains("the status is for certificate c1"),
            "{c:?}"
        );
        let c = status_check(Some(&status(valid, true)), None, false);
        assert!(!c.ok, "{c:?}");
    }
}
