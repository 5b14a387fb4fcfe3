//! An admin's password reset, lock, unlock and deletion of a user: each
//! ends the user's sessions at once, and each is audited.

use serde_json::json;

use crate::helpers::{Login, TestApp, assert_error, spawn_app};
use crate::sessions::audit_kinds;

async fn session_status(app: &TestApp, login: &Login) -> u16 {
    app.read_own_session(login).await.status().as_u16()
}

#[tokio::test]
async fn a_new_password_ends_every_session_of_the_user() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let other = app.seed_user("1000", "10001", "bob@example.com").await;
    let first = app.login(&user).await;
    let second = app.login(&user).await;
    let bobs = app.login(&other).await;
    assert_eq!(session_status(&app, &first).await, 200);

    let path = format!("/admin/users/{}/password", user.id);
    let response = app
        .put(&path, &json!({"password": "a brand new password"}))
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(session_status(&app, &first).await, 401);
    assert_eq!(session_status(&app, &second).await, 401);
    assert_eq!(
        session_status(&app, &bobs).await,
        200,
        "other users keep theirs"
    );
    let session =
        crate::helpers::json(app.get(&format!("/sessions/{}", first.session_id)).await).await;
    assert_eq!(session["status"], "revoked");
    let kinds = audit_kinds(&app, &user.id).await;
    assert!(kinds.contains(&"password_changed".to_owned()), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "session_revoked").count(),
        2,
        "{kinds:?}"
    );
    // The old password is gone, the new one works.
    assert_error(
        app.login_response(&json!({"loginName": user.login_name, "password": user.password}))
            .await,
        401,
        "invalid-credentials",
    )
    .await;
    assert_eq!(
        app.login_response(
            &json!({"loginName": user.login_name, "password": "a brand new password"})
        )
        .await
        .status(),
        201
    );
}

#[tokio::test]
async fn an_admin_lock_ends_the_sessions_until_an_unlock() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    let lock = app
        .post(&format!("/admin/users/{}/lock", user.id), &json!({}))
        .await;
    assert_eq!(lock.status(), 204);
    assert_eq!(session_status(&app, &login).await, 401);
    let right = json!({"loginName": user.login_name, "password": user.password});
    assert_error(app.login_response(&right).await, 429, "user-locked").await;

    let unlock = app
        .post(&format!("/admin/users/{}/unlock", user.id), &json!({}))
        .await;
    assert_eq!(unlock.status(), 204);
    assert_eq!(app.login_response(&right).await.status(), 201);
    let kinds = audit_kinds(&app, &user.id).await;
    for kind in ["user_locked", "user_unlocked", "session_revoked"] {
        assert!(kinds.contains(&kind.to_owned()), "{kind}: {kinds:?}");
    }
    // Unknown users are 404s.
    let nobody = "00000000-0000-4000-8000-000000000000";
    assert_error(
        app.post(&format!("/admin/users/{nobody}/unlock"), &json!({}))
            .await,
        404,
        "not-found",
    )
    .await;
}

#[tokio::test]
async fn an_unlock_lifts_a_lockout() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let wrong = json!({"loginName": user.login_name, "password": "not the password"});
    for _ in 0..10 {
        app.login_response(&wrong).await;
    }
    let right = json!({"loginName": user.login_name, "password": user.password});
    assert_error(app.login_response(&right).await, 429, "user-locked").await;
    let unlock = app
        .post(&format!("/admin/users/{}/unlock", user.id), &json!({}))
        .await;
    assert_eq!(unlock.status(), 204);
    assert_eq!(app.login_response(&right).await.status(), 201);
}

#[tokio::test]
async fn deleting_a_user_ends_their_sessions_and_is_audited() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    assert_eq!(
        app.delete(&format!("/admin/users/{}", user.id))
            .await
            .status(),
        204
    );
    assert_eq!(session_status(&app, &login).await, 401);
    let kinds = audit_kinds(&app, &user.id).await;
    assert!(kinds.contains(&"user_deleted".to_owned()), "{kinds:?}");
}
