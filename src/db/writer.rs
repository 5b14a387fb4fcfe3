//! The SQLite write path: one thread owns the only writing connection and
//! commits queued work in groups.
//!
//! SQLite lets one transaction write at a time. Handing that lock from
//! thread to thread cost a context switch per request, every commit wrote
//! its pages to the WAL again, and every commit made the readers' page
//! caches stale. Here each request's work runs in its own savepoint inside
//! a shared `BEGIN IMMEDIATE … COMMIT`: one commit per group, and a request
//! learns its outcome only after that commit, so what it was told is on
//! disk. A request whose work fails is rolled back to its savepoint and
//! leaves the others alone.
//!
//! The writer also checkpoints (SQLite's automatic checkpoint after a
//! commit that takes the WAL past 1000 pages). A checkpointer on another
//! thread never caught up with a writer that never pauses: the WAL was never
//! restarted and grew by gigabytes, and growing it (new file blocks,
//! allocated and zeroed) cost more than the checkpoints.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, SqliteConnection};
use tokio::sync::oneshot;

use super::{ConnectionManager, DbConnection};

/// The most jobs one commit carries; bounds how long a job waits behind the
/// others of its group.
const MAX_GROUP: usize = 64;

/// Told to a job once its group is settled: `None` when committed, else why
/// nothing of the group was kept.
type Settle = Box<dyn FnOnce(Option<&str>) + Send>;
type Job = Box<dyn FnOnce(&mut DbConnection) -> Settle + Send>;

/// A handle to the writer thread; the thread ends when the last handle is
/// dropped.
pub struct SqliteWriter {
    jobs: Sender<Job>,
}

/// The error a job's caller sees when its group was not committed.
fn not_committed(reason: &str) -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::ClosedConnection,
        Box::new(format!("the write was not committed: {reason}")),
    )
}

impl SqliteWriter {
    /// Starts the writer thread.
    pub fn start(manager: ConnectionManager) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(manager, queue))?;
        Ok(Self { jobs })
    }

    /// Runs `work` in its own savepoint of the next group and returns its
    /// result once the group is committed.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DieselError> + Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn: &mut DbConnection| -> Settle {
            // A nested `transaction` is a savepoint: a failure undoes this
            // job's writes only.
            let result = conn.transaction(work);
            Box::new(move |failure: Option<&str>| {
                let settled = match failure {
                    None => result,
                    Some(reason) => Err(E::from(not_committed(reason))),
                };
                // The caller may have gone (client hung up); nothing to do.
                let _ = reply.send(settled);
            })
        });
        if self.jobs.send(job).is_err() {
            return Err(E::from(not_committed("the writer has stopped")));
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(E::from(not_committed("the writer dropped the work"))))
    }
}

fn write_loop(manager: ConnectionManager, queue: Receiver<Job>) {
    let mut connection: Option<DbConnection> = None;
    while let Ok(first) = queue.recv() {
        let mut group = Vec::with_capacity(MAX_GROUP);
        group.push(first);
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        metrics::histogram!("latchkey_sqlite_write_group_size").record(group.len() as f64);
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match manager.open() {
                Ok(mut conn) => {
                    // A 2 MiB page cache instead of the readers' 16 MiB: at
                    // each commit SQLite walks the writer's whole page-cache
                    // hash (pcache1TruncateUnsafe, 5 % of the writer's time
                    // in otp-verify); the pages it misses come from the OS
                    // cache. The peak RSS of otp-verify fell from 92 to 69 MiB.
                    use diesel::connection::SimpleConnection;
                    if let Err(err) = conn.batch_execute("PRAGMA cache_size = -2048;") {
                        tracing::warn!(error = %err, "the SQLite writer kept the default page cache");
                    }
                    connection.insert(conn)
                }
                Err(err) => {
                    // Dropping a job drops its reply: its caller is told
                    // the write was not committed.
                    tracing::error!(error = %err, "the SQLite writer cannot open the database");
                    drop(group);
                    continue;
                }
            },
        };
        if let ConnectionState::Broken = commit_group(conn, group) {
            connection = None;
        }
    }
}

/// What a group leaves the writer's connection fit for.
enum ConnectionState {
    Usable,
    Broken,
}

fn sqlite(conn: &mut DbConnection) -> Option<&mut SqliteConnection> {
    match conn {
        DbConnection::Sqlite(sqlite) => Some(sqlite),
        DbConnection::Postgresql(_) => None,
    }
}

fn settle_all(settles: Vec<Settle>, failure: Option<&str>) {
    for settle in settles {
        settle(failure);
    }
}

fn commit_group(conn: &mut DbConnection, group: Vec<Job>) -> ConnectionState {
    type Manager = <DbConnection as Connection>::TransactionManager;
    let Some(sqlite) = sqlite(conn) else {
        return ConnectionState::Broken;
    };
    if let Err(err) = AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE") {
        tracing::error!(error = %err, "the SQLite writer cannot begin a transaction");
        drop(group);
        return ConnectionState::Broken;
    }
    let mut settles = Vec::with_capacity(group.len());
    let mut broken: Option<String> = None;
    for job in group {
        if broken.is_some() {
            // The group is lost; the remaining jobs are not run at all.
            drop(job);
            continue;
        }
        match catch_unwind(AssertUnwindSafe(|| job(conn))) {
            Ok(settle) => settles.push(settle),
            Err(_) => broken = Some("a write panicked".to_owned()),
        }
        // A savepoint that could not be released or rolled back leaves the
        // whole transaction unusable.
        match Manager::transaction_manager_status_mut(conn).transaction_depth() {
            Ok(Some(depth)) if depth.get() == 1 => {}
            _ => broken = broken.or_else(|| Some("the transaction broke".to_owned())),
        }
    }
    if let Some(reason) = broken {
        let _ = Manager::rollback_transaction(conn);
        tracing::error!(reason = %reason, "a group of writes was rolled back");
        settle_all(settles, Some(&reason));
        return ConnectionState::Broken;
    }
    match Manager::commit_transaction(conn) {
        Ok(()) => {
            settle_all(settles, None);
            ConnectionState::Usable
        }
        Err(err) => {
            let reason = err.to_string();
            tracing::error!(error = %reason, "committing a group of writes failed");
            let rolled_back = Manager::rollback_transaction(conn).is_ok();
            settle_all(settles, Some(&reason));
            if rolled_back {
                ConnectionState::Usable
            } else {
                ConnectionState::Broken
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use diesel::sql_types::{BigInt, Text};
    use diesel::{QueryableByName, RunQueryDsl, sql_query};

    use crate::config::Backend;
    use crate::db::Db;
    use crate::error::ApiError;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn insert(conn: &mut crate::db::DbConnection, name: &str) -> diesel::QueryResult<usize> {
        sql_query("INSERT INTO marks (name) VALUES (?)")
            .bind::<Text, _>(name)
            .execute(conn)
    }

    /// Jobs that share a group commit keep what they wrote, and a failing
    /// job loses only its own writes, even when it wrote before failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_rolls_back_alone_within_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("writer.db").display().to_string();
        let db = Db::connect(Backend::Sqlite, &url, 4).unwrap();
        db.write(|conn| {
            sql_query("CREATE TABLE marks (name TEXT NOT NULL UNIQUE)").execute(conn)?;
            Ok::<_, ApiError>(())
        })
        .await
        .unwrap();

        let writes = (0..200).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |conn| {
                    insert(conn, &format!("kept-{i}"))?;
                    if i % 3 == 0 {
                        insert(conn, &format!("lost-{i}"))?;
                        // A unique violation: the job fails after writing.
                        insert(conn, &format!("kept-{i}"))?;
                    }
                    Ok::<_, ApiError>(i)
                })
                .await
            })
        });
        let mut failed = 0;
        for write in writes.collect::<Vec<_>>() {
            if write.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 67);

        let count = |sql: &'static str| {
            let db = db.clone();
            async move {
                db.run(move |conn| Ok::<_, ApiError>(sql_query(sql).get_result::<Count>(conn)?.n))
                    .await
            }
        };
        let kept = count("SELECT count(*) AS n FROM marks WHERE name LIKE 'kept-%'").await;
        let lost = count("SELECT count(*) AS n FROM marks WHERE name LIKE 'lost-%'").await;
        assert_eq!((kept.unwrap(), lost.unwrap()), (133, 0));
    }

    /// A write that panics costs its own group a rollback (every job in it
    /// is told so), and the writer goes on with the next group.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_write_does_not_stop_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("writer.db").display().to_string();
        let db = Db::connect(Backend::Sqlite, &url, 2).unwrap();
        db.write(|conn| {
            sql_query("CREATE TABLE marks (name TEXT NOT NULL UNIQUE)").execute(conn)?;
            Ok::<_, ApiError>(())
        })
        .await
        .unwrap();

        let panicked = db
            .write(|conn| -> Result<(), ApiError> {
                insert(conn, "before-the-panic")?;
                panic!("a bug in a write");
            })
            .await;
        let err = panicked.expect_err("a panicking write fails");
        let status = actix_web::ResponseError::status_code(&err);
        assert_eq!(status.as_u16(), 503, "{err:?}");

        db.write(|conn| Ok::<_, ApiError>(insert(conn, "after")?))
            .await
            .unwrap();
        let names = db
            .run(|conn| {
                #[derive(QueryableByName)]
                struct Name {
                    #[diesel(sql_type = Text)]
                    name: String,
                }
                Ok::<_, ApiError>(
                    sql_query("SELECT name FROM marks ORDER BY name")
                        .load::<Name>(conn)?
                        .into_iter()
                        .map(|n| n.name)
                        .collect::<Vec<_>>(),
                )
            })
            .await
            .unwrap();
        assert_eq!(names, ["after"]);
    }
}
