//! Storage: one diesel `MultiConnection` over SQLite and PostgreSQL, an r2d2
//! pool, and the embedded migrations of both backends. Query code is written
//! once against [`DbConnection`]; backend differences stay in this folder.
//!
//! Lookups by a unique key use `get_result`, not `first`: `first` binds
//! `LIMIT ?`, and SQLite re-prepares a cached statement whenever a bound
//! LIMIT is rebound, which halved the throughput of a session read.
//!
//! diesel prepares a statement once per connection only when its SQL
//! cannot vary. Row structs therefore bind `None` as NULL
//! (`treat_none_as_default_value = false`; by default a `None` became
//! `DEFAULT`, and every insert was parsed again), and `IN (…)` lists are
//! avoided on hot paths. diesel parses every UPDATE and upsert again
//! whatever its shape; those on request paths go through
//! [`prepared::update`], which caches them by their SQL text.

/// Reads a row by primary key and, on PostgreSQL, locks it until the
/// transaction ends, so concurrent changes to one row run one after the
/// other. SQLite needs no lock: its writes already run one at a time.
macro_rules! find_for_update {
    ($conn:expr, $table:path, $id:expr) => {{
        let conn: &mut $crate::db::DbConnection = $conn;
        match conn {
            $crate::db::DbConnection::Postgresql(pg) => {
                $table.find($id).for_update().get_result(pg).optional()
            }
            $crate::db::DbConnection::Sqlite(_) => $table.find($id).get_result(conn).optional(),
        }
    }};
}

pub mod applications;
pub mod audit;
pub mod challenges;
pub mod entities;
pub mod lockouts;
pub mod one_requests;
pub mod outbox;
pub mod prepared;
pub mod rate_limits;
pub mod schema;
pub mod server_secrets;
pub mod sessions;
pub mod signing_keys;
pub mod totp;
pub mod users;
pub mod writer;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio::sync::Semaphore;

use crate::config::Backend;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// Opens connections of the backend chosen from the URL. diesel's own
/// manager would let SQLite accept a bad PostgreSQL URL as a file name.
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    backend: Backend,
    url: String,
}

impl ConnectionManager {
    pub fn new(backend: Backend, url: impl Into<String>) -> Self {
        Self {
            backend,
            url: url.into(),
        }
    }
}

/// How long a PostgreSQL connection may rest in the pool and still be
/// handed out without a ping. A connection used this recently has just
/// shown that it works; one whose server went away since fails its next
/// query, which marks it lost (see [`LostConnectionWatch`]). Pinging every
/// checkout cost a round trip per request (session reads: 8 057 → 13 613
/// req/s without it). HikariCP skips its check within 500 ms the same way.
const PING_AFTER_IDLE: Duration = Duration::from_millis(500);

/// How long a request waits for a free pooled connection before a 503.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection: the diesel connection, and what the pool knows of
/// its health. Dereferences to [`DbConnection`].
pub struct PoolConnection {
    connection: DbConnection,
    /// Set when a query failed because the server or the socket went
    /// away; the pool then discards the connection when it comes back.
    lost: Arc<AtomicBool>,
    /// When the connection was opened or last came back to the pool.
    rested_since: Instant,
}

impl Deref for PoolConnection {
    type Target = DbConnection;

    fn deref(&self) -> &DbConnection {
        &self.connection
    }
}

impl DerefMut for PoolConnection {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.connection
    }
}

/// Watches a PostgreSQL connection's queries for the errors that mean the
/// connection itself is gone (diesel reports `ClosedConnection` once libpq
/// sees `CONNECTION_BAD`, `UnableToSendCommand` when a send fails). diesel's
/// own check looks only at its transaction state, which catches most such
/// failures but not all: without this watch, terminated connections gave
/// more errors than the pool held connections (a failed first prepare of a
/// statement leaves that state untouched).
struct LostConnectionWatch(Arc<AtomicBool>);

impl diesel::connection::Instrumentation for LostConnectionWatch {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        use diesel::result::{DatabaseErrorKind, Error};
        if let diesel::connection::InstrumentationEvent::FinishQuery {
            error:
                Some(Error::DatabaseError(
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                    _,
                )),
            ..
        } = event
        {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

impl ConnectionManager {
    /// Opens one connection outside the pool (the SQLite writer, tools).
    pub fn open(&self) -> Result<DbConnection, diesel::r2d2::Error> {
        Ok(self.open_watched()?.connection)
    }

    fn open_watched(&self) -> Result<PoolConnection, diesel::r2d2::Error> {
        let lost = Arc::new(AtomicBool::new(false));
        let connection = self.establish(&lost)?;
        Ok(PoolConnection {
            connection,
            lost,
            rested_since: Instant::now(),
        })
    }

    fn establish(&self, lost: &Arc<AtomicBool>) -> Result<DbConnection, diesel::r2d2::Error> {
        match self.backend {
            Backend::Postgres => {
                let mut conn = PgConnection::establish(&self.url)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                conn.set_instrumentation(LostConnectionWatch(lost.clone()));
                Ok(DbConnection::Postgresql(conn))
            }
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.url)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                // Per connection: WAL lets readers run beside the writer;
                // NORMAL is durable in WAL mode except for power loss.
                // A 16 MiB page cache per connection saves a pread per page
                // (+10 % session reads); a memory map did more for reads but
                // slowed writes and counted the whole file in the RSS.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                     PRAGMA cache_size = -16384; \
                     PRAGMA temp_store = MEMORY;",
                )
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

impl ManageConnection for ConnectionManager {
    type Connection = PoolConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PoolConnection, Self::Error> {
        self.open_watched()
    }

    fn is_valid(&self, conn: &mut PoolConnection) -> Result<(), Self::Error> {
        conn.connection
            .ping()
            .map_err(diesel::r2d2::Error::QueryError)
    }

    /// Called as a connection comes back to the pool.
    fn has_broken(&self, conn: &mut PoolConnection) -> bool {
        conn.rested_since = Instant::now();
        std::thread::panicking() || conn.lost.load(Ordering::Relaxed) || conn.connection.is_broken()
    }
}

pub type DbPool = Pool<ConnectionManager>;
pub type PooledDb = PooledConnection<ConnectionManager>;

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("cannot open the database: {0}")]
    Connect(String),
    #[error("cannot create the database folder {0}: {1}")]
    Folder(String, std::io::Error),
    #[error("database migrations failed: {0}")]
    Migrate(String),
}

/// The pool and the backend it serves; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: DbPool,
    backend: Backend,
    /// One permit per pooled connection: work waits for a connection here,
    /// as a parked task, instead of as a blocked thread inside the pool
    /// (threads blocked by the dozen cost a context switch each).
    permits: Arc<Semaphore>,
    /// SQLite only: the one thread that writes (see [`writer`]).
    writer: Option<Arc<writer::SqliteWriter>>,
    manager: ConnectionManager,
}

fn checkout(
    pool: &DbPool,
    backend: Backend,
    timeout: Duration,
) -> Result<PooledDb, diesel::r2d2::PoolError> {
    // Every idle connection may be stale after a database restart: try
    // each of them at most once; a fresh one is pinged too.
    for _ in 0..=pool.max_size() {
        let mut conn = pool.get_timeout(timeout)?;
        if backend == Backend::Sqlite || conn.rested_since.elapsed() < PING_AFTER_IDLE {
            return Ok(conn);
        }
        match conn.connection.ping() {
            Ok(_) => return Ok(conn),
            Err(err) => {
                tracing::warn!(error = %err, "a pooled database connection was dead; discarded");
                conn.lost.store(true, Ordering::Relaxed);
            }
        }
    }
    pool.get_timeout(timeout)
}

impl Db {
    /// Connects once directly (so a bad URL or password is reported as it
    /// is), then builds the pool.
    pub fn connect(backend: Backend, url: &str, pool_size: u32) -> Result<Self, DbSetupError> {
        let sqlite_folder = Path::new(url)
            .parent()
            .filter(|p| !p.as_os_str().is_empty());
        if let (Backend::Sqlite, Some(parent)) = (backend, sqlite_folder) {
            crate::config::create_private_dir(parent)
                .map_err(|e| DbSetupError::Folder(parent.display().to_string(), e))?;
        }
        if backend == Backend::Sqlite {
            // Made 0600 before SQLite opens it: SQLite gives its -wal and
            // -shm files the same mode.
            match crate::master_key::write_new_private_file(Path::new(url), b"") {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(DbSetupError::Folder(url.to_owned(), e)),
            }
        }
        if backend == Backend::Postgres {
            // libpq speaks TLS through the system OpenSSL. Its default
            // clean-up runs at process exit while a pool thread may still
            // be opening a connection, which crashed ~2 % of short CLI
            // runs with SIGSEGV; this initialises it without that hook.
            openssl_sys::init();
        }
        let manager = ConnectionManager::new(backend, url);
        manager
            .open()
            .map_err(|e| DbSetupError::Connect(e.to_string()))?;
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(CHECKOUT_TIMEOUT)
            // A SQLite file cannot go away under a connection. PostgreSQL
            // connections are checked by [`Db::checkout`] when they rested
            // long enough to have gone stale, not at every checkout.
            .test_on_check_out(false)
            .build(manager.clone())
            .map_err(|e| DbSetupError::Connect(e.to_string()))?;
        let permits = Arc::new(Semaphore::new(pool_size as usize));
        let writer = match backend {
            Backend::Sqlite => Some(Arc::new(
                writer::SqliteWriter::start(manager.clone())
                    .map_err(|e| DbSetupError::Connect(format!("cannot start the writer: {e}")))?,
            )),
            Backend::Postgres => None,
        };
        Ok(Self {
            pool,
            backend,
            permits,
            writer,
            manager,
        })
    }

    /// A pooled connection, blocking until one is free (at most the pool's
    /// 5 s). A PostgreSQL connection that rested longer than
    /// [`PING_AFTER_IDLE`] is pinged first; one that fails is discarded and
    /// the next one tried. After a database restart only connections used
    /// within the last [`PING_AFTER_IDLE`] can fail a request (a 503), each
    /// once.
    pub fn checkout(&self) -> Result<PooledDb, diesel::r2d2::PoolError> {
        checkout(&self.pool, self.backend, CHECKOUT_TIMEOUT)
    }

    /// [`Db::checkout`], waiting at most `timeout` for a free connection
    /// (the readiness probe).
    pub fn checkout_within(&self, timeout: Duration) -> Result<PooledDb, diesel::r2d2::PoolError> {
        checkout(&self.pool, self.backend, timeout)
    }

    /// A new connection outside the pool, for tools and tests that read or
    /// change rows directly.
    pub fn connection(&self) -> Result<DbConnection, diesel::r2d2::Error> {
        self.manager.open()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Runs pending migrations; safe to call at every start.
    pub fn migrate(&self) -> Result<usize, DbSetupError> {
        let mut conn = self
            .checkout()
            .map_err(|e| DbSetupError::Connect(e.to_string()))?;
        let applied = match &mut **conn {
            DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
            DbConnection::Postgresql(c) => c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len()),
        };
        applied.map_err(|e| DbSetupError::Migrate(e.to_string()))
    }

    /// Runs blocking database work on the blocking thread pool, never on an
    /// async worker.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<diesel::r2d2::PoolError> + From<tokio::task::JoinError> + Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    {
        let pool = self.pool.clone();
        let backend = self.backend;
        let permit = self.permits.clone().acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = checkout(&pool, backend, CHECKOUT_TIMEOUT)?;
            work(&mut conn)
        })
        .await?
    }
}

impl Db {
    /// A point lookup by key, for the hot paths (every authenticated request
    /// reads its session). On SQLite, with an idle connection at hand, it
    /// runs on the calling thread: a lookup in SQLite's page cache takes a
    /// few microseconds, and the hand-off to a blocking thread and back cost
    /// more than that (two futex wake-ups and context switches; 44 % of the
    /// server's CPU in the session-read benchmark). A WAL reader never waits
    /// for the writer, so this does not block. Otherwise, as [`Db::run`].
    pub async fn lookup<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<diesel::r2d2::PoolError> + From<tokio::task::JoinError> + Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    {
        if self.backend == Backend::Sqlite
            && let Ok(permit) = self.permits.try_acquire()
            && let Some(mut conn) = self.pool.try_get()
        {
            let _permit = permit;
            return work(&mut conn);
        }
        self.run(work).await
    }

    /// Runs work that writes, in a transaction: on SQLite in the writer
    /// thread's next group commit, on PostgreSQL on a pooled connection.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<diesel::r2d2::PoolError>
            + From<tokio::task::JoinError>
            + From<diesel::result::Error>
            + Send
            + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    {
        match &self.writer {
            Some(writer) => writer.write(work).await,
            None => self.run(move |conn| conn.transaction(work)).await,
        }
    }
}

/// A new id for a row the server makes in bulk (challenges, outbox rows,
/// audit events): a UUIDv7, ordered by time, so the rows of one commit land
/// on the same index pages instead of one random page each.
pub fn new_row_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Whether a unique-constraint error names `column` (PostgreSQL reports the
/// constraint, SQLite the `table.column` in its message).
pub fn violates_unique(err: &diesel::result::Error, table: &str, column: &str) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    let Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) = err else {
        return false;
    };
    let constraint = info.constraint_name().unwrap_or_default();
    constraint.contains(column) || info.message().contains(&format!("{table}.{column}"))
}

/// One SQLite writer at a time per process (SQLite allows one anyway).
static SQLITE_WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `work` in a transaction that writes, on a connection of its own:
/// for tools beside the server (seeding, tests); the server writes through
/// [`Db::write`]. On SQLite it starts with
/// `BEGIN IMMEDIATE`: a deferred transaction that reads first and writes
/// later fails with "database is locked" under concurrency instead of
/// waiting for the busy timeout. Do not nest: the writer lock is not
/// re-entrant.
pub fn write_tx<T, E, F>(conn: &mut DbConnection, work: F) -> Result<T, E>
where
    E: From<diesel::result::Error>,
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    match conn {
        DbConnection::Postgresql(_) => conn.transaction(work),
        DbConnection::Sqlite(sqlite) => {
            // Writers of this process queue here instead of in SQLite's busy
            // handler, which sleeps in steps of up to 100 ms and made the
            // tail latency of concurrent writes jump to seconds.
            let _writer = SQLITE_WRITER
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")?;
            match work(conn) {
                Ok(value) => {
                    <DbConnection as Connection>::TransactionManager::commit_transaction(conn)?;
                    Ok(value)
                }
                Err(err) => {
                    // The work's error is the one to report; a failed
                    // rollback leaves the connection broken, and the pool
                    // discards it.
                    let _ = <DbConnection as Connection>::TransactionManager::rollback_transaction(
                        conn,
                    );
                    Err(err)
                }
            }
        }
    }
}
