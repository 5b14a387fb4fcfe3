//! Several Latchkey nodes on one PostgreSQL database: real server
//! processes (the `latchkey` binary), each on its own port, sharing one
//! database and one SMTP server in the test process. Run when
//! LATCHKEY_TEST_POSTGRES_URL is set (a node on SQLite is alone by design).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{POSTGRES_ENV, TestDatabase, assert_error, json};
use crate::smtp::SmtpServer;

/// One `latchkey serve` process; killed (SIGKILL) when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn postgres() -> bool {
    std::env::var(POSTGRES_ENV).is_ok_and(|url| !url.is_empty())
}

/// The settings every node of a cluster shares (the same database, data
/// dir with its master key, mail relay), plus `extra`.
fn node_env(db: &TestDatabase, smtp: &SmtpServer, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = db.env();
    env.push(("LATCHKEY_SMTP_URL".into(), smtp.url()));
    env.push(("LATCHKEY_ASYNC_POLL_MS".into(), "50".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

impl Node {
    async fn start(db: &TestDatabase, smtp: &SmtpServer, extra: &[(&str, &str)]) -> Node {
        let port = SmtpServer::reserve_port();
        let mut env = node_env(db, smtp, extra);
        env.push(("LATCHKEY_BIND".into(), format!("127.0.0.1:{port}")));
        let child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .arg("serve")
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a latchkey node");
        let node = Node {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(response) = client.get(node.url("/readyz")).send().await
                && response.status() == 200
            {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("node on port {port} did not become ready");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Three nodes, started one after the other (the first migrates and
/// makes the master key), and an admin token from the CLI.
struct Cluster {
    nodes: Vec<Node>,
    client: reqwest::Client,
    admin_token: String,
    smtp: SmtpServer,
    db: TestDatabase,
}

fn cli(db: &TestDatabase, smtp: &SmtpServer, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .envs(node_env(db, smtp, &[]))
        .output()
        .expect("run latchkey");
    assert!(
        output.status.success(),
        "latchkey {args:?}: {} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl Cluster {
    async fn start(extra: &[(&str, &str)]) -> Cluster {
        let db = TestDatabase::new();
        let smtp = SmtpServer::start();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Node::start(&db, &smtp, extra).await);
        }
        let admin_token = cli(&db, &smtp, &["admin-token"]);
        Cluster {
            nodes,
            client: reqwest::Client::new(),
            admin_token,
            smtp,
            db,
        }
    }

    fn node(&self, i: usize) -> &Node {
        &self.nodes[i % self.nodes.len()]
    }

    fn admin(&self, i: usize, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.node(i).url(path))
            .bearer_auth(&self.admin_token)
    }

    /// Entity 1000 and user 10000 with an email, made through node 0.
    async fn seed_user(&self) -> String {
        let entity = self
            .admin(0, Method::POST, "/admin/entities")
            .json(&json!({"entityNumber": "1000", "name": "Acme"}))
            .send()
            .await
            .unwrap();
        assert_eq!(entity.status(), 201);
        let entity_id = json(entity).await["id"].as_str().unwrap().to_owned();
        let user = self
            .admin(0, Method::POST, "/admin/users")
            .json(
                &json!({"entityId": entity_id, "employeeNumber": "10000", "displayName": "Ann",
                "email": "ann@example.com", "password": "correct horse battery"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(user.status(), 201);
        json(user).await["id"].as_str().unwrap().to_owned()
    }

    async fn login(&self, i: usize) -> (String, String) {
        let response = self
            .client
            .post(self.node(i).url("/sessions"))
            .json(&json!({"loginName": "ann@example.com", "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body = json(response).await;
        (
            body["sessionId"].as_str().unwrap().to_owned(),
            body["sessionToken"].as_str().unwrap().to_owned(),
        )
    }

    /// Asks node `i` for the session's login code with the session's own
    /// token and returns the code from the mail.
    async fn ask_login_code(
        &self,
        i: usize,
        user_id: &str,
        session_id: &str,
        token: &str,
    ) -> String {
        let sent = self
            .client
            .put(self.node(i).url(&format!("/sessions/{session_id}")))
            .bearer_auth(token)
            .json(&json!({"userId": user_id, "passedLoginOTP": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200);
        self.smtp.wait_for(1).await[0].code()
    }
}

macro_rules! postgres_only {
    () => {
        if !postgres() {
            eprintln!("several nodes need PostgreSQL ({POSTGRES_ENV}); skipped on SQLite");
            return;
        }
    };
}

#[tokio::test]
async fn a_login_on_one_node_is_continued_on_the_others() {
    postgres_only!();
    let cluster = Cluster::start(&[]).await;
    let user_id = cluster.seed_user().await;
    let (session_id, token) = cluster.login(0).await;
    // The code asked for on B …
    let code = cluster
        .ask_login_code(1, &user_id, &session_id, &token)
        .await;
    // … verified on C …
    let verified = cluster
        .client
        .post(cluster.node(2).url("/user/otp/verify"))
        .bearer_auth(&token)
        .json(&json!({"otp": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    // … and A sees the session verified.
    let session = json(
        cluster
            .client
            .get(cluster.node(0).url(&format!("/sessions/{session_id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(session["status"], "verified");
    // A logout on B kills the token on every node at once.
    let logout = cluster
        .client
        .delete(cluster.node(1).url(&format!("/sessions/{session_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    for i in 0..3 {
        let read = cluster
            .client
            .get(cluster.node(i).url(&format!("/sessions/{session_id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 401, "node {i}");
    }
}

#[tokio::test]
async fn wrong_codes_spread_over_the_nodes_count_once_against_the_limit() {
    postgres_only!();
    let cluster = Cluster::start(&[]).await;
    let user_id = cluster.seed_user().await;
    let (session_id, token) = cluster.login(0).await;
    let code = cluster
        .ask_login_code(0, &user_id, &session_id, &token)
        .await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let verify = |i: usize, otp: &str| {
        cluster
            .client
            .post(cluster.node(i).url("/user/otp/verify"))
            .bearer_auth(&token)
            .json(&json!({"otp": otp, "types": ["login"]}))
            .send()
    };
    let statuses: Vec<u16> = join_all((0..18).map(|i| verify(i, wrong)))
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 404).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        13,
        "{statuses:?}"
    );
    // The code is burned on every node.
    for i in 0..3 {
        assert_error(
            verify(i, &code).await.unwrap(),
            429,
            "otp-attempts-exceeded",
        )
        .await;
    }
}

#[tokio::test]
async fn the_rate_limit_holds_across_the_nodes() {
    postgres_only!();
    let cluster = Cluster::start(&[("LATCHKEY_RATE_LIMIT_PER_MINUTE", "10")]).await;
    // One window: 30 requests take well under a second; start them early
    // in a minute so they all fall in the same one.
    let second = chrono::Utc::now().timestamp().rem_euclid(60);
    if second > 45 {
        tokio::time::sleep(Duration::from_millis(((60 - second) * 1000 + 200) as u64)).await;
    }
    let mut statuses = Vec::new();
    for i in 0..30 {
        let response = cluster
            .client
            .post(cluster.node(i).url("/sessions"))
            .json(&json!({"loginName": "nobody@example.com", "password": "guess"}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        20,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn mail_queued_through_three_nodes_is_delivered_exactly_once() {
    postgres_only!();
    let cluster = Cluster::start(&[]).await;
    let user_id = cluster.seed_user().await;
    let requests = (0..500).map(|i| {
        cluster
            .admin(i, Method::PUT, &format!("/sessions/{}", Uuid::new_v4()))
            .json(&json!({"userId": user_id, "passedLoginOTP": false}))
            .send()
    });
    // 25 at a time: three nodes, each with a small pool.
    let mut statuses = Vec::new();
    let mut requests = requests.peekable();
    while requests.peek().is_some() {
        let batch: Vec<_> = requests.by_ref().take(25).collect();
        statuses.extend(
            join_all(batch)
                .await
                .into_iter()
                .map(|r| r.unwrap().status()),
        );
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    cluster.smtp.wait_for(500).await;
    // Every node's worker polled the queue meanwhile: nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = cluster.smtp.received();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for mail in &received {
        *by_id.entry(mail.message_id()).or_default() += 1;
    }
    assert_eq!(received.len(), 500);
    assert_eq!(by_id.len(), 500);
}

#[tokio::test]
async fn a_node_killed_during_delivery_loses_no_mail_and_resends_at_most_once() {
    postgres_only!();
    let db = TestDatabase::new();
    let smtp = SmtpServer::start();
    let lease = [("LATCHKEY_OUTBOX_LEASE_SECS", "2")];
    let first = Node::start(&db, &smtp, &lease).await;
    let token = cli(&db, &smtp, &["admin-token"]);
    let client = reqwest::Client::new();
    let cluster_user = {
        let entity = client
            .post(first.url("/admin/entities"))
            .bearer_auth(&token)
            .json(&json!({"entityNumber": "1000", "name": "Acme"}))
            .send()
            .await
            .unwrap();
        let entity_id = json(entity).await["id"].as_str().unwrap().to_owned();
        let user = client
            .post(first.url("/admin/users"))
            .bearer_auth(&token)
            .json(
                &json!({"entityId": entity_id, "employeeNumber": "10000", "displayName": "Ann",
                "email": "ann@example.com", "password": "correct horse battery"}),
            )
            .send()
            .await
            .unwrap();
        json(user).await["id"].as_str().unwrap().to_owned()
    };
    // A slow relay keeps the first node's sends in flight when it dies.
    smtp.slow(500);
    for _ in 0..40 {
        let sent = client
            .put(first.url(&format!("/sessions/{}", Uuid::new_v4())))
            .bearer_auth(&token)
            .json(&json!({"userId": cluster_user, "passedLoginOTP": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200);
    }
    smtp.wait_for(1).await;
    drop(first); // SIGKILL, mid-delivery
    let delivered_before = smtp.received().len();
    assert!(
        delivered_before < 40,
        "the node died before it sent every mail"
    );
    smtp.slow(0);
    let _second = Node::start(&db, &smtp, &lease).await;
    let _third = Node::start(&db, &smtp, &lease).await;
    smtp.wait_for(40).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for mail in smtp.received() {
        *by_id.entry(mail.message_id()).or_default() += 1;
    }
    // No mail lost; a mail in flight when the node died may come twice,
    // with the same Message-ID, never more.
    assert_eq!(by_id.len(), 40);
    assert!(by_id.values().all(|n| *n <= 2), "{by_id:?}");
}

#[tokio::test]
async fn async_requests_through_three_nodes_are_processed_once() {
    postgres_only!();
    let cluster = Cluster::start(&[]).await;
    let user_id = cluster.seed_user().await;
    let entity_id = json(
        cluster
            .admin(0, Method::GET, &format!("/admin/users/{user_id}"))
            .send()
            .await
            .unwrap(),
    )
    .await["entityId"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = cluster
        .admin(0, Method::POST, &format!("/admin/entities/{entity_id}/applications"))
        .json(&json!({"applicationName": "value_00", "applicationType": "mobile", "applicationNumber": "APP-1"}))
        .send()
        .await
        .unwrap();
    let app_id = json(app).await["id"].as_str().unwrap().to_owned();
    let mut requests = Vec::new();
    for i in 0..15 {
        let body = json!({
            "session_id": Uuid::new_v4(), "user_id": user_id, "entity_id": entity_id,
            "session_entity_field": "mobile_application_id", "session_entity_field_value": app_id,
            "entity_number": "1000", "employee_number": "10000", "application_number": "APP-1",
            "application_type": "mobile", "status": "pending", "is_valid": "True", "is_active": "True",
            "session_context": {}, "expires_at": "2099-01-01T00:00:00Z",
            "created_at": "2026-05-17T15:49:56Z", "updated_at": "2026-05-17T15:49:56Z",
        });
        let response = cluster
            .admin(i, Method::POST, "/one-sessions-post-one")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        requests.push(
            json(response).await["request_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for (i, id) in requests.iter().enumerate() {
        let mut outcome = Value::Null;
        for _ in 0..500 {
            outcome = json(
                cluster
                    .admin(i + 1, Method::GET, &format!("/one-requests/{id}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            if outcome["status"] == "succeeded" || outcome["status"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(outcome["status"], "succeeded", "{outcome}");
    }
    cluster.smtp.wait_for(15).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cluster.smtp.received().len(), 15);
}

#[tokio::test]
async fn a_key_rotated_through_one_node_is_used_and_accepted_by_all() {
    postgres_only!();
    let cluster = Cluster::start(&[("LATCHKEY_KEY_REFRESH_SECS", "1")]).await;
    cluster.seed_user().await;
    let old_kid = jsonwebtoken::decode_header(&cluster.admin_token)
        .unwrap()
        .kid
        .unwrap();
    cli(&cluster.db, &cluster.smtp, &["rotate-key"]);
    // A token signed with the new key is accepted by every node at once.
    let token = cli(&cluster.db, &cluster.smtp, &["admin-token"]);
    let new_kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid);
    for i in 0..3 {
        let response = cluster
            .client
            .get(cluster.node(i).url("/admin/entities"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "node {i}");
    }
    // Within the refresh interval every node signs with it; its tokens are
    // accepted by the others.
    for i in 0..3 {
        let mut kid = String::new();
        let mut token = String::new();
        for _ in 0..100 {
            (_, token) = cluster.login(i).await;
            kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
            if kid == new_kid {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(kid, new_kid, "node {i} signs with the rotated key");
        let other = cluster
            .client
            .get(cluster.node(i + 1).url("/sessions"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_ne!(
            other.status(),
            401,
            "node {} accepts node {i}'s token",
            i + 1
        );
    }
}
