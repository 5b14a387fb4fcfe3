//! The session engine called directly, without HTTP: commands in, state or
//! engine errors out, time moved by the test's clock. (The server of
//! `spawn_app` only provides the engine's `Core` over a real database.)

use chrono::Duration;
use latchkey::engine::Caller;
use latchkey::engine::factors::{self, OtpType};
use latchkey::engine::lifecycle::{self, UpdateOutcome};
use latchkey::engine::login::{self, LoginInput, UserRef};
use latchkey::error::ErrorCode;
use latchkey::services::audit::ClientInfo;

use crate::helpers::{TestApp, TestUser, spawn_app};

fn client() -> ClientInfo {
    from("192.0.2.1")
}

fn from(ip: &str) -> ClientInfo {
    ClientInfo {
        ip: Some(ip.parse().unwrap()),
        user_agent: Some("engine test".into()),
    }
}

async fn log_in(app: &TestApp, user: &TestUser, password: &str) -> Result<String, ErrorCode> {
    log_in_from(app, user, password, client()).await
}

async fn log_in_from(
    app: &TestApp,
    user: &TestUser,
    password: &str,
    client: ClientInfo,
) -> Result<String, ErrorCode> {
    login::login(
        &app.core,
        LoginInput {
            user: UserRef::LoginName(user.login_name.clone()),
            password: password.into(),
            application_name: None,
            session_id: None,
        },
        client,
    )
    .await
    .map(|result| result.session_id)
    .map_err(|error| error.code())
}

#[tokio::test]
async fn the_lock_ends_with_its_time_and_not_before() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    for _ in 0..10 {
        assert_eq!(
            log_in(&app, &user, "wrong").await,
            Err(ErrorCode::InvalidCredentials)
        );
    }
    assert_eq!(
        log_in(&app, &user, &user.password).await,
        Err(ErrorCode::UserLocked)
    );
    app.clock.advance(Duration::seconds(899));
    assert_eq!(
        log_in(&app, &user, &user.password).await,
        Err(ErrorCode::UserLocked)
    );
    app.clock.advance(Duration::seconds(2));
    assert!(log_in(&app, &user, &user.password).await.is_ok());
}

#[tokio::test]
async fn a_code_expires_with_its_time_and_verifies_the_session_before() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let session_id = log_in(&app, &user, &user.password).await.unwrap();
    let admin = Caller::Admin {
        subject: "engine test".into(),
    };
    let send = || {
        lifecycle::update(
            &app.core,
            &admin,
            &session_id,
            user.id.clone(),
            false,
            client(),
        )
    };
    let UpdateOutcome::CodeSent { code, .. } = send().await.unwrap() else {
        panic!("a code is sent");
    };
    let verify = |code: String| {
        factors::verify(
            &app.core,
            &admin,
            code,
            Some(vec![OtpType::Login]),
            Some(session_id.clone()),
            client(),
        )
    };
    // Expired one second after its 300 s.
    app.clock.advance(Duration::seconds(301));
    assert_eq!(
        verify(code).await.unwrap_err().code(),
        ErrorCode::OtpExpired
    );
    // A fresh code, in time: the session is verified by it.
    let UpdateOutcome::CodeSent { code, .. } = send().await.unwrap() else {
        panic!("a code is sent");
    };
    app.clock.advance(Duration::seconds(299));
    assert_eq!(verify(code).await.unwrap().otp_type, OtpType::Login);
    let session = lifecycle::get(&app.core, &admin, &session_id, None)
        .await
        .unwrap();
    assert_eq!(session.status, "verified");
    assert!(session.passed_login_otp);
}

#[tokio::test]
async fn lifetimes_are_capped_for_everyone_but_admins() {
    let app = spawn_app().await;
    let settings = &app.core.settings.auth;
    let max = Duration::seconds(settings.session_lifetime_secs);
    let admin = Caller::Admin {
        subject: "engine test".into(),
    };
    assert_eq!(lifecycle::check_lifetime(settings, None, max).unwrap(), max);
    assert_eq!(
        lifecycle::check_lifetime(settings, None, max + Duration::seconds(1))
            .unwrap_err()
            .code(),
        ErrorCode::LifetimeTooLong
    );
    assert!(lifecycle::check_lifetime(settings, Some(&admin), Duration::days(366)).is_ok());
    for out_of_bounds in [Duration::zero(), Duration::days(367)] {
        assert_eq!(
            lifecycle::check_lifetime(settings, Some(&admin), out_of_bounds)
                .unwrap_err()
                .code(),
            ErrorCode::ValidationFailed
        );
    }
}

#[tokio::test]
async fn a_lock_holds_for_its_source_and_answers_like_a_wrong_password() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let attacker = || from("2001:db8:aa::1");
    for _ in 0..10 {
        assert_eq!(
            log_in_from(&app, &user, "wrong", attacker()).await,
            Err(ErrorCode::InvalidCredentials)
        );
    }
    // Locked out: a wrong password still answers like any other ...
    assert_eq!(
        log_in_from(&app, &user, "wrong", attacker()).await,
        Err(ErrorCode::InvalidCredentials)
    );
    // ... the right one learns of the lock, from the whole /64 ...
    assert_eq!(
        log_in_from(&app, &user, &user.password, from("2001:db8:aa::ffff")).await,
        Err(ErrorCode::UserLocked)
    );
    // ... while the owner elsewhere signs in.
    assert!(
        log_in_from(&app, &user, &user.password, from("2001:db8:bb::1"))
            .await
            .is_ok()
    );
    assert!(
        log_in_from(&app, &user, &user.password, from("198.51.100.2"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn failures_from_many_sources_lock_the_user_for_everyone() {
    let app = crate::helpers::spawn_app_with(
        std::sync::Arc::new(crate::helpers::TestDatabase::new()),
        crate::smtp::SmtpServer::start(),
        &[("LATCHKEY_LOCKOUT_USER_THRESHOLD", "15")],
    )
    .await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    for i in 0..15 {
        let source = from(&format!("203.0.113.{i}"));
        assert_eq!(
            log_in_from(&app, &user, "wrong", source).await,
            Err(ErrorCode::InvalidCredentials)
        );
    }
    // The 16th attempt, from a fresh source, finds the account locked.
    assert_eq!(
        log_in_from(&app, &user, &user.password, from("198.51.100.9")).await,
        Err(ErrorCode::UserLocked)
    );
}

#[test]
fn sources_are_addresses_and_ipv6_prefixes() {
    use latchkey::engine::login::lockout_source;
    let source = |ip: &str| lockout_source(Some(ip.parse().unwrap()));
    assert_eq!(source("192.0.2.1"), "192.0.2.1");
    assert_eq!(source("::ffff:192.0.2.1"), "192.0.2.1");
    assert_eq!(source("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
    assert_eq!(source("2001:db8:1:2:3:4:5:6"), source("2001:db8:1:2::9"));
    assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
    assert_eq!(lockout_source(None), "unknown");
}
