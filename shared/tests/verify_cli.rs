//! `wattest-verify` as a process, on a certificate signed with the oracle's signing path
//! (`sign_compact` with a software key, as in `certificate_jose.rs`) and logged in a one-leaf
//! transparency log signed with a `LogSigner`: the exit status and the report for an input that
//! does not parse (2), standard input named twice (2), and a certificate that parses but fails
//! a check (1, named by its id, times in RFC 3339), a bundle whose id, hash or claims disagree
//! with its JWS (1, the `bundle` check), and what --help lists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, Utc};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use wattest_shared::checkpoint::{Checkpoint, LogSigner};
use wattest_shared::jws::{jws_hash, sign_compact};
use wattest_shared::merkle::leaf_hash;
use wattest_shared::transparency::{InclusionProof, encode_hash};
use wattest_shared::{CERTIFICATE_TYP, Jwks, SoftwareKey};

mod common;
use common::claims;

const ORIGIN: &str = "oracle.test/wattest-log";

/// A directory of inputs: `cert.json` (a bundle with its inclusion proof), `cert.jws`,
/// `jwks.json`, `log.key` (the log's verifier key) and `checkpoint.txt` (the proof's), for a
/// certificate issued at `now`, valid a day.
struct Inputs {
    dir: PathBuf,
    now: DateTime<Utc>,
    log: LogSigner,
}

impl Inputs {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("verify_cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = SoftwareKey::generate(2048).unwrap();
        let jwks = Jwks {
            keys: vec![wattest_shared::Jwk::Rsa(key.public_jwk().clone()).for_jwks()],
        };
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let jws = sign_compact(
            &key,
            CERTIFICATE_TYP,
            &serde_json::to_vec(&claims(now)).unwrap(),
        )
        .unwrap();
        // A one-leaf log: the root is the leaf hash, the audit path empty.
        let log = LogSigner::generate(ORIGIN).unwrap();
        let leaf = leaf_hash(jws.as_bytes());
        let checkpoint = log
            .sign(&Checkpoint {
                origin: ORIGIN.into(),
                size: 1,
                root: leaf,
                extensions: vec![],
            })
            .unwrap();
        let proof = InclusionProof {
            leaf_index: 0,
            tree_size: 1,
            leaf_hash: encode_hash(&leaf),
            hashes: vec![],
            checkpoint: checkpoint.clone(),
        };
        let write = |file: &str, text: &str| std::fs::write(dir.join(file), text).unwrap();
        // The bundle as GET /v1/certificates/{id} serves it.
        write(
            "cert.json",
            &serde_json::json!({
                "id": "cert-1",
                "jws": jws,
                "hash": jws_hash(&jws),
                "claims": claims(now),
                "status": {"certificate_id": "cert-1", "state": "valid"},
                "inclusion_proof": proof,
            })
            .to_string(),
        );
        write("cert.jws", &jws);
        write("jwks.json", &serde_json::to_string(&jwks).unwrap());
        write("log.key", &log.verifier_key().unwrap());
        write("checkpoint.txt", &checkpoint);
        Self { dir, now, log }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn write(&self, file: &str, text: &str) -> String {
        std::fs::write(self.dir.join(file), text).unwrap();
        self.path(file)
    }

    /// `wattest-verify CERT --jwks jwks.json ARGS… --at <now + 1 h>`.
    fn verify(&self, cert: &str, args: &[&str]) -> Output {
        self.verify_at(cert, args, self.now + Duration::hours(1), None)
    }

    fn verify_at(
        &self,
        cert: &str,
        args: &[&str],
        at: DateTime<Utc>,
        stdin: Option<&str>,
    ) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wattest-verify"))
            .arg(cert)
            .args(["--jwks", &self.path("jwks.json")])
            .args(args)
            .args(["--at", &at.to_rfc3339()])
            .env_remove("WATTEST_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The check named `name` in a `--json` report; panics with the report when it has none.
fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no {name} check: {report}"))
}

/// The whole path holds: the bundle, its proof against the log key, and the same checkpoint
/// given as trusted. This is what the negative tests below change one input of.
#[test]
fn a_logged_certificate_verifies_against_its_checkpoint() {
    let inputs = Inputs::new("valid");
    let out = inputs.verify(
        &inputs.path("cert.json"),
        &[
            "--log-key",
            &inputs.path("log.key"),
            "--checkpoint",
            &inputs.path("checkpoint.txt"),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("VALID certificate cert-1\n"), "{stdout}");
    assert!(stdout.contains("[ok] checkpoint"), "{stdout}");
    assert!(
        stdout.contains("period        2026-11-23T09:00:00Z .. 2026-11-23T09:10:00Z"),
        "{stdout}"
    );
    assert!(
        stdout.contains("valid until 2026-11-25T12:00:00Z, every total reconciles"),
        "{stdout}"
    );
}

/// A --checkpoint or --previous-checkpoint that is not a signed checkpoint note is an input
/// that does not parse: exit 2, as a --inclusion that is not JSON; nothing is printed on
/// stdout. A well-formed checkpoint the log key did not sign is a failed check: exit 1.
#[test]
fn a_malformed_checkpoint_is_an_input_error_like_a_malformed_proof() {
    let inputs = Inputs::new("checkpoint");
    let garbage = inputs.write("garbage.txt", "this is not a checkpoint\n");
    let log_key = inputs.path("log.key");
    for flag in ["--checkpoint", "--inclusion"] {
        let out = inputs.verify(
            &inputs.path("cert.json"),
            &["--log-key", &log_key, flag, &garbage],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(out.stdout.is_empty(), "{flag}: {}", text(&out.stdout));
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    let out = inputs.verify(
        &inputs.path("cert.json"),
        &["--log-key", &log_key, "--checkpoint", &garbage],
    );
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: --checkpoint {garbage} is not a signed checkpoint: malformed checkpoint: no blank line before the signatures\n"
        )
    );
    // --previous-checkpoint the same (its --consistency proof is well-formed JSON).
    let consistency = inputs.write(
        "consistency.json",
        r#"{"first":1,"second":1,"hashes":[],"checkpoint":"x"}"#,
    );
    let out = inputs.verify(
        &inputs.path("cert.json"),
        &[
            "--log-key",
            &log_key,
            "--previous-checkpoint",
            &garbage,
            "--consistency",
            &consistency,
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--previous-checkpoint {garbage} is not a signed checkpoint: malformed checkpoint"
        )),
        "{stderr}"
    );
    // Well-formed, but signed by another log's key: the check fails, exit 1.
    let other = LogSigner::generate(ORIGIN).unwrap();
    let foreign = inputs.write(
        "foreign.txt",
        &other
            .sign(&Checkpoint {
                origin: ORIGIN.into(),
                size: 1,
                root: [0; 32],
                extensions: vec![],
            })
            .unwrap(),
    );
    let out = inputs.verify(
        &inputs.path("cert.json"),
        &["--log-key", &log_key, "--checkpoint", &foreign],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with("INVALID certificate cert-1\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "[FAIL] checkpoint     checkpoint carries no signature by log key {}",
            inputs.log.name()
        )),
        "{stdout}"
    );
}

/// `-` names standard input for one input only: a second `-` is refused before anything is
/// read, with exit 2, instead of the second input finding standard input empty.
#[test]
fn standard_input_is_refused_for_a_second_input() {
    let inputs = Inputs::new("stdin");
    let cert = std::fs::read_to_string(inputs.dir.join("cert.json")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wattest-verify"))
        .args(["-", "--jwks", "-", "--no-log"])
        .stdin(std::fs::File::open(inputs.dir.join("cert.json")).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: standard input can be used for only one input: CERT, --jwks are all `-`\n"
    );
    assert!(out.stdout.is_empty());
    // Once is fine: the bundle from standard input verifies.
    let out = inputs.verify_at(
        "-",
        &["--log-key", &inputs.path("log.key")],
        inputs.now + Duration::hours(1),
        Some(&cert),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("VALID certificate cert-1\n"));
}

/// A certificate that parses but is expired at --at: INVALID, named by its jti (text and
/// JSON), the expiry and the time verified at in RFC 3339 UTC, exit 1. "(unreadable)" is kept
/// for a CERT that does not parse.
#[test]
fn a_failed_claim_check_names_the_certificate_and_its_times() {
    let inputs = Inputs::new("expired");
    let at = DateTime::parse_from_rfc3339("2040-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    for cert in ["cert.json", "cert.jws"] {
        let out = inputs.verify_at(&inputs.path(cert), &["--no-log"], at, None);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
        assert!(
            stdout.starts_with("INVALID certificate cert-1\n"),
            "{cert}: {stdout}"
        );
        assert!(
            stdout.contains(
                "[FAIL] claims         certificate is not valid at this time: expired at 2026-11-25T12:00:00Z (verified as of 2040-01-01T00:00:00Z)"
            ),
            "{stdout}"
        );
        let exp = (inputs.now + Duration::days(1)).timestamp().to_string();
        assert!(!stdout.contains(&exp), "no raw epoch: {stdout}");
        let out = inputs.verify_at(&inputs.path(cert), &["--no-log", "--json"], at, None);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(report["valid"], false);
        assert_eq!(report["certificate_id"], "cert-1");
        assert!(report.get("claims").is_none(), "{report}");
    }
    // Not valid yet: nbf and iat after --at.
    let before = inputs.now - Duration::days(1);
    let out = inputs.verify_at(&inputs.path("cert.jws"), &["--no-log"], before, None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("not valid yet: nbf 2026-11-24T12:00:00Z / iat 2026-11-24T12:00:00Z is after 2026-11-23T12:00:00Z"),
        "{stdout}"
    );
    // Input that does not parse has no id to show.
    let junk = inputs.write("junk.jws", "not.a-jws");
    let out = inputs.verify(&junk, &["--no-log"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("INVALID certificate (unreadable)\n"),
        "{stdout}"
    );
}

/// A bundle's id, hash and claims restate the JWS: each one edited (the claims' emissions, a
/// hash of 43 `x`, the nil UUID as id) fails the `bundle` check naming it, exit 1, in the text
/// and the JSON report, though the signature and the log proof still hold. Absent or null
/// members are not compared; the untampered bundle passes (its claims compared as JSON values:
/// their text orders the members otherwise than the JWS payload does).
#[test]
fn a_bundle_whose_members_disagree_with_its_jws_is_invalid() {
    let inputs = Inputs::new("bundle");
    let bundle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(inputs.dir.join("cert.json")).unwrap())
            .unwrap();
    let log_key = inputs.path("log.key");
    let verify = |file: &str, bundle: &serde_json::Value, json: bool| {
        let path = inputs.write(file, &bundle.to_string());
        let mut args = vec!["--log-key", log_key.as_str()];
        if json {
            args.push("--json");
        }
        inputs.verify(&path, &args)
    };

    let out = verify("untampered.json", &bundle, false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout
            .contains("[ok] bundle         the bundle's id, hash and claims agree with the JWS\n"),
        "{stdout}"
    );

    let jws = bundle["jws"].as_str().unwrap();
    let nil = "00000000-0000-0000-0000-000000000000";
    let xs = "x".repeat(43);
    for (member, tampered, detail) in [
        (
            "claims",
            serde_json::json!("9.000000"),
            r#"the bundle's claims are not the JWS payload: claims["wattest.emissions"]["location_based_g_co2e"] is "9.000000" in the bundle, "1.200000" in the JWS"#.to_owned(),
        ),
        (
            "hash",
            serde_json::json!(xs),
            format!(
                r#"the bundle's hash "{xs}" is not the SHA-256 of the JWS (base64url {})"#,
                jws_hash(jws)
            ),
        ),
        (
            "id",
            serde_json::json!(nil),
            format!(r#"the bundle's id "{nil}" is not the JWS payload's jti "cert-1""#),
        ),
    ] {
        let mut edited = bundle.clone();
        if member == "claims" {
            edited["claims"]["wattest.emissions"]["location_based_g_co2e"] = tampered;
        } else {
            edited[member] = tampered;
        }
        let file = format!("{member}.json");
        let out = verify(&file, &edited, false);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{member}: {stdout}{}", text(&out.stderr));
        assert!(
            stdout.starts_with("INVALID certificate cert-1\n"),
            "{member}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("  [FAIL] bundle         {detail}\n")),
            "{member}: {stdout}"
        );
        // Only the bundle check fails: the JWS itself is untouched.
        assert_eq!(stdout.matches("[FAIL]").count(), 1, "{member}: {stdout}");
        let out = verify(&file, &edited, true);
        assert_eq!(out.status.code(), Some(1), "{member}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["valid"], false, "{report}");
        assert_eq!(report["certificate_id"], "cert-1", "{report}");
        let checks = report["checks"].as_array().unwrap();
        assert_eq!(
            check(&report, "bundle"),
            &serde_json::json!({"check": "bundle", "ok": false, "detail": detail}),
            "{report}"
        );
        assert!(
            checks
                .iter()
                .all(|c| c["check"] == "bundle" || c["ok"] == true),
            "{report}"
        );
    }

    // A member given as a value of another type is as different as any other value.
    let mut edited = bundle.clone();
    edited["id"] = serde_json::json!(1);
    let out = verify("id-number.json", &edited, false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            r#"[FAIL] bundle         the bundle's id 1 is not the JWS payload's jti "cert-1""#
        ),
        "{stdout}"
    );

    // A claim the bundle adds, or leaves out, is a difference too.
    let mut edited = bundle.clone();
    edited["claims"]["extra"] = serde_json::json!(true);
    edited["hash"] = serde_json::json!(xs);
    let out = verify("claims-extra.json", &edited, false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            r#"[FAIL] bundle         the bundle's hash "{xs}" is not the SHA-256 of the JWS (base64url {}); the bundle's claims are not the JWS payload: claims["extra"] is not in the JWS payload"#,
            jws_hash(jws)
        )),
        "{stdout}"
    );
    let mut edited = bundle.clone();
    edited["claims"].as_object_mut().unwrap().remove("jti");
    let out = verify("claims-short.json", &edited, false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(r#"the bundle's claims are not the JWS payload: claims["jti"] is missing from the bundle"#),
        "{stdout}"
    );

    // Trimmed: absent and null members are not compared.
    let mut trimmed = bundle.clone();
    trimmed.as_object_mut().unwrap().remove("claims");
    trimmed["hash"] = serde_json::Value::Null;
    let out = verify("trimmed.json", &trimmed, false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("[ok] bundle         the bundle's id agrees with the JWS\n"),
        "{stdout}"
    );
    trimmed.as_object_mut().unwrap().remove("id");
    let out = verify("bare-bundle.json", &trimmed, false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "[ok] bundle         the bundle restates nothing of the JWS (no id, hash or claims)\n"
        ),
        "{stdout}"
    );

    // A bare JWS has no bundle to check.
    let out = inputs.verify(&inputs.path("cert.jws"), &["--no-log"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("bundle  "), "{stdout}");
}

/// --help lists the checks as docs/protocol.md §5.1 does (its six steps, the claims step with
/// wattest.calculation_version "2"), then the bundle check; and says which role each request
/// the token goes with needs: log proofs are the auditor's alone (compliance gets 403).
#[test]
fn help_lists_the_checks_of_protocol_5_1_and_the_roles_the_token_needs() {
    let out = Command::new(env!("CARGO_BIN_EXE_wattest-verify"))
        .arg("--help")
        .output()
        .unwrap();
    let help = text(&out.stdout);
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let steps = [
        " 1. signature: ",
        " 2. claims: ",
        " 3. status: ",
        " 4. log inclusion: ",
        " 5. checkpoint (with --checkpoint): ",
        " 6. consistency (with --previous-checkpoint and --consistency): ",
        " 7. bundle (when CERT is a bundle): ",
    ];
    let at: Vec<usize> = steps
        .iter()
        .map(|s| {
            help.find(s)
                .unwrap_or_else(|| panic!("{s:?} not in {help}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{help}");
    assert!(!help.contains(" 8. "), "{help}");
    for said in [
        "2. claims: exp, nbf and iat present; eat_profile and wattest.calculation_version (\"2\"); nbf and iat at most now + 60 s, exp after now; every total recomputed exactly;",
        "no jwk, jku, x5u, x5c or x5t header members and no crit",
        "id is the payload's jti, hash is the base64url SHA-256 of the JWS's ASCII bytes, claims is the payload (compared as JSON values). A member that is absent (or null) is not compared; one present and different fails the check, which names it.",
        "CERT (GET /v1/certificates/{id}) and --status (GET /v1/certificates/{id}/status) need an `auditor` or `compliance` token; --inclusion and --consistency (GET /v1/log/proofs/*) an `auditor` token (a `compliance` token gets 403)",
    ] {
        assert!(flat.contains(said), "{said:?} not in {help}");
    }
    assert!(
        !flat.contains("log proofs needs an `auditor` or `compliance`"),
        "{help}"
    );
}

/// --help says what the report's first line names and the exit statuses this file tests.
#[test]
fn help_states_the_id_rule_and_the_exit_statuses() {
    let out = Command::new(env!("CARGO_BIN_EXE_wattest-verify"))
        .arg("--help")
        .output()
        .unwrap();
    let help = text(&out.stdout);
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for said in [
        "`-` (standard input, for one input only: a second `-` is refused, exit 2)",
        "the id is the JWS payload's jti whenever the payload parses (even when a check fails), else the bundle's id, else `(unreadable)`. Times are RFC 3339 UTC.",
        "a --checkpoint or --previous-checkpoint that is not a signed checkpoint note",
        "standard input was named twice",
    ] {
        assert!(flat.contains(said), "{said:?} not in {help}");
    }
}

/// `--issuer` pins whose certificate it is: the claims check fails for another `iss` (exit 1,
/// naming both), and passes for the same URL with or without a trailing `/`.
#[test]
fn issuer_pins_the_oracle_that_issued_the_certificate() {
    let inputs = Inputs::new("issuer");
    let cert = inputs.path("cert.json");
    let log_key = inputs.path("log.key");
    for trusted in ["https://oracle.test", "https://oracle.test/"] {
        let out = inputs.verify(&cert, &["--log-key", &log_key, "--issuer", trusted]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{trusted}: {}",
            text(&out.stdout)
        );
    }
    let out = inputs.verify(
        &cert,
        &[
            "--log-key",
            &log_key,
            "--issuer",
            "https://other.example",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check(&report, "signature")["ok"], true, "{report}");
    assert_eq!(check(&report, "claims")["ok"], false, "{report}");
    assert_eq!(
        check(&report, "claims")["detail"],
        "issued by https://oracle.test, not by the trusted issuer https://other.example (--issuer)"
    );
    // As for any claim that fails, the status cannot be matched to an unverified certificate.
    assert_eq!(check(&report, "status")["ok"], false, "{report}");
    // Claims that failed a check are not reported as verified.
    assert!(
        report.get("claims").is_none_or(serde_json::Value::is_null),
        "{report}"
    );
}
