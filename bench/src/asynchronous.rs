//! The asynchronous face's second half: after a scenario has its 202s,
//! wait for the workers to finish every accepted request, then measure the
//! time from acceptance to outcome from the stored requests.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use latchkey::config::Settings;
use latchkey::db::Db;
use latchkey::db::schema::one_requests;
use serde_json::{Value, json};

pub struct AsyncStats {
    pub operation: &'static str,
    pub requests: usize,
    pub succeeded: usize,
    /// Accepted to outcome, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Finished requests per second, first acceptance to last outcome.
    pub processed_per_s: f64,
}

impl AsyncStats {
    pub fn line(&self) -> String {
        format!(
            "{}: {} requests, {} succeeded; 202 → outcome p50 {:.0} ms, p99 {:.0} ms; processed {:.0}/s",
            self.operation,
            self.requests,
            self.succeeded,
            self.p50_ms,
            self.p99_ms,
            self.processed_per_s
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "operation": self.operation,
            "requests": self.requests,
            "succeeded": self.succeeded,
            "accept_to_outcome_p50_ms": (self.p50_ms * 10.0).round() / 10.0,
            "accept_to_outcome_p99_ms": (self.p99_ms * 10.0).round() / 10.0,
            "processed_per_s": self.processed_per_s.round(),
        })
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Waits (up to `limit`) until no request of `operation` is unfinished,
/// then reads their times.
pub fn drain_and_measure(
    settings: &Settings,
    operation: &'static str,
    limit: Duration,
) -> Result<AsyncStats, Error> {
    let db = Db::connect(settings.backend, &settings.database_url, 1)?;
    let mut conn = db.connection()?;
    let started = Instant::now();
    loop {
        let waiting: i64 = one_requests::table
            .filter(one_requests::operation.eq(operation))
            .filter(one_requests::finished_at.is_null())
            .count()
            .get_result(&mut conn)?;
        if waiting == 0 {
            break;
        }
        if started.elapsed() > limit {
            return Err(
                format!("{waiting} {operation} requests still waiting after {limit:?}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows: Vec<(chrono::NaiveDateTime, Option<chrono::NaiveDateTime>, String)> =
        one_requests::table
            .filter(one_requests::operation.eq(operation))
            .select((
                one_requests::created_at,
                one_requests::finished_at,
                one_requests::status,
            ))
            .load(&mut conn)?;
    let mut waits: Vec<f64> = rows
        .iter()
        .filter_map(|(created, finished, _)| {
            finished.map(|f| (f - *created).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect();
    waits.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        if waits.is_empty() {
            0.0
        } else {
            waits[((waits.len() - 1) as f64 * q).round() as usize]
        }
    };
    let first = rows.iter().map(|r| r.0).min();
    let last = rows.iter().filter_map(|r| r.1).max();
    let span = match (first, last) {
        (Some(first), Some(last)) => (last - first).num_milliseconds().max(1) as f64 / 1000.0,
        _ => 1.0,
    };
    Ok(AsyncStats {
        operation,
        requests: rows.len(),
        succeeded: rows.iter().filter(|r| r.2 == "succeeded").count(),
        p50_ms: quantile(0.50),
        p99_ms: quantile(0.99),
        processed_per_s: rows.len() as f64 / span,
    })
}
