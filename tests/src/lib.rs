//! Helpers for the end-to-end tests in `tests/tests/`: locate the real binaries, start an
//! oracle on a free loopback port with a fresh data dir, create tokens, enroll nodes.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, missing_docs)]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the test executable (`target/<profile>/<name>`).
///
/// # Panics
/// When the binary is not built: run `cargo build --workspace` (scripts/test.sh does) first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` (scripts/test.sh does it) before the end-to-end tests",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound then released; the oracle binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A port P such that P and P+1 (swtpm's control channel) are both free right now.
pub fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
}

/// Waits until something listens on 127.0.0.1:`port` (5 s at most).
pub fn wait_for_port(port: u16, what: &str) {
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {port}");
}

/// A disposable swtpm with its own EK CA.
pub struct Swtpm {
    /// State, logs and the private EK CA (`localca/`).
    pub dir: tempfile::TempDir,
    /// TCTI string for tss-esapi: `swtpm:host=127.0.0.1,port=P`.
    pub tcti: String,
}

impl Swtpm {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/swtpm.sh")
    }

    /// Starts a swtpm; `None` (after a loud SKIPPED line) when swtpm is missing and
    /// `WATTEST_SKIP_TPM=1`; panics with the install hint otherwise.
    pub fn start(test: &str) -> Option<Self> {
        let installed = Command::new("sh")
            .args([
                "-c",
                "command -v swtpm && command -v swtpm_setup && command -v swtpm_localca",
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !installed {
            if std::env::var("WATTEST_SKIP_TPM").as_deref() == Ok("1") {
                // Straight to fd 2: libtest captures eprintln! of passing tests.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: swtpm is not installed and WATTEST_SKIP_TPM=1; TPM enrollment untested!"
                );
                return None;
            }
            panic!(
                "{test} needs swtpm: apt-get install -y swtpm swtpm-tools libtss2-dev \
                 (or set WATTEST_SKIP_TPM=1 to skip the TPM tests loudly)"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..20 {
            let port = free_port_pair();
            let out = Command::new(Self::script())
                .arg("start")
                .arg(port.to_string())
                .arg(dir.path())
                .output()
                .expect("run scripts/swtpm.sh");
            if !out.status.success() {
                // Most likely the port was taken between probing and binding: try another.
                eprintln!("swtpm.sh failed: {}", String::from_utf8_lossy(&out.stderr));
                continue;
            }
            let tcti = String::from_utf8(out.stdout)
                .expect("utf8")
                .trim()
                .to_owned();
            wait_for_port(port, "swtpm");
            return Some(Self { dir, tcti });
        }
        panic!("could not start swtpm");
    }

    /// swtpm's root and issuer CA certificates (trust anchors for `verify_ek_certificate`).
    pub fn ca_certificates(&self) -> Vec<openssl::x509::X509> {
        ["swtpm-localca-rootca-cert.pem", "issuercert.pem"]
            .iter()
            .map(|f| {
                let pem = std::fs::read(self.dir.path().join("localca").join(f)).expect("CA");
                openssl::x509::X509::from_pem(&pem).expect("pem")
            })
            .collect()
    }

    /// A directory with swtpm's root and issuer CA certificates only (no keys): `--ek-ca-dir`.
    pub fn ca_dir(&self) -> PathBuf {
        let ca = self.dir.path().join("ek-ca");
        std::fs::create_dir_all(&ca).expect("mkdir");
        for file in ["swtpm-localca-rootca-cert.pem", "issuercert.pem"] {
            std::fs::copy(self.dir.path().join("localca").join(file), ca.join(file))
                .expect("copy swtpm CA certificate");
        }
        ca
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// A running `wattest-oracle serve`, killed on drop.
pub struct Oracle {
    child: Child,
    pub url: String,
    pub data_dir: tempfile::TempDir,
    database_url: Option<String>,
    log: PathBuf,
    admin: std::sync::OnceLock<String>,
    port: u16,
    extra: Vec<String>,
}

/// `--max-backdate-hours` for a test oracle, unless `extra` sets it: the tests' windows start up
/// to days before their nodes enroll (carbon hours already cached, long chains), which a
/// production oracle refuses (default 0). A year, for every oracle the tests start.
#[must_use]
pub fn backdating(extra: &[String]) -> Vec<&'static str> {
    if extra.iter().any(|a| a == "--max-backdate-hours") {
        Vec::new()
    } else {
        vec!["--max-backdate-hours", "8760"]
    }
}

/// True when `WATTEST_TEST_BACKEND=postgres`: every oracle the tests start without an explicit
/// database runs on a fresh PostgreSQL database instead of SQLite (scripts/test.sh runs the
/// integration suite a second time this way).
pub fn backend_is_postgres() -> bool {
    std::env::var("WATTEST_TEST_BACKEND").is_ok_and(|b| b.eq_ignore_ascii_case("postgres"))
}

impl Oracle {
    /// Starts an oracle in a fresh temporary data dir: SQLite, or a fresh PostgreSQL database
    /// when `WATTEST_TEST_BACKEND=postgres`.
    pub fn start() -> Self {
        Self::start_with(None, &[])
    }

    /// Starts an oracle with an optional `DATABASE_URL` and extra `serve` arguments. Without a
    /// URL: SQLite in the data dir, or a fresh PostgreSQL database when
    /// `WATTEST_TEST_BACKEND=postgres`.
    pub fn start_with(database_url: Option<String>, extra: &[&str]) -> Self {
        wattest_shared::tls::install_crypto_provider();
        let database_url = match database_url {
            Some(url) => Some(url),
            None if backend_is_postgres() => fresh_pg_database(),
            None => None,
        };
        let data_dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = data_dir.path().join("oracle.log");
        let extra: Vec<String> = extra.iter().map(|&a| a.to_owned()).collect();
        let child = Self::spawn(port, data_dir.path(), database_url.as_deref(), &extra, &log);
        let oracle = Self {
            child,
            url,
            data_dir,
            database_url,
            log,
            admin: std::sync::OnceLock::new(),
            port,
            extra,
        };
        oracle.wait_healthy();
        oracle
    }

    fn spawn(
        port: u16,
        data_dir: &Path,
        database_url: Option<&str>,
        extra: &[String],
        log: &Path,
    ) -> Child {
        let mut cmd = Command::new(bin("wattest-oracle"));
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .args(backdating(extra))
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info,sqlx=warn")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("log"),
        );
        if let Some(db) = database_url {
            cmd.env("DATABASE_URL", db);
        }
        cmd.spawn().expect("spawn wattest-oracle")
    }

    /// The database URL this oracle uses (`None`: SQLite in its data dir).
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// Kills the oracle with SIGKILL (no graceful shutdown) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the oracle with SIGTERM (graceful shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (graceful shutdown) without waiting.
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the oracle process to exit; its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("waiting for the oracle")
    }

    /// Starts the oracle again on the same port, data dir, database and arguments (after
    /// [`Oracle::kill9`] or [`Oracle::stop`]) and waits until it is healthy.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(
            self.port,
            self.data_dir.path(),
            self.database_url.as_deref(),
            &self.extra,
            &self.log,
        );
        self.wait_healthy();
    }

    /// Starts an oracle on SQLite trusting the EK CA certificates in `ek_ca_dir`, if any.
    pub fn with_ek_ca(ek_ca_dir: Option<&Path>) -> Self {
        match ek_ca_dir {
            Some(dir) => {
                Self::start_with(None, &["--ek-ca-dir", dir.to_str().expect("UTF-8 path")])
            }
            None => Self::start(),
        }
    }

    /// POSTs JSON with a bearer token; returns the status and the JSON body (null if none).
    pub fn post_json(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(serde_json::Value::Null))
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::blocking::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/healthz", self.url)).send()
                && r.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "oracle did not become healthy; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// The oracle's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `wattest-oracle ARGS --data-dir DIR` against this oracle's database: its data dir, and
    /// its `DATABASE_URL` when it runs on PostgreSQL (`WATTEST_TEST_BACKEND=postgres` included).
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("wattest-oracle"));
        cmd.args(args)
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .env_remove("DATABASE_URL");
        if let Some(db) = &self.database_url {
            cmd.env("DATABASE_URL", db);
        }
        cmd
    }

    /// `wattest-oracle token create --role ROLE` against this oracle's database.
    pub fn token(&self, role: &str) -> String {
        let out = run_ok(&mut self.cli(&["token", "create", "--role", role]));
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    }

    /// Enrolls a software-key node with the real agent; returns (state dir, node id).
    pub fn enroll_agent(&self, zone: &str) -> (tempfile::TempDir, String) {
        let state = tempfile::tempdir().expect("state");
        let token = self.token("node");
        let out = run_ok(
            Command::new(bin("wattest-agent"))
                .args([
                    "enroll",
                    "--oracle",
                    &self.url,
                    "--name",
                    "e2e-node",
                    "--zone",
                    zone,
                    "--state-dir",
                ])
                .arg(state.path())
                .env("WATTEST_TOKEN", token),
        );
        let node_id = String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned();
        (state, node_id)
    }

    /// An admin token for this oracle, created on first use. Admin passes every role check, so the
    /// tests that are not about roles read through it.
    pub fn admin_token(&self) -> &str {
        self.admin.get_or_init(|| self.token("admin"))
    }

    /// GET `path` with the admin token; returns the response, whatever its status.
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.get_as(path, self.admin_token())
    }

    /// GET `path` with `token` (none if empty); returns the response, whatever its status.
    pub fn get_as(&self, path: &str, token: &str) -> reqwest::blocking::Response {
        let mut request = reqwest::blocking::Client::new().get(format!("{}{path}", self.url));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        request.send().expect("GET")
    }

    /// GET `path` as JSON (admin token); panics unless 2xx.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path);
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().expect("json")
    }

    /// GET `path` as text (admin token); panics unless 2xx.
    pub fn get_text(&self, path: &str) -> String {
        let r = self.get(path);
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.text().expect("text")
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs a compact JWS window to `url`'s `/v1/telemetry` (`application/jose`); the status and
/// the JSON body (null if none), or `None` when the oracle cannot be reached.
pub fn try_post_window(url: &str, jws: &str) -> Option<(u16, serde_json::Value)> {
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/v1/telemetry"))
        .header("content-type", "application/jose")
        .body(jws.to_owned())
        .send()
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().unwrap_or(serde_json::Value::Null)))
}

/// [`try_post_window`] to a running oracle (panics when it cannot be reached).
pub fn post_window(url: &str, jws: &str) -> (u16, serde_json::Value) {
    try_post_window(url, jws).expect("oracle reachable")
}

/// Runs `cmd`, asserting success, and returns its output.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Base URL of a reachable PostgreSQL server for tests: `WATTEST_TEST_PG` (e.g.
/// `postgres://postgres@127.0.0.1:5432`), default the machine's server on 127.0.0.1:5432.
pub fn pg_server() -> String {
    std::env::var("WATTEST_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Drops, once per test process, the databases that earlier test processes on this machine
/// created with [`fresh_pg_database`] and left behind: those whose `wattest_e2e_<pid>_<port>`
/// name names a process that no longer runs (`/proc/<pid>` absent). A database of a running
/// test process is never touched. Failures are ignored: cleanup must not fail a test.
fn drop_stale_pg_databases(server: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let psql = |sql: &str| {
            Command::new("psql")
                .arg(format!("{server}/postgres"))
                .args(["-Atqc", sql])
                .output()
                .ok()
                .filter(|o| o.status.success())
        };
        let Some(listed) =
            psql(r"SELECT datname FROM pg_database WHERE datname LIKE 'wattest\_e2e\_%'")
        else {
            return;
        };
        for name in String::from_utf8_lossy(&listed.stdout).lines() {
            let pid = name
                .strip_prefix("wattest_e2e_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                let _ = psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    });
}

/// Creates a fresh database on the test PostgreSQL server with `psql` and returns its URL.
/// Returns `None` (after a loud SKIPPED line) only when `WATTEST_SKIP_PG=1`; otherwise an
/// unreachable server fails the test with the fix.
pub fn fresh_pg_database() -> Option<String> {
    let server = pg_server();
    drop_stale_pg_databases(&server);
    // Unique per call: the process id (what `drop_stale_pg_databases` reads back), the time
    // in ns (a dead process's leftovers may carry a reused pid) and a per-process counter.
    // (A free port was used before; the OS hands the same one out again within a process.)
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!(
        "wattest_e2e_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let out = Command::new("psql")
        .arg(format!("{server}/postgres"))
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            &format!("CREATE DATABASE {name}"),
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => Some(format!("{server}/{name}")),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            if std::env::var("WATTEST_SKIP_PG").as_deref() == Ok("1") {
                eprintln!("SKIPPED (WATTEST_SKIP_PG=1): PostgreSQL test not run: {why}");
                None
            } else {
                panic!(
                    "PostgreSQL at {server} is not reachable ({why}). Start one (scripts/test.sh starts a disposable cluster and sets WATTEST_TEST_PG), or set WATTEST_SKIP_PG=1 to skip loudly."
                );
            }
        }
    }
}

/// A valid 10-second window of one GPU counter source using 1 Wh (mean 360 W, peak `max_w`),
/// for tests and the load generator to sign.
pub fn gpu_window(
    node_id: &str,
    job_id: &str,
    seq: u64,
    prev: Option<String>,
    start: chrono::DateTime<chrono::Utc>,
    max_w: f64,
    is_final: bool,
) -> wattest_shared::WindowClaims {
    use wattest_shared::window::{Attribution, Method, SourceEnergy, SourceKind};
    use wattest_shared::{WattHours, Watts};
    wattest_shared::WindowClaims {
        v: 1,
        node_id: node_id.to_owned(),
        job_id: Some(job_id.to_owned()),
        model_id: None,
        seq,
        prev,
        start,
        end: start + chrono::Duration::seconds(10),
        attribution: Attribution::Machine,
        sources: vec![SourceEnergy {
            source: "gpu0".into(),
            kind: SourceKind::Gpu,
            method: Method::NvmlEnergyCounter,
            energy_wh: WattHours(1.0),
            mean_w: Watts(360.0),
            max_w: Watts(max_w),
            samples: 10,
            uncertainty_pct: 5.0,
            shared_device: false,
        }],
        solar_wh: WattHours(0.0),
        is_final,
    }
}

/// A self-signed test CA (RSA-2048, critical basicConstraints CA:TRUE, valid 30 days) named
/// `cn`, with its key: an EK certificate authority no TPM vendor uses.
pub fn test_ca(
    cn: &str,
) -> (
    openssl::x509::X509,
    openssl::pkey::PKey<openssl::pkey::Private>,
) {
    use openssl::x509::extension::BasicConstraints;
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa"))
        .expect("pkey");
    let name = x509_name(cn);
    let mut b = certificate_builder(&name, &key);
    b.set_issuer_name(&name).expect("issuer");
    b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
        .expect("ext");
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .expect("sign");
    (b.build(), key)
}

/// A leaf certificate named `cn` for a fresh RSA-2048 key, issued by `ca` (valid 30 days).
pub fn issue_leaf(
    ca: &openssl::x509::X509,
    ca_key: &openssl::pkey::PKey<openssl::pkey::Private>,
    cn: &str,
) -> openssl::x509::X509 {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa"))
        .expect("pkey");
    let mut b = certificate_builder(&x509_name(cn), &key);
    b.set_issuer_name(ca.subject_name()).expect("issuer");
    b.sign(ca_key, openssl::hash::MessageDigest::sha256())
        .expect("sign");
    b.build()
}

fn x509_name(cn: &str) -> openssl::x509::X509Name {
    let mut name = openssl::x509::X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    name.build()
}

fn certificate_builder(
    subject: &openssl::x509::X509NameRef,
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
) -> openssl::x509::X509Builder {
    let mut b = openssl::x509::X509Builder::new().expect("builder");
    b.set_version(2).expect("v3");
    b.set_subject_name(subject).expect("subject");
    b.set_pubkey(key).expect("pubkey");
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).expect("t"))
        .expect("nb");
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).expect("t"))
        .expect("na");
    b
}

/// The certificate id that `wattest-agent run` prints on stderr (`wattest: certificate <id>`);
/// panics with the whole stderr when there is none.
pub fn certificate_id_from_stderr(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("wattest: certificate "))
        .unwrap_or_else(|| panic!("no certificate line in:\n{stderr}"))
        .trim()
        .to_owned()
}
