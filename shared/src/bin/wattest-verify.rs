//! `wattest-verify`: checks a Wattest energy certificate offline against the oracle's JWKS.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::io::Read;
use std::process::ExitCode;
use wattest_shared::{Jwks, verify_certificate};

/// Verify a Wattest energy certificate offline.
///
/// Checks, in order: the JWS header (PS256 only, typ wattest-cert+jwt, no header-supplied keys),
/// that the signing key is in the JWKS (by RFC 7638 thumbprint), the signature, the validity
/// period (nbf, iat, exp) and that every total reconciles with its itemised figures.
///
/// Exit status: 0 valid, 1 invalid, 2 the inputs could not be read.
#[derive(Debug, Parser)]
#[command(name = "wattest-verify", version)]
struct Args {
    /// The certificate: the compact JWS, or the JSON returned by GET /v1/certificates/{id}, read
    /// from a file, an http(s) URL, or `-` for standard input.
    cert: String,
    /// The oracle's JWK Set: a file, or an http(s) URL such as
    /// https://oracle.example/.well-known/jwks.json.
    #[arg(long)]
    jwks: String,
    /// Print the verified claims as JSON on stdout instead of a summary.
    #[arg(long)]
    json: bool,
}

fn read_source(source: &str) -> Result<String> {
    if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(text);
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        let response =
            reqwest::blocking::get(source).with_context(|| format!("fetching {source}"))?;
        if !response.status().is_success() {
            bail!("fetching {source}: HTTP {}", response.status());
        }
        return response.text().with_context(|| format!("reading {source}"));
    }
    std::fs::read_to_string(source).with_context(|| format!("reading {source}"))
}

/// Accepts a bare compact JWS or a JSON object with a `jws` member.
fn extract_jws(text: &str) -> Result<String> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(trimmed).context("certificate file is JSON but not valid")?;
        return value
            .get("jws")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .context("certificate JSON has no \"jws\" member");
    }
    Ok(trimmed.to_owned())
}

fn main() -> ExitCode {
    let args = Args::parse();
    wattest_shared::tls::install_crypto_provider();
    let inputs = (|| -> Result<(String, Jwks)> {
        let jws = extract_jws(&read_source(&args.cert)?)?;
        let jwks: Jwks = serde_json::from_str(&read_source(&args.jwks)?)
            .context("JWKS is not a JSON Web Key Set")?;
        Ok((jws, jwks))
    })();
    let (jws, jwks) = match inputs {
        Ok(v) => v,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    match verify_certificate(&jws, &jwks, chrono::Utc::now()) {
        Ok(checked) => {
            let c = &checked.claims;
            if args.json {
                println!("{}", serde_json::to_string_pretty(c).unwrap_or_default());
            } else {
                println!("VALID certificate {}", c.jti);
                println!("  issuer        {} (key {})", c.iss, checked.kid);
                println!(
                    "  node          {} ({}, zone {}, attestation {})",
                    c.node.id,
                    c.node.name,
                    c.node.zone,
                    c.node.attestation_level.as_str()
                );
                println!("  job           {}", c.job_id.as_deref().unwrap_or("-"));
                println!(
                    "  period        {} .. {}",
                    c.period.start.to_rfc3339(),
                    c.period.end.to_rfc3339()
                );
                println!(
                    "  energy        {:.6} Wh consumed, {:.6} Wh grid, {:.6} Wh solar",
                    c.energy.consumed_wh.0, c.energy.grid_wh.0, c.energy.solar_wh.0
                );
                println!(
                    "  intensity     {:.2} gCO2e/kWh ({}, {} {}, {})",
                    c.intensity.g_co2e_per_kwh.0,
                    c.intensity.provenance.dataset,
                    c.intensity.provenance.factor_type,
                    c.intensity.provenance.year,
                    c.intensity.zone
                );
                println!(
                    "  emissions     {:.9} kgCO2e (location-based)",
                    c.emissions.location_based_kg_co2e.0
                );
                println!(
                    "  avoided       {:.9} kgCO2e",
                    c.avoided_emissions.kg_co2e.0
                );
                println!(
                    "  windows       seq {}..{} ({} windows), last hash {}",
                    c.windows.first_seq, c.windows.last_seq, c.windows.count, c.windows.last_hash
                );
                println!("  leaf hash     {}", checked.hash);
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("INVALID: {err}");
            ExitCode::from(1)
        }
    }
}
