//! Signing cost per window: the agent's software key (ring), the same key in OpenSSL, and a TPM
//! key on a real swtpm, plus the oracle-side verification of one window (OpenSSL, RSA-2048, PS256): with a verifier set up
//! per window, and with one prepared once and reused (the oracle's path).
//!
//! The swtpm part starts a disposable swtpm (scripts/swtpm.sh, through the test helpers) on a
//! free port and stops it afterwards.
//! Run: `cargo bench -p wattest-agent --bench signing`.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use wattest_shared::jws::{Ps256Verifier, SaltPolicy, decode_header, sign_compact};
use wattest_shared::window::WINDOW_TYP;
use wattest_shared::{JwsSigner, SoftwareKey};

/// A representative window payload (two sources), about 600 bytes of JSON.
const PAYLOAD: &[u8] = br#"{"v":1,"node_id":"6f1c2f5e-8a1d-4c0e-9d0b-1f2e3d4c5b6a","job_id":"bench","seq":42,"prev":"q1XzAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abc","start":"2026-11-23T10:00:00Z","end":"2026-11-23T10:00:10Z","attribution":"machine","sources":[{"source":"gpu0","kind":"gpu","method":"nvml_energy_counter","energy_wh":0.9722,"mean_w":350.0,"max_w":371.2,"samples":10,"uncertainty_pct":5.0},{"source":"rapl:package-0","kind":"cpu","method":"rapl_counter","energy_wh":0.118,"mean_w":42.48,"max_w":60.1,"samples":10,"uncertainty_pct":5.0}],"solar_wh":0.0,"final":false}"#;

fn bench(c: &mut Criterion) {
    let software = SoftwareKey::generate(2048).unwrap();
    // The agent's software signer (ring), on the same key.
    let agent =
        wattest_agent::signer::SoftwareSigner::from_pkcs8_der(&software.to_pkcs8_der().unwrap())
            .unwrap();
    c.bench_function("sign_window_agent_ring_rsa2048", |b| {
        b.iter(|| sign_compact(&agent, WINDOW_TYP, black_box(PAYLOAD)).unwrap())
    });
    // The same key in OpenSSL, the oracle's signer (which uses RSA-3072 for certificates).
    c.bench_function("sign_window_openssl_rsa2048", |b| {
        b.iter(|| sign_compact(&software, WINDOW_TYP, black_box(PAYLOAD)).unwrap())
    });

    let jws = sign_compact(&software, WINDOW_TYP, PAYLOAD).unwrap();
    let public = software.public_jwk().to_public_key().unwrap();
    c.bench_function("verify_window_rsa2048", |b| {
        b.iter(|| {
            decode_header(black_box(&jws), WINDOW_TYP)
                .unwrap()
                .verify(&public, SaltPolicy::DigestOnly)
                .unwrap()
        })
    });
    // The oracle's path: one verifier prepared per node and request, reused for its windows.
    let mut verifier = Ps256Verifier::new(&public).unwrap();
    c.bench_function("verify_window_rsa2048_prepared", |b| {
        b.iter(|| {
            decode_header(black_box(&jws), WINDOW_TYP)
                .unwrap()
                .verify_ps256(&mut verifier, SaltPolicy::DigestOnly)
                .unwrap()
        })
    });

    // Without swtpm this says SKIPPED loudly (with WATTEST_SKIP_TPM=1) or panics with the install hint.
    if let Some(tpm) = wattest_tests::Swtpm::start("sign_window_swtpm_rsa2048") {
        let state = tpm.dir.path().join("agent");
        let (signer, _) =
            wattest_agent::signer::tpm::TpmSigner::enroll(&tpm.tcti, &state, &[0u8; 32]).unwrap();
        let mut group = c.benchmark_group("tpm");
        group.sample_size(20);
        group.bench_function("sign_window_swtpm_rsa2048", |b| {
            b.iter(|| signer.sign_jws(black_box(PAYLOAD)).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
