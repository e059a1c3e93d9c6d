//! The single writer: one thread owns the writing connection and runs jobs in
//! arrival order, so async handlers never block on SQLite locks. Reads use a
//! small pool of connections of their own (WAL: readers never wait for the
//! writer), so a slow read such as a snapshot rebuild never holds up a page.
//!
//! Group commit: the jobs waiting in the queue when the writer gets to them
//! (up to [`MAX_BATCH`]) run in one `BEGIN IMMEDIATE` transaction, each inside
//! a savepoint of its own: a job that fails is rolled back alone, the others
//! commit together. Every job learns its result only after that commit, so
//! whatever a caller acknowledges is durable; if the commit fails, every job
//! of the batch gets the error and nothing of the batch is stored. Under load
//! this writes the pages many writes share (counters, indexes) once per batch
//! instead of once per write; an idle writer commits each job on its own.
//!
//! Two lanes: [`StoreHandle::write`] for the many small writes (webhooks,
//! small ingests, pollers) and [`StoreHandle::write_bulk`] for large ingests.
//! The writer always empties the small lane first and takes one bulk job at a
//! time, alone in its batch, only when no small job waits: small writes wait
//! for at most the bulk job already running, never for the bulk queue.
//!
//! A job that a concurrent transaction conflicted with (with PostgreSQL,
//! another replica's batch that took the same rows in another order) is
//! rolled back alone and run again in the next transaction, after the rest
//! of its batch commits, up to [`MAX_ATTEMPTS`] times: its function may
//! therefore run more than once, and only its last run is kept.
//!
//! A write of the work that runs once (pollers, settler, pruner) is fenced
//! by its term of leadership ([`StoreHandle::fenced`]): before each run,
//! inside its savepoint, the writer checks that the term still holds
//! ([`Engine::fence`]; with PostgreSQL this also keeps a newer term from
//! beginning until the transaction ends). A write whose term ended runs
//! not at all and fails with [`StoreError::Fenced`], which is not a
//! database failure; a fenced write run again after a conflict checks its
//! fence again.
//!
//! Every failed commit (and every job that failed on a database error) is
//! counted, and [`StoreHandle::failing`] tells `/readyz` while the last
//! write failed.
//!
//! Engine-neutral: jobs run on `&mut dyn Storage` (writes) and `&dyn Storage`
//! (reads), the batch's transaction and savepoints go through [`Engine`].
//! Trait objects rather than a type parameter: the engine is chosen at run
//! time from the configuration, and one `StoreHandle` type keeps every
//! signature that carries it (the server's state, the pollers) free of one;
//! a virtual call per store operation is nothing next to the query it runs.

use super::{Engine, ErrorKind, Fence, Migrating, Storage, Store, StoreError};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::oneshot;

/// Most jobs committed together.
pub const MAX_BATCH: usize = 64;

/// A write waiting for the writer: run (again, after a conflict) on the
/// writer's connection, then told the outcome of its transaction.
trait Job: Send {
    /// Run once, inside its savepoint (its fence checked first); `None`: it
    /// cannot run, the batch failed before it.
    fn run(&mut self, store: Option<&mut dyn Engine>) -> Ran;
    /// Hand the result to the caller once the transaction's commit is known
    /// (`None`: committed).
    fn deliver(self: Box<Self>, commit: Option<&StoreError>);
}

/// What one run of a job said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// It succeeded: keep what it wrote.
    Ok,
    /// It failed (on a database error, or refused on its own).
    Failed { db_error: bool },
    /// A concurrent transaction of another process conflicted with it (a
    /// deadlock, a serialization failure): roll it back and run it again in
    /// a new transaction, after the rest of this batch commits.
    Again,
}

/// Most times a write is run when concurrent transactions keep conflicting
/// with it (PostgreSQL replicas writing the same rows).
pub const MAX_ATTEMPTS: u32 = 5;

/// A caller's write: its function, which may run more than once (a
/// conflict rolls it back and runs it again), the term it is fenced by, if
/// any, and where its result goes.
struct Pending<T, F> {
    f: F,
    fence: Option<Fence>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    attempts: u32,
}

impl<T, F> Pending<T, F> {
    /// Ok when the job may write: it has no fence, or its fence holds (and,
    /// with PostgreSQL, now keeps holding until the transaction ends).
    fn fence_holds(&self, store: &mut dyn Engine) -> Result<(), StoreError> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        if store.fence(fence)? {
            return Ok(());
        }
        tracing::info!(
            name = %fence.name,
            epoch = fence.epoch,
            "a write of an ended term of leadership was not run (fenced): a newer leader does the work"
        );
        Err(StoreError::Fenced {
            name: fence.name.clone(),
            epoch: fence.epoch,
        })
    }
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: FnMut(&mut dyn Storage) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, store: Option<&mut dyn Engine>) -> Ran {
        let Some(store) = store else {
            self.result = None;
            return Ran::Failed { db_error: false };
        };
        self.attempts += 1;
        let result = match self.fence_holds(store) {
            Ok(()) => (self.f)(store),
            Err(e) => Err(e),
        };
        let ran = match &result {
            Ok(_) => Ran::Ok,
            Err(e) if e.kind() == Some(ErrorKind::Conflict) && self.attempts < MAX_ATTEMPTS => {
                tracing::debug!(error = %e, attempt = self.attempts, "a write conflicted with a concurrent transaction; running it again");
                Ran::Again
            }
            Err(e) => Ran::Failed {
                db_error: e.is_database(),
            },
        };
        self.result = Some(result);
        ran
    }

    fn deliver(self: Box<Self>, commit: Option<&StoreError>) {
        let _ = self.reply.send(match (commit, self.result) {
            (None, Some(result)) => result,
            // Its own error says more than the batch's.
            (Some(_), Some(Err(own))) => Err(own),
            (Some(e), _) => Err(StoreError::Refused(format!(
                "the write was not committed: {e}"
            ))),
            (None, None) => Err(StoreError::WriterGone),
        });
    }
}

type BoxedJob = Box<dyn Job>;

/// Read connections: enough for a snapshot rebuild, a pruner pass and pages
/// at once on a small machine.
pub const READERS: usize = 3;

struct Readers {
    pool: Vec<Mutex<Box<dyn Storage>>>,
    next: AtomicUsize,
}

impl Readers {
    /// A free connection if there is one, else wait for one in turn.
    fn with<T>(&self, f: impl FnOnce(&dyn Storage) -> T) -> T {
        for conn in &self.pool {
            if let Ok(store) = conn.try_lock() {
                return f(&**store);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let store = self.pool[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&**store)
    }
}

/// The writer's two lanes.
#[derive(Default)]
struct Lanes {
    small: VecDeque<BoxedJob>,
    bulk: VecDeque<BoxedJob>,
    closed: bool,
}

/// What the handles and the writer thread share.
#[derive(Default)]
struct Queue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
    /// Writes that failed on a database error, since start.
    errors: AtomicU64,
    /// The last commit failed.
    failing: AtomicBool,
}

impl Queue {
    fn push(&self, job: BoxedJob, bulk: bool) -> Result<(), StoreError> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if lanes.closed {
            return Err(StoreError::WriterGone);
        }
        if bulk {
            lanes.bulk.push_back(job);
        } else {
            lanes.small.push_back(job);
        }
        drop(lanes);
        self.ready.notify_one();
        Ok(())
    }

    /// The next batch: up to MAX_BATCH small jobs, else one bulk job; None
    /// once every handle is gone and nothing is left.
    fn next_batch(&self, batch: &mut Vec<BoxedJob>) -> bool {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if !lanes.small.is_empty() {
                let n = lanes.small.len().min(MAX_BATCH);
                batch.extend(lanes.small.drain(..n));
                return true;
            }
            if let Some(job) = lanes.bulk.pop_front() {
                batch.push(job);
                return true;
            }
            if lanes.closed {
                return false;
            }
            lanes = self.ready.wait(lanes).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

/// Closes the queue when the last handle is dropped (the writer then stops).
struct Closer(Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A cheap, cloneable handle to the writer thread and a read connection.
#[derive(Clone)]
pub struct StoreHandle {
    queue: Arc<Queue>,
    _closer: Arc<Closer>,
    readers: Arc<Readers>,
    location: String,
    /// The term every write of this handle is fenced by
    /// ([`StoreHandle::fenced`]).
    fence: Option<Fence>,
}

impl StoreHandle {
    /// Open the SQLite database file (running migrations) and start the
    /// writer thread.
    pub fn start(path: &Path) -> Result<StoreHandle, StoreError> {
        Self::start_reporting(path, &mut |_| {})
    }

    /// [`StoreHandle::start`], telling `progress` before each migration.
    pub fn start_reporting(
        path: &Path,
        progress: &mut dyn FnMut(Migrating),
    ) -> Result<StoreHandle, StoreError> {
        let writer = Store::open_reporting(path, progress)?;
        let readers = (0..READERS)
            .map(|_| Ok(Box::new(Store::open(path)?) as Box<dyn Storage>))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Self::start_with(Box::new(writer), readers, path.display().to_string())
    }

    /// Start the writer thread on `writer` (an open, migrated connection of
    /// any engine) with `readers` as the read pool ([`READERS`] of them, at
    /// least one). `location` names the database in the log (never a password).
    pub fn start_with(
        mut writer: Box<dyn Engine>,
        readers: Vec<Box<dyn Storage>>,
        location: String,
    ) -> Result<StoreHandle, StoreError> {
        if readers.is_empty() {
            return Err(StoreError::Refused(
                "a store needs a read connection".into(),
            ));
        }
        let pool = readers.into_iter().map(Mutex::new).collect();
        let queue = Arc::new(Queue::default());
        let worker = queue.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while worker.next_batch(&mut batch) {
                    // Counted before any job of the transaction learns its
                    // result, so that a caller sees its own failure counted.
                    run_batch(&mut *writer, &mut batch, &mut |failed| {
                        if failed > 0 {
                            worker.errors.fetch_add(failed as u64, Ordering::Relaxed);
                        }
                        worker.failing.store(failed > 0, Ordering::Relaxed);
                    });
                }
            })
            .map_err(|e| StoreError::Refused(format!("cannot start the writer thread: {e}")))?;
        Ok(StoreHandle {
            _closer: Arc::new(Closer(queue.clone())),
            queue,
            readers: Arc::new(Readers {
                pool,
                next: AtomicUsize::new(0),
            }),
            location,
            fence: None,
        })
    }

    /// This handle (same writer, same readers) with every write fenced by
    /// `fence`: run only while that term of leadership holds, checked in the
    /// write's own transaction; else it fails with [`StoreError::Fenced`]
    /// and writes nothing. For the work that runs once, which gets such a
    /// handle for each term it runs in (`app::leadership`).
    pub fn fenced(&self, fence: Fence) -> StoreHandle {
        StoreHandle {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// The term this handle's writes are fenced by, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Where the database is (a file's path), for the log.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Writes waiting for the writer (both lanes), not counting the batch
    /// it is running.
    pub fn queued(&self) -> usize {
        let lanes = self.queue.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.small.len() + lanes.bulk.len()
    }

    /// Writes that failed on a database error since start.
    pub fn write_errors(&self) -> u64 {
        self.queue.errors.load(Ordering::Relaxed)
    }

    /// Whether the last write failed on a database error (a full disk, a
    /// read-only file): `/readyz` answers 503 until a write succeeds again.
    pub fn failing(&self) -> bool {
        self.queue.failing.load(Ordering::Relaxed)
    }

    /// Run `f` on the writer thread and wait for its result. When this returns
    /// Ok, whatever `f` wrote is committed; when `f` fails, nothing it wrote is.
    /// `f` runs again (its earlier run rolled back) when a concurrent
    /// transaction conflicted with it: see the module's docs. On a
    /// [`fenced`](StoreHandle::fenced) handle, `f` runs only while the
    /// fence holds.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Storage) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f, false).await
    }

    /// [`StoreHandle::write`] for a large job (a run with many tests): it
    /// waits behind every small write, and runs alone in its transaction.
    pub async fn write_bulk<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Storage) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f, true).await
    }

    async fn submit<T, F>(&self, f: F, bulk: bool) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Storage) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Pending {
            f,
            fence: self.fence.clone(),
            result: None,
            reply,
            attempts: 0,
        };
        self.queue.push(Box::new(job), bulk)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Run a read on a blocking thread with a read connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Storage) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|_| StoreError::WriterGone)?
    }
}

/// Run the jobs of `batch` (emptying it) in one transaction, then tell each
/// its result. A job that leaves the connection outside a transaction (SQLite
/// rolled the whole transaction back, e.g. on a full disk) ends the batch: the
/// jobs so far fail, the rest run in a new batch. A job a concurrent
/// transaction conflicted with (another PostgreSQL replica's: a deadlock
/// between two batches that took the same rows in different orders) is
/// rolled back alone and runs again in the next transaction, after the others
/// commit and release their locks, up to [`MAX_ATTEMPTS`] times. Before the
/// jobs of each transaction learn their results, `report` is told how many of
/// them failed on a database error (their own, or the transaction's);
/// returns the total.
fn run_batch(
    store: &mut dyn Engine,
    batch: &mut Vec<BoxedJob>,
    report: &mut dyn FnMut(usize),
) -> usize {
    let mut failed = 0;
    let mut jobs: VecDeque<BoxedJob> = batch.drain(..).collect();
    let mut again: Vec<BoxedJob> = Vec::new();
    let mut retried = 0u32;
    while !jobs.is_empty() || !again.is_empty() {
        if jobs.is_empty() {
            // Give the transaction that won the conflict time to commit.
            retried += 1;
            std::thread::sleep(backoff(retried));
            jobs.extend(again.drain(..));
        }
        if let Err(e) = store.begin_batch() {
            tracing::error!(error = %e, "cannot begin the write transaction");
            let mut cannot: Vec<BoxedJob> = jobs.drain(..).chain(again.drain(..)).collect();
            for job in &mut cannot {
                job.run(None);
            }
            failed += cannot.len();
            report(cannot.len());
            for job in cannot {
                job.deliver(Some(&e));
            }
            return failed;
        }
        let mut done: Vec<BoxedJob> = Vec::new();
        let mut own_errors = 0;
        let mut lost = None;
        while let Some(mut job) = jobs.pop_front() {
            if let Err(e) = store.begin_job() {
                job.run(None);
                done.push(job);
                lost = Some(e);
                break;
            }
            let ran = job.run(Some(&mut *store));
            if !store.in_batch() {
                done.push(job);
                lost = Some(StoreError::Refused(
                    "the database rolled the write transaction back".into(),
                ));
                break;
            }
            let ended = store.end_job(ran == Ran::Ok);
            match ran {
                Ran::Again => again.push(job),
                Ran::Ok => done.push(job),
                Ran::Failed { db_error } => {
                    own_errors += usize::from(db_error);
                    done.push(job);
                }
            }
            if let Err(e) = ended {
                lost = Some(e);
                break;
            }
        }
        let outcome = match lost {
            Some(e) => Err(e),
            None => store.commit_batch(),
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, jobs = done.len(), "write transaction failed");
            store.rollback_batch();
            failed += done.len();
            report(done.len());
        } else {
            failed += own_errors;
            report(own_errors);
        }
        for job in done {
            job.deliver(outcome.as_ref().err());
        }
    }
    failed
}

/// How long the writer waits before running conflicted writes again: a few
/// milliseconds, growing with each round, spread so that two replicas that
/// conflicted do not meet again in step.
fn backoff(round: u32) -> std::time::Duration {
    let spread = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 5_000_000);
    std::time::Duration::from_millis(5 * u64::from(round.min(MAX_ATTEMPTS)))
        + std::time::Duration::from_nanos(u64::from(spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store behind a job's interface (these tests look at its tables).
    fn sqlite(s: &mut dyn Storage) -> &mut Store {
        s.sqlite_mut().expect("a SQLite store")
    }

    fn count(store: &dyn Storage) -> i64 {
        store
            .sqlite()
            .expect("a SQLite store")
            .conn
            .query_row("SELECT count(*) FROM meta WHERE key LIKE 'k%'", [], |r| {
                r.get(0)
            })
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_together_and_a_failed_one_alone_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::start(&dir.path().join("w.db")).unwrap();
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let h = handle.clone();
                tokio::spawn(async move {
                    h.write(move |s| {
                        sqlite(s).set_meta(&format!("k{i}"), "v")?;
                        if i % 10 == 3 {
                            return Err(StoreError::Refused(format!("job {i} fails")));
                        }
                        Ok(i)
                    })
                    .await
                })
            })
            .collect();
        for (i, w) in writes.into_iter().enumerate() {
            match w.await.unwrap() {
                Ok(n) => assert_eq!(n, i),
                Err(e) => {
                    assert_eq!(i % 10, 3, "{e}");
                    assert_eq!(e.to_string(), format!("job {i} fails"));
                }
            }
        }
        let stored = handle.read(|s| Ok(count(s))).await.unwrap();
        assert_eq!(stored, 180, "every job but the failed ones, each whole");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_writes_overtake_queued_bulk_writes() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::start(&dir.path().join("w.db")).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let log = |name: String| {
            let order = order.clone();
            move |_: &mut dyn Storage| {
                order.lock().unwrap().push(name.clone());
                Ok(())
            }
        };
        // Keep the writer busy until the queue is filled.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let busy = {
            let h = handle.clone();
            tokio::spawn(async move {
                h.write(move |_| {
                    started_tx.send(()).unwrap();
                    wait.recv().unwrap();
                    Ok(())
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        let mut waits = Vec::new();
        for i in 0..2 {
            let h = handle.clone();
            let f = log(format!("bulk{i}"));
            waits.push(tokio::spawn(async move { h.write_bulk(f).await }));
        }
        for i in 0..3 {
            let h = handle.clone();
            let f = log(format!("small{i}"));
            waits.push(tokio::spawn(async move { h.write(f).await }));
        }
        loop {
            let queued = {
                let lanes = handle.queue.lanes.lock().unwrap();
                (lanes.small.len(), lanes.bulk.len())
            };
            if queued == (3, 2) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        let order = order.lock().unwrap().clone();
        // The spawned tasks queue in any order within a lane.
        assert!(
            order[..3].iter().all(|n| n.starts_with("small"))
                && order[3..].iter().all(|n| n.starts_with("bulk")),
            "{order:?}"
        );
        assert_eq!(order.len(), 5);
        assert_eq!(handle.write_errors(), 0);
        assert!(!handle.failing());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_writes_are_counted_and_flagged_until_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::start(&dir.path().join("w.db")).unwrap();
        handle
            .write(|s| sqlite(s).set_meta("k0", "v"))
            .await
            .unwrap();
        assert!(!handle.failing());
        // A write the database refuses at commit (a deferred foreign-key
        // violation stands in for a full disk).
        let failed = handle
            .write(|s| {
                sqlite(s).conn.execute_batch("PRAGMA defer_foreign_keys = ON; INSERT INTO runs (repository_id, context, commit_sha, attempt, trigger_code, state_code, source_code, content_digest, created_at, updated_at) VALUES (999, 'c', 's', 0, 'other', 'pending', 't', 'h', 0, 0)")?;
                Ok(())
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(handle.write_errors(), 1);
        assert!(handle.failing(), "/readyz would answer 503");
        // A job's own refusal (bad input) is not a database failure.
        let refused: Result<(), _> = handle
            .write(|_| Err(StoreError::Refused("no".into())))
            .await;
        assert!(refused.is_err());
        assert_eq!(handle.write_errors(), 1);
        handle
            .write(|s| sqlite(s).set_meta("k1", "v"))
            .await
            .unwrap();
        assert!(!handle.failing(), "ready again after a good write");
    }

    #[tokio::test]
    async fn a_handle_starts_on_any_engine_with_at_least_one_reader() {
        let writer = || Box::new(Store::open_in_memory().unwrap());
        let refused = StoreHandle::start_with(writer(), Vec::new(), "memory".into());
        assert!(refused.is_err(), "no read connection");
        let readers: Vec<Box<dyn Storage>> = vec![Box::new(Store::open_in_memory().unwrap())];
        let handle = StoreHandle::start_with(writer(), readers, "memory".into()).unwrap();
        assert_eq!(handle.location(), "memory");
        handle.write(|s| s.mark_demo("seed")).await.unwrap();
        // The reader is another in-memory database: it sees nothing of the writer's.
        assert!(!handle.read(|s| s.is_demo()).await.unwrap());
    }

    /// A job of `run_batch`'s tests, and where its result arrives.
    fn job<T, F>(f: F) -> (BoxedJob, oneshot::Receiver<Result<T, StoreError>>)
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Storage) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Pending {
            f,
            fence: None,
            result: None,
            reply,
            attempts: 0,
        };
        (Box::new(job), rx)
    }

    fn a_fence() -> Fence {
        Fence {
            name: "main".into(),
            epoch: 7,
            lease: std::time::Duration::from_secs(10),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fenced_handle_fences_its_writes_only_and_on_sqlite_the_fence_always_holds() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::start(&dir.path().join("w.db")).unwrap();
        let fenced = handle.fenced(a_fence());
        assert_eq!(fenced.fence(), Some(&a_fence()));
        assert_eq!(
            handle.fence(),
            None,
            "the handle it came from is not fenced"
        );
        assert_eq!(
            fenced.clone().fence(),
            Some(&a_fence()),
            "clones keep the fence"
        );
        fenced
            .write(|s| sqlite(s).set_meta("k0", "v"))
            .await
            .unwrap();
        fenced
            .write_bulk(|s| sqlite(s).set_meta("k1", "v"))
            .await
            .unwrap();
        assert_eq!(handle.read(|s| Ok(count(s))).await.unwrap(), 2);
    }

    #[test]
    fn a_fenced_write_that_conflicted_runs_again_and_a_fence_refusal_is_neither_counted_nor_run_again()
     {
        let mut store = Store::open_in_memory().unwrap();
        let mut attempts = 0;
        let (retried, mut retried_rx) = fenced_job(move |s| {
            attempts += 1;
            sqlite(s).set_meta(&format!("k{attempts}"), "v")?;
            if attempts == 1 {
                return Err(conflict());
            }
            Ok(attempts)
        });
        // SQLite's fence always holds: this job fails with the error the
        // writer gives a job whose fence does not hold (the real refusal,
        // on PostgreSQL: crates/store-pg/tests/pg/fencing.rs).
        let mut runs = 0;
        let (refused, mut refused_rx) = fenced_job(move |_| {
            runs += 1;
            assert_eq!(runs, 1, "a refusal is not run again");
            Err::<u32, _>(StoreError::Fenced {
                name: "main".into(),
                epoch: 7,
            })
        });
        let mut batch = vec![retried, refused];
        let mut reported = Vec::new();
        assert_eq!(
            run_batch(&mut store, &mut batch, &mut |n| reported.push(n)),
            0
        );
        assert_eq!(
            reported,
            vec![0, 0],
            "nothing counted as a database failure"
        );
        assert_eq!(retried_rx.try_recv().unwrap().unwrap(), 2);
        assert!(refused_rx.try_recv().unwrap().unwrap_err().is_fenced());
        assert!(store.meta("k2").unwrap().is_some() && store.meta("k1").unwrap().is_none());
    }

    /// [`job`] fenced by [`a_fence`].
    fn fenced_job<T, F>(f: F) -> (BoxedJob, oneshot::Receiver<Result<T, StoreError>>)
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Storage) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Pending {
            f,
            fence: Some(a_fence()),
            result: None,
            reply,
            attempts: 0,
        };
        (Box::new(job), rx)
    }

    fn conflict() -> StoreError {
        StoreError::Engine {
            kind: ErrorKind::Conflict,
            source: "deadlock detected".into(),
        }
    }

    #[test]
    fn a_failed_commit_fails_every_job_of_the_batch() {
        let mut store = Store::open_in_memory().unwrap();
        let mut batch = Vec::new();
        let mut results = Vec::new();
        for i in 0..3 {
            let (job, rx) = job(move |s| {
                let s = sqlite(s);
                s.set_meta(&format!("k{i}"), "v").unwrap();
                if i == 2 {
                    // Leaves the transaction open with a deferred violation, so COMMIT fails.
                    s.conn.execute_batch("PRAGMA defer_foreign_keys = ON; INSERT INTO runs (repository_id, context, commit_sha, attempt, trigger_code, state_code, source_code, content_digest, created_at, updated_at) VALUES (999, 'c', 's', 0, 'other', 'pending', 't', 'h', 0, 0)").unwrap();
                }
                Ok(())
            });
            batch.push(job);
            results.push(rx);
        }
        let mut reported = 0;
        assert_eq!(
            run_batch(&mut store, &mut batch, &mut |n| reported += n),
            3,
            "three failed writes"
        );
        assert_eq!(reported, 3);
        for mut rx in results {
            assert!(rx.try_recv().unwrap().is_err());
        }
        assert_eq!(count(&store), 0, "nothing of the batch is stored");
        assert!(store.conn.is_autocommit());
    }

    #[test]
    fn a_conflicted_write_is_rolled_back_and_runs_again_after_the_others_commit() {
        let mut store = Store::open_in_memory().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut batch = Vec::new();
        let mut results = Vec::new();
        for i in 0..3 {
            let order = order.clone();
            let mut attempt = 0;
            let (job, rx) = job(move |s| {
                attempt += 1;
                order.lock().unwrap().push(format!("k{i}#{attempt}"));
                sqlite(s).set_meta(&format!("k{i}-{attempt}"), "v")?;
                // The middle write loses to a concurrent transaction twice.
                if i == 1 && attempt < 3 {
                    return Err(conflict());
                }
                Ok(attempt)
            });
            batch.push(job);
            results.push(rx);
        }
        let mut reported = Vec::new();
        let failed = run_batch(&mut store, &mut batch, &mut |n| reported.push(n));
        assert_eq!(failed, 0);
        assert_eq!(reported, vec![0, 0, 0], "three transactions, no failure");
        let attempts: Vec<u32> = results
            .into_iter()
            .map(|mut rx| rx.try_recv().unwrap().unwrap())
            .collect();
        assert_eq!(attempts, vec![1, 3, 1]);
        assert_eq!(
            *order.lock().unwrap(),
            vec!["k0#1", "k1#1", "k2#1", "k1#2", "k1#3"],
            "the others are not held back by the conflicted one"
        );
        let s = &store;
        let stored = |k: &str| s.meta(k).unwrap().is_some();
        assert!(stored("k0-1") && stored("k2-1") && stored("k1-3"));
        assert!(
            !stored("k1-1") && !stored("k1-2"),
            "what a conflicted attempt wrote is rolled back"
        );
    }

    #[test]
    fn a_write_that_keeps_conflicting_fails_after_the_last_attempt() {
        let mut store = Store::open_in_memory().unwrap();
        let mut attempts = 0;
        let (always, mut rx) = job(move |s| {
            attempts += 1;
            sqlite(s).set_meta(&format!("k{attempts}"), "v")?;
            Err::<(), _>(conflict())
        });
        let (fine, mut fine_rx) = job(|s| sqlite(s).set_meta("other", "v"));
        let mut batch = vec![always, fine];
        let mut reported = 0;
        assert_eq!(run_batch(&mut store, &mut batch, &mut |n| reported += n), 1);
        assert_eq!(reported, 1, "counted once, as a database failure");
        let e = rx.try_recv().unwrap().unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::Conflict), "{e}");
        fine_rx.try_recv().unwrap().unwrap();
        assert_eq!(count(&store), 0, "no attempt's write is kept");
        assert!(store.meta("other").unwrap().is_some());
        assert!(store.conn.is_autocommit());
    }
}
