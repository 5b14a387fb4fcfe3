//! Builds the application: database, migrations, signing keys, services and
//! the HTTP server bound to its port (port 0 picks a free one, for tests).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::db::server_secrets;
use crate::db::{Db, DbSetupError};
use crate::mailer::Mailer;
use crate::master_key::{MasterKey, Sealer};
use crate::otp::OtpKey;
use crate::otp::sealed::SecretBox;
use crate::passwords::PasswordHasher;
use crate::routes;
use crate::services::cpu_pool::CpuPool;
use crate::services::rate_limit::RateLimiter;
use crate::services::{Core, Rules};
use crate::telemetry;
use crate::tokens::{self, TokenService};

/// What the application takes from outside besides its settings, so tests
/// can control it.
#[derive(Clone)]
pub struct Dependencies {
    pub clock: Arc<dyn Clock>,
}

impl Default for Dependencies {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbSetupError),
    #[error("cannot prepare the signing keys: {0}")]
    Keys(String),
    #[error("{0}")]
    Mail(String),
    #[error("database: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("LATCHKEY_ARGON2_*: {0}")]
    Hasher(String),
    #[error("LATCHKEY_BIND: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Connects, migrates and loads keys: everything but the HTTP server.
pub async fn build_core(settings: Settings, deps: Dependencies) -> Result<Core, StartupError> {
    let (backend, url, pool_size) = (
        settings.backend,
        settings.database_url.clone(),
        settings.db_pool_size,
    );
    let clock = deps.clock;
    let key_clock = clock.clone();
    settings.secure_data_dir().map_err(|e| {
        StartupError::Keys(format!(
            "cannot prepare the data dir {}: {e}",
            settings.data_dir.display()
        ))
    })?;
    let master = MasterKey::load(settings.master_key.as_ref(), &settings.data_dir)
        .map_err(StartupError::Keys)?;
    let key_sealer = tokens::signing_key_sealer(&master);
    let db = tokio::task::spawn_blocking(move || -> Result<Db, StartupError> {
        let db = Db::connect(backend, &url, pool_size)?;
        db.migrate()?;
        let mut conn = db
            .checkout()
            .map_err(|e| StartupError::Keys(e.to_string()))?;
        tokens::ensure_signing_key(&mut conn, key_clock.as_ref(), &key_sealer)
            .map_err(StartupError::Keys)?;
        Ok(db)
    })
    .await
    .map_err(|e| StartupError::Keys(e.to_string()))??;

    let cpu_pool = CpuPool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .map_err(|e| StartupError::Hasher(format!("cannot start the hashing threads: {e}")))?;
    let otp_key = load_otp_key(&db, &settings, &master, clock.as_ref()).await?;
    let rate_limiter = RateLimiter::new(settings.auth.rate_limit_per_minute);
    let code_box = SecretBox::new(otp_key.derive("outbox code encryption v1"));
    let mailer = Mailer::new(&settings, code_box).map_err(|e| StartupError::Mail(e.to_string()))?;
    let hasher =
        PasswordHasher::new(&settings.argon2).map_err(|e| StartupError::Hasher(e.to_string()))?;
    let dummy_hasher = hasher.clone();
    let dummy_hash = tokio::task::spawn_blocking(move || {
        let random_password = uuid::Uuid::new_v4().to_string();
        dummy_hasher.hash(&random_password)
    })
    .await
    .map_err(|e| StartupError::Hasher(e.to_string()))?
    .map_err(|e| StartupError::Hasher(e.to_string()))?;
    let tokens = TokenService::load(
        db.clone(),
        settings.issuer.clone(),
        clock.clone(),
        tokens::signing_key_sealer(&master),
    )
    .await
    .map_err(|_| wrong_master_key())?;
    let mailer = Arc::new(mailer);
    let rules = Arc::new(Rules {
        settings: settings.auth.clone(),
        secret_box: SecretBox::new(otp_key.derive("totp secret encryption v1")),
        key: otp_key,
        mailer: mailer.clone(),
    });
    Ok(Core {
        settings,
        db,
        clock,
        hasher,
        tokens,
        mailer,
        rules,
        rate_limiter,
        dummy_hash,
        cpu_pool,
        requests: Arc::default(),
    })
}

fn wrong_master_key() -> StartupError {
    StartupError::Keys(
        "the database's keys are sealed with another master key: start with the \
         LATCHKEY_MASTER_KEY (or the <data dir>/master.key file) this database was made with"
            .to_owned(),
    )
}

/// The OTP HMAC key: LATCHKEY_SECRET when set, else a random secret kept
/// in the database, sealed under the master key, so that every instance on
/// it agrees. A secret stored in the clear by an earlier version is sealed
/// now.
async fn load_otp_key(
    db: &Db,
    settings: &Settings,
    master: &MasterKey,
    clock: &dyn Clock,
) -> Result<OtpKey, StartupError> {
    const NAME: &str = "otp_hmac";
    let secret = match &settings.auth.secret {
        Some(secret) => secret.expose().as_bytes().to_vec(),
        None => {
            let now = clock.now().naive_utc();
            let sealer = master.sealer("server secrets v1");
            db.run(move |conn| {
                let mut sealing_failed = None;
                let stored = server_secrets::get_or_create(
                    conn,
                    NAME,
                    || {
                        sealer
                            .seal(NAME, &rand::random::<[u8; 32]>())
                            .unwrap_or_else(|e| {
                                sealing_failed = Some(e);
                                Vec::new()
                            })
                    },
                    now,
                )
                .map_err(|e| StartupError::Keys(format!("the OTP secret: {e}")))?;
                if let Some(why) = sealing_failed {
                    return Err(StartupError::Keys(format!("the OTP secret: {why}")));
                }
                if Sealer::is_raw(&stored, 32) {
                    let sealed = sealer.seal(NAME, &stored).map_err(StartupError::Keys)?;
                    server_secrets::set(conn, NAME, &sealed)
                        .map_err(|e| StartupError::Keys(format!("the OTP secret: {e}")))?;
                    return Ok(stored);
                }
                sealer.open(NAME, &stored).map_err(|_| wrong_master_key())
            })
            .await?
        }
    };
    OtpKey::new(&secret).map_err(|e| StartupError::Keys(format!("LATCHKEY_SECRET: {e}")))
}

pub struct Application {
    port: u16,
    server: Server,
    core: web::Data<Core>,
    /// Stops the background tasks when the server stops.
    stop: watch::Sender<bool>,
}

impl Application {
    pub async fn build(settings: Settings, deps: Dependencies) -> Result<Self, StartupError> {
        telemetry::init_metrics();
        let listener = TcpListener::bind(settings.bind).map_err(|source| StartupError::Bind {
            addr: settings.bind.to_string(),
            source,
        })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let workers = settings.workers;
        let core = web::Data::new(build_core(settings, deps).await?);

        let app_core = core.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_core.clone())
                .wrap(from_fn(telemetry::observe))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .shutdown_timeout(10);
        if let Some(workers) = workers {
            server = server.workers(workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                addr: format!("port {port}"),
                source,
            })?
            .run();

        let (stop, stopped) = watch::channel(false);
        spawn_key_refresh(core.clone(), stopped.clone());
        if core.settings.asynchronous.worker {
            routes::one::worker::spawn_worker(core.clone(), stopped.clone());
        }
        core.delivery().spawn_worker(stopped);
        Ok(Self {
            port,
            server,
            core,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn core(&self) -> web::Data<Core> {
        self.core.clone()
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (graceful: in-flight requests finish).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        let _ = self.stop.send(true);
        result
    }
}

/// Picks up keys added by `latchkey rotate-key` or another node every
/// `LATCHKEY_KEY_REFRESH_SECS`, and forgets finished rate-limit windows.
fn spawn_key_refresh(core: web::Data<Core>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut interval =
            tokio::time::interval(Duration::from_secs(core.settings.key_refresh_secs));
        interval.tick().await;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.changed() => break,
            }
            if let Err(err) = core.tokens.reload().await {
                tracing::warn!(error = %err, "reloading signing keys failed");
            }
            if let Err(err) = core.prune_rate_limits().await {
                tracing::warn!(error = %err, "pruning rate-limit windows failed");
            }
        }
    });
}
