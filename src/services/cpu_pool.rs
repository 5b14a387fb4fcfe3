//! A small pool of threads, one per core, for CPU-heavy work (argon2).
//! Separate from tokio's blocking pool: argon2 allocates ~19 MiB per hash,
//! and on hundreds of short-lived blocking threads each thread's allocator
//! arena kept its own copy (gigabytes of RSS under load); a few long-lived
//! threads reuse theirs, and jobs queue instead of sharing the cores.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct CpuPool {
    jobs: Mutex<Sender<Job>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the CPU pool is gone")]
pub struct PoolGone;

impl CpuPool {
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("latchkey-cpu-{n}"))
                .spawn(move || {
                    loop {
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self {
            jobs: Mutex::new(sender),
        })
    }

    /// Runs `work` on a pool thread and waits for its result.
    pub async fn run<T, F>(&self, work: F) -> Result<T, PoolGone>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs
            .lock()
            .map_err(|_| PoolGone)?
            .send(job)
            .map_err(|_| PoolGone)?;
        result.await.map_err(|_| PoolGone)
    }
}
