//! Seeds a fresh database directly through latchkey's own storage layer
//! (migrations, keys, rows), far faster than through HTTP: entities,
//! applications, users, N stored sessions, sessions with tokens and known
//! login codes for the read and verify scenarios, and users with a confirmed
//! authenticator app and a session each for totp-verify.

use std::sync::Arc;

use chrono::Duration;
use latchkey::clock::{Clock, SystemClock};
use latchkey::config::Settings;
use latchkey::db::applications::ApplicationRow;
use latchkey::db::challenges::{self, ChallengeRow};
use latchkey::db::entities::EntityRow;
use latchkey::db::sessions::SessionRow;
use latchkey::db::totp::{self as totp_devices, TotpDeviceRow};
use latchkey::db::users::UserRow;
use latchkey::db::{Db, applications, entities, sessions, users, write_tx};
use latchkey::error::ApiError;
use latchkey::otp::OtpKey;
use latchkey::otp::sealed::SecretBox;
use latchkey::otp::totp;
use latchkey::passwords::PasswordHasher;
use latchkey::tokens::{self, TokenService};

pub const PASSWORD: &str = "bench password 123";
pub const USERS: usize = 100;

pub struct Seeded {
    pub user_ids: Vec<String>,
    pub login_names: Vec<String>,
    /// (session id, session token) of live sessions.
    pub readers: Vec<(String, String)>,
    /// (session token, code) pairs, each usable once.
    pub verifiable: Vec<(String, String)>,
    /// (session token, TOTP secret) pairs, each of its own user: a user's
    /// code is accepted once per 30 s step (no replay), so each pair is
    /// usable once in a run.
    pub authenticators: Vec<(String, Vec<u8>)>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn api(err: ApiError) -> Error {
    format!("{err}").into()
}

pub async fn seed(
    settings: &Settings,
    stored_sessions: usize,
    verifiable: usize,
    authenticators: usize,
) -> Result<Seeded, Error> {
    let db = Db::connect(settings.backend, &settings.database_url, 4)?;
    db.migrate()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now().naive_utc();
    // The same master key the server will load (setting or key file).
    let master =
        latchkey::master_key::MasterKey::load(settings.master_key.as_ref(), &settings.data_dir)?;
    {
        let mut conn = db.pool().get()?;
        tokens::ensure_signing_key(
            &mut conn,
            clock.as_ref(),
            &tokens::signing_key_sealer(&master),
        )?;
    }
    let hasher = PasswordHasher::new(&settings.argon2)?;
    let password_hash = hasher.hash(PASSWORD)?;
    let secret = settings
        .auth
        .secret
        .clone()
        .ok_or("the bench sets LATCHKEY_SECRET")?;
    let otp_key = OtpKey::new(secret.expose().as_bytes())?;

    let entity = EntityRow {
        id: uuid::Uuid::new_v4().to_string(),
        entity_number: "1000".into(),
        name: "Bench".into(),
        created_at: now,
        updated_at: now,
    };
    let application = ApplicationRow {
        id: uuid::Uuid::new_v4().to_string(),
        entity_id: entity.id.clone(),
        application_name: "Bench App".into(),
        application_type: "mobile".into(),
        application_number: "B1".into(),
        created_at: now,
        updated_at: now,
    };
    let user_row = |employee_number: String, login_name: String, display_name: String| UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        entity_id: entity.id.clone(),
        employee_number,
        email: Some(login_name.clone()),
        login_name,
        display_name,
        preferred_language: "en".into(),
        password_hash: Some(password_hash.clone()),
        pin_hash: None,
        failed_logins: 0,
        failed_logins_since: None,
        locked_until: None,
        failed_second_factors: 0,
        failed_second_factors_since: None,
        created_at: now,
        updated_at: now,
    };
    let users_rows: Vec<UserRow> = (0..USERS)
        .map(|i| {
            user_row(
                format!("{:05}", 10000 + i),
                format!("user{i}@bench.example"),
                format!("Bench User {i}"),
            )
        })
        .collect();
    let user_ids: Vec<String> = users_rows.iter().map(|u| u.id.clone()).collect();
    let login_names: Vec<String> = users_rows.iter().map(|u| u.login_name.clone()).collect();
    {
        let mut conn = db.pool().get()?;
        write_tx(&mut conn, |conn| -> Result<(), ApiError> {
            entities::insert(conn, &entity)?;
            applications::insert(conn, &application)?;
            for user in &users_rows {
                users::insert(conn, user)?;
            }
            Ok(())
        })
        .map_err(api)?;
    }

    let tokens = TokenService::load(
        db.clone(),
        settings.issuer.clone(),
        clock.clone(),
        tokens::signing_key_sealer(&master),
    )
    .await
    .map_err(api)?;
    let expires_at = now + Duration::hours(12);
    let session_row = |i: usize, token_id: Option<String>| SessionRow {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_ids[i % USERS].clone(),
        entity_id: entity.id.clone(),
        application_id: Some(application.id.clone()),
        status: "pending".into(),
        passed_login_otp: false,
        password_verified_at: Some(now),
        otp_email_verified_at: None,
        totp_verified_at: None,
        metadata: "{}".into(),
        user_agent_ip: Some("127.0.0.1".into()),
        user_agent_description: Some("latchkey-bench".into()),
        token_id,
        created_at: now,
        updated_at: now,
        expires_at,
        verified_at: None,
        failure_code: None,
        failure_reason: None,
        sequence: 1,
        user_agent_fingerprint_id: None,
        user_agent_header: None,
        creator: None,
        entity_field: None,
        entity_field_value: None,
        mobile_application_id: None,
        desktop_application_id: None,
        context: None,
    };

    // Stored sessions: the data the scenarios run against.
    let started = std::time::Instant::now();
    let mut readers = Vec::new();
    let mut inserted = 0;
    while inserted < stored_sessions {
        let batch = (stored_sessions - inserted).min(10_000);
        let mut rows = Vec::with_capacity(batch);
        for i in inserted..inserted + batch {
            if readers.len() < 1000 {
                let mut row = session_row(i, None);
                let (token, claims) = tokens
                    .issue(&row.user_id, "session", Duration::hours(12), Some(&row.id))
                    .map_err(api)?;
                row.token_id = Some(claims.jti);
                readers.push((row.id.clone(), token));
                rows.push(row);
            } else {
                rows.push(session_row(i, Some(uuid::Uuid::new_v4().to_string())));
            }
        }
        let mut conn = db.pool().get()?;
        write_tx(&mut conn, |conn| -> Result<(), ApiError> {
            for row in &rows {
                sessions::insert(conn, row)?;
            }
            Ok(())
        })
        .map_err(api)?;
        inserted += batch;
        eprint!("\rseeding sessions: {inserted}/{stored_sessions}   ");
    }
    eprintln!("({:.1} s)", started.elapsed().as_secs_f64());

    // Sessions with a known code each, for otp-verify.
    let mut pairs = Vec::with_capacity(verifiable);
    let mut done = 0;
    while done < verifiable {
        let batch = (verifiable - done).min(5_000);
        let mut rows = Vec::with_capacity(batch);
        for i in done..done + batch {
            let mut row = session_row(i, None);
            let (token, claims) = tokens
                .issue(&row.user_id, "session", Duration::hours(12), Some(&row.id))
                .map_err(api)?;
            row.token_id = Some(claims.jti);
            let code = latchkey::otp::generate_code(6);
            let challenge_id = uuid::Uuid::new_v4().to_string();
            let challenge = ChallengeRow {
                code_hmac: otp_key.digest(&challenge_id, &code),
                id: challenge_id,
                user_id: row.user_id.clone(),
                session_id: Some(row.id.clone()),
                purpose: challenges::LOGIN.into(),
                created_at: now,
                expires_at: now + Duration::hours(2),
                attempts: 0,
                max_attempts: 5,
                consumed_at: None,
                burned_at: None,
            };
            pairs.push((token, code));
            rows.push((row, challenge));
        }
        let mut conn = db.pool().get()?;
        write_tx(&mut conn, |conn| -> Result<(), ApiError> {
            for (row, challenge) in &rows {
                sessions::insert(conn, row)?;
                challenges::store(conn, challenge, true)?;
            }
            Ok(())
        })
        .map_err(api)?;
        done += batch;
    }

    // Users with a confirmed authenticator (sealed as the server seals it)
    // and a session each, for totp-verify. One user per session: the device
    // is the user's, and it accepts each 30 s step once, so the 100 users
    // above would allow only 100 successes per step.
    let secret_box = SecretBox::new(otp_key.derive("totp secret encryption v1"));
    let mut devices = Vec::with_capacity(authenticators);
    let mut done = 0;
    while done < authenticators {
        let batch = (authenticators - done).min(5_000);
        let mut rows = Vec::with_capacity(batch);
        for i in done..done + batch {
            let user = user_row(
                format!("T{i:06}"),
                format!("totp{i}@bench.example"),
                format!("Bench TOTP User {i}"),
            );
            let mut row = session_row(i, None);
            row.user_id = user.id.clone();
            let (token, claims) = tokens
                .issue(&row.user_id, "session", Duration::hours(12), Some(&row.id))
                .map_err(api)?;
            row.token_id = Some(claims.jti);
            let secret = totp::generate_secret();
            let (secret_nonce, secret_ciphertext) = secret_box.seal(&user.id, &secret)?;
            let device = TotpDeviceRow {
                user_id: user.id.clone(),
                secret_nonce,
                secret_ciphertext,
                confirmed_at: Some(now),
                last_used_step: None,
                created_at: now,
            };
            devices.push((token, secret));
            rows.push((user, row, device));
        }
        let mut conn = db.pool().get()?;
        write_tx(&mut conn, |conn| -> Result<(), ApiError> {
            for (user, row, device) in &rows {
                users::insert(conn, user)?;
                sessions::insert(conn, row)?;
                totp_devices::replace(conn, device)?;
            }
            Ok(())
        })
        .map_err(api)?;
        done += batch;
    }
    Ok(Seeded {
        user_ids,
        login_names,
        readers,
        verifiable: pairs,
        authenticators: devices,
    })
}
