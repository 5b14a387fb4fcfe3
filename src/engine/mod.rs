//! The session engine: every rule about sessions and their factors, once,
//! for every face (PACE, ZITADEL v2, admin). A face parses its wire shape,
//! calls one of the commands below, and renders the state or the error.
//!
//! The files name the steps of a session's life:
//!
//! | file | step |
//! |---|---|
//! | [`caller`] | who asks (admin, session token) and what each may do |
//! | [`login`] | the password (or PIN) check, lockout decided on the locked user row; opening a session with it |
//! | [`challenges`] | making a login or account code, mailing it, the resend cooldown; the PIN |
//! | [`factors`] | checking a code (email, account, TOTP, recovery): one path, counted on locked rows; VerifyOTP |
//! | [`lifecycle`] | a new session, becoming verified, sending or confirming the code (`PUT /sessions/{id}`), lifetime, reading, revocation, the token |
//! | [`checks`] | the ZITADEL-style command: checks + challenges + metadata + lifetime in one transaction |
//! | [`account`] | an admin's password reset, lock, unlock and deletion: each ends the user's sessions |
//! | [`authenticators`] | enrolling and removing an authenticator app, recovery codes |
//! | [`backend`] | a trusted backend's commands (the asynchronous face): recording and changing a session, a login that mails its code |
//!
//! Every limit (lockout, code attempts, second-factor failures, token
//! rotation, single use) is decided in the transaction that checks, on rows
//! locked by `SELECT … FOR UPDATE` (PostgreSQL) or inside the single writer
//! (SQLite); a failure is committed with the check that found it, so no
//! later error can undo its count. Time is a parameter (`Core::now`).

pub mod account;
pub mod authenticators;
pub mod backend;
pub mod caller;
pub mod challenges;
pub mod checks;
pub mod factors;
pub mod lifecycle;
pub mod login;

pub use caller::Caller;
pub use lifecycle::SessionView;

use chrono::NaiveDateTime;

use crate::db::sessions::SessionRow;

/// Session status values, as stored and as every face shows them.
pub const PENDING: &str = "pending";
pub const VERIFIED: &str = "verified";
pub const EXPIRED: &str = "expired";
pub const REVOKED: &str = "revoked";
/// Ended by a trusted backend (`is_valid: false`), with a failure code and reason.
pub const FAILED: &str = "failed";

/// A pending or verified session past its end reads as expired.
pub fn effective_status(row: &SessionRow, now: NaiveDateTime) -> &str {
    if (row.status == PENDING || row.status == VERIFIED) && row.expires_at <= now {
        EXPIRED
    } else {
        &row.status
    }
}

pub fn is_live(row: &SessionRow, now: NaiveDateTime) -> bool {
    matches!(effective_status(row, now), PENDING | VERIFIED)
}
