//! Security events: written in the transaction of the change they record,
//! listed for admins.

use std::net::IpAddr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::{Core, Page, Paged, to_utc};
use crate::db::DbConnection;
use crate::db::audit::{self as rows, AuditRow};
use crate::error::ApiError;

/// Where a request came from.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The client's address as resolved by the HTTP layer.
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    LoginSucceeded,
    LoginFailed,
    UserLocked,
    SessionCreated,
    SessionVerified,
    SessionRevoked,
    SessionFailed,
    OtpSent,
    OtpCreated,
    OtpVerified,
    OtpFailed,
    OtpBurned,
    PinSet,
    TotpEnrolled,
    TotpConfirmed,
    TotpRemoved,
    RecoveryCodesCreated,
    RecoveryCodeUsed,
    PasswordChanged,
    UserUnlocked,
    UserDeleted,
}

impl AuditKind {
    pub const ALL: &'static [AuditKind] = &[
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::UserLocked,
        Self::SessionCreated,
        Self::SessionVerified,
        Self::SessionRevoked,
        Self::SessionFailed,
        Self::OtpSent,
        Self::OtpCreated,
        Self::OtpVerified,
        Self::OtpFailed,
        Self::OtpBurned,
        Self::PinSet,
        Self::TotpEnrolled,
        Self::TotpConfirmed,
        Self::TotpRemoved,
        Self::RecoveryCodesCreated,
        Self::RecoveryCodeUsed,
        Self::PasswordChanged,
        Self::UserUnlocked,
        Self::UserDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::UserLocked => "user_locked",
            Self::SessionCreated => "session_created",
            Self::SessionVerified => "session_verified",
            Self::SessionRevoked => "session_revoked",
            Self::SessionFailed => "session_failed",
            Self::OtpSent => "otp_sent",
            Self::OtpCreated => "otp_created",
            Self::OtpVerified => "otp_verified",
            Self::OtpFailed => "otp_failed",
            Self::OtpBurned => "otp_burned",
            Self::PinSet => "pin_set",
            Self::TotpEnrolled => "totp_enrolled",
            Self::TotpConfirmed => "totp_confirmed",
            Self::TotpRemoved => "totp_removed",
            Self::RecoveryCodesCreated => "recovery_codes_created",
            Self::RecoveryCodeUsed => "recovery_code_used",
            Self::PasswordChanged => "password_changed",
            Self::UserUnlocked => "user_unlocked",
            Self::UserDeleted => "user_deleted",
        }
    }

    fn outcome(self) -> &'static str {
        match self {
            Self::LoginFailed | Self::UserLocked | Self::OtpFailed | Self::OtpBurned => "failure",
            _ => "success",
        }
    }
}

/// One event of a command, for [`record_all`].
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub kind: AuditKind,
    pub user_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub detail: Option<&'a str>,
}

fn row_of(event: &Event<'_>, client: &ClientInfo, now: NaiveDateTime) -> AuditRow {
    AuditRow {
        id: crate::db::new_row_id(),
        occurred_at: now,
        kind: event.kind.as_str().to_owned(),
        outcome: event.kind.outcome().to_owned(),
        user_id: event.user_id.map(str::to_owned),
        session_id: event.session_id.map(str::to_owned),
        ip: client.ip.map(|ip| ip.to_string()),
        detail: event.detail.map(str::to_owned),
    }
}

/// Records one event in the caller's transaction.
pub fn record(
    conn: &mut DbConnection,
    kind: AuditKind,
    user_id: Option<&str>,
    session_id: Option<&str>,
    client: &ClientInfo,
    detail: Option<&str>,
    now: NaiveDateTime,
) -> diesel::QueryResult<()> {
    let event = Event {
        kind,
        user_id,
        session_id,
        detail,
    };
    rows::insert(conn, &row_of(&event, client, now))
}

/// Records the events of one command in the caller's transaction, in
/// their order, in one statement (one round trip on PostgreSQL).
pub fn record_all(
    conn: &mut DbConnection,
    events: &[Event<'_>],
    client: &ClientInfo,
    now: NaiveDateTime,
) -> diesel::QueryResult<()> {
    let rows: Vec<AuditRow> = events.iter().map(|e| row_of(e, client, now)).collect();
    rows::insert_all(conn, &rows)
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: String,
    pub occurred_at: DateTime<Utc>,
    pub kind: String,
    /// success or failure.
    pub outcome: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}

impl From<AuditRow> for AuditEvent {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id,
            occurred_at: to_utc(row.occurred_at),
            kind: row.kind,
            outcome: row.outcome,
            user_id: row.user_id,
            session_id: row.session_id,
            ip: row.ip,
            detail: row.detail,
        }
    }
}

pub async fn list(
    core: &Core,
    user_id: Option<String>,
    kind: Option<String>,
    page: Page,
) -> Result<Paged<AuditEvent>, ApiError> {
    core.db
        .run(move |conn| {
            let (items, total) = rows::list(
                conn,
                user_id.as_deref(),
                kind.as_deref(),
                page.limit,
                page.offset,
            )?;
            Ok(Paged {
                items: items.into_iter().map(AuditEvent::from).collect(),
                total,
                page,
            })
        })
        .await
}
