//! The rules of Latchkey, shared by every API face. Services take time from
//! the injected [`Clock`], run database work through [`Db::run`] and hashing
//! on the blocking pool, and know nothing of HTTP.

pub mod applications;
pub mod audit;
pub mod cpu_pool;
pub mod credentials;
pub mod entities;
pub mod otp;
pub mod outbox;
pub mod rate_limit;
pub mod rules;
pub mod session_checks;
pub mod sessions;
pub mod totp;
pub mod users;

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::Db;
use crate::error::ApiError;
use crate::mailer::Mailer;
use crate::passwords::PasswordHasher;
use crate::tokens::TokenService;
use rate_limit::RateLimiter;

/// Everything a service needs, built once at start-up.
pub struct Core {
    pub settings: Settings,
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub hasher: PasswordHasher,
    pub tokens: TokenService,
    pub mailer: Arc<Mailer>,
    /// The OTP key, the TOTP sealing key, the settings and the mailer that
    /// code work inside a transaction needs; shared, not rebuilt per call.
    pub otp: Arc<otp::OtpEngine>,
    pub rate_limiter: RateLimiter,
    /// An argon2id hash of a random password, checked when a login names no
    /// user, so that path costs the same as a wrong password.
    pub dummy_hash: String,
    /// One thread per core for CPU-heavy work.
    pub cpu_pool: cpu_pool::CpuPool,
}

impl Core {
    pub fn now(&self) -> NaiveDateTime {
        self.clock.now().naive_utc()
    }

    /// What OTP work inside a blocking transaction needs.
    pub fn otp_engine(&self) -> Arc<otp::OtpEngine> {
        self.otp.clone()
    }

    /// Runs CPU-heavy work (argon2, QR codes) off the async workers, at
    /// most one job per core at a time: more would only share the cores and
    /// multiply argon2's memory, so the rest wait their turn.
    pub async fn blocking<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.cpu_pool.run(work).await.map_err(ApiError::internal)
    }
}

/// A page of a list and the total number of matching rows.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: Page,
}

/// Ids arrive as path segments; anything that is not a uuid names no
/// resource, so it is a 404 like any other unknown id.
pub fn parse_id(raw: &str, what: &str) -> Result<String, ApiError> {
    Uuid::parse_str(raw)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| ApiError::not_found(format!("There is no {what} with id {raw:?}.")))
}

pub fn to_utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}
