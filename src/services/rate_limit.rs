//! Requests per client IP and minute on the calls an attacker would hammer
//! (login, OTP). Fixed one-minute windows, kept in memory per instance:
//! behind a load balancer each instance counts its own share.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::error::{ApiError, ErrorCode};

pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl RateLimiter {
    /// `per_minute` of 0 switches the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request from `client`; refuses it past the limit.
    pub fn check(&self, client: Option<&str>, now: DateTime<Utc>) -> Result<(), ApiError> {
        let (Some(client), true) = (client, self.per_minute > 0) else {
            return Ok(());
        };
        let minute = now.timestamp().div_euclid(60);
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() > 100_000 {
            // Forget finished windows so that many addresses cannot grow the map without bound.
            windows.retain(|_, (window, _)| *window == minute);
        }
        let entry = windows.entry(client.to_owned()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= self.per_minute {
            let retry_after = 60 - now.timestamp().rem_euclid(60);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "More than {} requests a minute from this address; try again later.",
                    self.per_minute
                ),
            )
            .with_retry_after(retry_after.max(1) as u64));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn limits_per_client_and_window() {
        let limiter = RateLimiter::new(2);
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 10).unwrap();
        assert!(limiter.check(Some("a"), t).is_ok());
        assert!(limiter.check(Some("a"), t).is_ok());
        let err = limiter.check(Some("a"), t).unwrap_err();
        assert_eq!(err.code(), ErrorCode::RateLimited);
        assert!(limiter.check(Some("b"), t).is_ok());
        assert!(
            limiter
                .check(Some("a"), t + chrono::Duration::seconds(50))
                .is_ok()
        );
        assert!(RateLimiter::new(0).check(Some("a"), t).is_ok());
    }
}
