use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::web;
use chrono::{Duration, Utc};
use diesel::{Connection, PgConnection, RunQueryDsl};
use latchkey::clock::ManualClock;
use latchkey::config::Settings;
use latchkey::services::Core;
use latchkey::startup::{Application, Dependencies};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use uuid::Uuid;

use crate::smtp::SmtpServer;

pub const POSTGRES_ENV: &str = "LATCHKEY_TEST_POSTGRES_URL";

/// A database of one test, dropped with it.
pub struct TestDatabase {
    /// Holds the SQLite file (and the data dir) until the test ends.
    pub dir: TempDir,
    pub url: String,
    postgres: Option<(String, String)>,
}

fn with_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    format!("{host_part}/{name}{query}")
}

impl TestDatabase {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match std::env::var(POSTGRES_ENV) {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("latchkey_test_{}", Uuid::new_v4().simple());
                let mut conn = PgConnection::establish(&admin_url)
                    .expect("connect to the test PostgreSQL server");
                diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .expect("create the test database");
                let url = with_database_name(&admin_url, &name);
                Self {
                    dir,
                    url,
                    postgres: Some((admin_url, name)),
                }
            }
            _ => {
                let url = dir
                    .path()
                    .join("latchkey.sqlite3")
                    .to_string_lossy()
                    .into_owned();
                Self {
                    dir,
                    url,
                    postgres: None,
                }
            }
        }
    }

    /// The environment a `latchkey` process needs to use this database.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LATCHKEY_BIND".into(), "127.0.0.1:0".into()),
            (
                "LATCHKEY_DATA_DIR".into(),
                self.dir.path().to_string_lossy().into_owned(),
            ),
            ("LATCHKEY_DATABASE_URL".into(), self.url.clone()),
            ("LATCHKEY_DB_POOL_SIZE".into(), "4".into()),
            ("LATCHKEY_WORKERS".into(), "1".into()),
            ("LATCHKEY_LOG".into(), "warn".into()),
            // Retries made due by moving the clock are picked up quickly.
            ("LATCHKEY_OUTBOX_POLL_MS".into(), "50".into()),
            // One client address runs the whole suite; the limit has its own test.
            ("LATCHKEY_RATE_LIMIT_PER_MINUTE".into(), "100000".into()),
            // Cheap hashing keeps the suite fast; the default cost is
            // exercised by the benchmark.
            ("LATCHKEY_ARGON2_MEMORY_KIB".into(), "64".into()),
            ("LATCHKEY_ARGON2_ITERATIONS".into(), "1".into()),
        ]
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = &self.postgres else {
            return;
        };
        if let Ok(mut conn) = PgConnection::establish(admin_url) {
            let drop_database = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = diesel::sql_query(drop_database).execute(&mut conn);
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub smtp: SmtpServer,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub clock: ManualClock,
    pub core: web::Data<Core>,
    pub db: Arc<TestDatabase>,
    handle: ServerHandle,
}

/// A test's server stops when the test lets go of it: no server outlives
/// its test, and no worker keeps polling a database the test dropped.
/// (`ServerHandle::stop` sends the command at once; the future it returns
/// only waits for it.)
impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_env(&[]).await
}

/// [`spawn_app`] with extra `LATCHKEY_*` settings.
pub async fn spawn_app_with_env(extra_env: &[(&str, &str)]) -> TestApp {
    spawn_app_with(
        Arc::new(TestDatabase::new()),
        SmtpServer::start(),
        extra_env,
    )
    .await
}

/// Starts the app on `db`, sending mail to `smtp`, with extra `LATCHKEY_*`
/// settings.
pub async fn spawn_app_with(
    db: Arc<TestDatabase>,
    smtp: SmtpServer,
    extra_env: &[(&str, &str)],
) -> TestApp {
    let mut env = db.env();
    env.push(("LATCHKEY_SMTP_URL".into(), smtp.url()));
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    // TEST_LOG=debug shows the server's log of a failing test.
    if let Ok(filter) = std::env::var("TEST_LOG") {
        env.push(("LATCHKEY_LOG".into(), filter));
    }
    let settings = Settings::from_sources(None, env).expect("test settings");
    if std::env::var("TEST_LOG").is_ok() {
        latchkey::telemetry::init_tracing(&settings, true);
    }
    let clock = ManualClock::new(Utc::now());
    let app = Application::build(
        settings,
        Dependencies {
            clock: Arc::new(clock.clone()),
        },
    )
    .await
    .expect("the app starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let core = app.core();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let (admin_token, _) = core
        .tokens
        .issue("test-admin", "admin", Duration::hours(1), None)
        .expect("an admin token");
    TestApp {
        address,
        smtp,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        admin_token,
        clock,
        core,
        db,
        handle,
    }
}

impl TestApp {
    /// Stops the server and starts a new one over the same database.
    pub async fn restart(self) -> TestApp {
        self.restart_with(&[]).await
    }

    /// Stops the server (and its delivery worker) and starts a new one over
    /// the same database and SMTP server, with extra settings.
    pub async fn restart_with(self, extra_env: &[(&str, &str)]) -> TestApp {
        self.handle.stop(true).await;
        let (db, smtp) = (self.db.clone(), self.smtp.clone());
        drop(self);
        spawn_app_with(db, smtp, extra_env).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A request with the admin token.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.admin(Method::GET, path).send().await.expect("request")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.admin(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.admin(Method::PATCH, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.admin(Method::PUT, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.admin(Method::DELETE, path)
            .send()
            .await
            .expect("request")
    }

    /// Creates an entity and returns its JSON.
    pub async fn create_entity(&self, number: &str) -> Value {
        let response = self
            .post(
                "/admin/entities",
                &serde_json::json!({"entityNumber": number, "name": format!("Entity {number}")}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("json")
    }

    /// Creates a user in `entity_id` and returns its JSON.
    pub async fn create_user(&self, entity_id: &str, employee_number: &str, email: &str) -> Value {
        let response = self
            .post(
                "/admin/users",
                &serde_json::json!({
                    "entityId": entity_id,
                    "employeeNumber": employee_number,
                    "displayName": format!("Employee {employee_number}"),
                    "email": email,
                    "password": "correct horse battery",
                }),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap_or_default()
        );
        response.json().await.expect("json")
    }
}

pub async fn json(response: Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// Asserts a JSON:API error response and returns its `errors` array.
pub async fn assert_error(response: Response, status: u16, code: &str) -> Vec<Value> {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/vnd.api+json"),
        "content type"
    );
    let body: Value = response.json().await.expect("a JSON:API body");
    let errors = body["errors"].as_array().expect("errors array").clone();
    assert!(!errors.is_empty(), "at least one error object");
    for error in &errors {
        assert_eq!(error["status"], status.to_string(), "{error}");
        assert_eq!(error["code"], code, "{error}");
        assert!(
            error["id"]
                .as_str()
                .is_some_and(|id| Uuid::parse_str(id).is_ok()),
            "{error}"
        );
        assert!(
            error["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{error}"
        );
        assert!(
            error["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{error}"
        );
    }
    errors
}

/// The pointers of a 422's error objects, sorted.
pub fn pointers(errors: &[Value]) -> Vec<String> {
    let mut pointers: Vec<String> = errors
        .iter()
        .filter_map(|e| e["source"]["pointer"].as_str().map(str::to_owned))
        .collect();
    pointers.sort();
    pointers
}

/// A signed-in user of a test.
pub struct TestUser {
    pub id: String,
    pub login_name: String,
    pub password: String,
}

pub struct Login {
    pub session_id: String,
    pub token: String,
}

impl TestApp {
    /// Creates entity `entity_number` if needed and a user with an email
    /// and a password.
    pub async fn seed_user(
        &self,
        entity_number: &str,
        employee_number: &str,
        email: &str,
    ) -> TestUser {
        let entity = self.get("/admin/entities?limit=200").await;
        let entities: Value = entity.json().await.unwrap();
        let existing = entities["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["entityNumber"] == entity_number)
            .map(|e| e["id"].as_str().unwrap().to_owned());
        let entity_id = match existing {
            Some(id) => id,
            None => self.create_entity(entity_number).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        };
        let user = self.create_user(&entity_id, employee_number, email).await;
        TestUser {
            id: user["id"].as_str().unwrap().to_owned(),
            login_name: user["loginName"].as_str().unwrap().to_owned(),
            password: "correct horse battery".to_owned(),
        }
    }

    pub async fn login_response(&self, body: &Value) -> Response {
        self.client
            .post(self.url("/sessions"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, user: &TestUser) -> Login {
        let response = self
            .login_response(
                &serde_json::json!({"loginName": user.login_name, "password": user.password}),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let body: Value = response.json().await.unwrap();
        Login {
            session_id: body["sessionId"].as_str().unwrap().to_owned(),
            token: body["sessionToken"].as_str().unwrap().to_owned(),
        }
    }

    /// Asks for a login code with the session's own token (`PUT
    /// /sessions/{id}` with `passedLoginOTP: false`) and asserts it was sent.
    pub async fn send_login_code(&self, user: &TestUser, login: &Login) {
        let response = self
            .with_token(
                Method::PUT,
                &format!("/sessions/{}", login.session_id),
                &login.token,
            )
            .json(&serde_json::json!({"userId": user.id, "passedLoginOTP": false}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "the code was sent");
    }

    /// `GET /sessions/{id}` with the session's own token.
    pub async fn read_own_session(&self, login: &Login) -> Response {
        self.with_token(
            Method::GET,
            &format!("/sessions/{}", login.session_id),
            &login.token,
        )
        .send()
        .await
        .expect("request")
    }

    /// A request with a session (or any) token.
    pub fn with_token(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }
}
