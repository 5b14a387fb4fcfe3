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
    ClientInfo {
        ip: Some("192.0.2.1".parse().unwrap()),
        user_agent: Some("engine test".into()),
    }
}

async fn log_in(app: &TestApp, user: &TestUser, password: &str) -> Result<String, ErrorCode> {
    login::login(
        &app.core,
        LoginInput {
            user: UserRef::LoginName(user.login_name.clone()),
            password: password.into(),
            application_name: None,
            session_id: None,
        },
        client(),
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
