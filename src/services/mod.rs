//! What the session engine (`crate::engine`) stands on, and the admin
//! services beside it (entities, applications, users, audit, outbox):
//! [`Core`], built once at start-up, takes time from the injected
//! [`Clock`], runs database work through [`Db::run`] and hashing on the CPU
//! pool, and knows nothing of HTTP. Nothing here imports the engine.

pub mod applications;
pub mod audit;
pub mod cpu_pool;
pub mod entities;
pub mod outbox;
pub mod rate_limit;
pub mod rules;
pub mod users;

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::{AuthSettings, Settings};
use crate::db::Db;
use crate::error::ApiError;
use crate::mailer::Mailer;
use crate::otp::OtpKey;
use crate::otp::sealed::SecretBox;
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
    /// What the engine's work inside a transaction needs; shared, not
    /// rebuilt per call.
    pub rules: Arc<Rules>,
    pub rate_limiter: RateLimiter,
    /// An argon2id hash of a random password, checked when a login names no
    /// user, so that path costs the same as a wrong password.
    pub dummy_hash: String,
    /// One thread per core for CPU-heavy work.
    pub cpu_pool: cpu_pool::CpuPool,
    /// Wake-ups of the asynchronous face's worker and of callers waiting
    /// for a request's outcome.
    pub requests: Arc<RequestSignals>,
}

/// Wake-ups around the asynchronous face's queue, within one node (other
/// nodes find the work by polling).
#[derive(Default)]
pub struct RequestSignals {
    /// A request was accepted: the worker looks at once.
    pub accepted: tokio::sync::Notify,
    /// A request finished: callers waiting (`Prefer: wait`) look again.
    pub finished: tokio::sync::Notify,
}

impl Core {
    pub fn now(&self) -> NaiveDateTime {
        self.clock.now().naive_utc()
    }

    /// What the mail delivery worker needs.
    pub fn delivery(&self) -> crate::mailer::outbox::Delivery {
        crate::mailer::outbox::Delivery {
            db: self.db.clone(),
            mailer: self.mailer.clone(),
            clock: self.clock.clone(),
            settings: self.settings.outbox.clone(),
        }
    }

    /// Counts a request of `client` against the per-client limit
    /// (`LATCHKEY_RATE_LIMIT_PER_MINUTE`): in this process on SQLite (a
    /// single node), in the database on PostgreSQL, so that several nodes
    /// behind a load balancer share one budget per client.
    pub async fn check_rate_limit(&self, client: Option<std::net::IpAddr>) -> Result<(), ApiError> {
        let now = self.clock.now();
        let per_minute = self.rate_limiter.per_minute();
        match client {
            Some(ip) if per_minute > 0 && self.db.backend() == crate::config::Backend::Postgres => {
                let key = rate_limit::ClientKey::of(ip).to_string();
                let minute = rate_limit::minute_of(now);
                let count = self
                    .db
                    .run(move |conn| {
                        Ok::<_, ApiError>(crate::db::rate_limits::count(conn, &key, minute)?)
                    })
                    .await?;
                if i64::from(count) > i64::from(per_minute) {
                    return Err(rate_limit::refusal(per_minute, now));
                }
                Ok(())
            }
            _ => self.rate_limiter.check(client, now),
        }
    }

    /// Forgets finished rate-limit windows kept in the database.
    pub async fn prune_rate_limits(&self) -> Result<(), ApiError> {
        if self.db.backend() != crate::config::Backend::Postgres {
            return Ok(());
        }
        let minute = rate_limit::minute_of(self.clock.now());
        self.db
            .run(move |conn| Ok::<_, ApiError>(crate::db::rate_limits::prune(conn, minute)?))
            .await
            .map(drop)
    }

    /// What rule work inside a blocking transaction needs.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.clone()
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

/// What the engine's rules need inside a transaction, where `Core` (with
/// its pools) cannot go: the settings, the OTP key, the sealing box for
/// authenticator secrets and the mailer's outbox. The engine implements
/// its steps on it (`crate::engine`).
pub struct Rules {
    pub settings: AuthSettings,
    pub key: OtpKey,
    pub mailer: Arc<Mailer>,
    pub secret_box: SecretBox,
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
