//! A lean closed-loop load driver: `connections` tasks over one keep-alive
//! client, each sending its next request as soon as the last one answered;
//! latencies go into an HDR histogram. Bounded in time and in count.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub struct Outcome {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// The server's user+system CPU time so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The server's peak resident set so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub struct Plan {
    pub name: String,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Stop after this many requests (e.g. when each consumes a seeded code).
    pub max_requests: u64,
    /// The server processes (several with `--nodes`): CPU is summed, the
    /// peak RSS is the largest node's.
    pub server_pids: Vec<u32>,
}

/// Runs `request(n)` (true = success) in a closed loop per connection.
pub async fn run<F, Fut>(plan: Plan, request: F) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..plan.connections {
        let (request, next, measuring, stop) = (
            request.clone(),
            next.clone(),
            measuring.clone(),
            stop.clone(),
        );
        let max = plan.max_requests;
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            let (mut count, mut errors) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= max {
                    break;
                }
                let started = Instant::now();
                let ok = request(n).await;
                if measuring.load(Ordering::Relaxed) {
                    let micros = started.elapsed().as_micros().max(1) as u64;
                    if let Some(h) = latency.as_mut() {
                        let _ = h.record(micros.min(60_000_000));
                    }
                    count += 1;
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (latency, count, errors)
        }));
    }
    tokio::time::sleep(plan.warmup).await;
    let cpu_before: f64 = plan.server_pids.iter().map(|p| cpu_seconds(*p)).sum();
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut last_print = Instant::now();
    while started.elapsed() < plan.duration && !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprint!(
                "\r  {:<12} {:>4.1} s / {:.0} s",
                plan.name,
                started.elapsed().as_secs_f64(),
                plan.duration.as_secs_f64()
            );
        }
    }
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after: f64 = plan.server_pids.iter().map(|p| cpu_seconds(*p)).sum();
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| unreachable_histogram());
    let (mut requests, mut errors) = (0, 0);
    for task in tasks {
        if let Ok((h, count, errs)) = task.await {
            if let Some(h) = h {
                let _ = latency.add(h);
            }
            requests += count;
            errors += errs;
        }
    }
    eprint!("\r{:60}\r", "");
    Outcome {
        name: plan.name,
        requests,
        errors,
        seconds,
        latency,
        cpu_seconds: cpu_after - cpu_before,
        peak_rss_kib: plan
            .server_pids
            .iter()
            .map(|p| peak_rss_kib(*p))
            .max()
            .unwrap_or(0),
    }
}

fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new(3).unwrap_or_else(|_| std::process::exit(3))
}
