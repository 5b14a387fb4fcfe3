//! Requests per client and minute on the calls an attacker would hammer
//! (login, OTP, PIN). Fixed one-minute windows: kept in memory by a node
//! on SQLite (it is the only node), and in the database on PostgreSQL, so
//! that every node behind a load balancer counts against one budget per
//! client ([`crate::services::Core::check_rate_limit`]).
//!
//! A client is an IPv4 address or an IPv6 /64 ([`ClientKey`]), and the
//! number of clients tracked at once is bounded ([`RateLimiter`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::error::{ApiError, ErrorCode};

/// Clients tracked at once (about 40 bytes each, so a few MiB at most).
pub const MAX_TRACKED: usize = 100_000;

/// Who one budget belongs to: an IPv4 address, or the /64 an IPv6 address
/// is in. A subscriber or a cloud VM usually gets a whole /64, so keying by
/// the full IPv6 address would give one machine 2^64 budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    /// The upper 64 bits of the address.
    V6Net(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        // `::ffff:a.b.c.d` (a dual-stack socket's view of an IPv4 client)
        // is that IPv4 client, not one /64 shared by every IPv4 client.
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => ClientKey::V6Net((v6.to_bits() >> 64) as u64),
        }
    }
}

/// `192.0.2.1`, or `2001:db8:1:2::/64`.
impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::V4(v4) => write!(f, "{v4}"),
            ClientKey::V6Net(net) => {
                let prefix = std::net::Ipv6Addr::from_bits(u128::from(*net) << 64);
                write!(f, "{prefix}/64")
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    minute: i64,
    count: u32,
}

impl Window {
    /// Counts one request in `minute`; false when `limit` is already used.
    fn admit(&mut self, minute: i64, limit: u32) -> bool {
        if self.minute != minute {
            *self = Window { minute, count: 0 };
        }
        if self.count >= limit {
            return false;
        }
        self.count += 1;
        true
    }
}

/// Fixed-window counters for at most `max_tracked` clients.
///
/// When the map is full, the windows of finished minutes are dropped (at
/// most one sweep a minute, so a flood cannot make every request scan the
/// map). A window of the current minute is never dropped: forgetting it
/// would hand its client a fresh budget, so many addresses could be used
/// to lift the limit of one. If the map is still full, clients not yet
/// tracked this minute share one overflow window with the same limit. A
/// flood of distinct addresses can thus slow new clients down until the
/// minute ends, but it cannot raise anyone's budget or the memory used.
pub struct RateLimiter {
    per_minute: u32,
    max_tracked: usize,
    state: Mutex<State>,
}

struct State {
    windows: HashMap<ClientKey, Window>,
    /// The minute of the last sweep of finished windows.
    swept: i64,
    /// The window shared by clients that found the map full.
    overflow: Window,
}

impl State {
    fn window(&mut self, key: ClientKey, minute: i64, max_tracked: usize) -> &mut Window {
        if self.windows.len() >= max_tracked
            && self.swept != minute
            && !self.windows.contains_key(&key)
        {
            self.windows.retain(|_, window| window.minute == minute);
            self.swept = minute;
        }
        let full = self.windows.len() >= max_tracked;
        match self.windows.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) if !full => entry.insert(Window { minute, count: 0 }),
            Entry::Vacant(_) => &mut self.overflow,
        }
    }
}

impl RateLimiter {
    /// `per_minute` of 0 switches the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self::with_max_tracked(per_minute, MAX_TRACKED)
    }

    pub fn with_max_tracked(per_minute: u32, max_tracked: usize) -> Self {
        Self {
            per_minute,
            max_tracked: max_tracked.max(1),
            state: Mutex::new(State {
                windows: HashMap::new(),
                swept: i64::MIN,
                overflow: Window {
                    minute: i64::MIN,
                    count: 0,
                },
            }),
        }
    }

    /// Counts one request from `client`; refuses it past the limit.
    pub fn check(&self, client: Option<IpAddr>, now: DateTime<Utc>) -> Result<(), ApiError> {
        let (Some(client), true) = (client, self.per_minute > 0) else {
            return Ok(());
        };
        let minute = now.timestamp().div_euclid(60);
        let admitted = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .window(ClientKey::of(client), minute, self.max_tracked)
            .admit(minute, self.per_minute);
        if admitted {
            return Ok(());
        }
        Err(refusal(self.per_minute, now))
    }

    /// Requests a client may send in a minute; 0 when the limit is off.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }
}

/// The minute `now` is in (Unix minutes), the window's key.
pub fn minute_of(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(60)
}

/// The 429 of a client past its limit, with the seconds to the next window.
pub fn refusal(per_minute: u32, now: DateTime<Utc>) -> ApiError {
    let retry_after = 60 - now.timestamp().rem_euclid(60);
    ApiError::new(
        ErrorCode::RateLimited,
        format!("More than {per_minute} requests a minute from this address; try again later."),
    )
    .with_retry_after(retry_after.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 10).unwrap()
    }

    fn tracked(limiter: &RateLimiter) -> usize {
        limiter.state.lock().unwrap().windows.len()
    }

    #[test]
    fn limits_per_client_and_window() {
        let limiter = RateLimiter::new(2);
        let t = noon();
        assert!(limiter.check(ip("192.0.2.1"), t).is_ok());
        assert!(limiter.check(ip("192.0.2.1"), t).is_ok());
        let err = limiter.check(ip("192.0.2.1"), t).unwrap_err();
        assert_eq!(err.code(), ErrorCode::RateLimited);
        assert!(limiter.check(ip("192.0.2.2"), t).is_ok());
        assert!(
            limiter
                .check(ip("192.0.2.1"), t + chrono::Duration::seconds(50))
                .is_ok()
        );
        assert!(RateLimiter::new(0).check(ip("192.0.2.1"), t).is_ok());
        assert!(limiter.check(None, t).is_ok());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let key = |text: &str| ClientKey::of(text.parse().unwrap());
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("::ffff:192.0.2.1"), key("::ffff:192.0.2.2"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));

        // Two addresses of one /64 spend one budget.
        let limiter = RateLimiter::new(2);
        let t = noon();
        assert!(limiter.check(ip("2001:db8:1:2::1"), t).is_ok());
        assert!(limiter.check(ip("2001:db8:1:2::2"), t).is_ok());
        assert!(limiter.check(ip("2001:db8:1:2:abcd::9"), t).is_err());
        assert!(limiter.check(ip("2001:db8:1:3::1"), t).is_ok());
        // A mapped address spends its IPv4 address's budget.
        assert!(limiter.check(ip("192.0.2.7"), t).is_ok());
        assert!(limiter.check(ip("::ffff:192.0.2.7"), t).is_ok());
        assert!(limiter.check(ip("192.0.2.7"), t).is_err());
    }

    #[test]
    fn memory_stays_bounded_and_no_budget_is_lifted() {
        let bound = 100;
        let limiter = RateLimiter::with_max_tracked(3, bound);
        let t = noon();
        let victim = ip("198.51.100.1");
        for _ in 0..3 {
            assert!(limiter.check(victim, t).is_ok());
        }
        // 10× the bound of distinct addresses within one minute.
        let mut admitted = 0;
        for n in 0..10 * bound as u32 {
            let flood = Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
            admitted += usize::from(limiter.check(flood, t).is_ok());
        }
        assert_eq!(tracked(&limiter), bound);
        // The map's own entries, plus one shared budget for the rest.
        assert_eq!(admitted, bound - 1 + 3);
        // The flood did not hand the spent client a new budget.
        assert!(limiter.check(victim, t).is_err());
        assert!(limiter.check(ip("203.0.113.9"), t).is_err());

        // In the next minute finished windows make room again.
        let later = t + chrono::Duration::seconds(60);
        assert!(limiter.check(ip("203.0.113.9"), later).is_ok());
        assert_eq!(tracked(&limiter), 1);
        assert!(limiter.check(victim, later).is_ok());
    }
}
