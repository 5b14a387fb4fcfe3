//! `latchkey-bench`: starts a release latchkey server on a fresh, seeded
//! database, loads it over loopback from this process, and reports
//! throughput, latency, server CPU and memory per scenario, each scenario's
//! throughput also as a ratio to the HTTP ceiling measured in the same run.
//!
//! cargo run --release -p latchkey-bench -- --backend sqlite

mod asynchronous;
mod load;
mod report;
mod seed;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use diesel::{Connection, PgConnection, RunQueryDsl};
use latchkey::config::Settings;
use serde_json::json;

use crate::load::{Outcome, Plan};
use crate::report::Row;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum BackendArg {
    Sqlite,
    Postgres,
}

/// Load benchmark for latchkey.
#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BackendArg,
    /// Stored sessions before the run.
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Server processes on one PostgreSQL database behind HAProxy (the
    /// load goes through the load balancer); 1: one server, no balancer.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Seconds each scenario is measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up before each measurement.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Also run read and otp-issue at 10 000 and 1 000 000 stored sessions.
    #[arg(long)]
    scale: bool,
    /// Only these scenarios (comma-separated): ceiling, read, otp-issue,
    /// otp-verify, totp-verify, login, flow, async-login, async-patch.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// PostgreSQL server for --backend postgres (a database is made and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Use this latchkey binary instead of building target/release/latchkey.
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn build_server() -> Result<PathBuf, Error> {
    eprintln!("building the release server …");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        // The whole workspace at once: the same feature set as this
        // benchmark's own build, so nothing is compiled twice.
        .args(["build", "--release", "--workspace", "--bins"])
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        return Err("building the server failed".into());
    }
    Ok(workspace_root().join("target/release/latchkey"))
}

/// A fresh database: a SQLite file in `dir`, or a new PostgreSQL database.
struct Database {
    url: String,
    postgres: Option<(String, String)>,
}

impl Database {
    fn create(args: &Args, dir: &Path) -> Result<Self, Error> {
        match args.backend {
            BackendArg::Sqlite => Ok(Self {
                url: dir.join("bench.sqlite3").to_string_lossy().into_owned(),
                postgres: None,
            }),
            BackendArg::Postgres => {
                let name = format!("latchkey_bench_{}", std::process::id());
                let mut conn = PgConnection::establish(&args.postgres_url)?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut conn)?;
                diesel::sql_query(format!("CREATE DATABASE \"{name}\"")).execute(&mut conn)?;
                let base = args
                    .postgres_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(&args.postgres_url);
                Ok(Self {
                    url: format!("{base}/{name}"),
                    postgres: Some((args.postgres_url.clone(), name)),
                })
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres
            && let Ok(mut conn) = PgConnection::establish(admin)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn);
        }
    }
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

const SECRET: &str = "latchkey-bench-secret-0123456789abcdef";
/// The bench's master key (64 hex digits), shared by the seeder and the
/// server it starts.
const MASTER_KEY: &str = "6c617463686b65792062656e6368206d6173746572206b657920303132333435";

/// The mail sink: the server's data folder, where its `.eml` files go. In
/// memory (tmpfs) where the machine has one, so the benchmark measures the
/// server and not how fast the disk creates small files (on this machine's
/// ext4 that was 18 % of the server's CPU in `otp-issue`). The database
/// stays on disk.
fn mail_sink_dir(sessions: usize) -> PathBuf {
    let name = format!("latchkey-bench-mail-{}-{sessions}", std::process::id());
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join(name)
    } else {
        std::env::temp_dir().join(name)
    }
}

fn server_env(dir: &Path, db: &Database, port: u16) -> Vec<(String, String)> {
    vec![
        ("LATCHKEY_BIND".into(), format!("127.0.0.1:{port}")),
        (
            "LATCHKEY_DATA_DIR".into(),
            dir.to_string_lossy().into_owned(),
        ),
        ("LATCHKEY_DATABASE_URL".into(), db.url.clone()),
        ("LATCHKEY_SECRET".into(), SECRET.into()),
        ("LATCHKEY_MASTER_KEY".into(), MASTER_KEY.into()),
        // One client on loopback: the per-IP limit is off for the run.
        ("LATCHKEY_RATE_LIMIT_PER_MINUTE".into(), "0".into()),
        ("LATCHKEY_OTP_RESEND_COOLDOWN_SECS".into(), "0".into()),
        ("LATCHKEY_EXPOSE_OTP".into(), "true".into()),
        ("LATCHKEY_LOG".into(), "warn".into()),
    ]
}

async fn start_server(
    bin: &Path,
    env: &[(String, String)],
    client: &reqwest::Client,
    port: u16,
) -> Result<Server, Error> {
    let child = Command::new(bin)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the server did not become ready".into())
}

/// The servers of a run: one, or several behind HAProxy (`entry` is then
/// the balancer; its `child` is HAProxy's process).
struct Cluster {
    entry: Server,
    nodes: Vec<Server>,
}

impl Cluster {
    fn pids(&self) -> Vec<u32> {
        if self.nodes.is_empty() {
            vec![self.entry.child.id()]
        } else {
            self.nodes.iter().map(|n| n.child.id()).collect()
        }
    }
}

/// One server on `port`, or `nodes` servers on free ports behind HAProxy
/// on `port` (round robin, health-checked on /readyz, as
/// deploy/cluster.sh runs them).
async fn start_cluster(
    nodes: usize,
    bin: &Path,
    env: &[(String, String)],
    client: &reqwest::Client,
    port: u16,
    dir: &Path,
) -> Result<Cluster, Error> {
    if nodes <= 1 {
        return Ok(Cluster {
            entry: start_server(bin, env, client, port).await?,
            nodes: Vec::new(),
        });
    }
    let mut servers = Vec::new();
    let mut backends = String::new();
    for i in 0..nodes {
        let node_port = free_port()?;
        let mut node_env = env.to_vec();
        node_env.retain(|(k, _)| k != "LATCHKEY_BIND");
        node_env.push(("LATCHKEY_BIND".into(), format!("127.0.0.1:{node_port}")));
        servers.push(start_server(bin, &node_env, client, node_port).await?);
        backends.push_str(&format!(
            "    server node{i} 127.0.0.1:{node_port} check inter 1s\n"
        ));
    }
    // The same Debian package the cluster script installs, installed the
    // same way when it is missing.
    if Command::new("haproxy").arg("-v").output().is_err() {
        let installed = Command::new("bash")
            .arg(workspace_root().join("deploy/cluster.sh"))
            .arg("install")
            .status()?;
        if !installed.success() {
            return Err("installing haproxy failed (deploy/cluster.sh install)".into());
        }
    }
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n    maxconn 4096\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\nfrontend latchkey\n    bind 127.0.0.1:{port}\n    default_backend nodes\nbackend nodes\n    balance roundrobin\n    option httpchk GET /readyz\n    http-check expect status 200\n{backends}"
        ),
    )?;
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&config)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("haproxy: {e}"))?;
    let entry = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if client
            .get(format!("{}/readyz", entry.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(Cluster {
                entry,
                nodes: servers,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("haproxy did not become ready".into())
}

fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Run {
    rows: Vec<Row>,
    argon2_raw: Option<f64>,
    /// The asynchronous scenarios' accept-to-outcome measurements.
    asynchronous: Vec<asynchronous::AsyncStats>,
}

fn wanted(args: &Args, name: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|o| o == name) || name == "ceiling"
}

/// Validate-logins sent by `async-login` (a login costs an argon2 check).
const ASYNC_LOGINS: u64 = 1_000;
/// Patches sent by `async-patch`.
const ASYNC_PATCHES: u64 = 10_000;

/// One server over a freshly seeded database, with the chosen scenarios.
async fn run_once(
    args: &Args,
    bin: &Path,
    sessions: usize,
    scenarios: &[&str],
) -> Result<Run, Error> {
    let dir =
        std::env::temp_dir().join(format!("latchkey-bench-{}-{sessions}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = Database::create(args, &dir)?;
    let sink = mail_sink_dir(sessions);
    let _ = std::fs::remove_dir_all(&sink);
    std::fs::create_dir_all(&sink)?;
    let port = free_port()?;
    let env = server_env(&sink, &db, port);
    let settings = Settings::from_sources(None, env.clone())?;
    let verify_codes = if scenarios.contains(&"otp-verify") {
        120_000
    } else {
        0
    };
    eprintln!(
        "seeding {} with {sessions} sessions …",
        if db.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    // One user with an authenticator and a session per request: each is
    // accepted once per 30 s step.
    let totp_users = if scenarios.contains(&"totp-verify") {
        120_000
    } else {
        0
    };
    let seeded = Arc::new(seed::seed(&settings, sessions, verify_codes, totp_users).await?);

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections * 2)
        .build()?;
    let cluster = start_cluster(args.nodes, bin, &env, &client, port, &dir).await?;
    let pids = cluster.pids();
    let server = &cluster.entry;
    let admin_token = {
        let output = Command::new(bin)
            .arg("admin-token")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()?;
        String::from_utf8(output.stdout)?.trim().to_owned()
    };
    let plan = |name: &str, max: u64| Plan {
        name: name.to_owned(),
        connections: args.connections,
        warmup: Duration::from_secs(args.warmup),
        duration: Duration::from_secs(args.duration),
        max_requests: max,
        server_pids: pids.clone(),
    };
    let base = Arc::new(server.base.clone());
    let mut outcomes: Vec<(Outcome, &'static str, Option<u64>)> = Vec::new();

    // The ceiling again at the end: this VM's speed drifts by up to a third
    // within minutes, so the ratios use the mean of the two measurements.
    let mut order: Vec<&str> = scenarios.to_vec();
    if scenarios.contains(&"ceiling") && scenarios.len() > 1 {
        order.push("ceiling-end");
    }
    // argon2-raw runs half before and half after `login` (the server idle),
    // and the two halves are averaged: the two are compared, and the speed
    // of this VM drifts by a third within minutes.
    let raw_half = Duration::from_secs(args.duration).max(Duration::from_secs(2)) / 2;
    let mut argon2_raw_rates = Vec::new();
    let mut async_stats = Vec::new();
    for name in order {
        if name == "login" {
            eprintln!("  argon2-raw (first half) …");
            argon2_raw_rates.push(argon2_raw(&settings, raw_half));
        }
        let (c, b, s, t) = (
            client.clone(),
            base.clone(),
            seeded.clone(),
            Arc::new(admin_token.clone()),
        );
        let outcome = match name {
            "ceiling" | "ceiling-end" => {
                load::run(plan(name, u64::MAX), move |_| {
                    let (c, b) = (c.clone(), b.clone());
                    async move {
                        c.get(format!("{b}/healthz"))
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 200)
                    }
                })
                .await
            }
            "read" => {
                load::run(plan(name, u64::MAX), move |n| {
                    let (c, b, s) = (c.clone(), b.clone(), s.clone());
                    async move {
                        let (id, token) = &s.readers[n as usize % s.readers.len()];
                        c.get(format!("{b}/sessions/{id}"))
                            .bearer_auth(token)
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 200)
                    }
                })
                .await
            }
            "otp-issue" => {
                load::run(plan(name, u64::MAX), move |n| {
                    let (c, b, s, t) = (c.clone(), b.clone(), s.clone(), t.clone());
                    async move {
                        let user = &s.user_ids[n as usize % s.user_ids.len()];
                        c.put(format!("{b}/sessions/{}", uuid::Uuid::new_v4()))
                            .bearer_auth(t.as_str())
                            .json(&json!({"userId": user, "passedLoginOTP": false}))
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 200)
                    }
                })
                .await
            }
            "otp-verify" => {
                load::run(plan(name, s.verifiable.len() as u64), move |n| {
                    let (c, b, s) = (c.clone(), b.clone(), s.clone());
                    async move {
                        let (token, code) = &s.verifiable[n as usize];
                        c.post(format!("{b}/user/otp/verify"))
                            .bearer_auth(token)
                            .json(&json!({"otp": code, "types": ["login"]}))
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 200)
                    }
                })
                .await
            }
            "totp-verify" => {
                load::run(plan(name, s.authenticators.len() as u64), move |n| {
                    let (c, b, s) = (c.clone(), b.clone(), s.clone());
                    async move {
                        let (token, secret) = &s.authenticators[n as usize];
                        // The code an authenticator app shows now (one
                        // HMAC-SHA1, microseconds against the request).
                        let Ok(totp) = latchkey::otp::totp::checker(secret, 1) else {
                            return false;
                        };
                        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
                        let code = totp.generate(now).to_string();
                        c.post(format!("{b}/user/otp/verify"))
                            .bearer_auth(token)
                            .json(&json!({"otp": code, "types": ["totp"]}))
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 200)
                    }
                })
                .await
            }
            "login" => {
                load::run(plan(name, u64::MAX), move |n| {
                    let (c, b, s) = (c.clone(), b.clone(), s.clone());
                    async move {
                        let login = &s.login_names[n as usize % s.login_names.len()];
                        c.post(format!("{b}/sessions"))
                            .json(&json!({"loginName": login, "password": seed::PASSWORD}))
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 201)
                    }
                })
                .await
            }
            "async-login" => {
                // Capped, without warm-up (it would send them all): each
                // login costs an argon2 check in the worker (about 100/s
                // here), so an uncapped run would only measure a growing
                // queue.
                let plan = Plan {
                    warmup: Duration::ZERO,
                    ..plan(name, ASYNC_LOGINS)
                };
                load::run(plan, move |n| {
                    let (c, b) = (c.clone(), b.clone());
                    async move {
                        let employee = format!("{:05}", 10000 + n as usize % seed::USERS);
                        c.post(format!("{b}/jef-one-validate-login-and-create-session"))
                            .json(&json!({
                                "session_id": uuid::Uuid::new_v4(),
                                "entity_number": "1000",
                                "application_name": "Bench App",
                                "employee_number": employee,
                                "password": seed::PASSWORD,
                            }))
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 202)
                    }
                })
                .await
            }
            "async-patch" => {
                let plan = Plan {
                    warmup: Duration::ZERO,
                    ..plan(name, ASYNC_PATCHES)
                };
                load::run(plan, move |n| {
                    let (c, b, s, t) = (c.clone(), b.clone(), s.clone(), t.clone());
                    async move {
                        let (id, _) = &s.readers[n as usize % s.readers.len()];
                        c.patch(format!("{b}/one-sessions-patch-one"))
                            .bearer_auth(t.as_str())
                            .json(&json!({
                                "session_id": id,
                                "session_entity_field": "entity_number",
                                "session_entity_field_value": "1000",
                            }))
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 202)
                    }
                })
                .await
            }
            "flow" => {
                load::run(plan(name, u64::MAX), move |n| {
                    let (c, b, s) = (c.clone(), b.clone(), s.clone());
                    async move { flow(&c, &b, &s, n as usize).await.unwrap_or(false) }
                })
                .await
            }
            _ => continue,
        };
        let unit = if name == "flow" { "flows/s" } else { "req/s" };
        eprintln!(
            "  {name:<12} {:>9.0} {unit}  p99 {:.2} ms  errors {}",
            outcome.per_second(),
            outcome.latency.value_at_quantile(0.99) as f64 / 1000.0,
            outcome.errors
        );
        // Mail the scenario queued but the outbox has not yet delivered: a
        // throughput bought by leaving work behind would show here.
        let backlog = if matches!(name, "otp-issue" | "flow") {
            mail_backlog(&client, &base).await
        } else {
            None
        };
        if let Some(operation) = match name {
            "async-login" => Some("validate-login"),
            "async-patch" => Some("patch-one"),
            _ => None,
        } {
            let stats =
                asynchronous::drain_and_measure(&settings, operation, Duration::from_secs(600))?;
            eprintln!("  {}", stats.line());
            async_stats.push(stats);
        }
        outcomes.push((outcome, unit, backlog));
        if name == "login" {
            eprintln!("  argon2-raw (second half) …");
            argon2_raw_rates.push(argon2_raw(&settings, raw_half));
        }
    }
    drop(cluster);
    let ceilings: Vec<f64> = outcomes
        .iter()
        .filter(|(o, _, _)| o.name.starts_with("ceiling"))
        .map(|(o, _, _)| o.per_second())
        .collect();
    let ceiling = mean(&ceilings).unwrap_or(0.0);
    let rows = outcomes
        .iter()
        .map(|(o, unit, backlog)| Row {
            mail_backlog: *backlog,
            ..Row::from_outcome(o, ceiling, unit)
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&sink);
    Ok(Run {
        rows,
        argon2_raw: mean(&argon2_raw_rates),
        asynchronous: async_stats,
    })
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The outbox's pending rows, from the server's /metrics.
async fn mail_backlog(client: &reqwest::Client, base: &str) -> Option<u64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("latchkey_outbox_depth{status=\"pending\"} "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

/// login → PUT (code) → VerifyOTP → PUT passedLoginOTP:true.
async fn flow(
    client: &reqwest::Client,
    base: &str,
    seeded: &seed::Seeded,
    n: usize,
) -> Result<bool, Error> {
    let i = n % seeded.login_names.len();
    let login: serde_json::Value = client
        .post(format!("{base}/sessions"))
        .json(&json!({"loginName": seeded.login_names[i], "password": seed::PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let (Some(session), Some(token)) =
        (login["sessionId"].as_str(), login["sessionToken"].as_str())
    else {
        return Ok(false);
    };
    let user = &seeded.user_ids[i];
    let sent: serde_json::Value = client
        .put(format!("{base}/sessions/{session}"))
        .bearer_auth(token)
        .json(&json!({"userId": user, "passedLoginOTP": false}))
        .send()
        .await?
        .json()
        .await?;
    let Some(code) = sent["otp"].as_str() else {
        return Ok(false);
    };
    let verified = client
        .post(format!("{base}/user/otp/verify"))
        .bearer_auth(token)
        .json(&json!({"otp": code}))
        .send()
        .await?;
    if verified.status() != 200 {
        return Ok(false);
    }
    let done = client
        .put(format!("{base}/sessions/{session}"))
        .bearer_auth(token)
        .json(&json!({"userId": user, "passedLoginOTP": true}))
        .send()
        .await?;
    Ok(done.status() == 204)
}

/// The same argon2id verification as a login, in a tight loop on every core.
fn argon2_raw(settings: &Settings, duration: Duration) -> f64 {
    let Ok(hasher) = latchkey::passwords::PasswordHasher::new(&settings.argon2) else {
        return 0.0;
    };
    let Ok(hash) = hasher.hash(seed::PASSWORD) else {
        return 0.0;
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let started = Instant::now();
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let (hasher, hash) = (hasher.clone(), hash.clone());
            std::thread::spawn(move || {
                let mut count = 0u64;
                while started.elapsed() < duration {
                    if hasher.verify(seed::PASSWORD, &hash) {
                        count += 1;
                    }
                }
                count
            })
        })
        .collect();
    let total: u64 = threads.into_iter().filter_map(|t| t.join().ok()).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    json!({ "cpu": cpu, "cores": cores, "os": std::env::consts::OS })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => build_server()?,
    };
    if args.nodes > 1 && args.backend == BackendArg::Sqlite {
        return Err(
            "--nodes needs --backend postgres: several nodes share one PostgreSQL database".into(),
        );
    }
    let backend = match (args.backend, args.nodes) {
        (BackendArg::Sqlite, _) => "sqlite".to_owned(),
        (BackendArg::Postgres, 0 | 1) => "postgres".to_owned(),
        (BackendArg::Postgres, n) => format!("postgres-{n}nodes"),
    };
    let backend = backend.as_str();
    let all = [
        "ceiling",
        "read",
        "otp-issue",
        "otp-verify",
        "totp-verify",
        "login",
        "flow",
        "async-login",
        "async-patch",
    ];
    let scenarios: Vec<&str> = all.iter().copied().filter(|s| wanted(&args, s)).collect();
    eprintln!(
        "latchkey-bench: {backend}, {} stored sessions, {} connections, {} s per scenario after {} s warm-up; per-IP rate limit off; mail to .eml files in tmpfs",
        args.sessions, args.connections, args.duration, args.warmup
    );
    let main_run = run_once(&args, &bin, args.sessions, &scenarios).await?;
    println!(
        "\n{backend}, {} stored sessions, {} connections, {} s each:\n",
        args.sessions, args.connections, args.duration
    );
    println!("{}", report::table(&main_run.rows));
    let login_ratio = match (
        main_run.argon2_raw,
        main_run.rows.iter().find(|r| r.name == "login"),
    ) {
        (Some(raw), Some(login)) if raw > 0.0 => {
            println!(
                "argon2-raw: {raw:.1} verifications/s on all cores; login reaches {:.0} % of it",
                login.per_second / raw * 100.0
            );
            Some(login.per_second / raw)
        }
        _ => None,
    };

    for stats in &main_run.asynchronous {
        println!("{}", stats.line());
    }

    let mut scale = Vec::new();
    if args.scale {
        for sessions in [10_000, 1_000_000] {
            let run = run_once(&args, &bin, sessions, &["ceiling", "read", "otp-issue"]).await?;
            println!(
                "\n{backend}, {sessions} stored sessions:\n\n{}",
                report::table(&run.rows)
            );
            scale.push(json!({ "sessions": sessions, "scenarios": run.rows.iter().map(Row::to_json).collect::<Vec<_>>() }));
        }
    }

    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let dir = workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let document = json!({
        "date": date,
        "backend": backend,
        "machine": machine(),
        "stored_sessions": args.sessions,
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rate_limits": "per-IP limit off for the run (LATCHKEY_RATE_LIMIT_PER_MINUTE=0): one client on loopback",
        "mail_sink": "outbox delivers .eml files to a tmpfs folder (/dev/shm) during the run; the database is on disk",
        "ratio_basis": "vs ceiling = throughput / mean of the ceiling measured first (ceiling) and last (ceiling-end) in the same run",
        "scenarios": main_run.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "argon2_raw_per_s": main_run.argon2_raw.map(|r| report::round(r, 1)),
        "login_ratio_to_argon2_raw": login_ratio.map(|r| report::round(r, 3)),
        "scale": scale,
        "asynchronous": main_run.asynchronous.iter().map(asynchronous::AsyncStats::to_json).collect::<Vec<_>>(),
    });
    let json_path = dir.join(format!("{date}-{backend}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&document)?)?;
    let png_path = dir.join(format!("{date}-{backend}.png"));
    let title = format!(
        "latchkey {backend}, {} sessions, {} conns",
        args.sessions, args.connections
    );
    report::chart(&main_run.rows, &title, &png_path)?;
    eprintln!("wrote {} and {}", json_path.display(), png_path.display());
    Ok(())
}
