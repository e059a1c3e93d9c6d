//! The single writer: one thread owns the writing connection and runs jobs in
//! arrival order, so async handlers never block on SQLite locks. Reads use a
//! small pool of connections of their own (WAL: readers never wait for the
//! writer), so a slow read such as a snapshot rebuild never holds up a page.

use super::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// Read connections: enough for a snapshot rebuild, a pruner pass and pages
/// at once on a small machine.
pub const READERS: usize = 3;

struct Readers {
    pool: Vec<Mutex<Store>>,
    next: AtomicUsize,
}

impl Readers {
    /// A free connection if there is one, else wait for one in turn.
    fn with<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        for conn in &self.pool {
            if let Ok(store) = conn.try_lock() {
                return f(&store);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let store = self.pool[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&store)
    }
}

/// A cheap, cloneable handle to the writer thread and a read connection.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: mpsc::Sender<Job>,
    readers: Arc<Readers>,
    path: PathBuf,
}

impl StoreHandle {
    /// Open the database (running migrations) and start the writer thread.
    pub fn start(path: &Path) -> Result<StoreHandle, StoreError> {
        let mut writer = Store::open(path)?;
        let pool = (0..READERS)
            .map(|_| Store::open(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut writer);
                }
            })
            .map_err(|e| StoreError::Refused(format!("cannot start the writer thread: {e}")))?;
        Ok(StoreHandle {
            jobs,
            readers: Arc::new(Readers {
                pool,
                next: AtomicUsize::new(0),
            }),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the writer thread and wait for its result. When this returns
    /// Ok, whatever `f` committed is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move |store| {
                let _ = tx.send(f(store));
            }))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Run a read on a blocking thread with a read connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|_| StoreError::WriterGone)?
    }
}
