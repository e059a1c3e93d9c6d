//! The single writer: one thread owns the writing connection and runs jobs in
//! arrival order, so async handlers never block on SQLite locks. Readers get a
//! connection of their own.

use super::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// A cheap, cloneable handle to the writer thread and a read connection.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: mpsc::Sender<Job>,
    reader: Arc<Mutex<Store>>,
    path: PathBuf,
}

impl StoreHandle {
    /// Open the database (running migrations) and start the writer thread.
    pub fn start(path: &Path) -> Result<StoreHandle, StoreError> {
        let mut writer = Store::open(path)?;
        let reader = Store::open(path)?;
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
            reader: Arc::new(Mutex::new(reader)),
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

    /// Run a read on a blocking thread with the read connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let store = reader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&store)
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }
}
